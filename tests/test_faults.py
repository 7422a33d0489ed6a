"""Backlog, eviction, hostile input and a corrupt outbox, end to end on real processes."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from simulators.broker import Mosquitto
from tests.harness import (
    Proc,
    fix_event,
    get,
    post,
    scan_event,
    timeline_rows,
    wait_for,
    write_agent_config,
    write_hub_config,
)

# A van's day, offline: a position every 5 s for 24 h, ~400 scans and PoDs, a health report
# every 5 minutes (figures of one delivery route; the adaptive GNSS reporting sends less).
DAY_FIXES = 24 * 3600 // 5
DAY_SCANS = 400
DAY_HEALTH = 24 * 12


def day_of_events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    scan_every = DAY_FIXES // DAY_SCANS
    health_every = DAY_FIXES // DAY_HEALTH
    for i in range(DAY_FIXES):
        out.append(fix_event(i))
        if i % scan_every == 0:
            out.append(scan_event(i))
        if i % health_every == 0:
            out.append({"type": "device.health", "data": {"queue": i}})
    return out


def test_a_day_offline_drains_in_seq_order(tmp_path: Path, broker: Mosquitto) -> None:
    broker.kill()  # the van is in a dead zone from the start
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    agent.start()
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    try:
        port = agent.api_port or 0
        events = day_of_events()
        last = 0
        for i in range(0, len(events), 1000):
            status, acc = post(port, events[i : i + 1000], timeout=60)
            assert status == 201
            last = acc[-1]["seq"]
        assert last == len(events)
        assert get(port, "/v1/health")["queue"]["depth"] == len(events)
        broker.start()
        hub.start()
        db = tmp_path / "timeline.db"
        wait_for(lambda: len(timeline_rows(db)) >= last, 180, f"{last} events", poll=0.5)
        rows = timeline_rows(db)
        # every seq once, and the timeline returns them in seq order (DESIGN §3.3); the order in
        # which batches arrive is not part of the contract: notices go ahead of the window, and a
        # resend on the hub's birth overlaps batches published before it was subscribed
        assert [s for s, _, _ in rows] == list(range(1, last + 1))
        assert len({i for _, i, _ in rows}) == last, "an event is stored twice"
        wait_for(lambda: get(port, "/v1/health")["queue"]["depth"] == 0, 60, "outbox empty")
    finally:
        agent.stop()
        hub.stop()


def test_tiny_cap_evicts_pings_and_keeps_every_scan_and_pod(
    tmp_path: Path, broker: Mosquitto
) -> None:
    broker.kill()
    cfg = write_agent_config(
        tmp_path, broker.url, outbox={"max_bytes": "48KiB", "reserve_bytes": "64KiB"}
    )
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    agent.start()
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    kept: dict[str, int] = {}
    try:
        port = agent.api_port or 0
        for i in range(1500):
            status, _ = post(port, fix_event(i))
            assert status in (201, 507)
            if i % 15 == 0:
                status, body = post(port, scan_event(i))
                assert status == 201
                kept[body["id"]] = body["seq"]
            if i % 40 == 0:
                pod = {"type": "pod", "data": {"parcel": f"P{i}", "kind": "photo"}}
                status, body = post(port, pod)
                assert status == 201
                kept[body["id"]] = body["seq"]
        health = get(port, "/v1/health")["queue"]
        assert health["evicted"] > 0
        assert health["bytes"] <= 48 * 1024 + 64 * 1024
        broker.start()
        hub.start()
        db = tmp_path / "timeline.db"
        wait_for(lambda: get(port, "/v1/health")["queue"]["depth"] == 0, 60, "outbox drained")
        stored = {i: s for s, i, _ in timeline_rows(db)}
        assert all(stored.get(i) == s for i, s in kept.items()), "a scan or PoD was lost"
        device = get(hub.api_port or 0, "/v1/devices")[0]
        # evicted seqs are accounted for: the watermark reaches the last seq, no gap awaited
        assert device["watermark"] == device["max_seq"]
        assert device["missing"] == []
    finally:
        agent.stop()
        hub.stop()


def dead_letters(db: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(str(t), str(r)) for t, r in con.execute("SELECT topic, reason FROM dead_letters")]
    finally:
        con.close()


def envelope(seq: int, device: str = "van-1", **over: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "id": f"ev-{device}-{seq}",
        "seq": seq,
        "fleet": "acme",
        "device": device,
        "type": "scan",
        "ts": "2026-11-21T08:00:00.000Z",
        "clock": "ntp",
        "data": {"text": "JJD1", "symbology": "code128", "source": "x"},
    }
    env.update(over)
    return env


def test_hostile_payloads_are_dead_lettered_and_the_hub_goes_on(
    tmp_path: Path, broker: Mosquitto
) -> None:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    topic = "lm/v1/acme/van-1/events"
    try:
        time.sleep(0.3)  # let the hub's subscription settle before publishing
        hostile = [
            b"{not json",
            b"\xff\xfe\x00garbage",
            json.dumps({"events": [envelope(1, device="van-2")]}).encode(),  # forged
            json.dumps({"events": [envelope(1, fleet="evil")]}).encode(),  # forged fleet
            json.dumps({"events": [envelope(i) for i in range(1, 2000)]}).encode(),  # > 256 KiB
            json.dumps([envelope(1)]).encode(),  # not a batch
            json.dumps({"events": []}).encode(),
            json.dumps({"events": [envelope(1)]}).encode()[:-7],  # truncated
        ]
        for payload in hostile:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
        client.publish("lm/v1/ACME/van-1/events", b"{}", qos=1).wait_for_publish(5)  # bad topic
        # one batch with a valid event and an invalid one: the valid one is stored, the invalid
        # one dead-lettered and its seq accounted for
        mixed = {"events": [envelope(1), envelope(2, data={"text": ""})]}
        client.publish(topic, json.dumps(mixed), qos=1).wait_for_publish(5)
        # the same batch again, as a device resends it: no second dead letter for seq 2
        client.publish(topic, json.dumps(mixed), qos=1).wait_for_publish(5)
        future = envelope(3, ts="2099-01-01T00:00:00.000Z", id="future-1")
        client.publish(topic, json.dumps({"events": [future]}), qos=1).wait_for_publish(5)
        db = tmp_path / "timeline.db"
        wait_for(lambda: len(timeline_rows(db)) == 2, 20, "the two valid events")
        reasons = [r for _, r in dead_letters(db)]
        for needle in ("not JSON", "not UTF-8", "forged", "oversize", "not a batch", "empty"):
            assert any(needle in r for r in reasons), f"no dead letter says {needle!r}: {reasons}"
        assert sum("events[1]: data.text" in r for r in reasons) == 1
        assert len(reasons) >= 10
        assert hub.proc is not None and hub.proc.poll() is None, "the hub died"
        device = get(hub.api_port or 0, "/v1/devices")[0]
        assert device["watermark"] == 3  # 1 stored, 2 rejected (accounted), 3 stored
        flagged = get(hub.api_port or 0, "/v1/events?device=van-1")
        assert flagged[-1]["_flags"] == ["future-ts"]  # kept, but flagged
    finally:
        client.loop_stop()
        client.disconnect()
        hub.stop()


def test_corrupt_outbox_is_set_aside_and_the_agent_runs(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = write_agent_config(tmp_path, broker.url)
    outbox = tmp_path / "van-042.outbox.db"
    outbox.write_bytes(b"SQLite format 3\x00" + b"\x13" * 8000)  # a header, then garbage
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    agent.start()
    try:
        port = agent.api_port or 0
        health = get(port, "/v1/health")
        assert len(health["queue"]["corrupt_files"]) == 1
        assert Path(health["queue"]["corrupt_files"][0]).exists()
        assert health["components"]["outbox"]["state"] == "outbox-corrupt"
        status, body = post(port, scan_event(7))
        assert status == 201
        db = tmp_path / "timeline.db"
        wait_for(lambda: body["id"] in {i for _, i, _ in timeline_rows(db)}, 20, "the scan")
        alarms = [e for e in get(hub.api_port or 0, "/v1/events") if e["type"] == "device.health"]
        assert alarms[0]["data"]["alarm"] == "outbox-corrupt"
    finally:
        agent.stop()
        hub.stop()
