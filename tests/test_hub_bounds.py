"""The hub's storage is bounded (issue 8): dead letters, their samples, state messages and state
history, in unit tests on real SQLite files and under a flood through a real broker and hub."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from edge_agent.wire import topics
from hub_bridge.timeline import Timeline, TimelineLimits
from simulators.broker import Mosquitto
from tests.harness import (
    Proc,
    get,
    post,
    scan_event,
    timeline_rows,
    wait_for,
    write_agent_config,
    write_hub_config,
)

LIMITS = TimelineLimits(dead_letter_keep_bytes=100, dead_letter_max_rows=50, state_history=5)


def env(seq: int) -> dict[str, Any]:
    return {
        "id": f"id-{seq}",
        "seq": seq,
        "fleet": "acme",
        "device": "van-1",
        "type": "scan",
        "ts": "2026-11-21T08:00:00.000Z",
        "clock": "ntp",
        "data": {"text": f"P{seq}", "symbology": "code128", "source": "s"},
    }


async def test_a_dead_letter_keeps_a_sample_only(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db", LIMITS)
    await tl.dead_letter("lm/v1/acme/van-1/events", "not JSON", b"x" * 100_000)
    con = sqlite3.connect(tmp_path / "t.db")
    size, sample = con.execute("SELECT size, payload FROM dead_letters").fetchone()
    con.close()
    assert (size, len(sample)) == (100_000, 100)
    await tl.close()


async def test_repeated_reasons_from_one_topic_are_counted(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db", LIMITS)
    topic = "lm/v1/acme/van-1/events"
    counts = [
        await tl.dead_letter(topic, f"not JSON: Expecting value at line 1 column {i}", b"x")
        for i in range(1, 1001)
    ]
    assert counts == list(range(1, 1001))  # numbers in the reason do not make a new one
    await tl.dead_letter(topic, "empty batch", b"{}")
    await tl.dead_letter("lm/v1/acme/van-2/events", "empty batch", b"{}")
    rows = await tl.dead_letters()
    assert await tl.count("dead_letters") == 3
    assert [(r["topic"], r["count"]) for r in rows] == [
        ("lm/v1/acme/van-2/events", 1),
        (topic, 1),
        (topic, 1000),
    ]
    folded = rows[2]
    assert folded["reason"].endswith("column 1000")  # the latest reason is shown
    assert folded["first_seen"] <= folded["received"]
    await tl.close()


async def test_dead_letter_rows_are_bounded_least_recently_seen_first(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db", LIMITS)
    await tl.dead_letter("lm/v1/acme/keep/events", "forged", b"")
    for i in range(200):
        await tl.dead_letter(f"lm/v1/acme/d{i}/events", "not JSON", b"garbage")
        if i % 10 == 0:  # seen again and again: stays although it came first
            await tl.dead_letter("lm/v1/acme/keep/events", "forged", b"")
    assert await tl.count("dead_letters") == 50
    topics_kept = {r["topic"] for r in await tl.dead_letters(limit=1000)}
    assert "lm/v1/acme/keep/events" in topics_kept
    assert "lm/v1/acme/d199/events" in topics_kept and "lm/v1/acme/d0/events" not in topics_kept
    await tl.close()


async def test_state_history_is_bounded_per_device(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db", LIMITS)
    for i in range(40):
        for device in ("van-1", "van-2"):
            state = "online" if i % 2 == 0 else "offline"
            assert await tl.set_state("acme", device, state, json.dumps({"state": state, "i": i}))
    for device in ("van-1", "van-2"):
        history = await tl.state_history("acme", device)
        assert [h["state"] for h in history] == ["offline", "online"] * 2 + ["offline"]
    assert await tl.count("device_states") == 10
    await tl.close()


async def test_an_old_timeline_is_migrated_with_its_dead_letters_folded(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    con = sqlite3.connect(path)  # a version 1 file as the 0.1 hub wrote it
    con.executescript(
        """
        CREATE TABLE device_states (fleet TEXT NOT NULL, device TEXT NOT NULL, at REAL NOT NULL,
            state TEXT NOT NULL, payload TEXT);
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, received REAL NOT NULL,
            topic TEXT NOT NULL, reason TEXT NOT NULL, size INTEGER NOT NULL, payload BLOB);
        """
    )
    rows = [(float(i), "t/a", "not JSON", 65536, b"y" * 65536) for i in range(5)]
    rows.append((9.0, "t/b", "empty batch", 2, b"{}"))
    con.executemany(
        "INSERT INTO dead_letters (received, topic, reason, size, payload) VALUES (?,?,?,?,?)",
        rows,
    )
    # the tables version 1 made besides these two
    for ddl in (
        "CREATE TABLE events (ingest INTEGER PRIMARY KEY, fleet TEXT NOT NULL, device TEXT NOT"
        " NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, ts TEXT NOT NULL,"
        " received REAL NOT NULL, flags TEXT, body TEXT NOT NULL)",
        "CREATE UNIQUE INDEX events_seq ON events (fleet, device, seq)",
        "CREATE UNIQUE INDEX events_id ON events (fleet, device, id)",
        "CREATE TABLE accounted (fleet TEXT NOT NULL, device TEXT NOT NULL, lo INTEGER NOT NULL,"
        " hi INTEGER NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (fleet, device, lo, hi))"
        " WITHOUT ROWID",
        "CREATE TABLE devices (fleet TEXT NOT NULL, device TEXT NOT NULL, watermark INTEGER NOT"
        " NULL DEFAULT 0, state TEXT, state_since REAL, birth TEXT, last_seen REAL,"
        " PRIMARY KEY (fleet, device)) WITHOUT ROWID",
        "PRAGMA user_version=1",
    ):
        con.execute(ddl)
    con.commit()
    con.close()
    os.chmod(path, 0o644)  # as older versions left it
    tl = await Timeline.open(path, LIMITS)
    got = {
        (r["topic"], r["count"], r["first_seen"], r["received"]) for r in await tl.dead_letters()
    }
    assert got == {("t/a", 5, 0.0, 4.0), ("t/b", 1, 9.0, 9.0)}
    assert await tl.dead_letter("t/b", "empty batch", b"{}") == 2  # the key works on old rows
    await tl.close()
    con = sqlite3.connect(path)
    assert max(len(p) for (p,) in con.execute("SELECT payload FROM dead_letters")) == 1024
    con.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened when opened


def _db_bytes(db: Path) -> int:
    return sum(
        os.path.getsize(f"{db}{suffix}")
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(f"{db}{suffix}")
    )


def test_a_flood_of_garbage_leaves_the_hub_bounded_and_ingesting(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Thousands of garbage messages (events and states, from one topic and from many) through
    a real broker: the timeline stays small, the hub keeps storing a real agent's events."""
    hub_cfg = write_hub_config(
        tmp_path,
        broker.url,
        ingest={"dead_letter_max_rows": 500, "state_history": 10},
    )
    hub = Proc("hub_bridge", hub_cfg, tmp_path / "hub.log")
    hub.start()
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    agent.start()
    db = tmp_path / "timeline.db"
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    garbage = b"\x00not json " * 1600  # 16 KiB: the old hub kept all of it, 64 KiB at most
    try:
        port = agent.api_port or 0
        assert post(port, scan_event(0))[0] == 201
        wait_for(lambda: len(timeline_rows(db)) == 1, 20, "the first event stored")
        infos = []
        for i in range(2000):
            # one topic repeating itself, and garbage from ever new topics
            infos.append(client.publish("lm/v1/acme/noisy/events", garbage, qos=1))
            infos.append(client.publish(f"lm/v1/acme/d{i}/events", garbage, qos=1))
            if i % 5 == 0:
                infos.append(client.publish("lm/v1/acme/noisy/state", garbage, qos=1))
            if i < 200:  # flapping: history bounded per device
                state = {"state": "online" if i % 2 == 0 else "offline", "ts": time.time()}
                infos.append(client.publish(topics.state("acme", "flappy"), json.dumps(state), 1))
        for info in infos:
            info.wait_for_publish(30)
        # a real device keeps being served during and after the flood
        for i in range(1, 21):
            assert post(port, scan_event(i))[0] == 201
        wait_for(lambda: len(timeline_rows(db)) == 21, 60, "the agent's events after the flood")
        health = get(hub.api_port or 0, "/v1/health")
        assert health["components"]["ingest"]["counters"]["dead-letter"] >= 4400
        assert health["dead_letters"] <= 500
        noisy = [
            d
            for d in get(hub.api_port or 0, "/v1/dead-letters?limit=1000")
            if d["topic"] == "lm/v1/acme/noisy/events"
        ]
        assert len(noisy) == 1 and noisy[0]["count"] == 2000
        states = [
            d
            for d in get(hub.api_port or 0, "/v1/dead-letters?limit=1000")
            if d["topic"] == "lm/v1/acme/noisy/state"
        ]
        assert states and "oversize" in states[0]["reason"]
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            n_states = con.execute(
                "SELECT count(*) FROM device_states WHERE device='flappy'"
            ).fetchone()[0]
            assert n_states == 10
            biggest = con.execute("SELECT max(length(payload)) FROM dead_letters").fetchone()[0]
            assert biggest == 1024
        finally:
            con.close()
        # ~70 MB of garbage went in; the old hub kept all of it
        assert _db_bytes(db) < 8 * 1024 * 1024, _db_bytes(db)
        assert hub.proc is not None and hub.proc.poll() is None
        log_lines = (tmp_path / "hub.log").read_text().count("dead letter on")
        assert log_lines <= 25, log_lines  # the log is not flooded either
    finally:
        client.loop_stop()
        client.disconnect()
        agent.stop()
        hub.stop()


