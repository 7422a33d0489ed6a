"""The driver app's contract end to end (issue 12 item 5): a real mosquitto, the hub and the agent
as ``hub-bridge run`` and ``edge-agent run`` start them, the van's receiver played by the GNSS
simulator. The manifest goes out with ``hub-bridge send``; the van drives to its first stop; the
driver app posts a scan and a proof of delivery to the van's local API and reads the van's
current stop and the hub's ETAs back from ``GET /v1/trip``: the same ETAs as the hub's API (one
ETA in every channel). A ``cmd/eta`` the van cannot take is refused with the field that is
wrong, and the van keeps the ETAs it had.

Also the pure parts: ``parse_eta`` (bounds), ``HubEtas`` (the latest per route) and the hub's
``VanEtaPlanner`` (status changes at once, ETAs alone at most once per interval).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.gnss.fix import Fix
from edge_agent.trips.hub_eta import EtaError, HubEtas, parse_eta
from edge_agent.wire.envelope import format_ts, parse_ts
from hub_bridge.delivery.vaneta import VanEtaPlanner
from hub_bridge.store import StoreUnavailable
from hub_bridge.tenants import new_token
from simulators.broker import Mosquitto, free_port
from simulators.van import run_van
from simulators.world import fleet_scenarios
from tests.harness import ROOT, Proc, get, post, write_agent_config, write_hub_config

FLEET, DEVICE = "acme", "van-1"
DEADLINE_S = 20.0


async def until(what: str, probe: Callable[[], Any]) -> Any:
    """Poll ``probe`` (blocking, run on a thread) until it returns something true; return it."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    last: Any = None
    while loop.time() < end:
        last = await asyncio.to_thread(probe)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def shifted(fixes: Sequence[Fix], manifest: dict[str, Any]) -> tuple[list[Fix], dict[str, Any]]:
    """The drive moved in time so its last fix is a few seconds old (the hub and the agent take
    it as live); the manifest's windows move with it."""
    delta = datetime.now(UTC) - timedelta(seconds=5) - fixes[-1].time
    moved = [dataclasses.replace(f, time=f.time + delta) for f in fixes]
    doc = json.loads(json.dumps(manifest))
    for stop in doc["stops"]:
        if stop.get("window"):
            stop["window"] = [format_ts(parse_ts(w) + delta) for w in stop["window"]]
    return moved, doc


def send(hub_cfg: Path, token_file: Path, name: str, file: Path) -> dict[str, Any]:
    """``hub-bridge send NAME`` as an operator runs it; its answer."""
    done = subprocess.run(
        [sys.executable, "-m", "hub_bridge", "send", name, "--config", str(hub_cfg),
         "--fleet", FLEET, "--device", DEVICE, "--token-file", str(token_file), str(file)],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[0])
    return answer


