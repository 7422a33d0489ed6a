"""The ETA, pure: what the fleet teaches (``Learning``), the remaining stops' times (``predict``).

The fleet teaches three things, each kept per bucket with a prior it is shrunk towards:

- **road speed** per hour of the day (UTC): a van's odometer (the sum of its pings' straight
  steps) over the time it was moving from leaving one stop (or the depot) to arriving at the
  next;
- **detour**: that odometer over the straight line between the two, how much longer the road is;
- **dwell** per stop type and hour: arrival to departure at a stop;
- **pauses** per place in the stop sequence: the time a van stood still between two stops (a
  driver's break halfway through the round shows up on the same legs day after day).

``predict`` walks the remaining stops in sequence from the van's last position: the time still to
stand at the stop it is at (the learned dwells longer than what it has stood already, less that),
then each leg as the straight line x detour over the road speed (for the leg in progress, the
van's own road speed on it so far, once it has driven a while, blended with the fleet's) plus the
pause the fleet makes on that leg (less what the van already stood on it), adding the dwell of
every stop it passes on the way. Medians, not means: a leg with a driver's break in
it must not slow every ETA of the fleet. Nothing here reads a clock: ``now`` is the time of the
event that asks.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from hub_bridge.delivery.geo import distance_m
from hub_bridge.delivery.settings import DeliverySettings

__all__ = ["Learning", "Leg", "VanLeg", "predict", "sequence_place"]

PRIOR_DETOUR = 1.3
MIN_SPEED = 1.0
MAX_SPEED = 40.0


def _hour(t: float) -> str:
    return str(int(t // 3600) % 24)


@dataclass(slots=True)
class Learning:
    """What one fleet taught: observations per bucket, the latest ``keep`` of each."""

    speed: dict[str, list[float]] = field(default_factory=dict)
    detour: list[float] = field(default_factory=list)
    dwell: dict[str, list[float]] = field(default_factory=dict)
    pause: dict[str, list[float]] = field(default_factory=dict)
    # medians asked for on every fix, learned from only on trip events: kept until the next
    _memo: dict[tuple[str, ...], float] = field(default_factory=dict, repr=False, compare=False)

    def _median(self, key: tuple[str, ...], values: Sequence[float]) -> float:
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = median(values)
        return got

    def _shrunk(
        self, key: tuple[str, ...], values: Sequence[float], prior: float, weight: float
    ) -> float:
        if not values:
            return prior
        n = len(values)
        return (self._median(key, values) * n + prior * weight) / (n + weight)

    def _add(self, bucket: list[float], value: float, keep: int) -> None:
        self._memo.clear()
        bucket.append(value)
        if len(bucket) > keep:
            del bucket[: len(bucket) - keep]

    def learn_leg(
        self, t0: float, seconds: float, odometer_m: float, straight_m: float, s: DeliverySettings
    ) -> None:
        """A van drove ``odometer_m`` (``straight_m`` as the crow flies) in ``seconds`` from
        ``t0``; legs too short to say anything are skipped."""
        if seconds < 60 or straight_m < 300 or odometer_m < straight_m * 0.8:
            return
        speed = odometer_m / seconds
        if MIN_SPEED <= speed <= MAX_SPEED:
            self._add(self.speed.setdefault(_hour(t0), []), speed, s.learn_keep)
            self._add(self.speed.setdefault("*", []), speed, s.learn_keep)
        self._add(self.detour, min(3.0, odometer_m / straight_m), s.learn_keep)

    def learn_pause(self, place: str, seconds: float, s: DeliverySettings) -> None:
        """A van stood ``seconds`` on the leg at ``place`` of its sequence (``sequence_place``)."""
        if 0 <= seconds < 4 * 3600:
            self._add(self.pause.setdefault(place, []), seconds, s.learn_keep)

    def pause_s(self, place: str, s: DeliverySettings) -> float:
        """The time vans stand still on the leg at ``place`` (median; none until 3 are seen)."""
        got = self.pause.get(place, [])
        if len(got) < 3:
            return 0.0
        return self._median(("pause", place), got)

    def learn_dwell(self, kind: str, t0: float, seconds: float, s: DeliverySettings) -> None:
        """A van stood ``seconds`` at a stop of type ``kind`` from ``t0``."""
        if not 0 < seconds < 4 * 3600:
            return
        for key in (f"{kind}@{_hour(t0)}", kind, "*"):
            bucket = self.dwell.setdefault(key, [])
            self._add(bucket, seconds, s.learn_keep)

    def road_speed(self, t: float, s: DeliverySettings) -> float:
        """The fleet's road speed at time ``t`` (its hour), shrunk towards the all-day one."""
        prior = s.prior_speed_mps * PRIOR_DETOUR
        overall = self._shrunk(("speed", "*"), self.speed.get("*", []), prior, s.prior_weight)
        hour = _hour(t)
        return self._shrunk(("speed", hour), self.speed.get(hour, []), overall, s.prior_weight)

    def detour_factor(self, s: DeliverySettings) -> float:
        """Road distance over straight-line distance."""
        return self._shrunk(("detour",), self.detour, PRIOR_DETOUR, s.prior_weight)

    def _dwells(self, kind: str, t: float) -> tuple[str, list[float]]:
        for key in (f"{kind}@{_hour(t)}", kind, "*"):
            got = self.dwell.get(key)
            if got and len(got) >= 5:
                return key, got
        return "", []

    def dwell_s(self, kind: str, t: float, s: DeliverySettings) -> float:
        """The normal dwell at a stop of type ``kind`` reached at ``t``."""
        key, got = self._dwells(kind, t)
        return self._shrunk(("dwell", key), got, s.prior_dwell_s, s.prior_weight)

    def dwell_left(self, kind: str, t0: float, stood: float, s: DeliverySettings) -> float:
        """How much longer a van that has stood ``stood`` seconds since ``t0`` will stand: the
        median of (dwell - stood) over the learned dwells longer than ``stood``."""
        got = sorted(self._dwells(kind, t0)[1])
        longer = got[bisect.bisect_right(got, stood) :]
        if len(longer) >= 3:
            return median(longer) - stood
        normal = self.dwell_s(kind, t0, s)
        return max(normal - stood, 0.25 * normal if stood < 2 * normal else 30.0)

    def to_json(self) -> dict[str, Any]:
        """JSON data."""
        return {
            "speed": self.speed,
            "detour": self.detour,
            "dwell": self.dwell,
            "pause": self.pause,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Learning:
        """The inverse of ``to_json``."""
        return cls(
            dict(d.get("speed", {})),
            list(d.get("detour", [])),
            dict(d.get("dwell", {})),
            dict(d.get("pause", {})),
        )


def sequence_place(index: int, count: int) -> str:
    """Where the leg to stop ``index`` (0: the first, from the depot) lies in a round of
    ``count`` stops: tenths of the way, so rounds of different lengths share what they teach."""
    return str(min(9, int(10 * index / max(count, 1))))


@dataclass(frozen=True, slots=True)
class Leg:
    """A remaining stop as ``predict`` needs it."""

    id: str
    lat: float
    lon: float
    kind: str
    place: str = "0"


@dataclass(frozen=True, slots=True)
class VanLeg:
    """Where the van is: position and time of its last fix, since when it drives this leg and
    how far it went on it (odometer), and the stop it stands at (its type and since when)."""

    t: float
    lat: float
    lon: float
    leg_t0: float | None = None
    leg_odometer_m: float = 0.0
    leg_stood_s: float = 0.0
    at_kind: str | None = None
    at_since: float | None = None
    track_deg: float | None = None
    speed_mps: float | None = None


def predict(
    van: VanLeg, stops: Sequence[Leg], learning: Learning, s: DeliverySettings
) -> list[tuple[str, float]]:
    """``(stop id, ETA epoch seconds)`` for every remaining stop, in sequence."""
    t = van.t
    if van.at_kind is not None and van.at_since is not None:
        t += learning.dwell_left(van.at_kind, van.at_since, t - van.at_since, s)
    detour = learning.detour_factor(s)
    fleet = learning.road_speed(t, s)
    speed = fleet
    if van.at_kind is None and van.leg_t0 is not None:
        driven = van.t - van.leg_t0 - van.leg_stood_s
        if driven > 120 and van.leg_odometer_m > 500:
            own = min(MAX_SPEED, max(MIN_SPEED, van.leg_odometer_m / driven))
            w = min(1.0, driven / 600.0) * 0.5  # a short stretch says little; never all
            speed = (1 - w) * fleet + w * own
    out = []
    lat, lon = van.lat, van.lon
    for i, stop in enumerate(stops):
        pause = learning.pause_s(stop.place, s)
        if i > 0:
            t += learning.dwell_s(stops[i - 1].kind, t, s)
            speed = learning.road_speed(t, s)
        elif van.at_kind is None:
            pause = max(0.0, pause - van.leg_stood_s)
        d = distance_m(lat, lon, stop.lat, stop.lon)
        t += d * (_heading_detour(van, stop, detour) if i == 0 else detour) / speed + pause
        out.append((stop.id, t))
        lat, lon = stop.lat, stop.lon
    return out


def _heading_detour(van: VanLeg, stop: Leg, detour: float) -> float:
    """The detour still ahead on the leg in progress, from where the van is heading: driving
    straight at the stop, none; at an angle, the road is likely the two sides of a corner
    (cos + sin of it); heading away (or standing), the fleet's detour."""
    if van.at_kind is not None or van.track_deg is None or (van.speed_mps or 0.0) < 3.0:
        return detour
    dy = math.radians(stop.lat - van.lat)
    dx = math.radians(stop.lon - van.lon) * math.cos(math.radians(van.lat))
    if dx == 0 and dy == 0:
        return 1.0
    off = math.radians(van.track_deg) - math.atan2(dx, dy)
    c, sn = math.cos(off), abs(math.sin(off))
    if c <= 0:
        return detour
    return c + sn
