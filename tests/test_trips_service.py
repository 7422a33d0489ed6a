"""TripService on the real outbox (a temporary SQLite file): events, manifests, restarts, faults,
and the live path from the GNSS simulator's socket through the GNSS service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock import Clock
from edge_agent.gnss.fix import Fix
from edge_agent.outbox import IdConflict, Outbox
from edge_agent.platform.health import HealthRegistry
from edge_agent.recorder import MemorySink, OutboxSink
from edge_agent.sink import Accepted, EventSink
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.engine import EngineParams, TripEngine
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.service import TripService
from edge_agent.wire.commands import CommandRefused
from edge_agent.wire.envelope import validate_envelope
from simulators.van import VanRun, run_van
from simulators.world import fleet_scenarios
from tests.harness import Running

DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def van() -> VanRun:
    return run_van(fleet_scenarios(1, seed=12, stops=3)[0])


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-001")
    yield ob
    await ob.close()


def expected_events(run: VanRun, cfg: TripsConfig) -> list[tuple[str, str, dict[str, Any]]]:
    m = parse_manifest(run.scenario.manifest)
    eng = TripEngine(build_zones(m, cfg), EngineParams.from_config(cfg), m.route)
    st = eng.new_state()
    out = []
    for f in run.fixes:
        st, evs = eng.step(st, f)
        out += [(e.type, e.to_json()["ts"], e.ref) for e in evs]
    return out


async def stored(outbox: Outbox) -> list[dict[str, Any]]:
    rows = await outbox.read_after(0, max_bytes=1 << 30)
    return [json.loads(body) for _, body in rows]


async def trip_events(outbox: Outbox) -> list[dict[str, Any]]:
    return [e for e in await stored(outbox) if e["type"].startswith(("trip.", "geofence."))]


async def until(cond: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait for a condition with a deadline (no sleeps standing in for it)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while True:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def make(
    tmp_path: Path, sink: Any, health: HealthRegistry | None = None, **cfg: Any
) -> TripService:
    config = TripsConfig(reorder_window=0.0, **cfg)
    return TripService(
        config, sink, health or HealthRegistry(), Clock("system"), state_dir=tmp_path / "trips"
    )


async def feed(service: TripService, fixes: list[Fix]) -> None:
    # in bursts well under the service's queue (4096): a whole day at once would push its
    # first fixes out (that overflow has its own test)
    for k in range(0, len(fixes), 1000):
        for f in fixes[k : k + 1000]:
            service.submit_fix(f)
        await asyncio.wait_for(service.idle(), DEADLINE_S)


async def test_events_land_in_the_outbox_as_valid_envelopes(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    health = HealthRegistry()
    service = make(tmp_path, OutboxSink(outbox, Clock("system")), health)
    async with Running(service):
        await service.on_manifest(json.dumps(van.scenario.manifest).encode())
        await feed(service, van.fixes)
    got = await trip_events(outbox)
    want = expected_events(van, TripsConfig())
    assert [(e["type"], e["ts"], e.get("ref")) for e in got] == [
        (t, ts, ref or None) for t, ts, ref in want
    ]
    for env in got:
        validate_envelope(env)
        assert env["clock"] == "gnss" and env["fleet"] == "acme"
    arrive = next(e for e in got if e["type"] == "trip.arrive")
    assert arrive["ref"]["parcel"]  # the stop's parcels travel with its events
    assert health.state("trips") == "ok"
    assert health.counters("trips")["manifest-applied"] == 1


async def test_a_bad_manifest_is_reported_and_the_good_one_kept(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    health = HealthRegistry()
    service = make(tmp_path, OutboxSink(outbox, Clock("system")), health)
    async with Running(service):
        await service.on_manifest(json.dumps(van.scenario.manifest).encode())
        await asyncio.wait_for(service.idle(), DEADLINE_S)
        bad = b'{"route": "x", "depot": {"lat": 95, "lon": 1}, "stops": []}'
        with pytest.raises(CommandRefused, match="depot"):
            await service.on_manifest(bad)
        with pytest.raises(CommandRefused):
            await service.on_manifest(b"\x00\xff garbage")
        await asyncio.wait_for(service.idle(), DEADLINE_S)
        assert health.state("trips") == "manifest-invalid"
        assert health.counters("trips")["manifest-invalid"] == 2
        assert service.manifest is not None and service.manifest.route == "r-12-01"
        await feed(service, van.fixes)
    assert len(await trip_events(outbox)) == len(expected_events(van, TripsConfig()))


async def test_a_restart_mid_route_repeats_nothing_and_loses_nothing(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    sink = OutboxSink(outbox, Clock("system"))
    half = len(van.fixes) // 2
    first = make(tmp_path, sink)
    async with Running(first):
        await first.on_manifest(json.dumps(van.scenario.manifest).encode())
        await feed(first, van.fixes[:half])
    assert (tmp_path / "trips" / "trips-manifest.json").exists()
    # a new process: the manifest and the state come back from disk, no cmd/manifest needed
    second = make(tmp_path, sink)
    async with Running(second):
        await feed(second, van.fixes[half - 30 :])  # with some fixes it had already seen
        assert second.manifest is not None and second.manifest.route == "r-12-01"
    got = await trip_events(outbox)
    want = expected_events(van, TripsConfig())
    assert [(e["type"], e["ts"]) for e in got] == [(t, ts) for t, ts, _ in want]
    assert second.state.dropped_old + second.state.dropped_duplicate == 30


async def test_a_crash_after_writing_ahead_is_exactly_once(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    sink = OutboxSink(outbox, Clock("system"))
    service = make(tmp_path, sink)
    async with Running(service):
        await service.on_manifest(json.dumps(van.scenario.manifest).encode())
        await feed(service, van.fixes)
    events = await trip_events(outbox)
    state_file = tmp_path / "trips" / "trips-state.json"
    state = json.loads(state_file.read_text())
    # as if the process died after committing the last two events, before saving its state,
    # and with a third one written ahead but not yet committed
    committed = [
        {k: e[k] for k in ("id", "type", "ts", "data")} | {"ref": e.get("ref") or {}}
        for e in events[-2:]
    ]
    lost = dict(committed[-1], id="0190f1e2-aaaa-7bbb-8ccc-000000000001", ts=committed[-1]["ts"])
    state["pending"] = [*committed, lost]
    state_file.write_text(json.dumps(state))
    again = make(tmp_path, sink)
    async with Running(again):
        await asyncio.wait_for(again.idle(), DEADLINE_S)
        await until(lambda: not again.pending, "the pending events")
    after = await trip_events(outbox)
    assert len(after) == len(events) + 1  # the two committed ones not twice, the third once
    assert after[-1]["id"] == lost["id"]
    assert json.loads(state_file.read_text())["pending"] == []


async def test_the_in_memory_sink_takes_the_same_path_as_the_outbox(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    """Replays and tests emit through MemorySink: the same envelopes as on the outbox, the ids
    written ahead included, and a crash's repeat stored once."""
    memory = MemorySink(Clock("system"), fleet="acme", device="van-001")
    runs = [(tmp_path / "a", OutboxSink(outbox, Clock("system"))), (tmp_path / "b", memory)]
    for folder, sink in runs:
        service = make(folder, sink)
        async with Running(service):
            await service.on_manifest(json.dumps(van.scenario.manifest).encode())
            await feed(service, van.fixes)
    on_outbox = await trip_events(outbox)
    in_memory = [e for e in memory.events if e["type"].startswith(("trip.", "geofence."))]
    assert [{**e, "id": ""} for e in in_memory] == [{**e, "id": ""} for e in on_outbox]
    assert len(in_memory) == len(expected_events(van, TripsConfig()))
    # as if the service died after the last commit, before saving its state
    state_file = tmp_path / "b" / "trips" / "trips-state.json"
    state = json.loads(state_file.read_text())
    last = in_memory[-1]
    state["pending"] = [{k: last[k] for k in ("id", "type", "ts", "data")} | {"ref": last["ref"]}]
    state_file.write_text(json.dumps(state))
    again = make(tmp_path / "b", memory)
    async with Running(again):
        await asyncio.wait_for(again.idle(), DEADLINE_S)
    assert len(memory.events) == len(in_memory) and not again.pending


