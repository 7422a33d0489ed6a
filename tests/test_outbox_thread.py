"""The outbox's commits as one hop to SQLite's thread (issue 14, speed): what that must keep.

A group commit, and an ack, run whole on the connection's own thread (``on_connection_thread``):
one hop per transaction, not one per statement. A cancel cannot stop a transaction handed to
the thread, so the outbox waits for its outcome and takes it in: what was committed is answered
and counted, never left unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from edge_agent.outbox import Draft, Outbox
from edge_agent.platform.sqlite import on_connection_thread

TS = "2026-11-21T08:15:02.123Z"
WAIT_S = 10.0


def scan(i: int, client_id: str | None = None) -> Draft:
    return Draft("scan", {"text": f"JJD{i:09d}", "symbology": "code128", "source": "t"}, TS, "ntp",
                 id=client_id)  # fmt: skip


def hold_commits(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make each group commit wait on the SQLite thread (an fsync on a slow SD card): the first
    event is set once a commit has begun, the second lets them go on."""
    entered, release = threading.Event(), threading.Event()
    commit = Outbox._commit_in_thread

    def slow(self: Outbox, con: sqlite3.Connection, group: Any, plan: Any) -> bool:
        entered.set()
        release.wait(WAIT_S)
        return commit(self, con, group, plan)

    monkeypatch.setattr(Outbox, "_commit_in_thread", slow)
    return entered, release


async def test_on_connection_thread_runs_on_the_connections_own_thread(tmp_path: Path) -> None:
    db = await aiosqlite.connect(tmp_path / "x.db", isolation_level=None)
    try:
        await db.create_function("tid", 0, threading.get_ident)
        rows = list(await db.execute_fetchall("SELECT tid()"))
        statements_thread = rows[0][0]

        def where(con: sqlite3.Connection, a: int, b: int) -> tuple[int, bool, int]:
            return threading.get_ident(), isinstance(con, sqlite3.Connection), a + b

        tid, is_con, total = await on_connection_thread(db, where, 2, 3)
        assert tid == statements_thread != threading.get_ident()
        assert is_con and total == 5
    finally:
        await db.close()


