"""Chaos on real processes: agents streaming while hubs are SIGKILLed and restarted.

Real edge-agent processes take events over their local API (each 201 is recorded), a real
mosquitto carries them, real hub processes store them. Hubs are killed in turn (SIGKILL: mid-
batch, nothing flushed) and started again; on PostgreSQL three hubs share
``$share/hub/lm/v1/+/+/events`` and the database itself is killed and restarted once. Afterwards
every event an agent answered 201 is in the timeline exactly once, in its seq, and no device's
ack watermark, as published and recorded by a subscriber to ``lm/v1/+/+/ack``, ever went back.

What makes "nothing lost" hold (DESIGN §3.2): the hub's MQTT client acknowledges a PUBLISH on
receipt, before the batch is committed, so the broker does not hold those messages for another
member of the group; the agent does, until the hub's ack watermark covers them, and resends
them when its ack does not come (``uplink.ack_timeout``) and at once when a hub announces
itself online.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub_bridge.backends import open_timeline
from simulators.broker import Mosquitto
from simulators.postgres import PostgresServer
from tests.harness import (
    Proc,
    fix_event,
    get,
    post,
    scan_event,
    wait_for,
    write_agent_config,
    write_hub_config,
)

FLEET = "acme"
DEVICES = ["van-1", "van-2", "van-3"]


class AckRecorder:
    """Every ack published for the fleet's devices, in the order the broker delivered them."""

    def __init__(self, port: int) -> None:
        self.seen: dict[str, list[int]] = {d: [] for d in DEVICES}
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.on_message = self._on
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"lm/v1/{FLEET}/+/ack", qos=1)
        self._client.loop_start()

    def _on(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        device = msg.topic.split("/")[3]
        with self._lock:
            self.seen.setdefault(device, []).append(int(json.loads(msg.payload)["seq"]))

    def top(self, device: str) -> int:
        with self._lock:
            return max(self.seen.get(device) or [0])

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
        sock = self._client.socket()
        if sock is not None:
            sock.close()


class Poster:
    """Posts batches of scans and fixes to one agent until stopped; keeps every 201 answer."""

    def __init__(self, port: int, device: str) -> None:
        self.port = port
        self.device = device
        self.accepted: dict[int, str] = {}
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"post-{device}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            batch = [scan_event(i + k) if k % 4 == 0 else fix_event(i + k) for k in range(20)]
            i += 20
            status, body = post(self.port, batch)
            if status == 201:
                for answer in body:
                    self.accepted[int(answer["seq"])] = str(answer["id"])
            else:
                self.refused += 1
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _hub(tmp: Path, broker_url: str, url: str, i: int) -> Proc:
    work = tmp / f"hub-{i}"
    work.mkdir(exist_ok=True)
    cfg = write_hub_config(
        work,
        broker_url,
        hub_id=f"hub-{i}",
        ingest={"share_group": "hub"},
        log={"level": "INFO"},
    )
    doc = json.loads(cfg.read_text())
    doc["timeline"]["url"] = url  # the hubs share one timeline (SQLite: one hub)
    cfg.write_text(json.dumps(doc, indent=1))
    return Proc("hub_bridge", cfg, work / "hub.log")


async def _stored(url: str) -> dict[str, list[tuple[int, str]]]:
    store = await open_timeline(url)
    try:
        out: dict[str, list[tuple[int, str]]] = {d: [] for d in DEVICES}
        async for env in store.events(FLEET):
            out.setdefault(env["device"], []).append((int(env["seq"]), str(env["id"])))
        return out
    finally:
        await store.close()


def _covered(recorder: AckRecorder, poster: Poster) -> Callable[[], bool]:
    last = max(poster.accepted)
    return lambda: recorder.top(poster.device) >= last


def _drained(port: int) -> Callable[[], bool]:
    return lambda: bool(get(port, "/v1/health")["queue"]["depth"] == 0)


def run_chaos(
    tmp: Path,
    broker: Mosquitto,
    url: str,
    procs: list[Proc],
    schedule: list[tuple[float, Callable[[], None]]],
    stream_s: float,
) -> None:
    """With the hubs ``procs`` started, agents stream for ``stream_s`` seconds while
    ``schedule`` runs (seconds from the start, action); then everything must drain, and the
    timeline and the acks are checked."""
    with ExitStack() as stack:
        for p in procs:
            p.start()
            stack.callback(p.stop)
        recorder = AckRecorder(broker.port)
        stack.callback(recorder.close)
        agents = []
        for device in DEVICES:
            cfg = write_agent_config(tmp, broker.url, device=device, fleet=FLEET)
            agent = Proc("edge_agent", cfg, tmp / f"{device}.log")
            agent.start()
            stack.callback(agent.stop)
            agents.append(agent)
        posters = [Poster(a.api_port or 0, d) for a, d in zip(agents, DEVICES, strict=True)]
        start = time.monotonic()
        for at, action in schedule:
            time.sleep(max(0.0, start + at - time.monotonic()))
            action()
        time.sleep(max(0.0, start + stream_s - time.monotonic()))
        for poster in posters:
            poster.stop()
        for poster in posters:
            assert poster.refused == 0, f"{poster.device}: the agent refused a batch"
            assert len(poster.accepted) > 200, f"{poster.device} streamed too little"
            wait_for(_covered(recorder, poster), 60, f"{poster.device}'s last ack", poll=0.2)
        for agent in agents:
            wait_for(_drained(agent.api_port or 0), 30, "every outbox emptied by the acks")
        stored = asyncio.run(_stored(url))
        for poster in posters:
            rows = stored[poster.device]
            # exactly once: no seq and no id twice, and what was acked is what is stored
            assert len({s for s, _ in rows}) == len(rows)
            assert len({i for _, i in rows}) == len(rows)
            assert dict(rows) == poster.accepted, poster.device
            acks = recorder.seen[poster.device]
            backwards = [(a, b) for a, b in itertools.pairwise(acks) if b < a]
            assert backwards == [], f"{poster.device}: the watermark went back {backwards[:5]}"
            assert acks[-1] == max(poster.accepted)


@pytest.mark.slow
def test_one_hub_on_sqlite_killed_mid_batch_loses_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = f"sqlite:///{tmp_path / 'timeline.db'}"
    hub = _hub(tmp_path, broker.url, url, 0)
    schedule = [(3.0, hub.kill), (4.5, hub.start), (8.0, hub.kill), (9.0, hub.start)]
    run_chaos(tmp_path, broker, url, [hub], schedule, stream_s=12.0)


def _crash_and_restart(pg: PostgresServer) -> None:
    """SIGKILL the server, then start it again (crash recovery) as soon as its old backends,
    which notice the postmaster's death on their own, have let go of its shared memory."""
    pg.kill()
    deadline = time.monotonic() + 20
    while True:
        try:
            pg.start()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_three_hubs_on_postgresql_killed_in_turn_and_the_database_restarted(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # a server of its own: this test kills it
    with PostgresServer(fsync=False) as pg:
        url = pg.create_database("chaos")
        hubs = [_hub(tmp_path, broker.url, url, i) for i in range(3)]
        schedule = [
            (3.0, hubs[0].kill),
            (5.0, hubs[0].start),
            (7.0, hubs[1].kill),
            (9.0, hubs[1].start),
            (11.0, lambda: _crash_and_restart(pg)),
            (13.0, hubs[2].kill),
            (15.0, hubs[2].start),
        ]
        run_chaos(tmp_path, broker, url, hubs, schedule, stream_s=18.0)