class FlakySink:
    """The real outbox sink behind a fault injector: the first ``failures`` emits raise (a
    disk error cannot be produced on demand here)."""

    def __init__(self, inner: EventSink, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def emit(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        ts: datetime | None = None,
        ref: Mapping[str, Any] | None = None,
        clock: str | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        return await self.inner.emit(type_, data, ts=ts, ref=ref, clock=clock, event_id=event_id)


async def test_a_failing_outbox_is_retried_with_backoff_and_nothing_is_lost(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    health = HealthRegistry()
    delays: list[float] = []

    async def fake_sleep(s: float) -> None:
        delays.append(s)

    service = TripService(
        TripsConfig(reorder_window=0.0),
        FlakySink(OutboxSink(outbox, Clock("system")), failures=4),
        health,
        Clock("system"),
        sleep=fake_sleep,
    )
    async with Running(service):
        await service.on_manifest(json.dumps(van.scenario.manifest).encode())
        await feed(service, van.fixes)
    assert len(await trip_events(outbox)) == len(expected_events(van, TripsConfig()))
    assert health.counters("trips")["emit-failed"] == 4
    assert delays == sorted(delays) and len(delays) == 4  # growing, capped backoff
    assert health.state("trips") == "ok"


class RefusingSink(FlakySink):
    """The real outbox sink, but the first event is refused for good (an id already taken by
    another event): the trips service must drop it, never hold every later event behind it."""

    async def emit(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        ts: datetime | None = None,
        ref: Mapping[str, Any] | None = None,
        clock: str | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        if self.failures:
            self.failures -= 1
            raise IdConflict(f"id {event_id!r} was accepted before for another event")
        return await self.inner.emit(type_, data, ts=ts, ref=ref, clock=clock, event_id=event_id)


async def test_an_event_refused_for_good_is_dropped_and_the_rest_go_on(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    health = HealthRegistry()
    service = TripService(
        TripsConfig(reorder_window=0.0),
        RefusingSink(OutboxSink(outbox, Clock("system")), failures=1),
        health,
        Clock("system"),
    )
    async with Running(service):
        await service.on_manifest(json.dumps(van.scenario.manifest).encode())
        await feed(service, van.fixes)
    assert len(await trip_events(outbox)) == len(expected_events(van, TripsConfig())) - 1
    assert health.counters("trips")["event-invalid"] == 1
    assert "emit-failed" not in health.counters("trips")


async def test_an_unreadable_state_file_is_moved_aside(
    tmp_path: Path, outbox: Outbox, van: VanRun
) -> None:
    folder = tmp_path / "trips"
    folder.mkdir()
    (folder / "trips-state.json").write_bytes(b'{"format": 1, "engine": {"v": 1, "tracks": ')
    (folder / "trips-manifest.json").write_text(json.dumps(van.scenario.manifest))
    health = HealthRegistry()
    service = make(tmp_path, OutboxSink(outbox, Clock("system")), health)
    async with Running(service):
        await feed(service, van.fixes)
    assert health.counters("trips")["state-corrupt"] == 1
    assert list(folder.glob("trips-state.json.corrupt-*"))
    assert len(await trip_events(outbox)) == len(expected_events(van, TripsConfig()))


async def test_fixes_from_the_future_and_a_full_queue_are_counted(
    tmp_path: Path, outbox: Outbox
) -> None:
    health = HealthRegistry()
    service = TripService(
        TripsConfig(), OutboxSink(outbox, Clock("system")), health, Clock("system"), queue_size=4
    )
    now = datetime.now(UTC)
    await service.on_manifest(b'{"route": "r", "depot": {"lat": 52.5, "lon": 13.4}, "stops": []}')
    for k in range(6):  # before the service runs: the queue holds 4, the manifest is kept
        service.submit_fix(Fix(time=now + timedelta(days=1, seconds=k), lat=52.5, lon=13.4))
    assert health.counters("trips")["queue-overflow"] == 3
    async with Running(service):
        await asyncio.wait_for(service.idle(), DEADLINE_S)
    assert service.manifest is not None
    assert health.counters("trips")["fix-future"] == 3  # judged by the synchronised clock


async def test_live_from_the_gnss_simulator_through_the_gnss_service(
    tmp_path: Path, outbox: Outbox
) -> None:
    from edge_agent.gnss.config import GnssConfig
    from edge_agent.gnss.service import GnssService
    from simulators.gnss import serve_fixes

    # a short day, starting now, served 200 times faster than real time over a TCP socket
    sc = fleet_scenarios(1, seed=13, stops=1, tunnels=0, start=datetime.now(UTC))[0]
    sc.actions = sc.actions[:4] + sc.actions[-1:]  # out of the depot, the stop, and stop there
    run = run_van(sc)
    clock = Clock("system")
    health = HealthRegistry()
    sink = OutboxSink(outbox, clock)
    ports: asyncio.Queue[int] = asyncio.Queue()
    server = asyncio.create_task(
        serve_fixes(run.fixes, speed=200.0, wait_for_client=True, on_listen=ports.put_nowait)
    )
    port = await asyncio.wait_for(ports.get(), DEADLINE_S)
    # sped up, the fixes run ahead of the wall clock: let the GNSS filter accept that
    gnss_cfg = GnssConfig.model_validate(
        {"source": f"socket://127.0.0.1:{port}", "filter": {"max_ahead": "1d"}}
    )
    gnss = GnssService(gnss_cfg, sink, health, clock)
    trips = make(tmp_path, sink, health, max_time_jump="1d")  # the same for the trips' check
    gnss.add_listener(trips.submit_fix)
    await trips.on_manifest(json.dumps(sc.manifest).encode())
    async with Running(trips):
        gnss_task = asyncio.create_task(gnss.run())
        try:
            await asyncio.wait_for(server, 120)
            await until(lambda: gnss.kept >= len(run.fixes) - 2, "the fixes through GNSS")
            await asyncio.wait_for(trips.idle(), DEADLINE_S)
        finally:
            # Python 3.11's wait_for can swallow a cancel that races with a failing connect
            # (the GNSS service reconnecting to the finished simulator): insist
            while not gnss_task.done():
                gnss_task.cancel()
                await asyncio.wait({gnss_task}, timeout=0.2)
    got = [(e["type"], e.get("ref", {}).get("stop")) for e in await trip_events(outbox)]
    stop = sc.manifest["stops"][0]["id"]
    assert ("trip.depart", None) in got
    assert ("trip.approach", stop) in got and ("trip.arrive", stop) in got
    fixes_stored = [e for e in await stored(outbox) if e["type"] == "gnss.fix"]
    assert fixes_stored  # the GNSS service's own pings share the outbox
    assert "fix-future" not in health.counters("trips")


async def test_the_agent_takes_its_manifest_from_mqtt_and_its_fixes_from_gnss(
    tmp_path: Path, broker: Any
) -> None:
    """The whole agent on a real broker: ``cmd/manifest`` published over MQTT, the van served
    by the GNSS simulator, trip events in the agent's outbox and state next to it."""
    import aiomqtt

    from edge_agent.config import AgentConfig
    from edge_agent.runtime import Agent
    from edge_agent.wire import topics
    from simulators.gnss import serve_fixes

    sc = fleet_scenarios(1, seed=14, stops=1, tunnels=0, start=datetime.now(UTC))[0]
    sc.actions = sc.actions[:4] + sc.actions[-1:]
    run = run_van(sc)
    release = asyncio.Event()

    async def serve_when_released() -> None:
        await release.wait()  # the van starts driving once the agent has its manifest
        await serve_fixes(run.fixes, speed=200.0, port=port)

    from simulators.broker import free_port

    port = free_port()  # the agent's GNSS source retries until the simulator listens
    cfg = AgentConfig.model_validate(
        {
            "device": {"id": "van-001", "fleet": "acme"},
            "broker": {"url": broker.url},
            "outbox": {"path": str(tmp_path / "agent" / "outbox.db")},
            "api": {"listen": "127.0.0.1:0"},
            "clock": {"policy": "system"},
            "gnss": {
                "source": f"socket://127.0.0.1:{port}",
                "filter": {"max_ahead": "1d"},
                "reconnect_max": "0.2s",
            },
            "trips": {"max_time_jump": "1d", "reorder_window": "0s"},
        }
    )
    agent = Agent(cfg)
    stop = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(stop))
    server = asyncio.create_task(serve_when_released())
    try:
        await until(lambda: agent.trips is not None, "the trip service")
        assert agent.trips is not None
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            # the agent's birth message comes after it subscribed to its commands
            await client.subscribe(topics.state("acme", "van-001"), qos=1)
            async with asyncio.timeout(DEADLINE_S):
                async for msg in client.messages:
                    if json.loads(bytes(msg.payload))["state"] == "online":  # type: ignore[arg-type]
                        break
            topic = topics.cmd("acme", "van-001", "manifest")
            await client.publish(topic, json.dumps(sc.manifest).encode(), qos=1)
        trips = agent.trips
        await until(lambda: trips.manifest is not None, "the manifest over MQTT")
        release.set()
        await asyncio.wait_for(server, 60)
        assert agent.outbox is not None
        outbox = agent.outbox

        async def arrived() -> bool:
            return any(e["type"] == "trip.arrive" for e in await trip_events(outbox))

        await until(arrived, "the arrival at the stop")
        got = [(e["type"], e.get("ref", {}).get("stop")) for e in await trip_events(outbox)]
    finally:
        stop.set()
        await asyncio.wait_for(agent_task, DEADLINE_S)
        server.cancel()
    stop_id = sc.manifest["stops"][0]["id"]
    assert ("trip.depart", None) in got and ("trip.arrive", stop_id) in got
    assert (tmp_path / "agent" / "trips-manifest.json").exists()
    assert (tmp_path / "agent" / "trips-state.json").exists()