def columns(stops: Sequence[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return [(s["id"], s["eta"], s["status"]) for s in stops]


@pytest.mark.slow
async def test_the_driver_app_posts_a_pod_and_reads_the_hubs_eta_from_the_van(
    tmp_path: Path, broker: Mosquitto
) -> None:
    from simulators.gnss import serve_fixes

    sc = fleet_scenarios(1, seed=14, stops=2, tunnels=0)[0]
    run = run_van(sc)
    # parked in the yard, out of the gate, to the first stop and standing there (index 640 is
    # the arrival the trip engine derives from this drive)
    fixes, manifest = shifted(run.fixes[150:700], sc.manifest)
    route, first, second = manifest["route"], manifest["stops"][0], manifest["stops"][1]
    parcel = first["parcels"][0]

    ops, ops_hash = new_token()
    tokens = [
        {"name": "ops", "fleets": "all", "rights": ["read", "commands"], "token_sha256": ops_hash}
    ]
    token_file = tmp_path / "ops.token"
    token_file.write_text(ops)
    hub_cfg = write_hub_config(
        tmp_path,
        broker.url,
        tenants={"tokens": tokens},
        delivery={"poll": "50ms", "van_eta_interval": "1s"},
    )
    gnss_port = free_port()  # the agent's GNSS source retries until the simulator listens
    agent_cfg = write_agent_config(
        tmp_path,
        broker.url,
        device=DEVICE,
        clock={"policy": "system"},
        gnss={
            "source": f"socket://127.0.0.1:{gnss_port}",
            "filter": {"max_ahead": "1d", "max_age": "1d"},
            "reconnect_max": "0.2s",
        },
        trips={"max_time_jump": "1d", "reorder_window": "0s"},
    )
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    agent = Proc("edge_agent", agent_cfg, tmp_path / "agent.log")
    await asyncio.to_thread(hub.start)
    try:
        await asyncio.to_thread(agent.start)
        hub_port, van_port = hub.api_port, agent.api_port
        assert hub_port is not None and van_port is not None

        # before a manifest the van has no trip
        assert get(van_port, "/v1/trip") == {
            "route": None,
            "stop": None,
            "stops": [],
            "eta_at": None,
        }
        send(hub_cfg, token_file, "manifest", tmp_path / "manifest.json")
        await until(
            "the manifest on the van",
            lambda: (
                get(van_port, "/v1/health")["components"].get("trips", {}).get("route") == route
            ),
        )
        trip = get(van_port, "/v1/trip")
        assert trip["route"] == route and trip["stop"] == {"id": first["id"], "state": "next"}
        assert [s["id"] for s in trip["stops"]] == [first["id"], second["id"]]

        # the van drives to its first stop (its receiver at 200x)
        await serve_fixes(fixes, port=gnss_port, speed=200.0, wait_for_client=True)
        await until(
            "the van at its first stop",
            lambda: get(van_port, "/v1/trip")["stop"] == {"id": first["id"], "state": "at"},
        )

        # the driver app: a scan of the parcel, then its proof of delivery, to the van's API
        at = {"lat": first["lat"], "lon": first["lon"]}
        ref = {"parcel": parcel, "stop": first["id"], "route": route}
        status, scanned = post(
            van_port,
            {
                "type": "scan",
                "data": {"text": parcel, "symbology": "code128", "source": "driver-app"},
                "ref": ref,
            },
        )
        assert status == 201 and scanned["seq"] >= 1, scanned
        status, pod = post(
            van_port,
            {
                "type": "pod",
                "data": {
                    "parcel": parcel,
                    "kind": "signature",
                    "sha256": "ab" * 32,
                    "recipient": "J. Doe",
                    **at,
                },
                "ref": ref,
            },
        )
        assert status == 201 and pod["seq"] > scanned["seq"], pod

        def hub_parcel() -> dict[str, Any]:
            found: dict[str, Any] = get(hub_port, f"/v1/parcels/{parcel}?fleet={FLEET}", token=ops)
            return found

        await until("the PoD on the hub", lambda: hub_parcel()["status"] == "delivered")
        history = hub_parcel()["history"]
        assert any(h["event"]["id"] == pod["id"] and h["applied"] for h in history)

        # one ETA: what the van shows is what the hub's API says
        def same() -> tuple[dict[str, Any], dict[str, Any]] | None:
            hub_route = get(hub_port, f"/v1/routes/{route}?fleet={FLEET}", token=ops)
            van = get(van_port, "/v1/trip")
            if van["eta_at"] is None or columns(van["stops"]) != columns(hub_route["stops"]):
                return None
            return van, hub_route

        van, hub_route = await until("the hub's ETAs on the van", same)
        assert hub_route["vehicle"] == DEVICE and hub_route["status"] == "active"
        assert van["route"] == route and van["stop"] == {"id": first["id"], "state": "at"}
        ahead = van["stops"][1]
        assert ahead["id"] == second["id"] and ahead["eta"] is not None
        assert parse_ts(ahead["eta"]) > fixes[-1].time  # ahead of the van's last fix
        assert parse_ts(van["eta_at"]) <= datetime.now(UTC)
        commands = get(hub_port, f"/v1/devices/{FLEET}/{DEVICE}/commands", token=ops)
        etas = [c for c in commands if c["name"] == "eta"]
        assert etas and all(c["status"] in ("ok", "superseded", "sent") for c in etas), etas
        assert any(c["status"] == "ok" for c in etas)

        # a cmd/eta the van cannot take: refused, the field named; the van keeps its ETAs
        (tmp_path / "bad.json").write_text(
            json.dumps({"route": route, "at": "yesterday", "stops": []})
        )
        bad = send(hub_cfg, token_file, "eta", tmp_path / "bad.json")

        def answered() -> dict[str, Any] | None:
            c: dict[str, Any] = get(hub_port, f"/v1/commands/{bad['id']}", token=ops)
            return c if c["status"] in ("ok", "refused") else None

        refused = await until("the van's answer to a bad cmd/eta", answered)
        assert refused["status"] == "refused", refused
        assert "eta.at" in refused["error"] and "yesterday" in refused["error"], refused
        assert columns(get(van_port, "/v1/trip")["stops"]) == columns(van["stops"])
        assert get(van_port, "/v1/openapi.json")["paths"]["/v1/trip"]["get"]["responses"]["200"]
    finally:
        agent.stop()
        hub.stop()


# ---------------------------------------------------------------------------------- pure parts

GOOD = {
    "id": "c1",
    "route": "r1",
    "at": "2026-03-02T07:00:00.000Z",
    "stops": [
        {"id": "s1", "eta": None, "status": "delivered"},
        {"id": "s2", "eta": "2026-03-02T07:30:00.000Z", "status": "planned"},
    ],
}


def _with(**change: Any) -> bytes:
    return json.dumps({**GOOD, **change}).encode()


def test_parse_eta_takes_what_the_hub_sends() -> None:
    eta = parse_eta(json.dumps(GOOD).encode())
    assert eta.route == "r1" and eta.at == GOOD["at"]
    assert list(eta.stops) == GOOD["stops"]


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b"\xff", "eta: "),
        (b"[1]", "eta: must be a JSON object"),
        (_with(route=""), "eta.route"),
        (_with(route=7), "eta.route"),
        (_with(at="2026-03-02 07:00"), "eta.at"),
        (_with(stops={"s1": 1}), "eta.stops: must be an array"),
        (_with(stops=[1]), "eta.stops[0]: must be an object"),
        (_with(stops=[{"id": "s1", "eta": 5, "status": "planned"}]), "eta.stops[0].eta"),
        (_with(stops=[{"id": "s1", "eta": None, "status": "no way"}]), "eta.stops[0].status"),
        (_with(stops=[{"id": "s1", "eta": None, "status": "x", "y": 1}]), "eta.stops[0].y"),
        (_with(stops=[{"id": "s", "eta": None, "status": "x"}] * 2), "eta.stops[1].id"),
        (_with(extra=1), "eta.extra: unknown field"),
        (_with(stops=[{"id": "s", "eta": None, "status": "x"}] * 20_001), "more than 20000"),
        (b"[" * 100 + b"]" * 100, "eta: "),
    ],
)
def test_parse_eta_refuses_garbage_naming_the_field(payload: bytes, where: str) -> None:
    with pytest.raises(EtaError) as caught:
        parse_eta(payload)
    assert where in str(caught.value)


