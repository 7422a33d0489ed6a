"""The GNSS service on real transports: a pty opened with pyserial, TCP, a log file, gpsd JSON.

The receiver is the simulator (simulators/gnss.py) behind a real pseudo-terminal; unplugging
closes the pty, replugging creates a new one behind the same symlink, and a baud change makes
the pty deliver framing garbage until the agent finds the new rate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock import Clock
from edge_agent.drivers.base import ByteSource
from edge_agent.drivers.serialport import SerialSource
from edge_agent.drivers.url import DeviceUrl
from edge_agent.gnss.baud import BaudProbe
from edge_agent.gnss.config import GnssConfig
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.replay import fixes_from_bytes
from edge_agent.gnss.service import GnssService, make_source
from edge_agent.outbox import Outbox
from edge_agent.platform.health import HealthRegistry
from edge_agent.recorder import MemorySink, OutboxSink
from edge_agent.wire.envelope import format_ts
from simulators.gnss import Driver, GnssSimulator, PtyPort, TcpPort, Waypoint, run_simulation
from simulators.nmea_out import fix_to_nmea
from tests.harness import Running as RunningService

FIXTURES = Path(__file__).parent / "fixtures" / "gpsd-nmea"
ROUTE = [Waypoint(52.3731, 4.8922), Waypoint(52.3600, 4.8852), Waypoint(52.3500, 4.9000)]
DEADLINE = 15.0


class RecordingHealth(HealthRegistry):
    """A registry that keeps every state a component went through.

    A reconnect can be faster than any poll, so a test asks what was seen, not what is."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def set_state(self, component: str, state: str, **detail: Any) -> bool:
        changed = super().set_state(component, state, **detail)
        if changed:
            self.seen.append((component, state))
        return changed


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition with a deadline (the service runs on real time here)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def next_fixes(sub: AsyncIterator[Fix], n: int) -> list[Fix]:
    """The next ``n`` fixes a subscription delivers, within a deadline."""
    async with asyncio.timeout(DEADLINE):
        return [await anext(sub) for _ in range(n)]


def config(source: str, **kw: Any) -> GnssConfig:
    base: dict[str, Any] = {
        "source": source,
        "watchdog": "0.5s",
        "reconnect_max": "0.3s",
        "report": {"moving_interval": "1s", "stopped_interval": "1s"},
    }
    base.update(kw)
    return GnssConfig.model_validate(base)


def unsynced_clock() -> Clock:
    """A Pi after a boot without network: the system clock cannot be trusted."""
    return Clock("auto", synced=lambda: False, has_rtc=False)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-042")
    try:
        yield ob
    finally:
        await ob.close()


async def outbox_events(ob: Outbox) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in await ob.read_after(0, max_bytes=10_000_000)]


def Running(service: GnssService) -> RunningService[GnssService]:
    """The GNSS service for the block; it must still run at the end."""
    return RunningService(service, check_still_running=True)


