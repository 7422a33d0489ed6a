"""The timeline store, one suite over both backends (``sqlite``, ``postgresql``), then what only
PostgreSQL does: hubs racing on one database, a restarted server, retention, ingest order.

Real stores only: SQLite files in a temp dir and a private PostgreSQL server (initdb on a free
port, one per session, a fresh database per test: tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub_bridge.backends import open_timeline
from hub_bridge.claims import Claim
from hub_bridge.commands import COMMAND_NAMES, CommandLimits
from hub_bridge.store import StoreUnavailable, TimelineStore
from hub_bridge.timeline import (
    Batch,
    IssuedCertificate,
    Timeline,
    TimelineError,
    TimelineLimits,
)
from hub_bridge.timeline_pg import PgTimeline
from simulators.postgres import PostgresServer

NOW = 1_790_000_000.0  # a fixed hub time: 2026-09-21


def env(seq: int, eid: str | None = None, device: str = "van-1", **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "id": eid or f"{device}-id-{seq}",
        "seq": seq,
        "fleet": "acme",
        "device": device,
        "type": "scan",
        "ts": "2026-11-21T08:00:00.000Z",
        "clock": "ntp",
        "data": {"text": f"P{seq}", "symbology": "code128", "source": "s"},
    }
    e.update(over)
    return e


def evicted(
    seq: int, *ranges: tuple[int, int], reason: str = "size-cap", eid: str | None = None
) -> dict[str, Any]:
    count = sum(hi - lo + 1 for lo, hi in ranges)
    data = {"ranges": [list(r) for r in ranges], "count": count, "reason": reason}
    return env(seq, eid, type="outbox.evicted", data=data)


async def store(tl: TimelineStore, *events: dict[str, Any], rejected: tuple[int, ...] = ()) -> Any:
    return await tl.store("acme", "van-1", list(events), [[] for _ in events], rejected)


async def seqs_of(tl: TimelineStore, device: str = "van-1") -> list[int]:
    return [e["seq"] async for e in tl.events("acme", device)]


@pytest.fixture
async def tl(timeline_url: str) -> AsyncIterator[TimelineStore]:
    store_ = await open_timeline(timeline_url)
    yield store_
    await store_.close()


# -- the one suite, both backends --------------------------------------------------------------


async def test_dedup_conflicts_watermark_and_gaps(tl: TimelineStore) -> None:
    r = await store(tl, env(1), env(2), env(4))
    assert (r.stored, r.duplicates, r.conflicts, r.watermark) == (3, 0, 0, 2)
    assert await tl.missing("acme", "van-1") == [[3, 3]]
    r = await store(tl, env(2), env(3))  # a resend with the missing one
    assert (r.stored, r.duplicates, r.watermark) == (1, 1, 4)
    assert await tl.missing("acme", "van-1") == []
    r = await store(tl, env(5, eid="someone-else"), env(5))
    assert (r.stored, r.conflicts, r.conflict_seqs) == (1, 1, (5,))
    assert [e["id"] async for e in tl.events("acme", "van-1", after_seq=4)] == ["someone-else"]
    # the same event again under a new seq (an app retried after the agent forgot its id):
    # not stored, and its seq accounted for
    r = await store(tl, env(6, eid="van-1-id-3"))
    assert (r.stored, r.duplicates, r.watermark) == (0, 1, 6)
    assert await seqs_of(tl) == [1, 2, 3, 4, 5]
    assert await tl.count("events") == 5


async def test_repeats_inside_one_batch(tl: TimelineStore) -> None:
    # one seq twice with two ids, one id twice: the first of each is stored
    r = await store(tl, env(1), env(1, eid="other"), env(2), env(2))
    assert (r.stored, r.duplicates, r.conflicts, r.conflict_seqs) == (2, 1, 1, (1,))
    # what did not go in is a duplicate when its id went in (even later in the batch)
    r = await store(tl, env(3, eid="x"), env(2, eid="y"), env(4, eid="y"))
    assert (r.stored, r.duplicates, r.conflicts, r.watermark) == (2, 1, 0, 4)
    assert [e["id"] async for e in tl.events("acme", "van-1")] == [
        "van-1-id-1", "van-1-id-2", "x", "y",
    ]  # fmt: skip


async def test_evicted_and_rejected_seqs_are_accounted_for(tl: TimelineStore) -> None:
    r = await store(tl, env(1), evicted(5, (2, 3)), rejected=(4,))
    assert r.watermark == 5
    assert await tl.rejected_before("acme", "van-1", [4, 5, 6]) == {4}
    # ranges announced ahead of the watermark count when it gets there
    r = await store(tl, evicted(6, (10, 12)), env(8))
    assert (r.watermark, await tl.missing("acme", "van-1")) == (6, [[7, 7]])
    r = await store(tl, env(7), env(9))
    assert r.watermark == 12
    # a conflicting eviction notice accounts for nothing
    r = await store(tl, evicted(9, (13, 20), reason="other", eid="notice"))
    assert (r.conflicts, r.watermark) == (1, 12)
    # rejected seqs alone (a batch whose every event was invalid)
    r = await store(tl, rejected=(13, 14))
    assert (r.stored, r.watermark) == (0, 14)


async def test_store_many_in_order_with_one_result_each(tl: TimelineStore) -> None:
    batches = [
        Batch("acme", "van-2", [env(1, device="van-2"), env(3, device="van-2")], [[], []]),
        Batch("acme", "van-1", [env(1), env(2)], [[], ["future-ts"]]),
        Batch("acme", "van-2", [env(2, device="van-2"), env(3, device="van-2")], [[], []]),
        Batch("acme", "van-3", [], [], (1, 2)),
    ]
    results = await tl.store_many(batches, received=NOW)
    assert [(r.stored, r.duplicates, r.watermark) for r in results] == [
        (2, 0, 1), (2, 0, 2), (1, 1, 3), (0, 0, 2),
    ]  # fmt: skip
    assert await tl.store_many([]) == []
    flagged = [e async for e in tl.events("acme", "van-1", with_flags=True)]
    assert [e.get("_flags") for e in flagged] == [None, ["future-ts"]]
    assert "_flags" not in [e async for e in tl.events("acme", "van-1")][1]
    assert sorted(await tl.watermarks()) == [
        ("acme", "van-1", 2), ("acme", "van-2", 3), ("acme", "van-3", 2),
    ]  # fmt: skip


async def test_ack_payload_top_and_check(tl: TimelineStore) -> None:
    assert await tl.ack_payload("acme", "van-1", 0) == {"seq": 0}
    await store(tl, env(1), env(2), env(5))
    assert await tl.ack_payload("acme", "van-1", 2) == {
        "seq": 2,
        "top": 5,
        "check": [2, "van-1-id-2"],
    }
    await store(tl, evicted(6, (3, 4)))
    ack = await tl.ack_payload("acme", "van-1", 6)
    assert ack == {"seq": 6, "top": 6, "check": [6, "van-1-id-6"]}


async def test_events_order_filters_and_limits(tl: TimelineStore) -> None:
    await tl.store("beta", "b-1", [env(2, fleet="beta", device="b-1")], [[]])
    await store(tl, env(3), env(1), env(2))
    await tl.store("acme", "van-0", [env(1, device="van-0")], [[]])
    every = [(e["fleet"], e["device"], e["seq"]) async for e in tl.events()]
    assert every == [
        ("acme", "van-0", 1), ("acme", "van-1", 1), ("acme", "van-1", 2), ("acme", "van-1", 3),
        ("beta", "b-1", 2),
    ]  # fmt: skip
    assert [e["seq"] async for e in tl.events("acme", "van-1", after_seq=1, limit=1)] == [2]
    assert [e["device"] async for e in tl.events(fleet="beta")] == ["b-1"]
    assert [e["seq"] async for e in tl.events(device="van-0")] == [1]
    # the stored envelope is the contract's: every field back as it came
    [first] = [e async for e in tl.events("acme", "van-1", limit=1)]
    assert first == env(1)


async def test_events_since_reads_in_ingest_order(tl: TimelineStore) -> None:
    assert isinstance(tl, Timeline | PgTimeline)  # events_since: not in TimelineStore yet
    assert await tl.events_since(0, 10) == ([], 0)
    await store(tl, env(2), env(1))
    await tl.store("acme", "van-2", [env(1, device="van-2")], [[]])
    await store(tl, env(3))
    got, cursor = await tl.events_since(0, 2)
    assert [(e["device"], e["seq"]) for e in got] == [("van-1", 2), ("van-1", 1)]
    got, cursor = await tl.events_since(cursor, 10)
    assert [(e["device"], e["seq"]) for e in got] == [("van-2", 1), ("van-1", 3)]
    assert await tl.events_since(cursor, 10) == ([], cursor)
    with pytest.raises(ValueError, match="limit"):
        await tl.events_since(0, 0)


async def test_devices_and_missing(tl: TimelineStore) -> None:
    await store(tl, env(1), env(4), env(7), env(8))
    assert await tl.missing("acme", "van-1") == [[2, 3], [5, 6]]
    assert await tl.missing("acme", "van-1", limit=1) == [[2, 3]]
    assert await tl.missing("acme", "nobody") == []
    assert await tl.set_state("acme", "van-1", "online", '{"state":"online"}')
    (dev,) = await tl.devices()
    assert {k: dev[k] for k in ("fleet", "device", "watermark", "max_seq", "events")} == {
        "fleet": "acme", "device": "van-1", "watermark": 1, "max_seq": 8, "events": 4,
    }  # fmt: skip
    assert dev["missing"] == [[2, 3], [5, 6]]
    assert dev["state"] == "online" and dev["last_seen"] is not None
    assert await tl.known_device("acme", "van-1")
    assert not await tl.known_device("acme", "van-2")


async def test_state_changes_recorded_once_and_history_bounded(timeline_url: str) -> None:
    tl = await open_timeline(timeline_url, TimelineLimits(state_history=3))
    try:
        assert await tl.set_state("acme", "van-1", "online", "{}")
        assert not await tl.set_state("acme", "van-1", "online", "{}")  # retained, again
        for k in range(5):
            assert await tl.set_state("acme", "van-1", ("offline", "online")[k % 2], "{}")
        history = await tl.state_history("acme", "van-1")
        assert [h["state"] for h in history] == ["offline", "online", "offline"]
        assert len(history) == 3 and history == sorted(history, key=lambda h: h["at"])
        assert await tl.count("device_states") == 3
        assert await tl.state_history("acme", "van-2") == []
    finally:
        await tl.close()


async def test_dead_letters_counted_per_kind_and_bounded(timeline_url: str) -> None:
    limits = TimelineLimits(dead_letter_keep_bytes=8, dead_letter_max_rows=3)
    tl = await open_timeline(timeline_url, limits)
    try:
        assert await tl.dead_letter("lm/v1/acme/x/events", "column 7", b"0123456789") == 1
        assert await tl.dead_letter("lm/v1/acme/x/events", "column 9", b"abc") == 2
        (row,) = await tl.dead_letters()
        assert (row["count"], row["reason"], row["size"]) == (2, "column 9", 3)
        for k in range(5):
            assert await tl.dead_letter(f"lm/v1/acme/d{k}/events", "not JSON", b"x" * 100) == 1
        assert await tl.count("dead_letters") == 3
        rows = await tl.dead_letters(limit=10)
        assert [r["topic"] for r in rows] == [f"lm/v1/acme/d{k}/events" for k in (4, 3, 2)]
        assert await tl.dead_letter("t" * 1000, "r" * 5000, b"") == 1
        assert len((await tl.dead_letters(1))[0]["topic"]) == 256
        # a reason quoting a client's NUL character is kept (PostgreSQL's text takes none)
        assert await tl.dead_letter("lm/v1/acme/y/events", "bad id 'a\x00b'", b"\x00") == 1
        assert (await tl.dead_letters(1))[0]["reason"].startswith("bad id 'a")
    finally:
        await tl.close()


async def test_commands_queued_superseded_answered_bounded(tl: TimelineStore) -> None:
    limits = CommandLimits(max_per_device=len(COMMAND_NAMES), retention_s=100.0)
    assert len(COMMAND_NAMES) == 5  # the bounds below count on it
    assert await tl.add_command("acme", "van-1", "manifest", "c1", '{"a":1}', limits, now=10) == []
    assert await tl.add_command("acme", "van-1", "manifest", "c2", '{"a":2}', limits, now=11) == [
        "c1"
    ]
    await tl.add_command("acme", "van-1", "report", "c3", "{}", limits, now=12)
    due = await tl.due_commands(now=20)
    assert [(c.id, c.sent_count) for c in due] == [("c2", 0), ("c3", 0)]
    assert await tl.next_command_due() == 11
    await tl.command_sent("c2", now=21, next_send=51)
    assert [c.id for c in await tl.due_commands(now=30)] == ["c3"]
    assert await tl.ack_command("acme", "van-1", "c2", True, None, now=22) == "recorded"
    assert await tl.ack_command("acme", "van-1", "c2", False, "late", now=23) == "again"
    assert await tl.ack_command("acme", "van-2", "c3", True, None) == "wrong-device"
    assert await tl.ack_command("acme", "van-1", "nope", True, None) == "unknown"
    c2 = await tl.command("c2")
    assert c2 is not None and (c2["status"], c2["payload"], c2["size"]) == ("ok", {"a": 2}, 7)
    assert [c["status"] for c in await tl.commands("acme", "van-1")] == [
        "queued", "ok", "superseded",
    ]  # fmt: skip
    assert await tl.command("nope") is None
    # offline devices are skipped; a birth makes their commands due now
    await tl.set_state("acme", "van-1", "offline", "{}")
    assert await tl.due_commands(now=1000) == []
    assert await tl.next_command_due() is None
    assert await tl.commands_due_now("acme", "van-1", now=40) == 1
    await tl.set_state("acme", "van-1", "online", "{}")
    assert [c.id for c in await tl.due_commands(now=40)] == ["c3"]
    # kept per device: unfinished first, then the newest; finished ones expire
    for k in range(4, 9):
        await tl.add_command("acme", "van-1", "config", f"c{k}", "{}", limits, now=40 + k)
    assert [c["id"] for c in await tl.commands("acme", "van-1")] == ["c8", "c7", "c6", "c5", "c3"]
    assert await tl.prune_commands(limits, now=1000) == 3
    assert await tl.count("commands") == 2


def _issuer(serial: int, delay: float = 0.0) -> Any:
    def issue(claim: Claim) -> IssuedCertificate:
        time.sleep(delay)  # signing takes a while: a second redeemer arrives meanwhile
        return IssuedCertificate(serial, NOW + 86400, f"PEM {claim.fleet}/{claim.device}")

    return issue


async def test_claims_redeemed_once_and_certificates_revoked(tl: TimelineStore) -> None:
    await tl.add_claim("h1", "acme", "van-1", "van", expires=NOW + 3600, now=NOW)
    await tl.add_claim("h2", "acme", "van-1", "van", expires=NOW + 3600, now=NOW)
    await tl.add_claim("old", "acme", "van-1", "van", expires=NOW + 10, now=NOW)
    assert await tl.redeem_claim("old", _issuer(1), now=NOW + 20) is None  # expired
    assert await tl.redeem_claim("unknown", _issuer(1), now=NOW) is None

    def broken(claim: Claim) -> IssuedCertificate:
        raise RuntimeError("the CA is away")

    with pytest.raises(RuntimeError):
        await tl.redeem_claim("h1", broken, now=NOW)  # nothing used up
    # two devices presenting one claim at once: one certificate between them
    both = await asyncio.gather(
        tl.redeem_claim("h1", _issuer(0xABC, 0.2), now=NOW + 1, used_by="a"),
        tl.redeem_claim("h1", _issuer(0xDEF, 0.2), now=NOW + 1, used_by="b"),
    )
    won = [r for r in both if r is not None]
    assert len(won) == 1
    claim, cert = won[0]
    assert (claim.fleet, claim.device, claim.role) == ("acme", "van-1", "van")
    assert await tl.count("certificates") == 1
    kept = await tl.claims("acme", "van-1")
    assert sorted(c["serial"] or "" for c in kept) == ["", "", format(cert.serial, "x")]
    assert {c["used_by"] for c in kept} == {None, "a", "b"} - {("b", "a")[cert.serial == 0xDEF]}
    (issued,) = await tl.certificates("acme", "van-1")
    assert issued["certificate"] == "PEM acme/van-1" and issued["revoked_at"] is None
    assert await tl.revoke_device("acme", "van-1", now=NOW + 5) == [format(cert.serial, "x")]
    assert await tl.revoke_device("acme", "van-1", now=NOW + 6) == []
    assert await tl.revoked_certificates(now=NOW + 7) == [(cert.serial, NOW + 5)]
    assert await tl.revoked_certificates(now=NOW + 2 * 86400) == []  # expired: off the CRL
    # the claim still unused when the device was revoked cannot bring it back
    assert await tl.redeem_claim("h2", _issuer(9), now=NOW + 8) is None


async def test_count_refuses_other_tables(tl: TimelineStore) -> None:
    with pytest.raises(ValueError, match="sqlite_master"):
        await tl.count("sqlite_master")


# -- PostgreSQL only ---------------------------------------------------------------------------


async def test_open_picks_the_backend_and_bad_urls_are_refused(pg_url: str) -> None:
    tl = await open_timeline(pg_url + "?retention_days=30")
    assert isinstance(tl, PgTimeline) and tl.retention_days == 30
    await tl.close()
    with pytest.raises(TimelineError, match="retention_days"):
        await open_timeline(pg_url + "?retention_days=soon")
    with pytest.raises(TimelineError, match="scheme"):
        await open_timeline("mysql://x/y")


async def test_a_newer_schema_is_refused_untouched(pg_url: str, postgres: PostgresServer) -> None:
    tl = await open_timeline(pg_url)
    await tl.close()
    db = pg_url.rsplit("/", 1)[1]
    postgres.psql("UPDATE lm_schema SET version = 99", db)
    with pytest.raises(TimelineError, match="newer"):
        await open_timeline(pg_url)
    assert postgres.psql("SELECT version FROM lm_schema", db).strip() == "99"


async def test_hubs_opening_together_migrate_once(pg_url: str) -> None:
    hubs = await asyncio.gather(*(PgTimeline.open(pg_url) for _ in range(3)))
    assert all(await asyncio.gather(*(h.store("acme", "v", [], []) for h in hubs)))
    for h in hubs:
        await h.close()


async def test_two_hubs_racing_on_one_device_store_each_event_once(pg_url: str) -> None:
    a, b = await PgTimeline.open(pg_url), await PgTimeline.open(pg_url)
    try:
        # overlapping batches of one device (and of several, in other orders) at once
        events = [env(s) for s in range(1, 401)]
        batches = [events[k : k + 50] for k in range(0, 400, 25)]  # each seq in two batches
        seen: dict[str, list[int]] = {"a": [], "b": []}

        async def hub(name: str, tl: PgTimeline, order: list[list[dict[str, Any]]]) -> None:
            for chunk in order:
                other = [env(s, device="van-2") for s in (e["seq"] for e in chunk)]
                results = await tl.store_many(
                    [
                        Batch("acme", "van-1", chunk, [[] for _ in chunk]),
                        Batch("acme", "van-2", other, [[] for _ in other]),
                    ]
                )
                seen[name].append(results[0].watermark)

        await asyncio.gather(hub("a", a, batches), hub("b", b, batches[::-1]))
        assert await seqs_of(a) == list(range(1, 401))
        assert await seqs_of(a, "van-2") == list(range(1, 401))
        assert await a.count("events") == 800
        for marks in seen.values():
            assert marks == sorted(marks)  # each hub's acks never go backwards
        assert sorted(await b.watermarks()) == [("acme", "van-1", 400), ("acme", "van-2", 400)]
    finally:
        await a.close()
        await b.close()


async def test_watermark_never_goes_backwards_under_many_writers(pg_url: str) -> None:
    hubs = [await PgTimeline.open(pg_url) for _ in range(3)]
    try:
        marks: list[tuple[float, int]] = []

        async def writer(k: int, tl: PgTimeline) -> None:
            for s in range(1 + k, 301, 3):  # each writer every third seq, one at a time
                r = await tl.store("acme", "van-1", [env(s)], [[]])
                marks.append((time.monotonic(), r.watermark))

        await asyncio.gather(*(writer(k, tl) for k, tl in enumerate(hubs)))
        assert [w for _, w in sorted(marks)][-1] == 300
        assert await hubs[0].watermarks() == [("acme", "van-1", 300)]
        assert await hubs[0].missing("acme", "van-1") == []
    finally:
        for tl in hubs:
            await tl.close()


async def test_store_unavailable_while_postgres_is_down_then_back() -> None:
    # a server of its own: this test kills it
    with PostgresServer(fsync=False) as pg:
        url = pg.create_database("t")
        tl = await PgTimeline.open(url, wait_s=1.0)
        try:
            await store(tl, env(1))
            pg.kill()
            with pytest.raises(StoreUnavailable):
                await store(tl, env(2))
            with pytest.raises(StoreUnavailable):
                await tl.watermarks()
            pg.start()  # crash recovery: what was committed is there
            deadline = time.monotonic() + 20
            while True:
                try:
                    r = await store(tl, env(2))
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "no reconnection within 20 s"
                    await asyncio.sleep(0.1)
            assert (r.stored, r.watermark) == (1, 2)
            assert await seqs_of(tl) == [1, 2]
        finally:
            await tl.close()
        pg.kill()
        with pytest.raises(StoreUnavailable):
            await PgTimeline.open(url, wait_s=0.5)


async def test_retention_drops_old_partitions(pg_url: str) -> None:
    now, day = time.time(), 86400.0
    forever = await PgTimeline.open(pg_url)  # no retention: keeps everything
    for k in range(5):  # one batch a day for five days, the last now
        await forever.store("acme", "van-1", [env(k + 1)], [[]], received=now - (4 - k) * day)
    assert len(await forever.partitions()) == 6  # and tomorrow's
    assert await forever.apply_retention(now=now + 1e9) == []
    await forever.close()
    # a hub with a retention of two days drops whole days older than that when it opens
    tl = await open_timeline(pg_url + "?retention_days=2")
    assert isinstance(tl, PgTimeline)
    try:
        assert len(await tl.partitions()) == 4
        assert await seqs_of(tl) == [3, 4, 5]
        assert (await tl.devices())[0]["events"] == 3  # the seq keys went with their days
        assert len(await tl.apply_retention(now=now + day)) == 1
        assert await seqs_of(tl) == [4, 5]
        assert (await tl.devices())[0]["events"] == 2
        # the watermark stays; what comes next is stored as usual
        r = await store(tl, env(6))
        assert (r.stored, r.watermark) == (1, 6)
        assert await tl.count("events") == 3
        assert await tl.missing("acme", "van-1") == []
    finally:
        await tl.close()


async def test_events_since_never_skips_a_later_commit(
    pg_url: str, postgres: PostgresServer
) -> None:
    # a writer holds its transaction open after taking its positions; a later writer commits
    # first: a reader must not pass the first one's rows
    tl = await PgTimeline.open(pg_url)
    try:
        await store(tl, env(1))
        first, cursor = await tl.events_since(0, 100)
        assert [e["seq"] for e in first] == [1]
        db = pg_url.rsplit("/", 1)[1]
        released = threading.Event()

        body = json.dumps(env(1, "slow", device="van-9"))

        def slow_writer() -> None:
            # psql: a transaction storing one event, then waiting before its COMMIT
            postgres.psql(
                f"BEGIN; SELECT * FROM lm_store_many({time.time()}, ARRAY['acme'],"
                " ARRAY['van-9'], ARRAY[1], ARRAY[0], ARRAY[0], ARRAY[1::bigint], ARRAY['slow'],"
                " ARRAY['scan'], ARRAY['2026-11-21T08:00:00.000Z'], ARRAY[NULL::text],"
                f" ARRAY[$b${body}$b$], '{{}}'::integer[], '{{}}'::bigint[], '{{}}'::bigint[],"
                " '{}'::text[], '{}'::bigint[]); SELECT pg_sleep(1.5); COMMIT;",
                db,
            )
            released.set()

        thread = threading.Thread(target=slow_writer)
        thread.start()
        await asyncio.sleep(0.5)  # the slow transaction has begun (it sleeps 1.5 s)
        await store(tl, env(2))  # commits while the slow one is open
        got, later = await tl.events_since(cursor, 100)
        assert got == [] and later == cursor  # env(2) is held back behind the open one
        await asyncio.to_thread(thread.join)
        assert released.is_set()
        got, cursor = await tl.events_since(cursor, 100)
        assert [(e["device"], e["seq"]) for e in got] == [("van-9", 1), ("van-1", 2)]
    finally:
        await tl.close()


async def test_events_since_under_concurrent_writers_reads_each_event_once(pg_url: str) -> None:
    # three hubs storing at once (one device shared, one each), a reader polling all along:
    # what it reads, once drained, is every stored event exactly once
    hubs = [await PgTimeline.open(pg_url) for _ in range(3)]
    reader = await PgTimeline.open(pg_url)
    read: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def writer(k: int, tl: PgTimeline) -> None:
        for s in range(1, 121, 4):
            own = [env(s + j, device=f"own-{k}") for j in range(4)]
            shared = [env(s + j, device="shared") for j in range(4)]  # the three race on it
            await tl.store_many(
                [
                    Batch("acme", f"own-{k}", own, [[] for _ in own]),
                    Batch("acme", "shared", shared, [[] for _ in shared]),
                ]
            )

    async def poll() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            got, cursor = await reader.events_since(cursor, 50)
            read.extend((e["device"], e["seq"]) for e in got)
            if finished and not got:
                return
            await asyncio.sleep(0)

    try:
        polling = asyncio.create_task(poll())
        await asyncio.gather(*(writer(k, tl) for k, tl in enumerate(hubs)))
        done.set()
        await polling
        expected = {(f"own-{k}", s) for k in range(3) for s in range(1, 121)}
        expected |= {("shared", s) for s in range(1, 121)}
        assert len(read) == len(set(read)) == len(expected) == await reader.count("events")
        assert set(read) == expected
    finally:
        for tl in [*hubs, reader]:
            await tl.close()


async def test_two_hubs_taking_one_state_message_record_it_once(pg_url: str) -> None:
    a, b = await PgTimeline.open(pg_url), await PgTimeline.open(pg_url)
    try:
        for k, state in enumerate(["online", "offline", "online"]):
            changed = await asyncio.gather(
                a.set_state("acme", f"van-{k}", state, "{}"),
                b.set_state("acme", f"van-{k}", state, "{}"),
                a.set_state("acme", "van-x", state, "{}"),
                b.set_state("acme", "van-x", state, "{}"),
            )
            assert sorted(changed[:2]) == sorted(changed[2:]) == [False, True]
        assert [h["state"] for h in await a.state_history("acme", "van-x")] == [
            "online", "offline", "online",
        ]  # fmt: skip
    finally:
        await a.close()
        await b.close()


async def test_a_database_error_while_the_task_is_cancelled_stays_a_cancel() -> None:
    # a query a cancel interrupted can end in a database error (QueryCanceled): taken for an
    # unavailable store, the cancel would be lost and the caller retry instead of stopping
    from hub_bridge.store import StoreUnavailable, unavailable

    error = OSError("canceling statement due to user request")
    assert isinstance(unavailable("postgresql://db", error), StoreUnavailable)
    started = asyncio.Event()

    async def query() -> None:
        try:
            started.set()
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise unavailable("postgresql://db", error) from None  # as the store maps it

    task = asyncio.create_task(query())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_while_a_pooled_connection_is_handed_over_is_never_lost(
    pg_url: str,
) -> None:
    # psycopg's pool waits with asyncio.wait_for, which on Python 3.11 returns the connection
    # when it arrives in the same turn as a cancel of the waiter, and drops the cancel: a
    # stopping webhook worker went on serving forever (the PostgreSQL push test's rare hang).
    # With ``pool.connection()`` instead of ``pooled`` the first turns below are served.
    from psycopg_pool import AsyncConnectionPool

    from hub_bridge.store import pooled

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_url, min_size=1, max_size=1, open=False)
    await pool.open(wait=True)
    outcomes: list[tuple[int, str]] = []
    try:
        for turns in range(10):  # the cancel lands 0..9 turns after the hand-over
            held = await pool.getconn()

            async def waiter() -> str:
                async with pooled(pool) as con:
                    await con.execute("SELECT 1")
                    return "served"

            task = asyncio.create_task(waiter())
            await asyncio.sleep(0.05)  # it waits for the pool's only connection
            await pool.putconn(held)  # handed over to the waiter
            for _ in range(turns):
                await asyncio.sleep(0)
            if not task.cancel():
                continue  # it was done before the cancel: nothing to lose
            try:
                outcomes.append((turns, await task))
            except asyncio.CancelledError:
                outcomes.append((turns, "cancelled"))
    finally:
        await pool.close()
    assert outcomes, "no cancel landed while the waiter ran"
    assert all(outcome == "cancelled" for _, outcome in outcomes), outcomes


@pytest.mark.parametrize("which", ["timeline", "delivery"])
async def test_a_store_opening_when_cancelled_stops_and_leaves_no_pool_behind(
    pg_url: str, which: str
) -> None:
    # cancelled at every turn of its open (connecting, waiting for the pool, migrating): the
    # open ends cancelled, or had already returned its store; no pool task is left running.
    # psycopg's pool.open(wait=True) drops a cancel that lands as the pool becomes ready
    # (Python 3.11's wait_for, see hub_bridge.store.pooled): a store then came back
    from hub_bridge.backends import open_delivery_store

    opener = open_timeline if which == "timeline" else open_delivery_store
    opened = cancelled = 0
    for turns in range(0, 60, 3):
        task: asyncio.Task[Any] = asyncio.create_task(opener(pg_url))
        for _ in range(turns):
            await asyncio.sleep(0)
        if not task.cancel():
            await (await task).close()  # it was open before the cancel
            opened += 1
            continue
        try:
            store = await task
        except asyncio.CancelledError:
            cancelled += 1
        else:
            await store.close()
            raise AssertionError(f"cancelled {turns} turns in, the open returned a store")
    assert cancelled > 0, "no cancel landed during an open"
    await asyncio.sleep(0.1)
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(f"{which}-")]
    assert not left, left