def test_advance_watermark_is_exact_on_random_layouts() -> None:
    import random

    from hub_bridge.timeline import advance_watermark

    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(0, 60)
        stored = sorted(rng.sample(range(1, 80), n))
        ranges = []
        for _ in range(rng.randint(0, 8)):
            lo = rng.randint(1, 80)
            ranges.append((lo, lo + rng.randint(0, 10)))
        ranges.sort()
        start = rng.randint(0, 5)
        covered = set(stored) | {s for lo, hi in ranges for s in range(lo, hi + 1)}
        expect = start
        while expect + 1 in covered:
            expect += 1
        assert advance_watermark(start, stored, ranges) == expect


async def test_a_day_of_thinning_does_not_slow_the_watermark(tmp_path: Path) -> None:
    """Every other ping of 60,000 evicted: 30,000 single-seq ranges in notices, then the
    survivors arrive in batches; each batch's watermark step stays linear (the old walk looked
    at every pending range for every step: hours for a real day)."""
    from hub_bridge.timeline import Timeline

    tl = await Timeline.open(tmp_path / "t.db")
    try:
        fleet, device = "acme", "van-1"
        total = 60_000
        notices = []
        seq = total
        for k in range(0, total, 2000):  # the agent splits notices at 1,000 ranges
            seq += 1
            ranges = [[s, s] for s in range(k + 2, k + 2001, 2)]
            notices.append(
                {
                    "id": f"n-{seq}", "seq": seq, "fleet": fleet, "device": device,
                    "type": "outbox.evicted", "ts": "2026-11-21T08:00:00.000Z", "clock": "ntp",
                    "data": {"ranges": ranges, "count": len(ranges), "reason": "size-cap"},
                }
            )  # fmt: skip
        await tl.store(fleet, device, notices, [[] for _ in notices])
        survivors = [
            {
                "id": f"e-{s}", "seq": s, "fleet": fleet, "device": device, "type": "gnss.fix",
                "ts": "2026-11-21T08:00:00.000Z", "clock": "gnss",
                "data": {"lat": 52.0, "lon": 4.0, "mode": 3},
            }
            for s in range(1, total + 1, 2)
        ]  # fmt: skip
        wm = 0
        for k in range(0, len(survivors), 1000):
            part = survivors[k : k + 1000]
            wm = (await tl.store(fleet, device, part, [[] for _ in part])).watermark
        assert wm == seq  # every seq stored or accounted, the notices' own seqs included
    finally:
        await tl.close()
