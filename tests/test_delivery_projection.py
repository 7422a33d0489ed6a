"""Events stored in the timeline become statuses, exceptions and webhooks through the real
delivery model: manifests and load plans queued through the hub, a station and a van's events
stored late and out of order, answers read over the API, a projector that restarts from its
checkpoint adding nothing twice (real SQLite file, real HTTP)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge_agent.platform.health import HealthRegistry
from edge_agent.wire import topics
from edge_agent.wire.envelope import new_event_id, validate_envelope
from hub_bridge.backends import open_delivery_store, open_timeline
from hub_bridge.bridge import HubBridge
from hub_bridge.commands import CommandLimits
from hub_bridge.config import load_hub_config
from hub_bridge.delivery.projector import (
    HUB_DEVICE,
    DeliveryConfig,
    DeliveryService,
    Projector,
    ProjectorSettings,
)
from hub_bridge.delivery.push import PushSettings, WebhookWorker
from hub_bridge.delivery.routes import add_delivery_routes
from hub_bridge.delivery.store import DeliveryStore, Subscription
from hub_bridge.store import TimelineStore
from simulators.broker import Mosquitto
from tests.delivery_rig import Receiver, wait_until
from tests.harness import Running, write_hub_config

FLEET = "acme"
DEPOT = {"lat": 52.0, "lon": 4.0, "radius_m": 150}
MANIFEST = {
    "route": "r-1",
    "depot": DEPOT,
    "stops": [
        {
            "id": "s-1",
            "lat": 52.01,
            "lon": 4.0,
            "radius_m": 40,
            "parcels": ["P1", "P2"],
            "window": ["2026-12-03T08:00:00Z", "2026-12-03T12:00:00Z"],
        },
        {
            "id": "s-2",
            "lat": 52.02,
            "lon": 4.0,
            "radius_m": 40,
            "parcels": ["P3"],
            "window": ["2026-12-03T08:00:00Z", "2026-12-03T12:00:00Z"],
        },
    ],
}
LOADPLAN = {
    "station": "st-1",
    "routes": [
        {"route": "r-1", "vehicle": "van-1", "dock": "d1", "parcels": ["P1", "P2", "P3"]},
        {"route": "r-2", "vehicle": "van-2", "dock": "d2", "parcels": ["Q1"]},
    ],
}


def ts(minute: float) -> str:
    whole = int(minute * 60)
    return f"2026-12-03T08:{whole // 60:02d}:{whole % 60:02d}.000Z"


@dataclass
class Device:
    """Makes one device's envelopes, valid and numbered as the agent would."""

    name: str
    seq: int = 0
    made: list[dict[str, Any]] = field(default_factory=list)

    def ev(self, type_: str, minute: float, data: dict[str, Any], **ref: str) -> dict[str, Any]:
        self.seq += 1
        env: dict[str, Any] = {
            "id": new_event_id(),
            "seq": self.seq,
            "fleet": FLEET,
            "device": self.name,
            "type": type_,
            "ts": ts(minute),
            "clock": "gnss",
            "data": data,
        }
        if ref:
            env["ref"] = ref
        self.made.append(validate_envelope(env))
        return env


