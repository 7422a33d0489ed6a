"""The outbox on real SQLite files: durability, seq, idempotency, eviction, corruption."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox import Draft, Outbox, OutboxError, OutboxFull, seq_ranges
from edge_agent.wire.envelope import format_ts, validate_envelope

TS = "2026-11-21T08:00:00.000Z"


def fix(i: int = 0) -> Draft:
    return Draft("gnss.fix", {"lat": 52.0 + i * 1e-5, "lon": 4.0, "mode": 3}, TS, "ntp")


def scan(i: int, client_id: str | None = None) -> Draft:
    data = {"text": f"PARCEL{i:06d}", "symbology": "code128", "source": "hand"}
    return Draft("scan", data, TS, "ntp", id=client_id)


async def open_box(path: Path, **kw: object) -> Outbox:
    return await Outbox.open(path, "acme", "van-042", **kw)  # type: ignore[arg-type]


async def test_seq_is_contiguous_and_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    ob = await open_box(db)
    first = await ob.append([scan(i) for i in range(5)])
    assert [a.seq for a in first] == [1, 2, 3, 4, 5]
    await ob.apply_ack(5)  # everything acked and deleted: the counter must not restart
    await ob.close()
    ob = await open_box(db)
    again = await ob.append([scan(9)])
    assert again[0].seq == 6
    await ob.close()


async def test_concurrent_producers_share_commits(tmp_path: Path) -> None:
    ob = await open_box(tmp_path / "o.db")
    results = await asyncio.gather(*(ob.append([scan(i)]) for i in range(200)))
    seqs = sorted(r[0].seq for r in results)
    assert seqs == list(range(1, 201))
    rows = await ob.read_after(0, max_bytes=10**9)
    assert [s for s, _ in rows] == seqs
    # every stored body is a valid contract envelope
    import json

    for _, body in rows:
        validate_envelope(json.loads(body))
    await ob.close()


async def test_client_id_is_idempotent_across_restart(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    ob = await open_box(db)
    a = await ob.append([scan(1, "app-123")])
    b = await ob.append([scan(1, "app-123")])
    assert a == b
    await ob.apply_ack(a[0].seq)
    await ob.close()
    ob = await open_box(db)
    c = await ob.append([scan(1, "app-123"), scan(2, "app-124"), scan(2, "app-124")])
    assert c[0] == a[0]
    assert c[1] == c[2] and c[1].seq == a[0].seq + 1
    assert (await ob.stats()).depth == 1
    await ob.close()


async def test_read_after_respects_byte_limit_and_order(tmp_path: Path) -> None:
    ob = await open_box(tmp_path / "o.db")
    await ob.append([fix(i) for i in range(100)])
    batch = await ob.read_after(10, max_bytes=2000)
    seqs = [s for s, _ in batch]
    assert seqs == list(range(11, 11 + len(seqs)))
    assert sum(len(b) + 1 for _, b in batch) <= 2000 + 200
    await ob.close()


async def test_eviction_keeps_every_scan_and_pod(tmp_path: Path) -> None:
    ob = await open_box(tmp_path / "o.db", max_bytes=20_000, reserve_bytes=10_000)
    kept: list[int] = []
    for i in range(400):
        await ob.append([fix(i)])
        if i % 10 == 0:
            kept.append((await ob.append([scan(i)]))[0].seq)
        if i % 25 == 0:
            pod = Draft("pod", {"parcel": f"P{i}", "kind": "signature"}, TS, "ntp")
            kept.append((await ob.append([pod]))[0].seq)
    stats = await ob.stats()
    assert stats.evicted > 0
    assert stats.bytes <= 20_000 + 10_000
    import json

    rows = await ob.read_after(0, max_bytes=10**9)
    present = {s for s, _ in rows}
    assert set(kept) <= present
    # every gone seq is announced in an outbox.evicted event, so the hub can account for it
    announced: set[int] = set()
    for _, body in rows:
        env = json.loads(body)
        if env["type"] == "outbox.evicted":
            for lo, hi in env["data"]["ranges"]:
                announced.update(range(lo, hi + 1))
    assert announced.isdisjoint(present)
    assert present | announced == set(range(1, ob.last_seq + 1))
    await ob.close()


async def test_full_of_kept_events_refuses_low_value_then_kept(tmp_path: Path) -> None:
    ob = await open_box(tmp_path / "o.db", max_bytes=5_000, reserve_bytes=2_000)
    n = 0
    try:
        for n in range(1000):
            await ob.append([scan(n)])
    except OutboxFull:
        pass
    assert 0 < n < 999, "kept events are refused once the reserve is used up"
    assert 5_000 <= (await ob.stats()).bytes <= 7_000
    with pytest.raises(OutboxFull):
        await ob.append([fix(1)])
    assert ob.full
    # a batch is all or nothing
    before = ob.last_seq
    with pytest.raises(OutboxFull):
        await ob.append([scan(10_001), fix(2)])
    rows = await ob.read_after(0, max_bytes=10**9)
    alarms = [b for _, b in rows if b"outbox-full" in b]
    assert len(alarms) == 1  # one alarm per transition, not per refusal
    assert ob.last_seq == before
    # the hub acks: room again
    await ob.apply_ack(ob.last_seq)
    await ob.append([fix(3)])
    assert not ob.full
    await ob.close()


async def test_events_the_hub_acked_never_make_the_outbox_refuse(tmp_path: Path) -> None:
    # acked events are deleted within ack_flush_s; until then they must not count as room
    # taken: a POST right after the hub took everything was refused with 507
    ob = await open_box(tmp_path / "o.db", max_bytes=5_000, reserve_bytes=0)
    ob.ack_flush_s = 3600.0  # the flush would not come in time
    try:
        for n in range(1000):
            await ob.append([scan(n)])
    except OutboxFull:
        pass
    full_at = ob.last_seq  # the outbox-full alarm's own seq included
    ob.note_ack(full_at)  # the hub holds all of it
    assert (await ob.stats()).depth == 0
    got = await ob.append([scan(90_001)])
    assert got[0].seq == full_at + 1
    stats = await ob.stats()
    assert stats.bytes < 1_000 and stats.evicted == 0  # deleted, not thinned
    assert [s for s, _ in await ob.read_after(0, max_bytes=10**9)] == [got[0].seq]
    await ob.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed-page"])
async def test_corrupt_file_is_set_aside_and_agent_runs(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "outbox.db"
    ob = await open_box(db)
    await ob.append([scan(i) for i in range(300)])
    await ob.apply_ack(100)
    await ob.close()
    raw = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(b"this is not sqlite" * 100)
    elif damage == "truncated":
        db.write_bytes(raw[: len(raw) // 3])
    else:
        page = 4096
        db.write_bytes(raw[: 2 * page] + b"\0" * page + raw[3 * page :])
    ob = await open_box(db)
    stats = await ob.stats()
    assert len(stats.corrupt_files) == 1
    assert Path(stats.corrupt_files[0]).exists()  # kept for a technician
    new = await ob.append([scan(999)])
    assert new[0].seq > 300 or damage == "garbage"
    assert new[0].seq > 0
    import json

    bodies = [json.loads(b) for _, b in await ob.read_after(0, max_bytes=10**9)]
    assert any(b["data"].get("alarm") == "outbox-corrupt" for b in bodies)
    await ob.close()
    # and it opens cleanly the next time: no crash loop
    ob = await open_box(db)
    assert (await ob.stats()).corrupt_files == []
    await ob.close()


async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    ob = await open_box(db)
    await ob.close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(OutboxError, match="newer"):
        await open_box(db)
    assert db.exists()


async def test_ack_beyond_last_seq_is_clamped(tmp_path: Path) -> None:
    ob = await open_box(tmp_path / "o.db")
    await ob.append([scan(1), scan(2)])
    assert await ob.apply_ack(10**9) == 2
    assert ob.acked == 2
    assert (await ob.append([scan(3)]))[0].seq == 3
    await ob.close()


def test_seq_ranges() -> None:
    assert seq_ranges([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert seq_ranges([]) == []


def test_format_ts_requires_aware() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="naive"):
        format_ts(datetime(2026, 1, 1))


async def test_fast_encoding_equals_the_canonical_one(tmp_path: Path) -> None:
    from edge_agent.wire.envelope import encode_envelope

    ob = await open_box(tmp_path / "o.db")
    odd = Draft(
        "pod",
        {"parcel": 'P"1\\', "kind": "photo", "recipient": "Zoë \u2028"},
        TS,
        "gnss",
        ref={"parcel": ["a", "b"], "stop": "s-1"},
        id='id"with\\quotes',
    )
    for d in (odd, fix(3), scan(4)):
        env = {"id": d.id or "x", "seq": 7, "fleet": "acme", "device": "van-042", "type": d.type}
        env |= {"ts": d.ts, "clock": d.clock, "data": d.data}
        if d.ref:
            env["ref"] = d.ref
        assert ob._encode(d, d.id or "x", 7) == encode_envelope(env)
    await ob.close()


async def test_an_event_too_large_for_a_batch_is_refused(tmp_path: Path) -> None:
    from edge_agent.outbox import MAX_EVENT_BYTES, EventTooLarge

    ob = await open_box(tmp_path / "o.db")
    huge = Draft("device.health", {"dump": "x" * MAX_EVENT_BYTES}, TS, "ntp")
    with pytest.raises(EventTooLarge):
        await ob.append([scan(1), huge])
    assert ob.last_seq == 0
    just = Draft("device.health", {"dump": "x" * (MAX_EVENT_BYTES - 300)}, TS, "ntp")
    await ob.append([just])
    rows = await ob.read_after(0, max_bytes=MAX_EVENT_BYTES)
    assert len(rows) == 1
    await ob.close()
