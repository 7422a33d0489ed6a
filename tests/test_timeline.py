"""The hub's timeline store on real SQLite files: dedup, conflicts, watermark, gaps, schema.

Tests taking the ``tl`` fixture hold for every backend behind ``hub_bridge.store`` (one suite)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub_bridge.backends import open_timeline
from hub_bridge.store import TimelineStore
from hub_bridge.timeline import Timeline, TimelineError


@pytest.fixture
async def tl(timeline_url: str) -> AsyncIterator[TimelineStore]:
    """A fresh, empty timeline of each backend (``timeline_url``: SQLite, private PostgreSQL)."""
    store = await open_timeline(timeline_url)
    yield store
    await store.close()


def env(seq: int, eid: str | None = None, **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "id": eid or f"id-{seq}",
        "seq": seq,
        "fleet": "acme",
        "device": "van-1",
        "type": "scan",
        "ts": "2026-11-21T08:00:00.000Z",
        "clock": "ntp",
        "data": {"text": f"P{seq}", "symbology": "code128", "source": "s"},
    }
    e.update(over)
    return e


async def store(tl: TimelineStore, *events: dict[str, Any], rejected: tuple[int, ...] = ()) -> Any:
    return await tl.store("acme", "van-1", list(events), [[] for _ in events], rejected)


async def test_watermark_gaps_dedup_and_conflicts(tl: TimelineStore) -> None:
    r = await store(tl, env(1), env(2), env(4))
    assert (r.stored, r.watermark) == (3, 2)
    assert await tl.missing("acme", "van-1") == [[3, 3]]
    r = await store(tl, env(2), env(3))  # a resend with the missing one
    assert (r.stored, r.duplicates, r.watermark) == (1, 1, 4)
    r = await store(tl, env(5, eid="someone-else"), env(5))
    assert (r.stored, r.conflicts) == (1, 1)  # one seq, two ids: the second is refused
    # evicted and rejected seqs are accounted for: the watermark passes them
    evicted = env(
        9, type="outbox.evicted", data={"ranges": [[6, 7]], "count": 2, "reason": "size-cap"}
    )
    r = await store(tl, evicted, rejected=(8,))
    assert r.watermark == 9
    # the same event again under a new seq (an app retried after the agent forgot its id)
    r = await store(tl, env(10, eid="id-3"))
    assert (r.stored, r.duplicates, r.watermark) == (0, 1, 10)
    seqs = [e["seq"] async for e in tl.events("acme", "van-1")]
    assert seqs == [1, 2, 3, 4, 5, 9]


async def test_events_since_follows_ingest_order_with_a_cursor(tl: TimelineStore) -> None:
    assert await tl.events_since(0, 10) == ([], 0)
    await store(tl, env(3), env(1))
    await tl.store("acme", "van-2", [env(1, eid="b-1", device="van-2")], [[]])
    await store(tl, env(2), env(1))  # a new one and a duplicate: only the new one comes
    got, cursor = await tl.events_since(0, 3)
    assert [(e["device"], e["seq"]) for e in got] == [("van-1", 3), ("van-1", 1), ("van-2", 1)]
    rest, end = await tl.events_since(cursor, 10)
    assert [(e["device"], e["seq"], e["id"]) for e in rest] == [("van-1", 2, "id-2")]
    assert rest[0] == env(2)  # the envelope as it was sent
    assert await tl.events_since(end, 10) == ([], end)
    with pytest.raises(ValueError, match="limit"):
        await tl.events_since(0, 0)


async def test_a_newer_timeline_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    tl = await Timeline.open(path)
    await tl.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=7")
    con.commit()
    con.close()
    with pytest.raises(TimelineError, match="newer"):
        await Timeline.open(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 7
    con.close()