def day() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A station's loading and a van's round: (station events, van events)."""
    st, van = Device("st-1"), Device("van-1")
    for k, p in enumerate(["P1", "P2", "P3"]):
        st.ev(
            "load.verified",
            1 + k * 0.1,
            {"parcel": p, "route": "r-1", "vehicle": "van-1", "dock": "d1"},
            parcel=p,
            route="r-1",
        )
    st.ev(
        "load.misload",
        1.5,
        {
            "parcel": "Q1",
            "dock": "d1",
            "vehicle": "van-1",
            "expected_route": "r-2",
            "expected_vehicle": "van-2",
            "expected_dock": "d2",
        },
        parcel="Q1",
    )
    van.ev("trip.depart", 10, {"zone": "depot"}, route="r-1")
    van.ev("gnss.fix", 12, {"lat": 52.005, "lon": 4.0, "mode": 3, "speed_mps": 8.0})
    van.ev("trip.approach", 14, {"zone": "s-1"}, route="r-1", stop="s-1")
    van.ev("trip.arrive", 15, {"zone": "s-1"}, route="r-1", stop="s-1")
    van.ev("pod", 17, {"parcel": "P1", "kind": "signature", "lat": 52.01, "lon": 4.0}, parcel="P1")
    van.ev("pod", 18, {"parcel": "P2", "kind": "none"}, parcel="P2")
    van.ev("trip.depart", 19, {"zone": "s-1"}, route="r-1", stop="s-1")
    van.ev("gnss.fix", 21, {"lat": 52.015, "lon": 4.0, "mode": 3, "speed_mps": 8.0})
    van.ev("trip.arrive", 23, {"zone": "s-2"}, route="r-1", stop="s-2")
    van.ev("pod", 25, {"parcel": "P3", "kind": "photo", "lat": 52.02, "lon": 4.0}, parcel="P3")
    return st.made, van.made


@dataclass
class Hub:
    timeline: TimelineStore
    store: DeliveryStore
    base: str
    http: aiohttp.ClientSession

    def projector(self, **kw: Any) -> Projector:
        settings = ProjectorSettings(tick=1e9, checkpoint=kw.pop("checkpoint", 1e9))
        return Projector(self.timeline, self.store, settings, **kw)

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path, params=params) as resp:
            return resp.status, await resp.json()

    async def plan(self, name: str, payload: dict[str, Any], device: str) -> None:
        cid = new_event_id()
        body = json.dumps({"id": cid, **payload})
        await self.timeline.add_command(FLEET, device, name, cid, body, CommandLimits())


@pytest.fixture
async def hub(timeline_url: str) -> AsyncIterator[Hub]:
    timeline = await open_timeline(timeline_url)
    store = await open_delivery_store(timeline_url)  # the same database, its own connection
    app = web.Application()
    add_delivery_routes(app, None, store=store)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Hub(timeline, store, str(server.make_url("")), http)
    await server.close()
    await store.close()
    await timeline.close()


async def store_shuffled(hub: Hub, events: list[dict[str, Any]], seed: int) -> None:
    """Each device's events stored in seq order (the timeline's contract), but the devices'
    batches interleaved, some late: what the model sees is out of event-time order."""
    rng = random.Random(seed)
    by_device: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_device.setdefault(e["device"], []).append(e)
    queues = {d: list(es) for d, es in by_device.items()}
    while any(queues.values()):
        d = rng.choice([d for d, q in queues.items() if q])
        n = rng.randint(1, 3)
        batch, queues[d] = queues[d][:n], queues[d][n:]
        await hub.timeline.store(FLEET, d, batch, [[] for _ in batch])


async def drain(p: Projector) -> None:
    while await p.step():
        pass


async def test_statuses_routes_and_exceptions_over_the_api(hub: Hub) -> None:
    await hub.plan("manifest", MANIFEST, "van-1")
    await hub.plan("loadplan", LOADPLAN, "st-1")
    station, van = day()
    # the van's events arrive first (its station was offline), the station's later
    await store_shuffled(hub, van, seed=1)
    p = hub.projector()
    await drain(p)
    await store_shuffled(hub, station, seed=2)
    await drain(p)

    status, parcel = await hub.get("/v1/parcels/P1", fleet=FLEET)
    assert status == 200
    assert parcel["status"] == "delivered"
    assert parcel["route"] == "r-1" and parcel["stop"] == "s-1"
    devices = {h["event"]["device"] for h in parcel["history"]}
    assert devices == {"st-1", "van-1"}  # across devices
    times = [h["ts"] for h in parcel["history"]]
    assert times == sorted(times)  # in event time, though the station's came last
    assert (await hub.get("/v1/parcels/P2", fleet=FLEET))[1]["status"] == "failed_attempt"
    assert (await hub.get("/v1/parcels/P3", fleet=FLEET))[1]["status"] == "delivered"
    assert (await hub.get("/v1/parcels/P1", fleet="other"))[0] == 404
    assert (await hub.get("/v1/parcels/nope", fleet=FLEET))[0] == 404
    status, err = await hub.get("/v1/parcels/P1")
    assert status == 400 and err["error"].startswith("fleet:")

    status, route = await hub.get("/v1/routes/r-1", fleet=FLEET)
    assert status == 200
    assert [s["id"] for s in route["stops"]] == ["s-1", "s-2"]
    assert route["stops"][0]["status"] == "departed"
    assert route["stops"][1]["status"] == "arrived"

    status, open_ = await hub.get("/v1/exceptions", fleet=FLEET)
    assert status == 200
    misloads = [e for e in open_ if e["type"] == "misload"]
    assert len(misloads) == 1 and misloads[0]["raised"]["payload"]["reason"]
    # the hub's exception is in the timeline too, as an event of the fleet's pseudo-device
    hub_events = [e async for e in hub.timeline.events(FLEET, HUB_DEVICE)]
    assert [e["type"] for e in hub_events if e["data"]["state"] == "raised"].count(
        "exception.misload"
    ) == 1
    assert all(validate_envelope(e) for e in hub_events)


async def test_a_restarted_projector_adds_nothing_twice(hub: Hub) -> None:
    await hub.plan("manifest", MANIFEST, "van-1")
    await hub.plan("loadplan", LOADPLAN, "st-1")
    station, van = day()
    await hub.timeline.store(FLEET, "st-1", station, [[] for _ in station])
    half = len(van) // 2
    await hub.timeline.store(FLEET, "van-1", van[:half], [[] for _ in van[:half]])
    first = hub.projector()
    await drain(first)
    await first.checkpoint()
    await hub.timeline.store(FLEET, "van-1", van[half:], [[] for _ in van[half:]])
    await drain(first)  # ... and dies before its next checkpoint
    logged = await hub.store.last_pos()
    views = {p: (await hub.get(f"/v1/parcels/{p}", fleet=FLEET))[1] for p in ("P1", "P2", "P3")}
    hub_events = [e async for e in hub.timeline.events(FLEET, HUB_DEVICE)]

    again = hub.projector()
    await again.resume()
    assert again.cp.events < (await hub.timeline.events_since(0, 10_000))[1]  # really behind
    await drain(again)
    assert await hub.store.last_pos() == logged  # the same notices: nothing new logged
    for p, view in views.items():
        assert (await hub.get(f"/v1/parcels/{p}", fleet=FLEET))[1] == view
    assert [e async for e in hub.timeline.events(FLEET, HUB_DEVICE)] == hub_events


async def test_webhooks_carry_the_statuses_in_order_per_parcel(hub: Hub) -> None:
    await hub.plan("manifest", MANIFEST, "van-1")
    await hub.plan("loadplan", LOADPLAN, "st-1")
    async with Receiver(plan=lambda d, a: "fail" if a == 1 and hash(d) % 3 == 0 else "ok") as rx:
        rx.secrets["/dispatch"] = "whsec_" + "d" * 30
        await hub.store.add_subscription(
            Subscription(
                "wh_00000000000000d1",
                FLEET,
                rx.url("dispatch"),
                rx.secrets["/dispatch"],
                kinds=("parcel.status", "exception.raised"),
                created=time.time(),
            )
        )
        worker = WebhookWorker(hub.store, PushSettings(backoff_base=0.01, backoff_cap=0.02))
        projector = hub.projector(on_logged=lambda _n: worker.wake())
        task = asyncio.create_task(worker.run())
        try:
            station, van = day()
            await store_shuffled(hub, station + van, seed=3)
            await drain(projector)
            queued = await hub.store.deliveries(FLEET, "wh_00000000000000d1", limit=1000)
            assert queued
            await wait_until(
                lambda: len(rx.delivered.get("/dispatch", [])) == len(queued), 10, "all"
            )
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    bodies = {h.delivery: h.body for h in rx.hits}
    assert all(h.signed for h in rx.hits)
    got = [bodies[d] for d in rx.delivered["/dispatch"]]
    assert {b["kind"] for b in got} == {"parcel.status", "exception.raised"}
    log = await hub.store.notices_after(0, FLEET)
    for pid in ("P1", "P2", "P3"):
        told = [n.id for n in log if n.kind == "parcel.status" and n.key == pid]
        assert [b["id"] for b in got if b["kind"] == "parcel.status" and b["key"] == pid] == told
        mine = [
            b["payload"]["status"] for b in got if b["kind"] == "parcel.status" and b["key"] == pid
        ]
        final = (await hub.get(f"/v1/parcels/{pid}", fleet=FLEET))[1]["status"]
        assert mine and mine[-1] == final  # the last one told is where the parcel is


async def test_one_hub_projects_on_postgresql_and_another_takes_over(pg_url: str) -> None:
    """N hubs on one database: the advisory lock makes one leader; its death frees the lock."""
    first, second = await open_delivery_store(pg_url), await open_delivery_store(pg_url)
    try:
        assert await first.lead()
        assert not await second.lead()
        assert await first.lead()  # still held
        assert not await second.lead()
        await first.close()  # the leader's connection goes: PostgreSQL frees the lock
        await wait_until_async(second.lead, 5, "the second hub to lead")
    finally:
        await second.close()


async def wait_until_async(cond: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await cond():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_from_a_device_over_mqtt_to_a_status_and_a_signed_webhook(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The hub as ``hub-bridge run`` wires it: the real bridge ingesting from a real mosquitto,
    the delivery service beside it on the same timeline file, the API's routes on the store."""
    config = load_hub_config(write_hub_config(tmp_path, broker.url))
    timeline = await open_timeline(config.timeline.url)
    store = await open_delivery_store(config.timeline.url)
    health = HealthRegistry()
    bridge = HubBridge(config, timeline, health)
    cfg = DeliveryConfig.model_validate({"poll": "50ms", "webhooks": {"allow_private": True}})
    service = DeliveryService(timeline, store, cfg, health=health)
    app = web.Application()
    add_delivery_routes(app, None, store=store, stream=service.stream)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    device = paho.Client(paho.CallbackAPIVersion.VERSION2)
    device.connect("127.0.0.1", broker.port)
    device.loop_start()
    try:
        async with Receiver() as rx, aiohttp.ClientSession() as http:
            rx.secrets["/hooks"] = "whsec_" + "e" * 30
            async with http.post(
                str(server.make_url("/v1/fleets/acme/webhooks")),
                json={
                    "url": rx.url("hooks"),
                    "kinds": ["parcel.status"],
                    "secret": "whsec_" + "e" * 30,
                },
            ) as r:
                assert r.status == 201
            cid = new_event_id()
            await timeline.add_command(
                FLEET,
                "van-1",
                "manifest",
                cid,
                json.dumps({"id": cid, **MANIFEST}),
                CommandLimits(),
            )
            async with Running(bridge, check_still_running=True), Running(service):
                await asyncio.wait_for(bridge.subscribed.wait(), 20)
                _, van = day()
                for k in range(0, len(van), 4):  # as the agent sends: batches in seq order
                    batch = json.dumps({"events": van[k : k + 4]})
                    device.publish(topics.events(FLEET, "van-1"), batch, qos=1).wait_for_publish(5)
                await wait_until(
                    lambda: any(
                        h.body["key"] == "P3" and h.body["payload"]["status"] == "delivered"
                        for h in rx.hits
                    ),
                    20,
                    "P3 delivered, by webhook",
                )
                async with http.get(
                    str(server.make_url("/v1/parcels/P1")), params={"fleet": FLEET}
                ) as r:
                    assert (await r.json())["status"] == "delivered"
        assert all(h.signed for h in rx.hits)
        assert health.counters("projector")["events"] == len(van)
    finally:
        device.loop_stop()
        device.disconnect()
        await server.close()
        await store.close()
        await timeline.close()


