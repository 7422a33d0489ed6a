"""The station service: observations in, the engine's events in the real outbox, signals driven,
the load plan kept on disk, and a restart mid-load that loses and repeats nothing.

Sensors and signal lines go through the gpiod stand-in (this machine has no GPIO chip; see
``tests/gpiod_standin.py``); the outbox is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from gpiod.line import Value

from edge_agent.clock import Clock
from edge_agent.outbox import Outbox
from edge_agent.platform.health import HealthRegistry
from edge_agent.recorder import MemorySink, OutboxSink
from edge_agent.scan.events import Read
from edge_agent.station.config import StationConfig
from edge_agent.station.engine import LoadParams
from edge_agent.station.plan import parse_load_plan
from edge_agent.station.replay import parse_line, replay_events
from edge_agent.station.service import StationService
from edge_agent.wire.commands import CommandRefused
from edge_agent.wire.envelope import parse_ts, validate_envelope
from simulators.depot import Shift, ShiftParams, simulate_shift
from tests.gpiod_standin import FakeGpiod, FakeRequest
from tests.harness import Running

DEADLINE_S = 30.0
LOAD_TYPES = ("load.", "dock.")


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "depot-1")
    yield ob
    await ob.close()


@pytest.fixture(scope="module")
def shift() -> Shift:
    return simulate_shift(ShiftParams(docks=3, routes=6, parcels=25, misload=0.06, seed=5))


def station_config(tmp_path: Path, docks: list[dict[str, Any]], **extra: Any) -> StationConfig:
    return StationConfig.model_validate(
        {"docks": docks, "state_dir": str(tmp_path / "station"), **extra}
    )


def make(tmp_path: Path, outbox: Outbox, config: StationConfig, **kw: Any) -> StationService:
    clock = kw.pop("clock", Clock("system"))
    return StationService(
        config, OutboxSink(outbox, clock), kw.pop("health", HealthRegistry()), clock, **kw
    )


async def stored(outbox: Outbox) -> list[dict[str, Any]]:
    rows = await outbox.read_after(0, max_bytes=1 << 30)
    return [json.loads(body) for _, body in rows if json.loads(body)["type"].startswith(LOAD_TYPES)]


def replayed(shift: Shift) -> list[tuple[str, str, dict[str, Any]]]:
    plan = parse_load_plan(json.dumps(shift.plan))
    lines = [(n, line.encode()) for n, line in enumerate(shift.input_lines(), 1)]
    return [(e.type, e.ts, e.data) for e in replay_events(plan, lines)]


def docks_of(shift: Shift) -> list[dict[str, Any]]:
    return [{"id": d} for d in sorted({r["dock"] for r in shift.plan["routes"]})]


async def feed(service: StationService, lines: list[str]) -> None:
    for line in lines:
        service.observe(parse_line(line))
    await asyncio.wait_for(service.idle(), DEADLINE_S)


async def send_plan(service: StationService, plan: dict[str, Any]) -> None:
    await service.on_loadplan(json.dumps({**plan, "id": "cmd-1"}).encode())
    await asyncio.wait_for(service.idle(), DEADLINE_S)


async def test_a_shift_lands_in_the_outbox_as_the_replay_derives_it(
    tmp_path: Path, outbox: Outbox, shift: Shift
) -> None:
    health = HealthRegistry()
    service = make(tmp_path, outbox, station_config(tmp_path, docks_of(shift)), health=health)
    async with Running(service, check_still_running=True):
        await send_plan(service, shift.plan)
        await feed(service, shift.input_lines())
    got = await stored(outbox)
    want = replayed(shift)
    assert len(want) > 50 and {t for t, _, _ in want} >= {"load.misload", "load.gateout"}
    assert [(e["type"], e["ts"], e["data"]) for e in got] == want
    for env in got:
        validate_envelope(env)
    assert health.state("station") == "ok"
    assert not service.pending


async def test_a_restart_mid_load_loses_nothing_and_repeats_nothing(
    tmp_path: Path, outbox: Outbox, shift: Shift
) -> None:
    lines = shift.input_lines()
    config = station_config(tmp_path, docks_of(shift))
    first = make(tmp_path, outbox, config)
    async with Running(first):
        await send_plan(first, shift.plan)
        await feed(first, lines[: len(lines) // 2])
    # the plan came over MQTT once: the restarted station works from its copy on disk
    second = make(tmp_path, outbox, config)
    async with Running(second):
        await feed(second, lines[len(lines) // 2 :])
    got = await stored(outbox)
    assert [(e["type"], e["ts"], e["data"]) for e in got] == replayed(shift)


async def test_a_crash_after_writing_ahead_commits_once(
    tmp_path: Path, outbox: Outbox, shift: Shift
) -> None:
    config = station_config(tmp_path, docks_of(shift))
    service = make(tmp_path, outbox, config)
    async with Running(service):
        await send_plan(service, shift.plan)
        await feed(service, shift.input_lines())
    events = await stored(outbox)
    state_file = tmp_path / "station" / "station-state.json"
    state = json.loads(state_file.read_text())
    # as if the process died after committing the last two events, before saving its state,
    # with a third written ahead and not yet committed
    committed = [
        {k: e[k] for k in ("id", "type", "ts", "data")} | {"ref": e.get("ref") or {}}
        for e in events[-2:]
    ]
    lost = dict(committed[-1], id="0190f1e2-aaaa-7bbb-8ccc-000000000002")
    state["pending"] = [*committed, lost]
    state_file.write_text(json.dumps(state))
    again = make(tmp_path, outbox, config)
    async with Running(again):
        await asyncio.wait_for(again.idle(), DEADLINE_S)
    after = await stored(outbox)
    assert len(after) == len(events) + 1 and after[-1]["id"] == lost["id"]


async def test_the_load_plan_is_checked_kept_on_disk_and_survives_a_bad_one(
    tmp_path: Path, outbox: Outbox, shift: Shift
) -> None:
    health = HealthRegistry()
    plan_file = tmp_path / "fallback-plan.json"
    plan_file.write_text(json.dumps({"routes": [{"route": "x", "vehicle": "v", "dock": "d1"}]}))
    config = station_config(tmp_path, docks_of(shift), plan=str(plan_file))
    service = make(tmp_path, outbox, config, health=health)
    async with Running(service):
        await asyncio.wait_for(service.idle(), DEADLINE_S)
        assert service.engine.plan.routes[0].route == "x"  # the file, until a command comes
        await send_plan(service, shift.plan)
        routes = len(shift.plan["routes"])
        assert len(service.engine.plan.routes) == routes
        bad = {
            **shift.plan,
            "routes": [*shift.plan["routes"], {"route": "", "vehicle": "v", "dock": "d"}],
        }
        with pytest.raises(CommandRefused, match=r"routes\[\d+\]\.route"):
            await service.on_loadplan(json.dumps(bad).encode())
        with pytest.raises(CommandRefused):
            await service.on_loadplan(b"\xff\x00 not json")
        await asyncio.wait_for(service.idle(), DEADLINE_S)
        assert len(service.engine.plan.routes) == routes
        assert health.counters("station")["plan-invalid"] == 2
    kept = tmp_path / "station" / "station-plan.json"
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    assert json.loads(kept.read_text())["routes"] == shift.plan["routes"]
    again = make(tmp_path, outbox, config)
    async with Running(again):
        await asyncio.wait_for(again.idle(), DEADLINE_S)
        assert len(again.engine.plan.routes) == routes  # the kept plan wins over the file


def line_request(gpiod: FakeGpiod, offset: int) -> FakeRequest:
    live = [r for r in gpiod.live() if offset in r.config]
    assert len(live) == 1, f"line {offset}: {len(live)} live requests"
    return live[0]


async def until(cond: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_contacts_scans_and_the_signal_through_the_gpio_stand_in(
    tmp_path: Path, outbox: Outbox
) -> None:
    chip = "gpio:///dev/gpiochip0?line="
    dock = {
        "id": "d1",
        "door": f"{chip}17",
        "bay": f"{chip}18",
        "settle": "20ms",
        "scanners": [{"id": "d1-hand", "source": "socket://127.0.0.1:9"}],
        "signal": {
            "green": f"{chip}20&direction=output",
            "red": f"{chip}21&direction=output",
            "buzzer": f"{chip}22&direction=output",
        },
    }
    plan = {
        "routes": [
            {"route": "r1", "vehicle": "van-1", "dock": "d1", "parcels": ["P1", "P2"]},
            {"route": "r2", "vehicle": "van-2", "dock": "d2", "parcels": ["Q1"]},
        ]
    }
    gpiod = FakeGpiod()
    health = HealthRegistry()
    mono = [10_000_000_000]
    wall0 = 1_796_000_000.0
    # one clock for the kernel's stamps and the wall: an edge's UTC time is exact
    clock = Clock("system", wall=lambda: wall0 + mono[0] / 1e9, monotonic=lambda: mono[0] / 1e9)
    service = make(
        tmp_path, outbox, station_config(tmp_path, [dock]), health=health, gpiod=gpiod,
        monotonic_ns=lambda: mono[0], clock=clock,
    )  # fmt: skip
    async with Running(service):
        await send_plan(service, plan)
        await until(lambda: len(gpiod.live()) == 5, "the five lines requested")
        door, bay, red = line_request(gpiod, 17), line_request(gpiod, 18), line_request(gpiod, 21)
        t0 = mono[0]

        def edge(req: FakeRequest, rising: bool, at_ms: int) -> None:
            req.push(rising, t0 + at_ms * 1_000_000)

        def dock_is(door: bool, bay: bool) -> bool:
            d1 = service.state.docks.get("d1")
            return d1 is not None and (d1.door_open, d1.bay_occupied) == (door, bay)

        # the lines' levels when requested are the dock's first states: door closed, bay free
        mono[0] += 100_000_000
        await until(lambda: dock_is(False, False), "the first states")
        t0 = mono[0]
        # the van backs in (the bay contact bounces), the door opens
        for i, level in enumerate((True, False, True)):
            edge(bay, level, i)
        edge(door, True, 100)
        mono[0] = t0 + 500_000_000  # the settle time has passed on the kernel's clock
        await until(lambda: dock_is(True, True), "the door open and the bay occupied")
        for text in ("VEH:van-1", "P1", "P1", "Q1"):
            await service.on_read(Read(text, "Code128", "d1-hand"))
            await asyncio.wait_for(service.idle(), DEADLINE_S)
        await until(lambda: any(v == Value.ACTIVE for _, v in red.written), "the red line")
        edge(door, False, 600)
        edge(bay, False, 700)
        mono[0] = t0 + 1_500_000_000
        await until(lambda: any(c.color == "off" for _, c in service.cue_log), "the gate-out")
        await asyncio.wait_for(service.idle(), DEADLINE_S)
    got = await stored(outbox)
    kinds = [(e["type"], e["data"].get("state") or e["data"].get("parcel")) for e in got]
    assert sorted(kinds[:2]) == [("dock.bay", "free"), ("dock.door", "closed")]
    assert kinds[2:] == [
        ("dock.bay", "occupied"),
        ("dock.door", "open"),
        ("dock.vehicle", None),
        ("load.verified", "P1"),
        ("load.misload", "Q1"),
        ("dock.door", "closed"),
        ("dock.bay", "free"),
        ("load.gateout", None),
        ("load.missing", None),
    ]
    gateout = next(e for e in got if e["type"] == "load.gateout")["data"]
    assert gateout["missing"] == ["P2"] and gateout["misloaded"] == 1
    # the door opened 100 ms after the bay's first edge, as the kernel stamped it
    bay_t = next(e for e in got if e["data"].get("state") == "occupied")["ts"]
    door_t = next(e for e in got if e["data"].get("state") == "open")["ts"]
    assert parse_ts(door_t) - parse_ts(bay_t) == timedelta(milliseconds=100)
    cues = [c.color for _, c in service.cue_log]
    assert cues[:3] == ["green", "green", "red"] and cues[-1] == "off"


def test_the_engine_params_come_from_the_configuration(tmp_path: Path) -> None:
    config = station_config(
        tmp_path, [{"id": "d1"}], gateout_codes=["LEAVE"], vehicle_prefix="TRUCK:"
    )
    sink = MemorySink(Clock("system"), fleet="acme", device="depot-1")
    service = StationService(config, sink, HealthRegistry(), Clock("system"))
    assert service.engine.params == LoadParams(
        gateout_codes=frozenset({"LEAVE"}), vehicle_prefix="TRUCK:"
    )
