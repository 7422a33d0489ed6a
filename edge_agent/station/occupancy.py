"""Bay occupancy from a distance sensor's readings, pure: a threshold with hysteresis and a hold.

``Occupancy`` is fed readings (metres, with the time they arrived) and polled:

- ``BayChange(t, occupied)``: readings stayed below ``occupied_below`` (occupied) or above
  ``free_above`` (free) from ``t`` for at least ``hold_s``, and that is not the state reported
  last. ``t`` is the first reading of that run (when the van arrived or left); the change is
  known at the reading that completes the hold. A reading in the band between the thresholds
  breaks a run: the state stays as it was (hysteresis), so a van's edge at the threshold does
  not flap the bay.
- ``BayStale(t)``: no reading for ``stale_after_s`` (sensor unplugged, blinded, nothing echoing):
  reported once; the state is left as it was, no change is invented.
- ``BayFresh(t)``: readings again after a stale spell.

A change needs readings through the whole hold: silence never completes one. Times are seconds
on the caller's clock; nothing here reads one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BayChange", "BayFresh", "BayReport", "BayStale", "Occupancy"]


@dataclass(frozen=True, slots=True)
class BayChange:
    """The bay became occupied (True) or free from ``t``."""

    t: float
    occupied: bool


@dataclass(frozen=True, slots=True)
class BayStale:
    """No reading since ``t`` - ``stale_after_s``: the sensor is silent or blind."""

    t: float


@dataclass(frozen=True, slots=True)
class BayFresh:
    """A reading at ``t`` after a stale spell."""

    t: float


BayReport = BayChange | BayStale | BayFresh


class Occupancy:
    """One bay's occupancy (module docstring)."""

    __slots__ = (
        "_last",
        "_occupied",
        "_run",
        "_run_since",
        "_stale",
        "free_above",
        "hold_s",
        "occupied_below",
        "stale_after_s",
    )

    def __init__(
        self, occupied_below: float, free_above: float, hold_s: float, stale_after_s: float
    ) -> None:
        if not 0 < occupied_below < free_above:
            raise ValueError("need 0 < occupied_below < free_above")
        if hold_s < 0 or stale_after_s <= 0:
            raise ValueError("hold_s must be >= 0 and stale_after_s positive")
        self.occupied_below = occupied_below
        self.free_above = free_above
        self.hold_s = hold_s
        self.stale_after_s = stale_after_s
        self._occupied: bool | None = None
        self._run: bool | None = None  # the side of the band the current run of readings is on
        self._run_since = 0.0
        self._last: float | None = None  # last reading, or the time readings were expected from
        self._stale = False

    @property
    def occupied(self) -> bool | None:
        """The state last reported (None before the first)."""
        return self._occupied

    @property
    def stale(self) -> bool:
        """Whether the sensor is in a stale spell."""
        return self._stale

    def watch(self, t: float) -> None:
        """Readings are expected from ``t`` on (the sensor was opened): the stale timer starts."""
        if not self._stale:
            self._last = t if self._last is None else max(self._last, t)

    def reading(self, metres: float, t: float) -> list[BayReport]:
        """A distance read at ``t``."""
        reports: list[BayReport] = []
        if self._last is not None:
            t = max(t, self._last)
        if self._stale:
            self._stale = False
            reports.append(BayFresh(t))
        self._last = t
        side: bool | None
        if metres < self.occupied_below:
            side = True
        elif metres > self.free_above:
            side = False
        else:
            side = None  # in the band: neither stays below nor stays above
        if side != self._run:
            self._run = side
            self._run_since = t
        if side is not None and side != self._occupied and t >= self._run_since + self.hold_s:
            self._occupied = side
            reports.append(BayChange(self._run_since, side))
        return reports

    def poll(self, t: float) -> list[BayReport]:
        """What silence until ``t`` means (call at ``next_deadline()``; any time is safe)."""
        if self._stale or self._last is None or t < self._last + self.stale_after_s:
            return []
        self._stale = True
        self._run = None  # a run broken by silence starts again with the next readings
        return [BayStale(self._last + self.stale_after_s)]

    def next_deadline(self) -> float | None:
        """When ``poll`` can next report (None: only a reading can change anything)."""
        if self._stale or self._last is None:
            return None
        return self._last + self.stale_after_s