def test_hub_bridge_run_serves_parcels_to_a_token_that_may_read_them(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The hub process as `hub-bridge run` starts it: delivery service, routes and tokens."""
    import subprocess
    import sys

    from hub_bridge.tenants import new_token
    from tests.harness import ROOT, Proc, get

    ops, ops_hash = new_token()
    other, other_hash = new_token()
    tokens = [
        {"name": "ops", "fleets": "all", "rights": ["read", "commands"], "token_sha256": ops_hash},
        {"name": "3pl", "fleet": "fastlane", "rights": ["read"], "token_sha256": other_hash},
    ]
    hub_cfg = write_hub_config(
        tmp_path, broker.url, tenants={"tokens": tokens}, delivery={"poll": "50ms"}
    )
    (tmp_path / "ops.token").write_text(ops)
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    hub.start()
    device = paho.Client(paho.CallbackAPIVersion.VERSION2)
    device.connect("127.0.0.1", broker.port)
    device.loop_start()
    try:
        assert hub.api_port is not None
        sent = subprocess.run(
            [sys.executable, "-m", "hub_bridge", "send", "manifest", "--config", str(hub_cfg),
             "--fleet", FLEET, "--device", "van-1", "--token-file", str(tmp_path / "ops.token"),
             str(tmp_path / "manifest.json")],
            check=False, capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        _, van = day()
        for k in range(0, len(van), 4):
            batch = json.dumps({"events": van[k : k + 4]})
            device.publish(topics.events(FLEET, "van-1"), batch, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 30
        found: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = get(hub.api_port, "/v1/parcels/P1?fleet=acme", token=ops)
            if found.get("status") == "delivered":
                break
            time.sleep(0.2)
        assert found.get("status") == "delivered", found
        route = get(hub.api_port, f"/v1/routes/{MANIFEST['route']}?fleet=acme", token=ops)
        assert [s["id"] for s in route["stops"]] == [s["id"] for s in MANIFEST["stops"]]
        doc = get(hub.api_port, "/v1/openapi.json")
        assert "/v1/parcels/{id}" in doc["paths"] and "/v1/fleets/{fleet}/stream" in doc["paths"]
        for token, status in ((None, 401), (other, 403)):
            with pytest.raises(Exception, match=str(status)):
                get(hub.api_port, "/v1/parcels/P1?fleet=acme", token=token)
    finally:
        device.loop_stop()
        device.disconnect()
        hub.stop()


async def test_one_hubs_projector_and_worker_both_lead_when_they_ask_at_once(pg_url: str) -> None:
    """At a hub's start its projector and its webhook worker ask for the lead together: both
    get it (it is one hub's), where one of them used to stand by for seconds."""
    from hub_bridge.backends import open_delivery_store

    store = await open_delivery_store(pg_url)
    other = await open_delivery_store(pg_url)
    try:
        assert await asyncio.gather(store.lead(), store.lead(), store.lead()) == [True] * 3
        assert await other.lead() is False  # another hub stays standby meanwhile
    finally:
        await store.close()
        await other.close()


async def test_the_projector_gives_way_to_ingest_while_messages_wait(hub: Hub) -> None:
    van = Device("van-1")
    for k in range(2000):
        van.ev("gnss.fix", k / 60, {"lat": 52.0 + k * 1e-5, "lon": 4.0, "mode": 3})
    await hub.timeline.store(FLEET, "van-1", van.made, [[] for _ in van.made])
    busy = [True]

    async def share_of_time(rounds: int) -> float:
        """Run a projector for ``rounds`` whole rounds of 100 events (each with the pause after
        it, up to the start of the next); the share of that time its rounds took."""
        settings = ProjectorSettings(tick=1e9, checkpoint=1e9, batch=100, busy_share=0.25)
        p = Projector(hub.timeline, hub.store, settings)
        p.yield_to(lambda: busy[0])
        starts: list[float] = []
        ends: list[float] = []
        step = p.step

        async def timed() -> int:
            starts.append(time.monotonic())
            try:
                return await step()
            finally:
                ends.append(time.monotonic())

        p.step = timed  # type: ignore[method-assign]
        task = asyncio.create_task(p.run())
        await wait_until(lambda: len(starts) > rounds, 30, f"{rounds} rounds")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        spent = sum(end - start for start, end in zip(starts[:rounds], ends, strict=False))
        return spent / (starts[rounds] - starts[0])

    under_pressure = await share_of_time(6)
    assert under_pressure <= 0.26  # at most its share (and a little for the clock's grain)
    busy[0] = False
    free = await share_of_time(6)
    assert free > 2 * under_pressure  # nothing waits: its rounds run back to back
