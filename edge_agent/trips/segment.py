"""One step of the van's path: the segment from the last fix to the current one.

The trip engine looks at every fix as a ``Move``: where the van was, where it is, and what the
two receiver speeds say about the time in between. Crossing times are interpolated on it: linear
in time, unless the van stood still at one end of a gap of several seconds (then it braked to or
pulled away from that end at ``ASSUMED_ACCEL`` and stood the rest of the time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from edge_agent.trips.zones import Zone

__all__ = ["STILL_GAP_S", "FixPoint", "Mark", "Move"]

STILL_GAP_S = 5.0
PASS_SPEED_SLACK = 10.0  # m/s a pass's implied speed may exceed the speeds the receiver reported
ASSUMED_ACCEL = 1.5  # m/s², a delivery van pulling away or braking for a stop


class Mark(NamedTuple):
    """A point of the van's path: epoch seconds and WGS 84 position."""

    t: float
    lat: float
    lon: float


class FixPoint(NamedTuple):
    """A fix the engine accepted, on the plane and in WGS 84."""

    t: float
    x: float
    y: float
    lat: float
    lon: float
    speed: float | None = None


@dataclass(slots=True)
class Move:
    """From ``last`` to ``now``: the segment, and whether the van can have crossed anything.

    ``seg2`` is the squared length; ``long`` whether it is long enough to cross the thinnest
    zone between fixes; ``slow`` whether the van is slow now; ``still`` whether it stood still
    at both ends (then no boundary was crossed, whatever the positions say); ``rest_start``
    whether the van is slow now and was not at the last fix (it has just come to rest).
    """

    last: FixPoint
    now: FixPoint
    seg2: float
    long: bool
    slow: bool
    still: bool
    still_speed: float
    rest_start: bool = False

    def at(self, u: float) -> Mark:
        """When and where the van was at fraction ``u`` of the segment."""
        a, b = self.last, self.now
        return Mark(self._time_at(u), _lerp(a.lat, b.lat, u), _lerp(a.lon, b.lon, u))

    def entry(self, z: Zone) -> Mark:
        """Where the van went into ``z`` (the crossing nearest the inside end)."""
        us = self._crossings(z)
        return self.at(us[-1] if us else 1.0)

    def exit(self, z: Zone) -> Mark:
        """Where the van left ``z`` (the crossing nearest the inside end)."""
        us = self._crossings(z)
        return self.at(us[0] if us else 0.0)

    def through(self, z: Zone) -> tuple[Mark, Mark]:
        """Where the van went into and out of ``z`` between the two fixes."""
        us = self._crossings(z)
        u0, u1 = (us[0], us[-1]) if us else (0.5, 0.5)
        return self.at(u0), self.at(u1)

    def plausible(self) -> bool:
        """Whether a van reporting these speeds can have covered the segment in the time: a
        multipath jump of 50 m in one second is not a drive across a zone."""
        a, b = self.last, self.now
        dt = b.t - a.t
        if a.speed is None or b.speed is None or dt <= 0:
            return True
        return math.sqrt(self.seg2) <= (max(a.speed, b.speed) + PASS_SPEED_SLACK) * dt

    def _time_at(self, u: float) -> float:
        """Linear in time, unless the fixes are seconds apart and the van stood still at one
        end: then it drove only part of the gap (see the module docstring)."""
        a, b = self.last, self.now
        dt = b.t - a.t
        d = math.hypot(b.x - a.x, b.y - a.y)
        v1, v2, still = a.speed, b.speed, self.still_speed
        if dt > STILL_GAP_S and v1 is not None and v2 is not None and d > 0:
            if v2 <= still < v1:
                at, total = _stopping_time(u, d, v1)
                if total < dt:
                    return a.t + at
            elif v1 <= still < v2:
                at, total = _stopping_time(1.0 - u, d, v2)
                if total < dt:
                    return b.t - at
        return a.t + u * dt

    def _crossings(self, z: Zone) -> list[float]:
        a, b = self.last, self.now
        return z.crossings(a.x, a.y, b.x, b.y)


def _lerp(a: float, b: float, u: float) -> float:
    return a + (b - a) * u


def _brake_time(e: float, v: float) -> float:
    """Seconds to cover ``e`` metres braking from ``v`` at ASSUMED_ACCEL."""
    a = ASSUMED_ACCEL
    return (v - math.sqrt(max(0.0, v * v - 2 * a * e))) / a


def _stopping_time(u: float, d: float, v: float) -> tuple[float, float]:
    """(time to fraction u, total time) of a van covering d metres at v then braking to 0."""
    brake = min(d, v * v / (2 * ASSUMED_ACCEL))
    cruise = d - brake
    total = cruise / v + _brake_time(brake, v)
    e = u * d
    at = e / v if e <= cruise else cruise / v + _brake_time(e - cruise, v)
    return at, total