async def test_pty_unplug_replug_and_baud_change(tmp_path: Path, outbox: Outbox) -> None:
    port = PtyPort(tmp_path / "ttyGNSS", baud=9600)
    port.open()
    sim = GnssSimulator(Driver(ROUTE), rate_hz=10.0, start=datetime.now(UTC), seed=3)
    sim_task = asyncio.create_task(run_simulation(sim, port))
    sources: list[SerialSource] = []

    def factory(spec: DeviceUrl) -> ByteSource:
        # The real serial source, with a short probe window to keep the test quick.
        src = SerialSource(
            spec.path, spec.baud, bauds=[4800, 9600, 38400], probe=BaudProbe, probe_window=0.6
        )
        if sources:
            src.detected_baud = sources[-1].detected_baud
        sources.append(src)
        return src

    health = HealthRegistry()
    clock = Clock("system")
    svc = GnssService(
        config(str(port.path)), OutboxSink(outbox, clock), health, clock, source_factory=factory
    )
    try:
        async with Running(svc):
            with svc.subscribe() as sub:
                fixes = await next_fixes(sub, 10)
                assert sources[0].detected_baud == 9600  # 4800 tried first: garbage
                assert all(f.mode == 3 for f in fixes)
                assert [f.time for f in fixes] == sorted({f.time for f in fixes})
                await until(lambda: health.state("gnss") == "ok", "state ok")
                assert "gnss_offset_s" in health.snapshot()["gnss"]

                port.unplug()
                await until(lambda: health.state("gnss") == "disconnected", "unplug seen")
                port.replug()
                await next_fixes(sub, 5)
                assert len(sources) >= 2

                port.baud = 38400  # the receiver now talks at another rate
                await until(lambda: health.state("gnss") == "lost", "silence at 9600")
                await until(lambda: sources[-1].detected_baud == 38400, "new rate found")
                await next_fixes(sub, 5)
                assert port.garbled > 0
    finally:
        sim_task.cancel()
        port.close()
    counters = health.counters("gnss")
    assert counters.get("reported_first") == 1
    events = await outbox_events(outbox)
    assert events, "gnss.fix events reach the outbox"
    assert {e["type"] for e in events} == {"gnss.fix"}
    assert {e["clock"] for e in events} == {"gnss"}
    times = [e["ts"] for e in events]
    assert times == sorted(times)
    assert all(e["data"]["mode"] == 3 for e in events)


async def test_socket_source_reconnects(outbox: Outbox) -> None:
    tcp = TcpPort()
    await tcp.start()
    sim = GnssSimulator(Driver(ROUTE), rate_hz=10.0, start=datetime.now(UTC), seed=4)
    sim_task = asyncio.create_task(run_simulation(sim, tcp))
    health = RecordingHealth()
    clock = Clock("system")
    svc = GnssService(
        config(f"socket://127.0.0.1:{tcp.port}"), OutboxSink(outbox, clock), health, clock
    )
    try:
        async with Running(svc):
            with svc.subscribe() as sub:
                await next_fixes(sub, 5)
                before = len(health.seen)
                tcp.disconnect_clients()
                await until(
                    lambda: ("gnss", "disconnected") in health.seen[before:], "disconnect seen"
                )
                await until(lambda: tcp.clients == 1, "reconnected")
                await next_fixes(sub, 5)
                assert health.seen[-1] != ("gnss", "disconnected")
    finally:
        sim_task.cancel()
        await tcp.close()


async def test_file_replay_source_ends_and_idles(outbox: Outbox) -> None:
    log = FIXTURES / "quectel.log"
    health = HealthRegistry()
    clock = unsynced_clock()
    cfg = GnssConfig(source=f"file://{log}")  # default reporting: a ping every 5 min stopped
    svc = GnssService(cfg, OutboxSink(outbox, clock), health, clock)
    got: list[Fix] = []
    remove = svc.add_listener(got.append)
    async with Running(svc):
        await asyncio.wait_for(svc.ended.wait(), DEADLINE)
        assert health.state("gnss") == "idle"
        assert health.snapshot()["gnss"]["ended"] is True
    remove()
    assert got == list(fixes_from_bytes([log.read_bytes()]))
    assert svc.latest == got[-1]
    events = await outbox_events(outbox)
    assert 1 <= len(events) < len(got)  # adaptive reporting: not every fix is a ping
    assert events[0]["data"]["lat"] == got[0].lat


async def test_file_replay_is_paced_by_rate() -> None:
    cfg = config(f"file://{FIXTURES / 'ac12.log'}?rate=50")
    source = make_source(cfg.spec, cfg)
    await source.open()
    started = time.monotonic()
    data = b""
    while chunk := await source.read():
        data += chunk
    source.close()
    # ac12 has 9 distinct GGA/RMC/ZDA times after the first: at 50 epochs/s at least 0.16 s.
    assert time.monotonic() - started >= 0.15
    assert data == (FIXTURES / "ac12.log").read_bytes()


