"""A dock's signal pattern, pure: which of green, red and buzzer are on, at which times.

The engine gives cues (``green`` on a verified parcel, ``red`` on a misload or an unknown
parcel, ``off`` when the dock goes idle); ``SignalPattern`` turns the last cue into a piecewise
constant schedule of the three lines:

- ``green`` at t0: green on for ``green_hold_s``, then all off;
- ``red`` at t0: red on for ``red_hold_s``, the buzzer on for ``beeps`` beeps of ``beep_s``
  every ``beep_s + gap_s`` from t0 (three 150 ms beeps by default), then all off;
- ``off``: all off at once.

A new cue replaces the schedule, with one exception: a ``green`` while a red is still showing is
dropped, so a misload is never hidden by the next parcel's good read (the worker must see it).

A driver sets ``levels_at(now)`` and sleeps until ``next_change(now)`` or the next cue: no
polling. Times are seconds on the caller's clock.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal

__all__ = ["OFF", "Color", "Levels", "SignalPattern"]

Color = Literal["green", "red", "off"]


@dataclass(frozen=True, slots=True)
class Levels:
    """The three lines' levels (True: active)."""

    green: bool = False
    red: bool = False
    buzzer: bool = False


OFF = Levels()


class SignalPattern:
    """The schedule of one dock's signal (module docstring)."""

    def __init__(
        self,
        green_hold_s: float = 2.0,
        red_hold_s: float = 5.0,
        *,
        beeps: int = 3,
        beep_s: float = 0.15,
        gap_s: float = 0.15,
    ) -> None:
        if min(green_hold_s, red_hold_s, beep_s) <= 0 or gap_s < 0 or beeps < 0:
            raise ValueError("holds and beep_s must be positive, gap_s and beeps not negative")
        self.green_hold_s = green_hold_s
        self.red_hold_s = red_hold_s
        self.beeps = beeps
        self.beep_s = beep_s
        self.gap_s = gap_s
        self.color: Color = "off"
        self._times: list[float] = []  # change times, increasing
        self._levels: list[Levels] = []  # the levels from each change time on

    def cue(self, color: Color, t: float) -> bool:
        """Show ``color`` from ``t``; False when the cue was dropped (green under a red)."""
        if color == "green" and self.color == "red" and self.levels_at(t).red:
            return False
        self.color = color
        if color == "off":
            self._times, self._levels = [t], [OFF]
        elif color == "green":
            self._times = [t, t + self.green_hold_s]
            self._levels = [Levels(green=True), OFF]
        elif color == "red":
            self._red(t)
        else:
            raise ValueError(f"unknown signal colour {color!r}")
        return True

    def _red(self, t: float) -> None:
        end = t + self.red_hold_s
        edges: dict[float, bool] = {}  # buzzer edges within the red
        period = self.beep_s + self.gap_s
        for i in range(self.beeps):
            on = t + i * period
            if on >= end:
                break
            off = min(on + self.beep_s, end)
            edges[on] = True
            edges.setdefault(off, False)  # a zero gap: the next beep's start wins
        times, levels = [t], [Levels(red=True, buzzer=edges.pop(t, False))]
        for at in sorted(edges):
            if at < end:
                times.append(at)
                levels.append(Levels(red=True, buzzer=edges[at]))
        times.append(end)
        levels.append(OFF)
        self._times, self._levels = times, levels

    def levels_at(self, t: float) -> Levels:
        """The lines' levels at ``t``."""
        i = bisect_right(self._times, t)
        return OFF if i == 0 else self._levels[i - 1]

    def next_change(self, t: float) -> float | None:
        """The first time after ``t`` at which a level changes (None: none scheduled)."""
        i = bisect_right(self._times, t)
        current = OFF if i == 0 else self._levels[i - 1]
        for at, levels in zip(self._times[i:], self._levels[i:], strict=True):
            if levels != current:
                return at
        return None
