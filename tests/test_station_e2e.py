"""The whole station agent as a real process: its load plan over MQTT (acknowledged), a dock's
scanner and TFmini bay sensor on sockets (``simulators.dock_devices``), a camera reading every
label of simulated dock frames, and its events in a real hub's timeline through a real mosquitto.

No GPIO here (no chip on this machine): the bays are distance sensors; the GPIO path is tested
through the stand-in in ``test_station_service.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt

from edge_agent.station.plan import parcel_key
from edge_agent.wire import topics
from simulators.broker import Mosquitto
from simulators.dock_camera import plan_dock, write_dock_frames
from simulators.dock_devices import DockDevices
from tests.harness import Proc, get, post, write_agent_config, write_hub_config

DEADLINE_S = 60.0
DEVICE = {"id": "depot-1", "fleet": "acme", "role": "station"}


async def hub_events(port: int) -> list[dict[str, Any]]:
    return await asyncio.to_thread(get, port, "/v1/events?device=depot-1&limit=10000")


async def until_hub(port: int, cond: Any, what: str) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while True:
        events = await hub_events(port)
        if cond(events):
            return events
        if loop.time() > end:
            types = [e["type"] for e in events]
            raise AssertionError(f"timed out waiting for {what}; the hub has {types}")
        await asyncio.sleep(0.2)


def of(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == type_]


async def test_a_station_loads_two_vans_end_to_end(tmp_path: Path, broker: Mosquitto) -> None:
    # the camera's frames are rendered aside and moved into place once dock 1 has caught the
    # misload of one of them: until then the camera has no images and its driver reopens it
    scene = plan_dock(4, max_in_view=3, frames_to_cross=10, seed=3)
    staged = tmp_path / "staged-frames"
    truth = json.loads(write_dock_frames(staged, scene, fps=8).read_text())
    (staged / "truth.json").unlink()
    readable = [parcel_key(lab["text"]) for lab in truth["labels"] if lab["readable"]]
    assert len(readable) >= 3
    frames = tmp_path / "d2-frames"

    d1, d2 = DockDevices("d1"), DockDevices("d2")
    await d1.start()
    await d2.start()
    try:
        await _load_two_vans(tmp_path, broker, d1, d2, readable, staged, frames)
    finally:
        await d1.close()
        await d2.close()


async def _load_two_vans(
    tmp_path: Path,
    broker: Mosquitto,
    d1: DockDevices,
    d2: DockDevices,
    readable: list[str],
    staged: Path,
    frames: Path,
) -> None:
    d2.arrive()  # van-2 is in bay 2 from the start
    camera = {"id": "d2-cam", "source": str(frames), "fps": 8, "reconnect_max": "0.3s"}
    station = {"docks": [d1.station_dock(), {**d2.station_dock(), "cameras": [camera]}]}
    r1 = ["P-1", "P-2", "P-3", "P-4"]
    plan = {
        "station": "depot-1",
        "routes": [
            {"route": "r1", "vehicle": "van-1", "dock": "d1", "parcels": r1},
            {"route": "r2", "vehicle": "van-2", "dock": "d2", "parcels": [*readable, "P-9"]},
        ],
    }
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    cfg = write_agent_config(tmp_path, broker.url, device="depot-1", station=station)
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "device": DEVICE}))
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    await asyncio.to_thread(hub.start)
    await asyncio.to_thread(agent.start)
    try:
        assert hub.api_port is not None
        async with asyncio.timeout(DEADLINE_S):
            await d1.wait_connected()
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(topics.cmd_ack("acme", "depot-1"), qos=1)
            await client.subscribe(topics.state("acme", "depot-1"), qos=1)
            async with asyncio.timeout(DEADLINE_S):
                async for msg in client.messages:  # the agent is subscribed once it is online
                    if json.loads(bytes(msg.payload)).get("state") == "online":
                        break
            payload = json.dumps({**plan, "id": "plan-1"})
            await client.publish(topics.cmd("acme", "depot-1", "loadplan"), payload, qos=1)
            async with asyncio.timeout(DEADLINE_S):
                async for msg in client.messages:
                    ack = json.loads(bytes(msg.payload))
                    if ack.get("id") == "plan-1":
                        break
            assert ack == {"id": "plan-1", "ok": True}

        # dock 1: a handheld; van-1 backs in, its parcels are read (one twice), a parcel of
        # van-2 is brought to the wrong dock and caught, P-3 is left behind, van-1 leaves
        d1.arrive()
        await until_hub(hub.api_port, lambda ev: of(ev, "dock.bay"), "bay 1 occupied")
        for text in ("VEH:van-1", "P-1", "P-2", "P-2", readable[0]):
            await d1.scan(text)
        # a handheld app posts its scans to the station's local API, naming the dock
        assert agent.api_port is not None
        scan = {"text": "P-4", "symbology": "Code128", "source": "app-7"}
        status, _ = await asyncio.to_thread(
            post, agent.api_port, {"type": "scan", "data": scan, "ref": {"dock": "d1"}}
        )
        assert status == 201
        await until_hub(hub.api_port, lambda ev: of(ev, "load.misload"), "the misload")
        staged.rename(frames)  # dock 2's camera starts seeing labels
        # the camera of dock 2 sees it pass there: it is off van-1 when van-1 leaves
        await until_hub(
            hub.api_port,
            lambda ev: any(d["parcel"] == readable[0] for d in of(ev, "load.verified")),
            "the misloaded parcel verified at its own dock",
        )
        d1.leave()
        # dock 2: the camera reads every label that passes; then van-2 leaves without P-9
        await until_hub(
            hub.api_port,
            lambda ev: len(of(ev, "load.verified")) >= 3 + len(readable),
            "every label at dock 2 verified",
        )
        d2.leave()
        # each gate-out is followed by its load.missing, which may come in a later batch
        events = await until_hub(
            hub.api_port,
            lambda ev: len(of(ev, "load.gateout")) == 2 and len(of(ev, "load.missing")) == 2,
            "both gate-outs and what each left behind",
        )
    finally:
        agent.stop()
        hub.stop()
    verified = {(v["route"], v["parcel"]) for v in of(events, "load.verified")}
    assert verified == {("r1", "P-1"), ("r1", "P-2"), ("r1", "P-4")} | {("r2", p) for p in readable}
    assert len(of(events, "load.verified")) == len(verified)  # a repeated read is one event
    (misload,) = of(events, "load.misload")
    assert misload == {
        "parcel": readable[0],
        "dock": "d1",
        "vehicle": "van-1",
        "expected_route": "r2",
        "expected_vehicle": "van-2",
        "expected_dock": "d2",
    }
    gateouts = {g["route"]: g for g in of(events, "load.gateout")}
    assert gateouts["r1"]["missing"] == ["P-3"] and gateouts["r2"]["missing"] == ["P-9"]
    # the misloaded parcel was verified at its own dock afterwards: no longer on van-1
    assert gateouts["r1"]["misloaded"] == 0
    missing = {m["route"]: m["parcels"] for m in of(events, "load.missing")}
    assert missing == {"r1": ["P-3"], "r2": ["P-9"]}
    assert of(events, "dock.vehicle") == [{"dock": "d1", "vehicle": "van-1"}]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
