"""Which fixes to trust, and which of them to report: pure step code, clock passed in.

``FixFilter.check(fix, now)`` returns None for a fix to keep or the reason it is dropped, and
counts drops per reason:

- ``invalid``: not a 2D/3D fix, or coordinates out of range;
- ``null_island``: exactly (0, 0), what some receivers send before their first fix;
- ``hdop``: horizontal dilution above ``max_hdop``;
- ``too_old`` / ``in_future``: further from the clock than ``max_age`` / ``max_ahead``
  (skipped when the caller has no trustworthy clock and passes ``now=None``);
- ``duplicate`` / ``out_of_order``: the same time as, or earlier than, the last kept fix
  (late data must not move the position backwards, FIELD-NOTES 1);
- ``jump``: the speed implied since the last kept fix is above ``max_speed_mps`` (multipath).

If the last kept fix was the wrong one (a cold-start position far off, or a future-dated time
that would freeze the position, FIELD-NOTES 2), every fix after it looks like a jump or out of
order; when ``jump_reset_after`` of them in a row agree with each other (time moving forward at
a plausible speed), the filter re-anchors on them.

``AdaptiveReporter.step(fix)`` decides which kept fixes become ``gnss.fix`` pings, by fix time:
the first one, every ``moving_interval`` when moving and every ``stopped_interval`` when
stopped, when the van starts or stops, when its track turns by ``heading_change_deg`` since the
last ping, and when it is ``distance`` away from the last ping.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime

from edge_agent.gnss.config import FilterConfig, ReportConfig
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.geo import angle_between, distance_m

__all__ = ["DROP_REASONS", "AdaptiveReporter", "FixFilter"]

DROP_REASONS = (
    "invalid",
    "null_island",
    "hdop",
    "too_old",
    "in_future",
    "duplicate",
    "out_of_order",
    "jump",
)


class FixFilter:
    """Drops fixes a fleet should not trust; ``counts`` holds the drops per reason."""

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self.last: Fix | None = None
        self.reanchored = 0
        self._streak: list[Fix] = []

    def check(self, fix: Fix, now: datetime | None = None) -> str | None:
        """None if ``fix`` is kept (it becomes the reference), else the reason it is dropped."""
        reason = self._reason(fix, now)
        if reason is None:
            self.last = fix
            self._streak.clear()
        else:
            self.counts[reason] += 1
        return reason

    def _reason(self, fix: Fix, now: datetime | None) -> str | None:
        cfg = self.config
        if (
            fix.mode not in (2, 3)
            or fix.time.tzinfo is None
            or not (math.isfinite(fix.lat) and math.isfinite(fix.lon))
            or not (-90.0 <= fix.lat <= 90.0 and -180.0 <= fix.lon <= 180.0)
        ):
            return "invalid"
        if cfg.drop_null_island and fix.lat == 0.0 and fix.lon == 0.0:
            return "null_island"
        if cfg.max_hdop is not None and fix.hdop is not None and fix.hdop > cfg.max_hdop:
            return "hdop"
        if now is not None:
            age = (now - fix.time).total_seconds()
            if age > cfg.max_age:
                return "too_old"
            if -age > cfg.max_ahead:
                return "in_future"
        last = self.last
        if last is None:
            return None
        dt = (fix.time - last.time).total_seconds()
        if dt == 0:
            return "duplicate"
        if dt > 0 and distance_m(last.lat, last.lon, fix.lat, fix.lon) / dt <= cfg.max_speed_mps:
            return None
        return self._suspect(fix, "jump" if dt > 0 else "out_of_order")

    def _suspect(self, fix: Fix, reason: str) -> str | None:
        streak = self._streak
        if streak:
            prev = streak[-1]
            dt = (fix.time - prev.time).total_seconds()
            agrees = dt > 0 and (
                distance_m(prev.lat, prev.lon, fix.lat, fix.lon) / dt <= self.config.max_speed_mps
            )
            if not agrees:
                streak.clear()
        streak.append(fix)
        if len(streak) >= self.config.jump_reset_after:
            self.reanchored += 1
            return None
        return reason


class AdaptiveReporter:
    """Chooses the kept fixes that become pings (see the module docstring)."""

    def __init__(self, config: ReportConfig) -> None:
        self.config = config
        self.moving = False
        self.last_reported: Fix | None = None
        self._prev: Fix | None = None
        self.counts: Counter[str] = Counter()

    def _speed(self, fix: Fix) -> float | None:
        if fix.speed_mps is not None:
            return fix.speed_mps
        prev = self._prev
        if prev is None:
            return None
        dt = (fix.time - prev.time).total_seconds()
        if dt <= 0:
            return None
        return distance_m(prev.lat, prev.lon, fix.lat, fix.lon) / dt

    def step(self, fix: Fix) -> str | None:
        """The reason to report ``fix`` (``first``, ``started``, ``stopped``, ``interval``,
        ``heading``, ``distance``), or None to skip it."""
        reason = self._decide(fix)
        self._prev = fix
        if reason is not None:
            self.last_reported = fix
            self.counts[reason] += 1
        return reason

    def _decide(self, fix: Fix) -> str | None:
        cfg = self.config
        speed = self._speed(fix)
        transition: str | None = None
        if speed is not None:
            if not self.moving and speed >= cfg.moving_speed_mps:
                self.moving, transition = True, "started"
            elif self.moving and speed < cfg.moving_speed_mps / 2:
                self.moving, transition = False, "stopped"
        last = self.last_reported
        if last is None:
            return "first"
        if transition is not None:
            return transition
        elapsed = (fix.time - last.time).total_seconds()
        if elapsed >= (cfg.moving_interval if self.moving else cfg.stopped_interval):
            return "interval"
        if (
            self.moving
            and fix.track_deg is not None
            and last.track_deg is not None
            and angle_between(fix.track_deg, last.track_deg) >= cfg.heading_change_deg
        ):
            return "heading"
        if distance_m(last.lat, last.lon, fix.lat, fix.lon) >= cfg.distance:
            return "distance"
        return None
