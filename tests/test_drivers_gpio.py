"""GPIO drivers at the ``gpiod`` (libgpiod v2) boundary.

This machine has no GPIO chip, so the chip side is the stand-in of ``tests/gpiod_standin.py``
(gpiod v2's request/event API over the real ``LineSettings`` and enums, a real pipe as the
request's fd). The real bindings are also called on a missing chip.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import gpiod
import pytest
from gpiod.line import Bias, Clock, Direction, Edge, Value

from edge_agent.drivers.base import SourceError
from edge_agent.drivers.gpio import GpioInput, GpioOutput, LineEdge
from edge_agent.drivers.url import parse_device_url
from tests.gpiod_standin import FakeGpiod

DOOR = "gpio:///dev/gpiochip0?line=17&edge=both&bias=pull_up&debounce=10ms&active_low=true"
LIGHT = "gpio:///dev/gpiochip0?line=27&direction=output&initial=1"


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
