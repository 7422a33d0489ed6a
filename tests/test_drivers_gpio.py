"""GPIO drivers at the ``gpiod`` (libgpiod v2) boundary.

This machine has no GPIO chip, so the chip side is a stand-in: ``FakeGpiod`` keeps gpiod v2's
request/event API (``request_lines`` → a request with ``fd``, ``wait_edge_events``,
``read_edge_events``, ``get_value``, ``set_value``, ``release``) and takes the real
``gpiod.LineSettings`` and enums, so the settings the driver builds are checked by the real
bindings. Its ``fd`` is a real pipe that becomes readable when an edge is queued, as the
kernel's line request does: the driver wakes on the event loop, it does not poll. The real
bindings are also called on a missing chip.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import gpiod
import pytest
from gpiod.line import Bias, Clock, Direction, Edge, Value

from edge_agent.drivers.base import SourceError
from edge_agent.drivers.gpio import GpioInput, GpioOutput, LineEdge
from edge_agent.drivers.url import parse_device_url

DOOR = "gpio:///dev/gpiochip0?line=17&edge=both&bias=pull_up&debounce=10ms&active_low=true"
LIGHT = "gpio:///dev/gpiochip0?line=27&direction=output&initial=1"


@dataclass
class FakeRequest:
    """A line request as gpiod v2 returns it; ``push`` is what the kernel would do."""

    path: str
    consumer: str | None
    config: dict[Any, Any]
    value: Value = Value.INACTIVE
    released: bool = False
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
                line_offset=self.offsets[0],
                global_seqno=self._seq,
                line_seqno=self._seq,
            )
        )
        os.write(self._w, b"e")

    def wait_edge_events(self, timeout: timedelta | float | None = None) -> bool:
        self.waits.append(timeout)
        return bool(self._queue)

    def read_edge_events(self, max_events: int | None = None) -> list[Any]:
        events, self._queue = self._queue, []
        while True:  # the kernel's fd is readable exactly while events are queued
            try:
                os.read(self._r, 4096)
            except BlockingIOError:
                break
        return events

    def get_value(self, line: Any) -> Value:
        return self.value

    def set_value(self, line: Any, value: Value) -> None:
        self.written.append((line, value))

    def release(self) -> None:
        self.released = True
        os.close(self._r)
        os.close(self._w)


class FakeGpiod:
    """The ``gpiod`` module with a stand-in chip (module docstring)."""

    line = gpiod.line
    LineSettings = gpiod.LineSettings
    EdgeEvent = gpiod.EdgeEvent

    def __init__(self, *, busy: bool = False) -> None:
        self.requests: list[FakeRequest] = []
        self.busy = busy

    def request_lines(
        self,
        path: str,
        config: dict[Any, Any],
        consumer: str | None = None,
        event_buffer_size: int | None = None,
        output_values: dict[Any, Value] | None = None,
    ) -> FakeRequest:
        if self.busy:
            raise OSError(16, "Device or resource busy")
        request = FakeRequest(path, consumer, config)
        self.requests.append(request)
        return request


async def test_input_edges_carry_the_kernel_timestamps_in_order() -> None:
    fake = FakeGpiod()
    door = GpioInput(parse_device_url(DOOR), gpiod=fake)  # type: ignore[arg-type]
    await door.open()
    try:
        (request,) = fake.requests
        assert request.path == "/dev/gpiochip0" and request.consumer == "edge-agent"
        settings = request.config[17]
        assert isinstance(settings, gpiod.LineSettings)
        assert settings.direction == Direction.INPUT
        assert settings.edge_detection == Edge.BOTH
        assert settings.bias == Bias.PULL_UP
        assert settings.active_low is True
        assert settings.debounce_period == timedelta(milliseconds=10)
        assert settings.event_clock == Clock.MONOTONIC
        assert door.value is False

        pending = asyncio.create_task(door.read())
        await asyncio.sleep(0.05)
        assert not pending.done()  # nothing queued: the reader waits on the fd
        request.push(True, 1_000_000_123)
        request.push(False, 1_250_000_456)
        first = await asyncio.wait_for(pending, 2)
        second = await asyncio.wait_for(door.read(), 2)
        assert first == LineEdge("17", True, 1_000_000_123, 1)
        assert second == LineEdge("17", False, 1_250_000_456, 2)
        assert door.value is False
        assert all(t == 0 for t in request.waits)  # never a blocking wait on the loop
    finally:
        door.close()
    assert request.released
    door.close()  # twice is fine


async def test_output_line_is_driven_by_the_agent() -> None:
    fake = FakeGpiod()
    light = GpioOutput(parse_device_url(LIGHT), gpiod=fake)  # type: ignore[arg-type]
    await light.open()
    (request,) = fake.requests
    settings = request.config[27]
    assert settings.direction == Direction.OUTPUT and settings.output_value == Value.ACTIVE
    light.set(False)
    light.set(True)
    assert request.written == [(27, Value.INACTIVE), (27, Value.ACTIVE)]
    assert light.value is True
    light.close()
    assert request.released
    with pytest.raises(SourceError, match="not open"):
        light.set(False)


async def test_a_busy_line_and_a_missing_chip_are_source_errors() -> None:
    busy = GpioInput(parse_device_url(DOOR), gpiod=FakeGpiod(busy=True))  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="busy"):
        await busy.open()
    # the real bindings, on a chip this machine does not have
    missing = GpioInput(parse_device_url("gpio:///dev/gpiochip-none?line=3"))
    with pytest.raises(SourceError, match="gpio:/dev/gpiochip-none:3: cannot request the line"):
        await missing.open()


def test_line_names_directions_and_bad_urls() -> None:
    named = parse_device_url("gpio:///dev/gpiochip1?line=DOOR_1&edge=falling")
    assert (named.line, named.edge, named.output) == ("DOOR_1", "falling", False)
    with pytest.raises(ValueError, match="not an input"):
        GpioInput(parse_device_url(LIGHT))
    with pytest.raises(ValueError, match="not an output"):
        GpioOutput(parse_device_url(DOOR))
    for url, message in [
        ("gpio:///dev/gpiochip0", "no line"),
        ("gpio:///dev/gpiochip0?line=1&edge=up", "edge must be one of"),
        ("gpio:///dev/gpiochip0?line=1&debounce=soon", "debounce must be a duration"),
        ("gpio:///dev/gpiochip0?line=1&debounce=5s", "above 1s"),
        ("gpio:///dev/gpiochip0?line=1&direction=output&debounce=1ms", "for input lines"),
        ("gpio:///dev/gpiochip0?line=1&active_low=maybe", "true or false"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_device_url(url)
