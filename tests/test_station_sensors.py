"""The dock drivers: GPIO contacts and the signal through the gpiod stand-in, a distance sensor
over a real pty.

The clocks are fake (``FakeClock``: the monotonic clock the kernel stamps edges with, and a UTC
clock tied to it), so every observation's time is known exactly: an edge stamped at M0 + x is
an observation at BASE + x. The drivers' waits run on the event loop; the tests wait for what
the drivers do (an observation, a health state) with a generous deadline, never for a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tty
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from gpiod.line import Value

from edge_agent.platform.health import HealthRegistry
from edge_agent.station.sensors import (
    ContactKind,
    DockSignal,
    SensorClock,
    component_name,
    run_contact,
    run_distance_bay,
)
from edge_agent.station.signal import SignalPattern
from tests.gpiod_standin import FakeGpiod, FakeRequest

M0 = 5_000_000_000_000  # ns on the monotonic clock when the tests start (uptime ~83 min)
BASE = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
CHIP = "gpio:///dev/gpiochip0"
DOOR = f"{CHIP}?line=17&bias=pull_up"

Obs = tuple[ContactKind, str, bool, datetime]


class FakeClock:
    """Monotonic ns set by the test; UTC = BASE + (monotonic - M0)."""

    def __init__(self) -> None:
        self.ns = M0

    def at(self, seconds: float) -> None:
        self.ns = M0 + round(seconds * 1e9)

    def monotonic_ns(self) -> int:
        return self.ns

    def utc_now(self) -> datetime:
        return BASE + timedelta(microseconds=(self.ns - M0) // 1000)

    def sensor(self) -> SensorClock:
        return SensorClock(self.utc_now, self.monotonic_ns)


def stamp(seconds: float) -> int:
    """A kernel timestamp ``seconds`` after M0."""
    return M0 + round(seconds * 1e9)


def utc(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


async def until(pred: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 10
    while not pred():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


class Collector:
    def __init__(self) -> None:
        self.obs: list[Obs] = []

    async def __call__(self, kind: ContactKind, dock: str, state: bool, t: datetime) -> None:
        self.obs.append((kind, dock, state, t))


def transitions(caplog: pytest.LogCaptureFixture, component: str, state: str) -> int:
    """How many times health logged ``component`` entering ``state``."""
    return sum(
        r.getMessage().startswith((f"{component}: {state}", f"{component} recovered: {state}"))
        for r in caplog.records
    )


@pytest.fixture
def health_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="edge_agent.platform.health")
    return caplog


def live(fake: FakeGpiod) -> FakeRequest:
    (request,) = fake.live()
    return request


async def test_door_edges_in_observations_out_with_their_utc_times_and_an_unplug(
    health_log: pytest.LogCaptureFixture,
) -> None:
    fake, clock, seen, health = FakeGpiod(), FakeClock(), Collector(), HealthRegistry()
    component = component_name("dock-1", "door")
    task = asyncio.create_task(
        run_contact(
            "dock-1",
            "door",
            DOOR,
            seen,
            health,
            clock.sensor(),
            settle_s=0.05,
            unstable_after_s=1.0,
            gpiod=fake,  # type: ignore[arg-type]
            backoff_base=0.01,
        )
    )
    try:
        await until(lambda: health.state(component) == "ok", "the line opened")
        settings = live(fake).config[17]
        assert settings.bias.name == "PULL_UP"
        # the level read at open is the first observation, once it held
        clock.at(0.1)
        await until(lambda: seen.obs, "the first level")
        assert seen.obs == [("door", "dock-1", False, utc(0.0))]

        # the door opens with a bounce: one observation, at the first edge's kernel time
        clock.at(1.010)
        request = live(fake)
        for rising, at in [(True, 1.000), (False, 1.002), (True, 1.004)]:
            request.push(rising, stamp(at))
        await asyncio.sleep(0.02)
        assert len(seen.obs) == 1  # not settled yet on the driver's clock
        clock.at(1.2)
        await until(lambda: len(seen.obs) == 2, "the door opened")
        assert seen.obs[1] == ("door", "dock-1", True, utc(1.000))

        # unplugged: disconnected once, however many reopen attempts fail
        fake.unplug()
        await until(lambda: health.state(component) == "disconnected", "the unplug")
        await until(lambda: fake.refused >= 5, "reopen attempts")
        assert transitions(health_log, component, "disconnected") == 1
        assert task.done() is False

        # back, with the door closed meanwhile: reported at the reopen (when it was seen)
        fake.value = Value.INACTIVE
        clock.at(5.0)
        fake.plug()
        await until(lambda: health.state(component) == "ok", "the reopen")
        clock.at(5.1)
        await until(lambda: len(seen.obs) == 3, "the level after the reopen")
        assert seen.obs[2] == ("door", "dock-1", False, utc(5.0))
        assert transitions(health_log, component, "ok") == 1  # the recovery, once
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert fake.live() == []  # cancelled: the line is released


async def test_a_bay_contact_chattering_is_unstable_once_then_ok(
    health_log: pytest.LogCaptureFixture,
) -> None:
    fake, clock, seen, health = FakeGpiod(), FakeClock(), Collector(), HealthRegistry()
    component = component_name("dock-2", "bay")
    task = asyncio.create_task(
        run_contact(
            "dock-2",
            "bay",
            f"{CHIP}?line=22",
            seen,
            health,
            clock.sensor(),
            settle_s=0.05,
            unstable_after_s=1.0,
            gpiod=fake,  # type: ignore[arg-type]
        )
    )
    try:
        await until(lambda: health.state(component) == "ok", "the line opened")
        clock.at(0.1)
        await until(lambda: seen.obs, "the first level")
        # a contact half made: edges every 20 ms for 3 s, ending occupied (active)
        clock.at(2.0)
        request = live(fake)
        for i in range(150):
            request.push(i % 2 == 0, stamp(10.0 + i * 0.02))
        await until(lambda: health.state(component) == "unstable", "unstable")
        assert len(seen.obs) == 1
        clock.at(20.0)
        request.push(True, stamp(13.5))  # the chatter is over, the contact made for good
        await until(lambda: len(seen.obs) == 2, "the settled level")
        assert seen.obs[1] == ("bay", "dock-2", True, utc(13.5))
        assert health.state(component) == "ok"
        assert transitions(health_log, component, "unstable") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def lines_of(fake: FakeGpiod) -> dict[int, FakeRequest]:
    return {r.offsets[0]: r for r in fake.live()}


def level(request: FakeRequest) -> bool:
    return bool(request.written) and request.written[-1][1] == Value.ACTIVE


async def test_the_signal_follows_its_pattern_and_survives_an_unplug(
    health_log: pytest.LogCaptureFixture,
) -> None:
    fake, clock, health = FakeGpiod(), FakeClock(), HealthRegistry()
    signal = DockSignal(
        "dock-1",
        f"{CHIP}?line=23&direction=output",
        f"{CHIP}?line=24&direction=output",
        f"{CHIP}?line=25&direction=output",
        health,
        pattern=SignalPattern(green_hold_s=2.0, red_hold_s=5.0),
        monotonic_ns=clock.monotonic_ns,
        gpiod=fake,  # type: ignore[arg-type]
        backoff_base=0.01,
    )
    component = component_name("dock-1", "signal")
    task = asyncio.create_task(signal.run())
    try:
        await until(lambda: health.state(component) == "ok", "the lines opened")
        green, red, buzzer = (lines_of(fake)[n] for n in (23, 24, 25))
        assert all(r.config[n].direction.name == "OUTPUT" for n, r in lines_of(fake).items())

        # a misload: red and the buzzer are on before cue() returns
        clock.at(1.0)
        assert signal.cue("red")
        assert (level(green), level(red), level(buzzer)) == (False, True, True)
        clock.at(1.2)  # the first beep is over
        await until(lambda: not level(buzzer), "the first beep ended")
        assert level(red)
        clock.at(1.35)
        await until(lambda: level(buzzer), "the second beep")
        clock.at(1.5)
        await until(lambda: not level(buzzer), "the second beep ended")
        clock.at(1.65)
        await until(lambda: level(buzzer), "the third beep")
        clock.at(7.0)
        await until(lambda: not level(red), "the red ended")
        assert not level(buzzer)
        assert sum(v == Value.ACTIVE for _, v in buzzer.written) == 3  # three beeps

        signal.cue("green")
        assert level(green) and not level(red)
        clock.at(9.5)
        await until(lambda: not level(green), "the green ended")

        # unplugged: the next cue fails to write, the runner reopens when the chip is back
        fake.unplug()
        signal.cue("red")
        await until(lambda: health.state(component) == "disconnected", "the unplug")
        await until(lambda: fake.refused >= 3, "reopen attempts")
        assert transitions(health_log, component, "disconnected") == 1
        fake.plug()
        await until(lambda: health.state(component) == "ok", "the reopen")
        # the pattern went on meanwhile: the red asked for at 9.5 is still due
        new_red = lines_of(fake)[24]
        assert level(new_red)
        signal.cue("off")
        assert not level(new_red) and not level(lines_of(fake)[25])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert fake.live() == []


def tfmini(dist_cm: int, strength: int = 1000) -> bytes:
    body = bytes([0x59, 0x59, dist_cm & 0xFF, dist_cm >> 8, strength & 0xFF, strength >> 8, 0, 9])
    return body + bytes([sum(body) % 256])


async def test_a_distance_sensor_on_a_pty_with_garbage_and_a_silence(
    health_log: pytest.LogCaptureFixture,
) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)  # as a USB-serial port is: bytes pass untouched
    clock, seen, health = FakeClock(), Collector(), HealthRegistry()
    component = component_name("dock-3", "bay")
    task = asyncio.create_task(
        run_distance_bay(
            "dock-3",
            f"serial://{os.ttyname(slave)}?baud=115200",
            "tfmini",
            seen,
            health,
            clock.sensor(),
            occupied_below=2.0,
            free_above=2.5,
            hold_s=1.0,
            stale_after_s=5.0,
            backoff_base=0.01,
        )
    )
    marks = 0

    def send(data: bytes, tail: bytes = b"") -> None:
        # each batch carries a weak frame (no reading, no effect on the bay) before any frame cut
        # in two: once it is counted, the readings before it were read at the clock's time
        nonlocal marks
        os.write(master, data + tfmini(999, strength=20) + tail)
        marks += 1

    def counted() -> bool:
        return health.counters(component).get("no_reading", 0) >= marks

    try:
        await until(lambda: health.state(component) == "ok", "the port opened")
        send(b"\xa5\x5a" + tfmini(320) + b"\x00\x13" + tfmini(321))  # mid-stream, line noise
        await until(counted, "the first batch")
        clock.at(1.0)
        send(tfmini(320))
        await until(lambda: seen.obs, "the bay is free")
        assert seen.obs == [("bay", "dock-3", False, utc(0.0))]

        # a van backs in: readings in the band first, then below; a corrupt frame on the way
        clock.at(2.0)
        corrupt = bytearray(tfmini(150))
        corrupt[8] ^= 0xFF
        send(tfmini(230) + bytes(corrupt), tail=tfmini(150)[:4])  # ... and a frame cut in two
        await until(counted, "the band batch")
        clock.at(2.5)
        send(tfmini(150)[4:] + tfmini(140))
        await until(counted, "the first van batch")
        clock.at(3.5)
        send(tfmini(140))
        await until(lambda: len(seen.obs) == 2, "the bay is occupied")
        assert seen.obs[1] == ("bay", "dock-3", True, utc(2.5))
        counters = health.counters(component)
        assert counters["bad_frames"] >= 1 and counters["garbage"] >= 4
        assert counters["no_reading"] == marks

        # the sensor is blinded (frames, but none with a reading), then silent: stale once, and
        # no change invented
        clock.at(8.4)
        send(b"")
        await until(counted, "the blind frame")
        clock.at(9.0)
        await until(lambda: health.state(component) == "stale", "stale")
        clock.at(30.0)
        await asyncio.sleep(0.05)
        assert transitions(health_log, component, "stale") == 1
        assert len(seen.obs) == 2
        send(tfmini(140))
        await until(lambda: health.state(component) == "ok", "readings again")

        # unplugged: the port fails, disconnected once while it cannot be reopened
        os.close(master)
        master = -1
        await until(lambda: health.state(component) == "disconnected", "the unplug")
        assert transitions(health_log, component, "disconnected") == 1
        assert len(seen.obs) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if master >= 0:
            os.close(master)
        os.close(slave)


async def test_drivers_refuse_the_wrong_kind_of_device() -> None:
    clock, seen, health = FakeClock(), Collector(), HealthRegistry()
    with pytest.raises(ValueError, match="a door contact is a GPIO input line"):
        await run_contact("d", "door", "/dev/ttyUSB0", seen, health, clock.sensor())
    with pytest.raises(ValueError, match="a distance sensor is a byte source"):
        await run_distance_bay("d", f"{CHIP}?line=1", "tfmini", seen, health, clock.sensor())
    with pytest.raises(ValueError, match="the red signal is a GPIO output line"):
        DockSignal("d", f"{CHIP}?line=1&direction=output", f"{CHIP}?line=2", None, health)


def test_kernel_stamps_become_utc_through_the_monotonic_clock() -> None:
    clock = FakeClock()
    clock.at(100.0)
    sensor = clock.sensor()
    assert sensor.to_utc(stamp(99.25) / 1e9) == utc(99.25)
    assert sensor.to_utc(stamp(100.0) / 1e9) == utc(100.0)
    # a UTC clock stepped by an hour moves the observation by the step, not by garbage
    stepped = SensorClock(lambda: clock.utc_now() + timedelta(hours=1), clock.monotonic_ns)
    assert stepped.to_utc(stamp(99.25) / 1e9) == utc(99.25) + timedelta(hours=1)
    assert sensor.now_s() == pytest.approx(M0 / 1e9 + 100.0)
