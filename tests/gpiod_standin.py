"""A stand-in for a GPIO chip at the ``gpiod`` (libgpiod v2) boundary, shared by the tests.

This machine has no GPIO chip, so the chip side is a stand-in: ``FakeGpiod`` keeps gpiod v2's
request/event API (``request_lines`` -> a request with ``fd``, ``wait_edge_events``,
``read_edge_events``, ``get_value``, ``set_value``, ``release``) and takes the real
``gpiod.LineSettings`` and enums, so the settings the drivers build are checked by the real
bindings. A request's ``fd`` is a real pipe that becomes readable when an edge is queued, as
the kernel's line request does: a driver wakes on the event loop, it does not poll.

``push(rising, timestamp_ns)`` is what the kernel does at an interrupt. ``FakeGpiod.unplug()``
is a chip going away (a USB GPIO expander pulled out): the kernel wakes the requests' readers
and every call on them fails with ENODEV, and new requests fail until ``plug()``.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import gpiod
from gpiod.line import Value

__all__ = ["FakeGpiod", "FakeRequest"]


@dataclass
class FakeRequest:
    """A line request as gpiod v2 returns it; ``push`` is what the kernel would do."""

    path: str
    consumer: str | None
    config: dict[Any, Any]
    value: Value = Value.INACTIVE
    released: bool = False
    gone: bool = False
    waits: list[Any] = field(default_factory=list)
    written: list[tuple[Any, Value]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._queue: list[Any] = []
        self._seq = 0
        self.offsets = [k for k in self.config if isinstance(k, int)]

    @property
    def fd(self) -> int:
        return self._r

    def push(self, rising: bool, timestamp_ns: int) -> None:
        self._seq += 1
        kind = gpiod.EdgeEvent.Type.RISING_EDGE if rising else gpiod.EdgeEvent.Type.FALLING_EDGE
        self._queue.append(
            SimpleNamespace(
                event_type=kind,
                timestamp_ns=timestamp_ns,
                line_offset=self.offsets[0] if self.offsets else 0,
                global_seqno=self._seq,
                line_seqno=self._seq,
            )
        )
        self.value = Value.ACTIVE if rising else Value.INACTIVE
        os.write(self._w, b"e")

    def vanish(self) -> None:
        """The chip went away: wake the reader, fail every later call."""
        self.gone = True
        if not self.released:
            os.write(self._w, b"x")

    def _check(self) -> None:
        if self.gone:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    def wait_edge_events(self, timeout: timedelta | float | None = None) -> bool:
        self._check()
        self.waits.append(timeout)
        return bool(self._queue)

    def read_edge_events(self, max_events: int | None = None) -> list[Any]:
        self._check()
        events, self._queue = self._queue, []
        while True:  # the kernel's fd is readable exactly while events are queued
            try:
                os.read(self._r, 4096)
            except BlockingIOError:
                break
        return events

    def get_value(self, line: Any) -> Value:
        self._check()
        return self.value

    def set_value(self, line: Any, value: Value) -> None:
        self._check()
        self.written.append((line, value))
        self.value = value

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        os.close(self._r)
        os.close(self._w)


class FakeGpiod:
    """The ``gpiod`` module with a stand-in chip (module docstring)."""

    line = gpiod.line
    LineSettings = gpiod.LineSettings
    EdgeEvent = gpiod.EdgeEvent

    def __init__(self, *, busy: bool = False, value: Value = Value.INACTIVE) -> None:
        self.requests: list[FakeRequest] = []
        self.busy = busy
        self.present = True
        self.value = value
        """The level a newly requested input line reads."""
        self.refused = 0

    def request_lines(
        self,
        path: str,
        config: dict[Any, Any],
        consumer: str | None = None,
        event_buffer_size: int | None = None,
        output_values: dict[Any, Value] | None = None,
    ) -> FakeRequest:
        if not self.present:
            self.refused += 1
            raise OSError(errno.ENOENT, f"{os.strerror(errno.ENOENT)}: {path}")
        if self.busy:
            raise OSError(16, "Device or resource busy")
        request = FakeRequest(path, consumer, config, value=self.value)
        self.requests.append(request)
        return request

    def unplug(self) -> None:
        """The chip goes away: its live requests fail, new ones are refused."""
        self.present = False
        for request in self.requests:
            if not request.released:
                request.vanish()

    def plug(self) -> None:
        """The chip is back."""
        self.present = True

    def live(self) -> list[FakeRequest]:
        """The requests not released yet."""
        return [r for r in self.requests if not r.released]
