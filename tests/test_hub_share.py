"""The hub on a shared subscription: each instance its own identity, a killed one's unfinished
messages back from its session, N instances on one PostgreSQL timeline storing each event once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.wire.envelope import encode_batch, encode_checked, new_event_id
from hub_bridge.backends import open_timeline
from simulators.broker import Mosquitto
from tests.harness import Proc, timeline_rows, wait_for, write_hub_config


def _batch(device: str, seqs: range) -> tuple[bytes, list[str]]:
    ids = [new_event_id() for _ in seqs]
    bodies = [
        encode_checked(
            eid, seq, "acme", device, "scan", "2026-12-01T08:00:00.000Z", "ntp",
            {"text": f"JJD{seq:09d}", "symbology": "code128", "source": "s"},
        )
        for eid, seq in zip(ids, seqs, strict=True)
    ]  # fmt: skip
    return encode_batch(bodies), ids


def _publisher(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="dev", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _close(client: paho.Client) -> None:
    client.loop_stop()
    client.disconnect()
    sock = client.socket()
    if sock is not None:
        sock.close()


def _hub(work: Path, broker_url: str, url: str, hub_id: str) -> Proc:
    work.mkdir(exist_ok=True)
    cfg = write_hub_config(work, broker_url, hub_id=hub_id, ingest={"share_group": "hub"})
    doc = json.loads(cfg.read_text())
    doc["timeline"]["url"] = url
    cfg.write_text(json.dumps(doc))
    return Proc("hub_bridge", cfg, work / "hub.log")


@pytest.mark.slow
def test_a_hub_killed_before_its_commit_gets_the_batch_again_from_its_session(
    tmp_path: Path, broker: Mosquitto
) -> None:
    db = tmp_path / "timeline.db"
    hub = _hub(tmp_path / "hub", broker.url, f"sqlite:///{db}", "hub-a")
    hub.start()
    # a device that publishes once and never resends: only the broker can bring it back
    dev = _publisher(broker.port)
    try:
        payload, ids = _batch("van-9", range(1, 6))
        dev.publish("lm/v1/acme/van-9/events", payload, qos=1).wait_for_publish(10)
        wait_for(lambda: len(timeline_rows(db)) == 5, 20, "the first batch stored")
        # the timeline's write lock taken from outside: the hub's next commit waits on it
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        payload, more = _batch("van-9", range(6, 11))
        dev.publish("lm/v1/acme/van-9/events", payload, qos=1).wait_for_publish(10)
        # nothing outside the hub shows that it read the PUBLISH and now waits for the lock:
        # give the loopback delivery a thousand times what it takes
        time.sleep(1.0)
        hub.kill()  # mid-batch: read, not committed
        blocker.execute("ROLLBACK")
        blocker.close()
        assert len(timeline_rows(db)) == 5
        hub.start()  # the same hub_id: its session, with the unacknowledged PUBLISH, is back
        wait_for(lambda: len(timeline_rows(db)) == 10, 20, "the batch redelivered and stored")
        assert [i for _, i, _ in timeline_rows(db)] == ids + more
    finally:
        _close(dev)
        hub.stop()


class _Acks:
    def __init__(self, port: int) -> None:
        self.top: dict[str, int] = {}
        self.hubs: dict[str, str] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("lm/v1/acme/+/ack", qos=1)
        self.client.subscribe("lm/v1/_hub/+/state", qos=1)
        self.client.loop_start()

    def _on(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        doc = json.loads(msg.payload)
        if parts[2] == "_hub":
            self.hubs[parts[3]] = doc["state"]
        else:
            self.top[parts[3]] = max(self.top.get(parts[3], 0), int(doc["seq"]))


@pytest.mark.slow
def test_three_hubs_on_one_postgresql_share_the_devices_batches(
    tmp_path: Path, broker: Mosquitto, pg_url: str
) -> None:
    hubs = [_hub(tmp_path / f"h{i}", broker.url, pg_url, f"hub-{i}") for i in range(3)]
    for h in hubs:
        h.start()
    acks = _Acks(broker.port)
    dev = _publisher(broker.port)
    try:
        # each instance announces itself under its own hub_id
        wait_for(lambda: acks.hubs == {f"hub-{i}": "online" for i in range(3)}, 20, "3 births")
        devices = [f"van-{d}" for d in range(6)]
        for k in range(10):
            for device in devices:
                payload, _ = _batch(device, range(k * 10 + 1, k * 10 + 11))
                dev.publish(f"lm/v1/acme/{device}/events", payload, qos=1)
        wait_for(
            lambda: all(acks.top.get(d, 0) == 100 for d in devices), 30, "every device acked 100"
        )
        # no instance was thrown off by another (one client id each): all still online
        assert acks.hubs == {f"hub-{i}": "online" for i in range(3)}
        assert all(h.proc is not None and h.proc.poll() is None for h in hubs)
    finally:
        _close(dev)
        _close(acks.client)
        for h in hubs:
            h.stop()

    async def stored() -> int:
        store = await open_timeline(pg_url)
        try:
            return await store.count()
        finally:
            await store.close()

    assert asyncio.run(stored()) == 600  # each event once, whichever instance took it