async def test_unopenable_device_backs_off_and_never_raises(tmp_path: Path) -> None:
    health = HealthRegistry()
    clock = unsynced_clock()

    attempts: list[float] = []

    def rand() -> float:
        attempts.append(time.monotonic())
        return 0.0  # no wait between attempts: the test counts them

    sink = MemorySink(clock)
    svc = GnssService(config(str(tmp_path / "ttyMissing")), sink, health, clock, rand=rand)
    async with Running(svc):
        await until(lambda: len(attempts) >= 3, "three reopen attempts")
        assert health.state("gnss") == "disconnected"
        assert "cannot open" in health.snapshot()["gnss"]["error"]
    assert sink.events == []  # nothing to emit without a device


async def gpsd_replay_server(lines: list[bytes]) -> tuple[asyncio.Server, int]:
    """Serves gpsd's recorded JSON output after a ?WATCH (gpsd itself is not installed here)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = await reader.readline()
        assert command.startswith(b"?WATCH=")
        writer.write(b'{"class":"VERSION","release":"3.25"}\n')
        for line in lines:
            writer.write(line + b"\n")
        await writer.drain()
        await reader.read()  # hold the connection until the client leaves
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_gpsd_source_reads_tpv_reports(outbox: Outbox) -> None:
    chk = (FIXTURES / "sirfstarv-nmea.log.chk").read_bytes().splitlines()
    reports = [line for line in chk if line.startswith(b"{")]
    server, port = await gpsd_replay_server(reports)
    health = HealthRegistry()
    clock = unsynced_clock()
    svc = GnssService(config(f"gpsd://127.0.0.1:{port}"), OutboxSink(outbox, clock), health, clock)
    expected = {
        json.loads(r)["time"]
        for r in reports
        if b'"TPV"' in r and b'"time"' in r and json.loads(r).get("mode", 0) >= 2
    }
    try:
        async with Running(svc):
            with svc.subscribe() as sub:
                fixes = await next_fixes(sub, len(expected))
    finally:
        server.close()
    assert len({f.time for f in fixes}) == len(expected) == 59


class RecordingSink(MemorySink):
    """The in-memory sink of replays and tests (the outbox's checks, no file), used where the
    test is about the service's decisions, not storage; ``fail``: refused as by a full outbox."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(unsynced_clock(), capacity=0 if fail else None)


def fix_at(seconds: float, north_m: float = 0.0) -> Fix:
    return Fix(
        time=datetime(2026, 3, 2, 8, 0, tzinfo=UTC) + timedelta(seconds=seconds),
        lat=52.0 + north_m / 111_195.0,
        lon=4.0,
        mode=3,
        speed_mps=0.0,
    )


async def test_a_future_dated_fix_does_not_freeze_the_position() -> None:
    health = HealthRegistry()
    clock = unsynced_clock()
    sink = RecordingSink()
    svc = GnssService(config("socket://127.0.0.1:9"), sink, health, clock)
    assert await svc.process(fix_at(0)) is None
    bogus = fix_at(86_400 * 365)  # a receiver's date a year ahead
    assert await svc.process(bogus) is None  # no trustworthy clock to judge it by
    reasons = [await svc.process(fix_at(t)) for t in range(1, 6)]
    assert reasons[:2] == ["out_of_order", "out_of_order"]
    assert reasons[2:] == [None, None, None]  # three agreeing fixes re-anchor
    assert svc.latest == fix_at(5)
    assert health.counters("gnss")["dropped_out_of_order"] == 2


async def test_ages_are_judged_against_a_synchronised_clock_only() -> None:
    health = HealthRegistry()
    wall = datetime(2026, 3, 2, 8, 10, tzinfo=UTC).timestamp()
    synced = Clock("system", wall=lambda: wall)
    svc = GnssService(config("socket://127.0.0.1:9"), RecordingSink(), health, synced)
    assert await svc.process(fix_at(0)) == "too_old"  # ten minutes behind the NTP clock
    gnss_timed = GnssService(
        config("socket://127.0.0.1:9"),
        RecordingSink(),
        health,
        Clock("auto", synced=lambda: False, wall=lambda: wall),
    )
    assert await gnss_timed.process(fix_at(0)) is None


async def test_sink_refusal_is_counted_and_fixes_still_flow() -> None:
    health = HealthRegistry()
    svc = GnssService(
        config("socket://127.0.0.1:9"), RecordingSink(fail=True), health, unsynced_clock()
    )
    got: list[Fix] = []
    svc.add_listener(got.append)
    for t in range(3):
        assert await svc.process(fix_at(t * 0.2, north_m=t * 0.1)) is None
    assert len(got) == 3
    assert health.counters("gnss")["emit_failed"] == 1  # only the first fix was a ping


async def test_reported_pings_carry_gnss_time_and_clock() -> None:
    health = HealthRegistry()
    sink = RecordingSink()
    clock = unsynced_clock()
    svc = GnssService(config("socket://127.0.0.1:9"), sink, health, clock)
    await svc.process(fix_at(0))
    (env,) = sink.events
    assert (env["type"], env["ts"], env["clock"]) == ("gnss.fix", format_ts(fix_at(0).time), "gnss")
    assert env["data"] == fix_at(0).event_data()
    assert clock.now()[1] == "gnss"  # the kept fix now carries event times


async def test_agent_runtime_records_simulated_fixes(tmp_path: Path) -> None:
    """The whole agent: the simulator's van over TCP, gnss.fix events in the agent's outbox."""
    from edge_agent.config import AgentConfig
    from edge_agent.runtime import Agent

    tcp = TcpPort()
    await tcp.start()
    sim = GnssSimulator(Driver(ROUTE), rate_hz=5.0, start=datetime.now(UTC), seed=5)
    sim_task = asyncio.create_task(run_simulation(sim, tcp))
    cfg = AgentConfig.model_validate(
        {
            "device": {"id": "van-042", "fleet": "acme"},
            "broker": {"url": "mqtt://127.0.0.1:9"},  # no broker: events wait in the outbox
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "api": {"listen": "127.0.0.1:0"},
            "clock": {"policy": "system"},
            "gnss": {"source": f"socket://127.0.0.1:{tcp.port}", "report": {"moving_interval": 1}},
        }
    )
    agent = Agent(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: agent.gnss is not None and agent.gnss.kept >= 10, "fixes kept")
        assert agent.outbox is not None
        outbox = agent.outbox

        def pings() -> int:
            counters = agent.health.counters("gnss")
            return sum(v for k, v in counters.items() if k.startswith("reported_"))

        # A ping is counted before its emit: after the third, two are committed.
        await until(lambda: pings() >= 3, "three pings")
        events = [e for e in await outbox_events(outbox) if e["type"] == "gnss.fix"]
        assert len(events) >= 2
        assert {e["clock"] for e in events} == {"gnss"}
        assert events[0]["fleet"] == "acme"
        report = await agent.health_report()
        assert report["components"]["gnss"]["state"] == "ok"
    finally:
        stop.set()
        await asyncio.wait_for(run, DEADLINE)
        sim_task.cancel()
        await tcp.close()


async def test_slow_file_replay_loses_no_line_to_quiet_timeouts(tmp_path: Path) -> None:
    """At 1.8 epochs/s the pacing waits outlast the service's 0.5 s read timeout."""
    log = tmp_path / "rmc-only.nmea"
    log.write_bytes(
        b"".join(
            line.encode()
            for s in range(4)
            for line in fix_to_nmea(replace(fix_at(s, north_m=s), speed_mps=1.0))
            if "RMC" in line
        )
    )
    health = HealthRegistry()
    svc = GnssService(config(f"file://{log}?rate=1.8"), RecordingSink(), health, unsynced_clock())
    got: list[Fix] = []
    svc.add_listener(got.append)
    async with Running(svc):
        await asyncio.wait_for(svc.ended.wait(), DEADLINE)
    assert [f.time for f in got] == [fix_at(s).time for s in range(4)]
