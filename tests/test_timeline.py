"""The hub's timeline store on real SQLite files: dedup, conflicts, watermark, gaps, schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hub_bridge.timeline import Timeline, TimelineError


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


async def store(tl: Timeline, *events: dict[str, Any], rejected: tuple[int, ...] = ()) -> Any:
    return await tl.store("acme", "van-1", list(events), [[] for _ in events], rejected)


async def test_watermark_gaps_dedup_and_conflicts(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db")
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
    await tl.close()


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