def test_hub_etas_keep_the_latest_per_route_and_a_bounded_number() -> None:
    kept = HubEtas(max_routes=2)
    newer = parse_eta(_with(at="2026-03-02T07:05:00.000Z"))
    assert kept.put(newer)
    assert not kept.put(parse_eta(json.dumps(GOOD).encode()))  # computed earlier: a resend
    assert kept.get("r1") is newer
    kept.put(parse_eta(_with(route="r2")))
    kept.put(parse_eta(_with(route="r3")))
    assert kept.get("r1") is None and kept.get("r3") is not None


def _view(
    etas: Sequence[str | None], statuses: Sequence[str], vehicle: str | None = "van-1"
) -> dict[str, Any]:
    return {
        "route": "r1",
        "vehicle": vehicle,
        "status": "active",
        "stops": [
            {"id": f"s{i}", "eta": e, "status": s, "window": None}
            for i, (e, s) in enumerate(zip(etas, statuses, strict=True))
        ],
    }


def test_the_planner_sends_status_changes_at_once_and_etas_at_most_every_interval() -> None:
    p = VanEtaPlanner(interval=30.0)
    p.offer("acme", _view(["2026-03-02T07:30:00.000Z"], ["planned"]), 100.0)
    (first,) = p.due(100.0)
    assert (first.fleet, first.device, first.route) == ("acme", "van-1", "r1")
    assert first.payload == {
        "route": "r1",
        "at": format_ts(datetime.fromtimestamp(100.0, UTC)),
        "stops": [{"id": "s0", "eta": "2026-03-02T07:30:00.000Z", "status": "planned"}],
    }
    assert p.due(101.0) == []
    p.offer("acme", _view(["2026-03-02T07:30:00.000Z"], ["planned"]), 102.0)
    assert p.due(200.0) == []  # nothing changed
    p.offer("acme", _view(["2026-03-02T07:31:00.000Z"], ["planned"]), 105.0)
    p.offer("acme", _view(["2026-03-02T07:32:00.000Z"], ["planned"]), 110.0)
    assert p.due(110.0) == [] and p.waiting() == 1  # ETAs alone: held back...
    (late,) = p.due(131.0)  # ...and the latest goes once the interval has passed
    assert late.payload["stops"][0]["eta"] == "2026-03-02T07:32:00.000Z"
    p.offer("acme", _view(["2026-03-02T07:32:00.000Z"], ["approaching"]), 132.0)
    (urgent,) = p.due(132.0)  # a status change goes at once
    assert urgent.payload["stops"][0]["status"] == "approaching"
    p.failed(urgent)
    assert p.due(132.5) == [urgent]  # not queued: sent again
    # no vehicle, or a planned route: nothing to send
    p.offer("acme", {**_view([None], ["planned"], None), "route": "r2"}, 140.0)
    p.offer("acme", {**_view([None], ["planned"]), "route": "r3", "status": "planned"}, 140.0)
    assert p.due(200.0) == []


