"""A contact's debouncer (door, bay contact), pure: fed edges and polled, with the edges' times.

A mechanical contact bounces for a few milliseconds when it opens or closes; a door left half
open can make its reed switch chatter for as long as it stays so. ``Debouncer`` turns the raw
edges into what the dock logic needs:

- ``ContactChange(t, level)``: the level held for ``settle_s`` and differs from the last one
  reported (or none was reported yet). ``t`` is the first edge of the burst that led to it (the
  moment the contact really moved, the bounce comes after), or the last edge when the burst was
  reported unstable (after a long chatter, the level is known only from its last edge).
- ``ContactUnstable(t)``: edges kept coming, never ``settle_s`` apart, for ``unstable_after_s``:
  reported once per burst (the caller makes it a health state, once).
- ``ContactSettled(t)``: the chatter stopped (the level held ``settle_s``); a ``ContactChange``
  follows it when the level is not the one reported before.

Times are seconds on the caller's clock, the one that stamped the edges (the kernel's
CLOCK_MONOTONIC for GPIO edges): the debouncer never reads a clock. ``next_deadline()`` says when
``poll`` can have something to say, so a driver waits for the next edge or that time, never
polls. State is a handful of numbers: an edge storm does not grow it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ContactChange", "ContactReport", "ContactSettled", "ContactUnstable", "Debouncer"]


@dataclass(frozen=True, slots=True)
class ContactChange:
    """The contact's level changed (``level`` True: active, a door open, a bay occupied)."""

    t: float
    level: bool


@dataclass(frozen=True, slots=True)
class ContactUnstable:
    """At ``t`` the contact had been chattering for ``unstable_after_s``."""

    t: float


@dataclass(frozen=True, slots=True)
class ContactSettled:
    """The chatter reported as unstable stopped; the level held from ``t``."""

    t: float


ContactReport = ContactChange | ContactUnstable | ContactSettled


class Debouncer:
    """Debounce one contact (module docstring)."""

    __slots__ = (
        "_burst_start",
        "_last_edge",
        "_raw",
        "_stable",
        "_unstable",
        "settle_s",
        "unstable_after_s",
    )

    def __init__(self, settle_s: float, unstable_after_s: float) -> None:
        if settle_s < 0 or unstable_after_s <= settle_s:
            raise ValueError("settle_s must be >= 0 and unstable_after_s above it")
        self.settle_s = settle_s
        self.unstable_after_s = unstable_after_s
        self._raw: bool | None = None
        self._stable: bool | None = None
        self._last_edge = 0.0
        self._burst_start: float | None = None  # None: no edge waiting to settle
        self._unstable = False

    @property
    def stable(self) -> bool | None:
        """The level last reported (None before the first report)."""
        return self._stable

    @property
    def unstable(self) -> bool:
        """Whether the contact is in a burst reported unstable."""
        return self._unstable

    def start(self, level: bool, t: float) -> list[ContactReport]:
        """The level read when the line was (re)opened at ``t``: like an edge to ``level``.

        A level equal to the one reported is confirmed without a new report; a different one is
        reported once it held ``settle_s`` (a change that happened while the line was closed).
        """
        return self.edge(level, t)

    def edge(self, level: bool, t: float) -> list[ContactReport]:
        """An edge to ``level`` at ``t`` (what the previous level did up to ``t`` first)."""
        t = max(t, self._last_edge)  # the kernel's order is the truth; never run backwards
        reports = self.poll(t)
        if self._burst_start is None:
            self._burst_start = t
        self._raw = level
        self._last_edge = t
        return reports

    def poll(self, t: float) -> list[ContactReport]:
        """What the contact did up to ``t`` (call at ``next_deadline()``; any time is safe)."""
        if self._burst_start is None or self._raw is None:
            return []
        reports: list[ContactReport] = []
        held_from = self._last_edge
        if t >= held_from + self.settle_s:  # the form of next_deadline(): no rounding gap
            began = self._burst_start
            self._burst_start = None
            if self._unstable:
                self._unstable = False
                reports.append(ContactSettled(held_from + self.settle_s))
                began = held_from
            if self._raw != self._stable:
                self._stable = self._raw
                reports.append(ContactChange(began, self._raw))
        elif not self._unstable and t >= self._burst_start + self.unstable_after_s:
            self._unstable = True
            reports.append(ContactUnstable(self._burst_start + self.unstable_after_s))
        return reports

    def next_deadline(self) -> float | None:
        """When ``poll`` can next report something (None: only an edge can change anything)."""
        if self._burst_start is None:
            return None
        settle = self._last_edge + self.settle_s
        if self._unstable:
            return settle
        return min(settle, self._burst_start + self.unstable_after_s)
