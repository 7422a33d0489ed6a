"""The dock's sensor and signal drivers: devices in, observations and line levels out.

Each driver is a loop under ``edge_agent.drivers.supervise`` (reopen with backoff; health per
transition, so a sensor unplugged says so once), moving bytes and edges between a device and
the pure logic next to it:

- ``run_contact``: a door or bay contact on a GPIO input line (``GpioInput``, edges stamped by
  the kernel on CLOCK_MONOTONIC) -> ``Debouncer`` -> an observation per debounced change. The
  line is *active* when the door is open or the bay occupied (wire it so, or set
  ``active_low=true`` in the URL).
- ``run_distance_bay``: a serial distance sensor on any byte-source URL (serial, socket, file)
  -> ``distance`` parser -> ``Occupancy`` -> an observation per change; silence is health.
- ``DockSignal``: the green, red and buzzer lines (``GpioOutput``) driven by ``SignalPattern``:
  ``cue()`` sets the lines at once, ``run()`` keeps the pattern's timing and reopens the lines.

Observations go to ``on_observation(kind, dock, state, t)``: ``kind`` ``"door"`` (``state``
True: open) or ``"bay"`` (True: occupied), ``t`` an aware UTC datetime. Kernel timestamps are
turned into UTC with ``SensorClock``: the UTC time now minus how long ago, on the monotonic
clock, the edge was stamped (so a clock step between the edge and its reading moves nothing but
the offset). Health components are ``station:<dock>:door``, ``station:<dock>:bay`` and
``station:<dock>:signal``: ``ok``, ``disconnected`` (device gone, reopening), ``unstable`` (a
contact chattering, a door left half open), ``stale`` (a distance sensor silent or blind).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType
from typing import Literal, TypeVar

from edge_agent.drivers.base import SourceError
from edge_agent.drivers.gpio import GpioInput, GpioOutput
from edge_agent.drivers.sources import BYTE_KINDS, make_byte_source
from edge_agent.drivers.supervise import Attempt, supervise
from edge_agent.drivers.url import DeviceUrl, parse_device_url
from edge_agent.platform.health import HealthRegistry
from edge_agent.station.debounce import (
    ContactChange,
    ContactReport,
    ContactSettled,
    ContactUnstable,
    Debouncer,
)
from edge_agent.station.distance import DistanceProtocol, default_baud, make_parser
from edge_agent.station.occupancy import BayChange, BayFresh, BayReport, BayStale, Occupancy
from edge_agent.station.signal import Color, Levels, SignalPattern

__all__ = [
    "ContactKind",
    "DockSignal",
    "OnObservation",
    "SensorClock",
    "component_name",
    "run_contact",
    "run_distance_bay",
]

log = logging.getLogger(__name__)

ContactKind = Literal["door", "bay"]
OnObservation = Callable[[ContactKind, str, bool, datetime], Awaitable[None]]
"""``on_observation(kind, dock, state, t)`` (module docstring)."""

_COUNTERS = ("bad_frames", "no_reading", "garbage")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SensorClock:
    """The two clocks a driver needs: UTC for observations, monotonic for kernel stamps."""

    utc_now: Callable[[], datetime]
    monotonic_ns: Callable[[], int] = time.monotonic_ns

    def now_s(self) -> float:
        """Monotonic seconds now (the kernel's CLOCK_MONOTONIC, as edges are stamped)."""
        return self.monotonic_ns() / 1e9

    def to_utc(self, t_s: float) -> datetime:
        """The UTC time of monotonic instant ``t_s`` (seconds)."""
        now_utc, now_ns = self.utc_now(), self.monotonic_ns()
        ago_us = round((now_ns - t_s * 1e9) / 1000)  # to the microsecond a datetime holds
        return now_utc - timedelta(microseconds=ago_us)


def component_name(dock: str, part: str) -> str:
    """The health component of a dock's ``part`` (``door``, ``bay``, ``signal``)."""
    return f"station:{dock}:{part}"


def _as_url(url: str | DeviceUrl) -> DeviceUrl:
    return url if isinstance(url, DeviceUrl) else parse_device_url(url)


async def _timed(aw: Awaitable[T], delay: float | None) -> T | None:
    """``await aw``, or None after ``delay`` seconds (None: wait as long as it takes)."""
    if delay is None:
        return await aw
    try:
        async with asyncio.timeout(max(0.0, delay)):
            return await aw
    except TimeoutError:
        return None


async def run_contact(
    dock: str,
    kind: ContactKind,
    url: str | DeviceUrl,
    on_observation: OnObservation,
    health: HealthRegistry,
    clock: SensorClock,
    *,
    settle_s: float = 0.05,
    unstable_after_s: float = 2.0,
    gpiod: ModuleType | None = None,
    reconnect_max: float = 30.0,
    backoff_base: float = 0.5,
) -> None:
    """Watch a door or bay contact forever (module docstring); ``gpiod``: a stand-in module."""
    spec = _as_url(url)
    if spec.kind != "gpio" or spec.output:
        raise ValueError(f"{spec.describe()}: a {kind} contact is a GPIO input line")
    component = component_name(dock, kind)
    debouncer = Debouncer(settle_s, unstable_after_s)  # kept across reopens: the state is known

    async def emit(reports: list[ContactReport]) -> None:
        for report in reports:
            if isinstance(report, ContactChange):
                await on_observation(kind, dock, report.level, clock.to_utc(report.t))
            elif isinstance(report, ContactUnstable):
                health.set_state(component, "unstable", source=spec.describe())
            elif isinstance(report, ContactSettled):
                health.set_state(component, "ok", source=spec.describe())

    async def session(attempt: Attempt) -> None:
        line = GpioInput(spec, gpiod=gpiod)
        await line.open()
        try:
            health.set_state(component, "ok", source=spec.describe())
            await emit(debouncer.start(bool(line.value), clock.now_s()))
            while True:
                deadline = debouncer.next_deadline()
                delay = None if deadline is None else deadline - clock.now_s()
                edge = await _timed(line.read(), delay)  # read() loses no edge if cut
                if edge is None:
                    await emit(debouncer.poll(clock.now_s()))
                    continue
                attempt.productive = True
                await emit(debouncer.edge(edge.rising, edge.timestamp_ns / 1e9))
        finally:
            line.close()

    await supervise(
        session,
        health=health,
        component=component,
        name=spec.describe(),
        cap=reconnect_max,
        base=backoff_base,
    )


async def run_distance_bay(
    dock: str,
    url: str | DeviceUrl,
    protocol: DistanceProtocol,
    on_observation: OnObservation,
    health: HealthRegistry,
    clock: SensorClock,
    *,
    occupied_below: float = 2.0,
    free_above: float = 2.5,
    hold_s: float = 1.0,
    stale_after_s: float = 5.0,
    reconnect_max: float = 30.0,
    backoff_base: float = 0.5,
) -> None:
    """Watch a bay through a distance sensor until its source ends (a file) or forever.

    Readings are timed when their bytes arrive (a serial sensor stamps nothing); the parser's
    counters go to health as ``bad_frames``, ``no_reading`` and ``garbage``.
    """
    spec = _as_url(url)
    if spec.kind not in BYTE_KINDS:
        raise ValueError(f"{spec.describe()}: a distance sensor is a byte source")
    component = component_name(dock, "bay")
    occupancy = Occupancy(occupied_below, free_above, hold_s, stale_after_s)

    async def emit(reports: list[BayReport]) -> None:
        for report in reports:
            if isinstance(report, BayChange):
                await on_observation("bay", dock, report.occupied, clock.to_utc(report.t))
            elif isinstance(report, BayStale):
                health.set_state(component, "stale", source=spec.describe())
            elif isinstance(report, BayFresh):
                health.set_state(component, "ok", source=spec.describe())

    async def session(attempt: Attempt) -> None:
        source = make_byte_source(spec, baud=default_baud(protocol))
        await source.open()
        try:
            # still stale after a reopen until a reading comes: "ok" would be a lie
            health.set_state(
                component, "stale" if occupancy.stale else "ok", source=spec.describe()
            )
            parser = make_parser(protocol)  # bytes of the last session are not a frame start
            occupancy.watch(clock.now_s())
            while True:
                deadline = occupancy.next_deadline()
                delay = None if deadline is None else deadline - clock.now_s()
                data = await _timed(source.read(), delay)
                if data is None:
                    await emit(occupancy.poll(clock.now_s()))
                    continue
                if not data:
                    return  # a finite source (file) ended
                attempt.productive = True
                now = clock.now_s()
                for metres in parser.feed(data):
                    await emit(occupancy.reading(metres, now))
                for reason in _COUNTERS:
                    n = getattr(parser, reason)
                    if n:
                        health.count(component, reason, n)
                        setattr(parser, reason, 0)
        finally:
            source.close()

    await supervise(
        session,
        health=health,
        component=component,
        name=spec.describe(),
        cap=reconnect_max,
        base=backoff_base,
    )


class DockSignal:
    """A dock's stack light and buzzer (module docstring)."""

    def __init__(
        self,
        dock: str,
        green: str | DeviceUrl,
        red: str | DeviceUrl,
        buzzer: str | DeviceUrl | None,
        health: HealthRegistry,
        *,
        pattern: SignalPattern | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        gpiod: ModuleType | None = None,
        reconnect_max: float = 30.0,
        backoff_base: float = 0.5,
    ) -> None:
        self.dock = dock
        self.component = component_name(dock, "signal")
        self.pattern = pattern or SignalPattern()
        self.health = health
        specs = {"green": _as_url(green), "red": _as_url(red)}
        if buzzer is not None:
            specs["buzzer"] = _as_url(buzzer)
        for name, spec in specs.items():
            if spec.kind != "gpio" or not spec.output:
                raise ValueError(f"{spec.describe()}: the {name} signal is a GPIO output line")
        self._specs = specs
        self._mono = monotonic_ns
        self._gpiod = gpiod
        self._reconnect_max = reconnect_max
        self._backoff_base = backoff_base
        self._lines: dict[str, GpioOutput] | None = None
        self._written: dict[str, bool] = {}
        self._failure: SourceError | None = None
        self._wake = asyncio.Event()

    def _now(self) -> float:
        return self._mono() / 1e9

    @property
    def levels(self) -> Levels:
        """The levels the pattern asks for now."""
        return self.pattern.levels_at(self._now())

    def cue(self, color: Color) -> bool:
        """Show ``color`` now: the lines are set before this returns when they are open.

        False when the pattern dropped the cue (a green under a red)."""
        taken = self.pattern.cue(color, self._now())
        if taken and self._lines is not None and self._failure is None:
            try:
                self._apply(self._now())
            except SourceError as exc:
                self._failure = exc  # the runner reopens the lines
        self._wake.set()
        return taken

    def _apply(self, now: float) -> None:
        lines = self._lines
        if lines is None:
            return
        levels = self.pattern.levels_at(now)
        for name, line in lines.items():
            want = bool(getattr(levels, name))
            if self._written.get(name) != want:
                line.set(want)
                self._written[name] = want

    async def run(self) -> None:
        """Drive the lines forever, reopening them after failures."""
        await supervise(
            self._session,
            health=self.health,
            component=self.component,
            name=", ".join(s.describe() for s in self._specs.values()),
            cap=self._reconnect_max,
            base=self._backoff_base,
        )

    async def _open(self) -> dict[str, GpioOutput]:
        opened: dict[str, GpioOutput] = {}
        try:
            for name, spec in self._specs.items():
                line = GpioOutput(spec, gpiod=self._gpiod)
                await line.open()
                opened[name] = line
        except BaseException:
            _close(opened.values())
            raise
        return opened

    async def _session(self, attempt: Attempt) -> None:
        self._failure = None
        lines = await self._open()
        self._lines = lines
        # each line starts at its URL's initial level: write every level fresh
        self._written = {name: line.spec.initial for name, line in lines.items()}
        try:
            self.health.set_state(self.component, "ok", lines=len(lines))
            while True:
                if self._failure is not None:
                    raise self._failure
                now = self._now()
                self._apply(now)
                attempt.productive = True
                nxt = self.pattern.next_change(now)
                self._wake.clear()
                delay = None if nxt is None else max(0.0, nxt - now)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            self._lines = None
            for line in lines.values():
                with contextlib.suppress(SourceError):
                    line.set(False)  # a stopped agent leaves no light on (best effort)
            _close(lines.values())


def _close(lines: Iterable[GpioOutput]) -> None:
    for line in lines:
        line.close()