async def test_a_group_commit_of_a_batch_with_client_ids_is_one_hop(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-1")
    assert ob._db is not None
    hops: list[Any] = []
    execute = ob._db._execute

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    try:
        ob._db._execute = counting  # type: ignore[method-assign]
        accepted = await ob.append([scan(i, f"app-{i}") for i in range(100)])
        assert [a.seq for a in accepted] == list(range(1, 101))
        assert len(hops) == 1  # known ids, inserts, counters and the commit: one hop
        hops.clear()
        again = await ob.append([scan(i, f"app-{i}") for i in range(100)])
        assert again == accepted and len(hops) == 1  # idempotent, and still one hop
        hops.clear()
        assert await ob.apply_ack(50) == 50
        assert len(hops) == 1
    finally:
        await ob.close()


async def test_a_cancel_during_the_commit_still_answers_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.db"
    ob = await Outbox.open(path, "acme", "van-1")
    await ob.append([scan(0)])
    entered, release = hold_commits(monkeypatch)
    pending = asyncio.create_task(ob.append([scan(1), scan(2)]))
    assert await asyncio.to_thread(entered.wait, WAIT_S)
    writer = ob._writer
    assert writer is not None
    writer.cancel()  # what a stop by force does to the writer mid-commit
    await asyncio.sleep(0)
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(writer, WAIT_S)
    assert writer.cancelled()
    # committed in the thread: answered and counted, not lost between the file and memory
    accepted = await asyncio.wait_for(pending, WAIT_S)
    assert [a.seq for a in accepted] == [2, 3]
    assert ob.last_seq == 3 and (await ob.stats()).depth == 3
    monkeypatch.undo()
    await ob._disconnect()
    again = await Outbox.open(path, "acme", "van-1")
    try:
        assert again.last_seq == 3 and (await again.stats()).depth == 3
    finally:
        await again.close()


async def test_a_caller_cancelled_while_its_events_commit_leaves_them_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-1")
    entered, release = hold_commits(monkeypatch)
    try:
        caller = asyncio.create_task(ob.append([scan(1)]))  # a client that hangs up
        assert await asyncio.to_thread(entered.wait, WAIT_S)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        # the writer goes on: the cancelled caller's event is committed (it was accepted into
        # the group), and the next caller is answered after it
        accepted = await asyncio.wait_for(ob.append([scan(2)]), WAIT_S)
        assert [a.seq for a in accepted] == [2]
        assert ob.last_seq == 2 and (await ob.stats()).depth == 2
    finally:
        release.set()
        await ob.close()


async def from_file(ob: Outbox, seq: int, max_bytes: int) -> list[tuple[int, bytes]]:
    """``read_after`` as the file answers it (the in-memory tail set aside for one call)."""
    tail = ob._tail.copy()
    ob._tail.clear()
    try:
        return await ob.read_after(seq, max_bytes=max_bytes)
    finally:
        ob._tail.extend(tail)


async def test_reads_from_the_tail_in_memory_are_what_the_file_holds(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-1", max_bytes=64 * 1024)
    try:
        for i in range(40):  # commits of 1 to 5 events, bodies of different sizes
            await ob.append([scan(i * 10 + k) for k in range(1 + i % 5)])
        assert ob._tail and ob._tail[-1][0] == ob.last_seq
        for seq in (0, 1, 7, ob.last_seq - 3, ob.last_seq - 1):
            for budget in (1, 300, 1000, 10**6):
                got = await ob.read_after(seq, max_bytes=budget)
                assert got == await from_file(ob, seq, budget), (seq, budget)
                assert got and got[0][0] == seq + 1
        assert await ob.read_after(ob.last_seq, max_bytes=10**6) == []
        await ob.apply_ack(20)
        assert ob._tail[0][0] == 21
        assert await ob.read_after(20, max_bytes=10**6) == await from_file(ob, 20, 10**6)
        # thinning deletes rows the tail held: it is dropped and refilled from the next commit
        fixes = [Draft("gnss.fix", {"lat": 1.0, "lon": 2.0, "mode": 3}, TS, "gnss")] * 50
        for _ in range(60):
            await ob.append(fixes)
        assert (await ob.stats()).evicted > 0
        first = ob._tail[0][0]
        assert await ob.read_after(first - 1, max_bytes=10**6) == await from_file(
            ob, first - 1, 10**6
        )
        held = {s for s, _ in await from_file(ob, 20, 10**9)}
        assert all(s in held for s, _ in ob._tail)  # nothing thinned is served from memory
    finally:
        await ob.close()


async def test_close_waits_for_a_renumbering_whose_caller_was_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    ob = await Outbox.open(path, "acme", "van-1")
    await ob.append([scan(1), scan(2)])
    caller = asyncio.create_task(ob.rebase(100))  # the hub holds seqs up to 100 of another file
    await asyncio.sleep(0)
    caller.cancel()  # the connection that brought the ack is lost
    with pytest.raises(asyncio.CancelledError):
        await caller
    await ob.close()  # the agent stops: the renumbering ends first, the file closes after it
    again = await Outbox.open(path, "acme", "van-1")
    try:
        assert again.last_seq > 100  # renumbered after the hub's seqs, not cut off half-way
        assert (await again.stats()).depth >= 2
    finally:
        await again.close()


async def test_a_renumbering_and_the_notice_of_its_vacated_seqs_are_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.db"
    ob = await Outbox.open(path, "acme", "van-1")
    await ob.append([scan(1), scan(2)])

    async def no_second_commit(self: Outbox, group: Any) -> None:
        raise AssertionError("a second commit: a kill before it would leave seqs unannounced")

    monkeypatch.setattr(Outbox, "_commit_group", no_second_commit)
    assert await ob.rebase(100) == 103  # two events after 100, then the notice
    monkeypatch.undo()
    await ob._disconnect()  # a kill right after: only what was committed stays
    again = await Outbox.open(path, "acme", "van-1")
    try:
        rows = await again.read_after(0, max_bytes=10**6)
        assert [s for s, _ in rows] == [101, 102, 103]
        notice = json.loads(rows[-1][1])
        assert notice["type"] == "outbox.evicted"
        assert notice["data"]["ranges"] == [[1, 100]] and notice["data"]["reason"] == "corrupt"
        assert (await again.stats()).depth == 3
    finally:
        await again.close()
