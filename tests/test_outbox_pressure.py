"""The outbox under pressure, on real SQLite files: notices, limits, seq recovery, disk full.

Disk full is a real full file system: a small tmpfs mounted for the test (root only; where the
machine cannot mount one the test says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox import (
    SEQ_FLOOR_BLOCK,
    DiskFull,
    Draft,
    EventTooLarge,
    IdConflict,
    Outbox,
)
from edge_agent.sink import Accepted
from edge_agent.wire.envelope import validate_envelope
from edge_agent.wire.limits import NOTICE_MAX_RANGES
from tests.diskfull import fill, tmpfs

TS = "2026-11-21T08:00:00.000Z"


def fix(i: int) -> Draft:
    return Draft("gnss.fix", {"lat": 52.0 + i * 1e-6, "lon": 4.0, "mode": 3}, TS, "ntp")


def scan(i: int, client_id: str | None = None, text: str | None = None) -> Draft:
    data = {"text": text or f"PARCEL{i:06d}", "symbology": "code128", "source": "hand"}
    return Draft("scan", data, TS, "ntp", id=client_id)


async def open_box(path: Path, **kw: object) -> Outbox:
    return await Outbox.open(path, "acme", "van-042", **kw)  # type: ignore[arg-type]


async def bodies(ob: Outbox) -> list[dict[str, object]]:
    return [json.loads(b) for _, b in await ob.read_after(0, max_bytes=10**9, max_events=10**6)]


async def test_a_large_eviction_is_announced_in_notices_that_each_fit_a_batch(
    tmp_path: Path,
) -> None:
    ob = await open_box(tmp_path / "o.db", max_bytes=4 * 1024 * 1024, disk_reserve_bytes=0)
    for k in range(40):
        await ob.append([fix(k * 1000 + i) for i in range(1000)])
    notices = [b for b in await bodies(ob) if b["type"] == "outbox.evicted"]
    assert len(notices) >= 2  # every-other thinning gives single-seq ranges: more than one notice
    evicted: set[int] = set()
    for n in notices:
        data = n["data"]
        assert isinstance(data, dict)
        assert len(data["ranges"]) <= NOTICE_MAX_RANGES
        assert len(json.dumps(n)) < 64 * 1024
        assert data["count"] == sum(hi - lo + 1 for lo, hi in data["ranges"])
        validate_envelope(n)
        for lo, hi in data["ranges"]:
            evicted.update(range(lo, hi + 1))
    stored = {int(b["seq"]) for b in await bodies(ob)}  # type: ignore[call-overload]
    # every seq is either still stored or announced, never both, never neither
    assert not evicted & stored
    assert evicted | stored == set(range(1, ob.last_seq + 1))
    # the notices are what the uplink sends ahead of the window
    assert ob.notices_after(0) == sorted(int(n["seq"]) for n in notices)  # type: ignore[call-overload]
    await ob.close()


async def test_no_event_can_block_the_queue_behind_it(tmp_path: Path) -> None:
    ob = await open_box(tmp_path / "o.db", max_event_bytes=2048, disk_reserve_bytes=0)
    with pytest.raises(EventTooLarge):
        await ob.append([Draft("device.health", {"dump": "x" * 3000}, TS, "ntp")])
    big = Draft("device.health", {"dump": "x" * 1800}, TS, "ntp")
    await ob.append([big, scan(1)])
    # a reader with a smaller limit (the batch size was lowered) still gets the first event
    rows = await ob.read_after(0, max_bytes=1024)
    assert [s for s, _ in rows] == [1]
    rows = await ob.read_after(1, max_bytes=1024)
    assert [s for s, _ in rows] == [2]
    await ob.close()


async def test_a_client_id_reused_for_another_event_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    ob = await open_box(db, disk_reserve_bytes=0)
    first = await ob.append([scan(1, "phone-1")])
    again = await ob.append([scan(1, "phone-1")])
    assert again == first
    with pytest.raises(IdConflict):
        await ob.append([scan(1, "phone-1", text="ANOTHER")])
    with pytest.raises(IdConflict):  # inside one batch too, and nothing of the batch is stored
        await ob.append([scan(2, "phone-2"), scan(3, "phone-2", text="OTHER")])
    await ob.close()
    ob = await open_box(db, disk_reserve_bytes=0)  # and across a restart
    with pytest.raises(IdConflict):
        await ob.append([scan(1, "phone-1", text="ANOTHER")])
    assert ob.last_seq == 1
    await ob.close()


async def test_a_replaced_file_continues_after_the_seq_floor(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    ob = await open_box(db, disk_reserve_bytes=0)
    await ob.append([scan(i) for i in range(10)])
    await ob.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}{suffix}")
    ob = await open_box(db, disk_reserve_bytes=0)
    new = await ob.append([scan(99)])
    assert new[0].seq > 10  # never reused
    floor = new[0].seq - 1
    assert floor >= SEQ_FLOOR_BLOCK
    events = await bodies(ob)
    notices = [e for e in events if e["type"] == "outbox.evicted"]
    assert notices
    covered = {s for n in notices for lo, hi in n["data"]["ranges"] for s in range(lo, hi + 1)}  # type: ignore[index, union-attr]
    assert set(range(1, 11)) <= covered  # the hub will not wait on the lost seqs
    assert any(e["data"].get("alarm") == "outbox-replaced" for e in events)  # type: ignore[union-attr]
    await ob.close()


async def test_rebase_renumbers_unacked_events_after_the_hubs(tmp_path: Path) -> None:
    ob = await open_box(tmp_path / "o.db", disk_reserve_bytes=0)
    acc = await ob.append([scan(i, f"c{i}") for i in range(5)])
    await ob.apply_ack(2)
    last = await ob.rebase(1000)
    assert last > 1000
    events = await bodies(ob)
    scans = [e for e in events if e["type"] == "scan"]
    assert [e["id"] for e in scans] == [a.id for a in acc[2:]]  # same events, same order
    assert [e["seq"] for e in scans] == [1001, 1002, 1003]
    for e in events:
        validate_envelope(e)
    notice = next(e for e in events if e["type"] == "outbox.evicted")
    assert notice["data"]["ranges"] == [[3, 1000]]  # type: ignore[index]
    # a client id retried after the rebase answers the new seq
    again = await ob.append([scan(3, "c3")])
    assert again[0].seq == 1002
    assert (await ob.append([scan(9)]))[0].seq > last
    await ob.close()


async def test_a_full_disk_refuses_with_disk_full_and_recovers_by_itself(tmp_path: Path) -> None:
    alarms: list[str] = []
    with tmpfs(tmp_path / "fs", "2m") as fs:
        ob = await open_box(fs / "o.db", disk_reserve_bytes=256 * 1024)
        try:
            await full_disk_scenario(ob, fs, alarms)
        finally:
            await ob.close()
        # and across a restart on a disk that is full again: opening works, appends say 507
        fill(fs / "filler")
        ob = await open_box(fs / "o.db", disk_reserve_bytes=256 * 1024)
        try:
            await append_until_disk_full(ob, [])
            (fs / "filler").unlink()
            await ob.apply_ack(ob.last_seq)
            assert (await ob.append([scan(2)]))[0].seq == ob.last_seq
        finally:
            await ob.close()


async def append_until_disk_full(ob: Outbox, accepted: list[Accepted]) -> None:
    """Append scans until the outbox says DiskFull (the test fails if it never does)."""
    for i in range(100_000):
        try:
            accepted += await ob.append([scan(i)])
        except DiskFull:
            return
    raise AssertionError("the disk never filled")


async def full_disk_scenario(ob: Outbox, fs: Path, alarms: list[str]) -> None:
    """Fill the disk under an open outbox, refuse, apply acks on the full disk, recover."""
    ob.on_alarm = lambda name, _detail: alarms.append(name)
    assert ob.reserve_path.exists()
    fill(fs / "filler", leave=200 * 1024)
    accepted: list[Accepted] = []
    await append_until_disk_full(ob, accepted)
    assert accepted  # some went in before the disk filled
    assert alarms[-1] == "disk-full"
    assert not ob.reserve_path.exists()  # given up so acks can still be written
    with pytest.raises(DiskFull):
        await ob.append([scan(7)])
    # the hub acks everything: the deletes must still be possible on the full disk
    await ob.apply_ack(accepted[-1].seq)
    assert (await ob.stats()).depth <= 2  # the disk-full alarm event may be left
    # room returns (the other process's file is gone): accepting again, alarm cleared
    (fs / "filler").unlink()
    await ob.apply_ack(ob.last_seq)
    more = await ob.append([scan(1)])
    assert more[0].seq > accepted[-1].seq
    assert alarms[-1] == "ok"
    assert ob.reserve_path.exists()


async def test_a_large_queue_opens_in_constant_time_and_is_checked_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_agent.outbox as outbox_module

    db = tmp_path / "o.db"
    ob = await open_box(db, disk_reserve_bytes=0)
    for k in range(10):
        await ob.append([scan(k * 300 + i) for i in range(300)])
    depth, size, last = (await ob.stats()).depth, ob._bytes, ob.last_seq
    await ob.close()
    # the counters come back from meta, not from counting the rows
    ob = await open_box(db, disk_reserve_bytes=0)
    assert ((await ob.stats()).depth, ob._bytes, ob.last_seq) == (depth, size, last)
    await ob.close()
    # a damaged page deep in the table: found by the background check, set aside live
    con = sqlite3.connect(db)
    leaves = [
        int(r[0])
        for r in con.execute(
            "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' ORDER BY pageno"
        )
    ]
    page = int(con.execute("PRAGMA page_size").fetchone()[0])
    con.close()
    victim = leaves[len(leaves) // 2]  # neither the first nor the last rows: opening reads neither
    raw = db.read_bytes()
    at = (victim - 1) * page
    db.write_bytes(raw[:at] + b"\xff" * page + raw[at + page :])
    monkeypatch.setattr(outbox_module, "SYNC_CHECK_BYTES", 0)
    alarms: list[str] = []
    ob = await open_box(db, disk_reserve_bytes=0)
    ob.on_alarm = lambda name, _detail: alarms.append(name)
    try:
        for _ in range(250):
            if alarms:
                break
            await asyncio.sleep(0.02)
        stats = await ob.stats()
        assert len(stats.corrupt_files) == 1 and Path(stats.corrupt_files[0]).exists()
        assert alarms == ["outbox-corrupt"]
        new = await ob.append([scan(99_999)])
        assert new[0].seq > last  # never a seq the damaged file had given
    finally:
        await ob.close()
