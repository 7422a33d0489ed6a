"""GPIO lines through the kernel's GPIO character device (libgpiod v2), for dock sensors and
signals (DESIGN §8): no polling, no sysfs.

``GpioInput`` requests one line with edge detection (``edge``, ``bias``, ``debounce``,
``active_low`` from the URL); the kernel queues each edge with its own timestamp, the request's
file descriptor becomes readable and the event loop wakes the reader: ``read()`` returns
``LineEdge(line, rising, timestamp_ns, seqno)``, ``timestamp_ns`` taken by the kernel at the
interrupt (CLOCK_MONOTONIC by default, so a door's open time survives a clock step; ``realtime``
asks for CLOCK_REALTIME). ``value`` is the line's level, read at open and kept by the edges.

``GpioOutput`` requests one line as an output (``initial`` level) that the agent drives with
``set(active)``, a stack light or a buzzer.

The ``gpiod`` module (the v2 Python bindings) is imported when the first line opens, or
injected (``gpiod=``): the tests drive the drivers through a stand-in with the same
request/event API. A chip that cannot be opened, a line that does not exist or is taken raise
``SourceError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

from edge_agent.drivers.base import SourceError
from edge_agent.drivers.url import DeviceUrl

__all__ = ["CONSUMER", "GpioInput", "GpioOutput", "LineEdge", "line_settings", "load_gpiod"]

CONSUMER = "edge-agent"


@dataclass(frozen=True, slots=True)
class LineEdge:
    """One edge of an input line, as the kernel stamped it."""

    line: str
    rising: bool
    timestamp_ns: int
    seqno: int


def load_gpiod(name: str) -> ModuleType:
    """The ``gpiod`` v2 bindings (raises SourceError naming ``name`` when absent or v1)."""
    try:
        import gpiod
    except ImportError as exc:
        raise SourceError(name, f"the gpiod package (libgpiod v2) is missing: {exc}") from exc
    if not hasattr(gpiod, "request_lines"):
        raise SourceError(name, "the gpiod package is libgpiod v1; v2 (gpiod>=2) is needed")
    return gpiod


def _line_key(line: str) -> int | str:
    return int(line) if line.isdigit() else line


def line_settings(gpiod: Any, spec: DeviceUrl, *, realtime: bool = False) -> Any:
    """The ``gpiod.LineSettings`` a URL asks for."""
    line = gpiod.line
    if spec.output:
        return gpiod.LineSettings(
            direction=line.Direction.OUTPUT,
            active_low=spec.active_low,
            output_value=line.Value.ACTIVE if spec.initial else line.Value.INACTIVE,
        )
    edge = {"rising": line.Edge.RISING, "falling": line.Edge.FALLING, "both": line.Edge.BOTH}
    bias = {
        "as_is": line.Bias.AS_IS,
        "pull_up": line.Bias.PULL_UP,
        "pull_down": line.Bias.PULL_DOWN,
        "disabled": line.Bias.DISABLED,
    }
    return gpiod.LineSettings(
        direction=line.Direction.INPUT,
        edge_detection=edge[spec.edge],
        bias=bias[spec.bias],
        active_low=spec.active_low,
        debounce_period=timedelta(seconds=spec.debounce_s),
        event_clock=line.Clock.REALTIME if realtime else line.Clock.MONOTONIC,
    )


class _Line:
    """One requested line (shared by input and output)."""

    def __init__(self, spec: DeviceUrl, gpiod: ModuleType | None, consumer: str) -> None:
        if spec.kind != "gpio":
            raise ValueError(f"{spec.describe()}: not a GPIO URL")
        self.spec = spec
        self.name = spec.describe()
        self.consumer = consumer
        self._gpiod: Any = gpiod
        self._request: Any = None

    def _open(self, settings_of: Any) -> Any:
        if self._gpiod is None:
            self._gpiod = load_gpiod(self.name)
        gpiod = self._gpiod
        key = _line_key(self.spec.line)
        try:
            self._request = gpiod.request_lines(
                self.spec.path,
                consumer=self.consumer,
                config={key: settings_of(gpiod)},
            )
        except (OSError, ValueError) as exc:
            # OSError: no chip, line taken (EBUSY); ValueError: no line of that name
            raise SourceError(self.name, f"cannot request the line: {exc}") from exc
        return self._request

    def _offset(self) -> int | str:
        offsets = getattr(self._request, "offsets", None)
        return offsets[0] if offsets else _line_key(self.spec.line)

    def _release(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            with contextlib.suppress(Exception):
                request.release()


class GpioInput(_Line):
    """An input line with kernel-stamped edge events (module docstring)."""

    def __init__(
        self,
        spec: DeviceUrl,
        *,
        gpiod: ModuleType | None = None,
        consumer: str = CONSUMER,
        realtime: bool = False,
    ) -> None:
        super().__init__(spec, gpiod, consumer)
        if spec.output:
            raise ValueError(f"{self.name}: an output line is not an input")
        self.realtime = realtime
        self.value: bool | None = None
        self._events: deque[LineEdge] = deque()
        self._ready = asyncio.Event()
        self._fd: int | None = None

    async def open(self) -> None:
        """Request the line, read its level and start watching its edges."""
        request = self._open(lambda g: line_settings(g, self.spec, realtime=self.realtime))
        try:
            self.value = request.get_value(self._offset()) == self._gpiod.line.Value.ACTIVE
            self._fd = request.fd
            asyncio.get_running_loop().add_reader(self._fd, self._ready.set)
        except (OSError, ValueError) as exc:
            self.close()
            raise SourceError(self.name, f"cannot watch the line: {exc}") from exc

    async def read(self) -> LineEdge:
        """The next edge (in the kernel's order); ``value`` follows it."""
        while not self._events:
            request = self._request
            if request is None:
                raise SourceError(self.name, "not open")
            self._ready.clear()
            try:
                # wait_edge_events(0) asks without blocking: the loop already said it is readable
                if request.wait_edge_events(0):
                    rising = self._gpiod.EdgeEvent.Type.RISING_EDGE
                    for ev in request.read_edge_events():
                        self._events.append(
                            LineEdge(
                                self.spec.line,
                                ev.event_type == rising,
                                ev.timestamp_ns,
                                ev.line_seqno,
                            )
                        )
                    continue
            except OSError as exc:
                raise SourceError(self.name, f"read failed: {exc}") from exc
            await self._ready.wait()
        edge = self._events.popleft()
        self.value = edge.rising
        return edge

    def close(self) -> None:
        """Stop watching and release the line; safe to call twice."""
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        self._release()


class GpioOutput(_Line):
    """An output line the agent drives (module docstring)."""

    def __init__(
        self, spec: DeviceUrl, *, gpiod: ModuleType | None = None, consumer: str = CONSUMER
    ) -> None:
        super().__init__(spec, gpiod, consumer)
        if not spec.output:
            raise ValueError(f"{self.name}: an input line is not an output (direction=output)")
        self.value = spec.initial

    async def open(self) -> None:
        """Request the line at its ``initial`` level."""
        self._open(lambda g: line_settings(g, self.spec))
        self.value = self.spec.initial

    def set(self, active: bool) -> None:
        """Drive the line active (True) or inactive."""
        request = self._request
        if request is None:
            raise SourceError(self.name, "not open")
        value = self._gpiod.line.Value
        try:
            request.set_value(self._offset(), value.ACTIVE if active else value.INACTIVE)
        except OSError as exc:
            raise SourceError(self.name, f"write failed: {exc}") from exc
        self.value = active

    def close(self) -> None:
        """Release the line (the kernel keeps or resets its level, per the chip)."""
        self._release()
