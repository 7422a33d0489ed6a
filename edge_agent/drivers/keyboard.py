"""A keyboard wedge through evdev (``/dev/input/by-id/...-event-kbd``), grabbed exclusively.

A scanner that types its codes is a keyboard: with the grab (the default) its keystrokes reach
only the agent, never a console or a login prompt. The source yields key events as
``KeyEvent(code, value, time_s)`` (value 1 press, 0 release, 2 autorepeat); turning them into
text is the domain's keymap. ``evdev`` is imported when the first keyboard opens (or injected,
for tests); a device that cannot be opened or grabbed, or goes away, raises ``SourceError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edge_agent.drivers.base import SourceError

__all__ = ["KeyEvent", "KeyboardSource"]


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One key event: ``linux/input-event-codes.h`` key number, value, kernel time (seconds)."""

    code: int
    value: int
    time_s: float


class KeyboardSource:
    """An evdev keyboard as an async iterator of ``KeyEvent`` (module docstring)."""

    def __init__(self, path: str, *, grab: bool = True, evdev: ModuleType | None = None) -> None:
        self.name = f"evdev:{path}"
        self.path = path
        self.grab = grab
        self._evdev = evdev
        self._device: Any = None

    async def open(self) -> None:
        """Open the device and grab it when asked to."""
        if self._evdev is None:
            try:
                import evdev  # optional: only a keyboard-wedge URL needs it
            except ImportError as exc:
                raise SourceError(self.name, f"the evdev package is missing: {exc}") from exc
            self._evdev = evdev
        try:
            self._device = self._evdev.InputDevice(self.path)
        except OSError as exc:
            raise SourceError(self.name, f"cannot open: {exc.strerror or exc}") from exc
        if self.grab:
            try:
                self._device.grab()  # exclusive: the keystrokes never reach a console
            except OSError as exc:
                self.close()
                raise SourceError(self.name, f"cannot grab (in use?): {exc}") from exc

    async def events(self) -> AsyncIterator[KeyEvent]:
        """Key events as they come (other event types are skipped)."""
        if self._device is None or self._evdev is None:
            raise SourceError(self.name, "not open")
        ev_key = self._evdev.ecodes.EV_KEY
        try:
            async for event in self._device.async_read_loop():
                if event.type == ev_key:
                    yield KeyEvent(event.code, event.value, event.sec + event.usec / 1e6)
        except OSError as exc:
            raise SourceError(self.name, f"read failed (unplugged?): {exc}") from exc
        raise SourceError(self.name, "the device went away")

    def close(self) -> None:
        """Release the grab and close the device; safe to call twice."""
        device, self._device = self._device, None
        if device is None:
            return
        if self.grab:
            with contextlib.suppress(OSError):
                device.ungrab()
        with contextlib.suppress(OSError):
            device.close()