class FlakyQueue:
    """The timeline's command queue, failing its first ``fail`` calls as a locked database
    does (the one fault stood in for: a real store cannot be made to fail on cue here)."""

    def __init__(self, timeline: Any, fail: int) -> None:
        self.timeline = timeline
        self.fail = fail

    async def add_command(self, *args: Any, **kw: Any) -> list[str]:
        if self.fail > 0:
            self.fail -= 1
            raise StoreUnavailable("database is locked")
        found: list[str] = await self.timeline.add_command(*args, **kw)
        return found


async def test_the_projector_queues_the_routes_etas_for_its_van_once_the_store_takes_them(
    tmp_path: Path,
) -> None:
    """The projector on a real SQLite timeline and delivery store: a route's views go to its
    van as ``cmd/eta`` (the vehicle the manifest was sent to), the last one equal to the API's
    route, even when the store failed to take it the first time."""
    from hub_bridge.backends import open_delivery_store, open_timeline
    from hub_bridge.commands import CommandLimits
    from hub_bridge.delivery.projector import Projector, ProjectorSettings
    from tests.delivery_events import Device, drive_day
    from tests.delivery_events import manifest as route_manifest

    url = f"sqlite://{tmp_path / 'timeline.db'}"
    timeline = await open_timeline(url)
    store = await open_delivery_store(url)
    woken: list[int] = []
    try:
        body = json.dumps({"id": "m-1", **route_manifest()})
        await timeline.add_command("acme", "van-1", "manifest", "m-1", body, CommandLimits())
        projector = Projector(timeline, store, ProjectorSettings(tick=1e9, checkpoint=1e9))
        queue = FlakyQueue(timeline, fail=0)
        projector.send_etas(queue, CommandLimits(), lambda: woken.append(1), interval=1e9)
        sender = asyncio.create_task(projector.send_etas_loop())
        van = Device()
        events = drive_day(van)
        half = next(k for k, e in enumerate(events) if e["type"] == "pod")
        try:
            async with asyncio.timeout(DEADLINE_S):
                for fail, chunk in ((0, events[:half]), (1, events[half:])):
                    queue.fail = fail  # the second half's one command fails first
                    await timeline.store("acme", "van-1", chunk, [[] for _ in chunk])
                    while await projector.step():
                        pass

                    async def sent() -> bool:
                        await asyncio.sleep(0.01)
                        return not projector.etas_waiting

                    while not await sent():
                        pass
                    await projector.step()  # a round later the failed one comes again
                    while not await sent():
                        pass
        finally:
            sender.cancel()
        assert projector.model is not None
        view = projector.model.route("acme", "r-1")
        assert view is not None and view["vehicle"] == "van-1"
        kept = [c for c in await timeline.commands("acme", "van-1") if c["name"] == "eta"]
        assert kept and woken
        assert projector.health.snapshot()["projector"]["counters"]["eta-command-failed"] == 1
        latest = await timeline.command(kept[0]["id"])
        assert latest is not None
        doc = latest["payload"]
        assert doc["route"] == "r-1" and columns(doc["stops"]) == columns(view["stops"])
        parse_eta(json.dumps(doc).encode())  # what the van takes
        # one unanswered at a time per device: the older ones superseded
        assert sum(c["status"] == "queued" for c in kept) == 1
    finally:
        await store.close()
        await timeline.close()
