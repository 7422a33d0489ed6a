"""Stopped or moving, from the speed of each fix, debounced: a pure step function.

The van is *stopped* after its speed stayed at or below ``stop_speed`` for ``stopped_after``
seconds (and two fixes), *moving* after it stayed at or above ``move_speed`` for
``moving_after``. Speeds between the two thresholds confirm neither (hysteresis), so the Doppler
noise of a parked receiver (a few dm/s) or a crawl in traffic does not flap. The event time is
the first fix of the run that confirmed it. The first state after a start is taken silently.

Receivers that report no speed (a GGA-only log) get one derived from the displacement over at
least ``DERIVED_SPAN_S`` seconds, long enough that 5 m of position noise is under 1 m/s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

from edge_agent.trips.segment import FixPoint, Mark

__all__ = ["MotionChange", "MotionParams", "MotionState", "motion_step"]

DERIVED_SPAN_S = 10.0

Motion = Literal["unknown", "stopped", "moving"]


@dataclass(frozen=True, slots=True)
class MotionParams:
    """Thresholds of the stopped/moving detector."""

    stop_speed: float = 1.0
    move_speed: float = 2.5
    stopped_after: float = 10.0
    moving_after: float = 5.0


@dataclass(slots=True)
class MotionState:
    """What the detector remembers between fixes (JSON-serialisable with ``to_dict``)."""

    state: Motion = "unknown"
    since: float = 0.0
    slow_t: float | None = None
    slow_n: int = 0
    slow_lat: float = 0.0
    slow_lon: float = 0.0
    fast_t: float | None = None
    fast_n: int = 0
    fast_lat: float = 0.0
    fast_lon: float = 0.0
    # anchor of the derived speed, for fixes without one
    ref_t: float | None = None
    ref_x: float = 0.0
    ref_y: float = 0.0
    derived: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MotionState:
        """Rebuild from ``to_dict`` output (unknown keys ignored)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class MotionChange(NamedTuple):
    """A confirmed transition: ``trip.stopped`` or ``trip.moving``, from the start of the run
    that confirmed it, and (for ``trip.moving``) how long the van had been stopped."""

    type: str
    at: Mark
    stopped_s: float


def _speed(ms: MotionState, now: FixPoint) -> float | None:
    if now.speed is not None:
        return now.speed
    t, x, y = now.t, now.x, now.y
    if ms.ref_t is None or t < ms.ref_t:
        ms.ref_t, ms.ref_x, ms.ref_y = t, x, y
        return ms.derived
    span = t - ms.ref_t
    if span >= DERIVED_SPAN_S:
        ms.derived = math.hypot(x - ms.ref_x, y - ms.ref_y) / span
        ms.ref_t, ms.ref_x, ms.ref_y = t, x, y
    return ms.derived


def motion_step(ms: MotionState, p: MotionParams, now: FixPoint) -> MotionChange | None:
    """Advance the detector by one fix (updates ``ms`` in place); the transition it confirmed,
    if any."""
    t, lat, lon = now.t, now.lat, now.lon
    v = _speed(ms, now)
    if v is None:
        return None
    if v <= p.stop_speed:
        if ms.slow_t is None:
            ms.slow_t, ms.slow_n, ms.slow_lat, ms.slow_lon = t, 0, lat, lon
        ms.slow_n += 1
    else:
        ms.slow_t = None
    if v >= p.move_speed:
        if ms.fast_t is None:
            ms.fast_t, ms.fast_n, ms.fast_lat, ms.fast_lon = t, 0, lat, lon
        ms.fast_n += 1
    else:
        ms.fast_t = None
    if (
        ms.state != "stopped"
        and ms.slow_t is not None
        and ms.slow_n >= 2
        and t - ms.slow_t >= p.stopped_after
    ):
        silent = ms.state == "unknown"
        ms.state, ms.since = "stopped", ms.slow_t
        if not silent:
            return MotionChange("trip.stopped", Mark(ms.slow_t, ms.slow_lat, ms.slow_lon), 0.0)
    elif (
        ms.state != "moving"
        and ms.fast_t is not None
        and ms.fast_n >= 2
        and t - ms.fast_t >= p.moving_after
    ):
        silent = ms.state == "unknown"
        stopped_s = ms.fast_t - ms.since if ms.state == "stopped" else 0.0
        ms.state, ms.since = "moving", ms.fast_t
        if not silent:
            at = Mark(ms.fast_t, ms.fast_lat, ms.fast_lon)
            return MotionChange("trip.moving", at, max(0.0, stopped_s))
    return None
