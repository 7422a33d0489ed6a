"""The durable outbox: every accepted event lives here until the hub's ack watermark covers it.

SQLite in WAL mode with ``synchronous=FULL``: an event is accepted when its transaction is
committed and fsynced (DESIGN §3.1). Producers never commit on their own: ``append()`` queues a
submission and one writer task commits everything queued in one transaction (group commit), so
32 concurrent producers share one fsync, and an SD card sees few large writes instead of many
small ones.

States of an event (Kura's DataService, simplified): *pending* (in the table, seq > acked) →
*acked* (deleted when the watermark passes it) or *evicted* (thinned when the outbox is full).
``in flight`` is the uplink's business, not stored: after a restart everything not acked is resent.

Storage rules (DESIGN §3.4):

- priority 0, *low value* (``gnss.fix``, ``device.health``): thinned first when the size cap is
  reached, oldest first, every other one (the old track gets sparser rather than vanishing);
  refused (``OutboxFull`` → HTTP 507) when nothing low-value is left to thin;
- priority 1, *kept*: never evicted; accepted into a reserve above the cap, refused only when the
  reserve is exhausted too;
- priority 2, *life-cycle* (eviction notices, outbox alarms): exempt from the cap.

Every eviction is itself recorded as an ``outbox.evicted`` event listing the seq ranges given up,
so the hub's watermark and gap detection stay exact.

Errors::

    OutboxError
     ├── OutboxFull        the cap (and reserve) is reached; nothing of the submission was stored
     ├── OutboxSchemaError the file is of a newer schema version (never overwritten)
     ├── EventTooLarge     an envelope over the batch limit could never be sent: refused
     ├── IdConflict        a client id reused for a different event: refused
     └── OutboxClosed      the outbox was closed before the submission was committed

A file that fails to open or fails ``PRAGMA integrity_check`` is moved aside (kept for a
technician), a fresh one is started, and an ``outbox-corrupt`` alarm is raised: never a crash loop.
The seq counter survives that too (salvaged from the old file, or jumped ahead by the clock) and
the seqs that cannot be delivered are announced as evicted with reason ``corrupt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from edge_agent.envelope import (
    BATCH_MAX_BYTES,
    encode_checked,
    format_ts,
    is_low_value,
    new_event_id,
)
from edge_agent.sink import Accepted
from edge_agent.sqlite_schema import NewerSchema, configure, migrate, schema_version

__all__ = [
    "MAX_EVENT_BYTES",
    "PRIO_KEPT",
    "PRIO_LIFECYCLE",
    "PRIO_LOW",
    "SCHEMA_VERSION",
    "Draft",
    "EventTooLarge",
    "IdConflict",
    "Outbox",
    "OutboxClosed",
    "OutboxError",
    "OutboxFull",
    "OutboxSchemaError",
    "OutboxStats",
    "seq_ranges",
]

log = logging.getLogger(__name__)


PRIO_LOW = 0
PRIO_KEPT = 1
PRIO_LIFECYCLE = 2


MAX_EVENT_BYTES = BATCH_MAX_BYTES - len(b'{"events":[]}')
"""The largest envelope that fits alone in one batch on the wire."""


class OutboxError(Exception):
    """Base of the outbox's errors; ``path`` names the database file."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class OutboxFull(OutboxError):
    """The size cap (and, for kept events, the reserve) is reached: nothing was stored."""


class OutboxSchemaError(OutboxError):
    """The file was written by a newer agent: it is left untouched and the agent stops."""


class EventTooLarge(OutboxError):
    """An event whose envelope would not fit in one batch on the wire (256 KiB)."""


class IdConflict(OutboxError):
    """A client id accepted before with a different event: refused (HTTP 409), nothing stored."""


class OutboxClosed(OutboxError):
    """The outbox closed before the submission could be committed."""


@dataclass(frozen=True, slots=True)
class Draft:
    """An event before the outbox stamps it: validated type and data, optional id/ts/ref."""

    type: str
    data: dict[str, Any]
    ts: str
    clock: str
    ref: dict[str, Any] | None = None
    id: str | None = None
    prio: int | None = None

    @property
    def priority(self) -> int:
        """The storage class: explicit, or by type (low value or kept)."""
        if self.prio is not None:
            return self.prio
        return PRIO_LOW if is_low_value(self.type) else PRIO_KEPT


@dataclass(slots=True)
class OutboxStats:
    """What ``GET /v1/health`` and ``device.health`` report about the outbox."""

    depth: int
    bytes: int
    max_bytes: int
    last_seq: int
    acked: int
    oldest_accepted: float | None
    evicted: int
    refused: int
    corrupt_files: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Submission:
    drafts: Sequence[Draft]
    future: asyncio.Future[list[Accepted]]


_SCHEMA = [
    # version 1
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        prio INTEGER NOT NULL,
        accepted REAL NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX events_low ON events (seq) WHERE prio = 0;
    CREATE TABLE client_ids (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, accepted REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX client_ids_age ON client_ids (accepted);
    INSERT INTO meta (key, value) VALUES
        ('next_seq', 1), ('acked', 0), ('evicted', 0), ('refused', 0);
    """,
]
SCHEMA_VERSION = len(_SCHEMA)


def seq_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Collapse sorted seqs into inclusive ranges: [1, 2, 3, 7] → [(1, 3), (7, 7)]."""
    ranges: list[tuple[int, int]] = []
    for s in seqs:
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


def _salvage_counters(path: Path) -> tuple[int, int] | None:
    """(next_seq, acked) from a damaged outbox, if its meta or events can still be read."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return None
    try:
        nxt = acked = 0
        with contextlib.suppress(sqlite3.Error):
            rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
            nxt, acked = int(rows.get("next_seq", 0)), int(rows.get("acked", 0))
        with contextlib.suppress(sqlite3.Error):
            top = con.execute("SELECT max(seq) FROM events").fetchone()[0]
            if top is not None:
                nxt = max(nxt, int(top) + 1)
        return (nxt, acked) if nxt > 0 else None
    finally:
        con.close()


class Outbox:
    """The agent's store-and-forward queue. Use ``await Outbox.open(...)``, then ``close()``."""

    def __init__(
        self,
        path: Path,
        fleet: str,
        device: str,
        *,
        max_bytes: int,
        reserve_bytes: int,
        id_retention_s: float,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.fleet = fleet
        self.device = device
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.id_retention_s = id_retention_s
        self._wall = wall
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: list[_Submission] = []
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.commit_listeners: list[Callable[[], None]] = []
        """Called after every commit that added events (the uplink wakes on it)."""
        self._next_seq = 1
        self._acked = 0
        self._ack_seen = 0  # the newest watermark heard, applied to the file within ack_flush_s
        self._ack_flush: asyncio.TimerHandle | None = None
        self._ack_task: asyncio.Task[int] | None = None
        self.ack_flush_s = 1.0
        self._bytes = 0
        self._depth = 0
        self._evicted = 0
        self._refused = 0
        self._full = False
        self.corrupt_files: list[str] = []
        self.on_alarm: Callable[[str, dict[str, Any]], None] | None = None
        """Called on an alarm transition (``outbox-full``, ``outbox-corrupt``)."""
        self.clock_now: Callable[[], tuple[datetime, str]] | None = None
        """Stamps the outbox's own events (``Clock.now``); the wall clock when unset."""

    # -- life cycle --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        fleet: str,
        device: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        reserve_bytes: int | None = None,
        id_retention_s: float = 7 * 86400.0,
        wall: Callable[[], float] = time.time,
    ) -> Outbox:
        """Open (or create, migrate, or replace a corrupt) outbox file and start its writer."""
        ob = cls(
            Path(path),
            fleet,
            device,
            max_bytes=max_bytes,
            reserve_bytes=max_bytes // 4 if reserve_bytes is None else reserve_bytes,
            id_retention_s=id_retention_s,
            wall=wall,
        )
        await ob._start()
        return ob

    async def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        salvaged: tuple[int, int] | None = None
        moved: str | None = None
        try:
            await self._connect_and_check()
        except OutboxSchemaError:
            await self._disconnect()
            raise
        except sqlite3.DatabaseError as exc:
            await self._disconnect()
            salvaged = _salvage_counters(self.path)
            moved = self._move_aside(str(exc))
            await self._connect_and_check()
        await self._load_counters()
        if moved is not None:
            await self._after_corruption(moved, salvaged)
        self._writer = asyncio.create_task(self._write_loop(), name=f"outbox-writer:{self.path}")

    async def _connect_and_check(self) -> None:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db = db
        await configure(db)
        async with db.execute("PRAGMA integrity_check") as cur:
            rows = [r[0] for r in await cur.fetchall()]
        if rows != ["ok"]:
            raise sqlite3.DatabaseError(f"integrity_check: {'; '.join(map(str, rows[:3]))}")
        await self._migrate(db)
        reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
        await reader.execute("PRAGMA busy_timeout=5000")
        self._reader = reader

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        if await schema_version(db) == 0:
            async with db.execute("SELECT count(*) FROM sqlite_master") as cur:
                row = await cur.fetchone()
            if row and row[0]:
                raise sqlite3.DatabaseError("not an outbox: unversioned file with tables")
        try:
            await migrate(db, _SCHEMA)
        except NewerSchema as exc:
            raise OutboxSchemaError(
                f"{self.path}: {exc}; refusing to touch it", str(self.path)
            ) from None

    def _move_aside(self, reason: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._wall()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{target}{suffix}")
        log.error("outbox %s is unreadable (%s): moved aside to %s", self.path, reason, target)
        self.corrupt_files.append(str(target))
        return str(target)

    async def _after_corruption(self, moved: str, salvaged: tuple[int, int] | None) -> None:
        # seqs must never be reused: continue after the old counter, or jump ahead by the clock
        # (milliseconds since the epoch exceed any count of events a device can have made)
        if salvaged is not None:
            next_seq, acked = salvaged
        else:
            next_seq, acked = int(self._wall() * 1000), 0
        db = self._require_db()
        await db.execute("BEGIN IMMEDIATE")
        await db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (next_seq,))
        await db.execute("UPDATE meta SET value=? WHERE key='acked'", (acked,))
        await db.execute("COMMIT")
        self._next_seq, self._acked = next_seq, acked
        alarm: dict[str, Any] = {"alarm": "outbox-corrupt", "moved_to": moved}
        drafts = [self._lifecycle_draft("device.health", alarm)]
        if next_seq - 1 > acked:
            lost = [(acked + 1, next_seq - 1)]
            drafts.append(self._eviction_draft(lost, next_seq - 1 - acked, "corrupt"))
        await self._commit_now(drafts)
        if self.on_alarm is not None:
            self.on_alarm("outbox-corrupt", alarm)

    async def _load_counters(self) -> None:
        db = self._require_db()
        async with db.execute("SELECT key, value FROM meta") as cur:
            meta = {k: int(v) for k, v in await cur.fetchall()}
        async with db.execute(
            "SELECT count(*), coalesce(sum(CASE WHEN prio < 2 THEN length(body) END), 0),"
            " coalesce(max(seq), 0) FROM events"
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        self._depth, self._bytes = int(row[0]), int(row[1])
        self._next_seq = max(meta.get("next_seq", 1), int(row[2]) + 1)
        self._acked = meta.get("acked", 0)
        self._evicted = meta.get("evicted", 0)
        self._refused = meta.get("refused", 0)

    async def _disconnect(self) -> None:
        for con in (self._reader, self._db):
            if con is not None:
                with contextlib.suppress(Exception):
                    await con.close()
        self._reader = self._db = None

    async def close(self) -> None:
        """Commit what is queued, apply the last ack, stop the writer and close the file."""
        if self._ack_flush is not None:
            self._ack_flush.cancel()
        if self._ack_task is not None:
            with contextlib.suppress(Exception):
                await self._ack_task
        if self._db is not None and self._ack_seen > self._acked:
            with contextlib.suppress(Exception):
                await self.apply_ack(self._ack_seen)
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for sub in self._queue:
            if not sub.future.done():
                sub.future.set_exception(OutboxClosed("outbox closed", str(self.path)))
        self._queue.clear()
        await self._disconnect()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise OutboxClosed("outbox is not open", str(self.path))
        return self._db

    # -- accepting events --------------------------------------------------------------------

    async def append(self, drafts: Sequence[Draft]) -> list[Accepted]:
        """Store drafts durably, all or nothing; return their ids and seqs once fsynced.

        A draft whose client ``id`` was accepted before (within ``id_retention``) is not stored
        again: its earlier seq is returned. Raises OutboxFull (nothing stored) or OutboxClosed.
        """
        if not drafts:
            return []
        if self._closing or self._writer is None:
            raise OutboxClosed("outbox is closed", str(self.path))
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(drafts, future))
        self._wakeup.set()
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                group, self._queue = self._queue, []
                try:
                    async with self._lock:
                        await self._commit_group(group)
                except Exception as exc:  # a failed commit fails its submissions, not the agent
                    log.exception("outbox commit failed")
                    err = OutboxError(f"commit failed: {exc}", str(self.path))
                    for sub in group:
                        if not sub.future.done():
                            sub.future.set_exception(err)
            if self._closing:
                return

    async def _commit_now(self, drafts: Sequence[Draft]) -> list[Accepted]:
        """Commit outside the writer loop (start-up, before the writer exists)."""
        fut: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        async with self._lock:
            await self._commit_group([_Submission(drafts, fut)])
        return fut.result()

    def _lifecycle_draft(self, type_: str, data: dict[str, Any]) -> Draft:
        if self.clock_now is not None:
            when, source = self.clock_now()
        else:
            when, source = datetime.fromtimestamp(self._wall(), UTC), "unsynced"
        return Draft(type_, data, format_ts(when), source, prio=PRIO_LIFECYCLE)

    def _eviction_draft(self, ranges: list[tuple[int, int]], count: int, reason: str) -> Draft:
        data = {"ranges": [list(r) for r in ranges], "count": count, "reason": reason}
        return self._lifecycle_draft("outbox.evicted", data)

    async def _commit_group(self, group: list[_Submission]) -> None:
        db = self._require_db()
        now = self._wall()
        next_seq, total = self._next_seq, self._bytes
        rows: list[tuple[int, str, str, int, float, bytes]] = []
        client_rows: list[tuple[str, int, float]] = []
        results: list[tuple[_Submission, list[Accepted] | OutboxError]] = []
        evicted: list[int] = []
        refused = 0

        await db.execute("BEGIN IMMEDIATE")
        try:
            known = await self._known_client_ids(db, group)
            for sub in group:
                # which drafts are new: a client id seen before keeps its earlier seq
                fresh: list[tuple[str, Draft]] = []
                fresh_ids: set[str] = set()
                ids_for: list[str] = []
                for d in sub.drafts:
                    eid = d.id or new_event_id()
                    if d.id is None or (d.id not in known and d.id not in fresh_ids):
                        fresh.append((eid, d))
                        fresh_ids.add(eid)
                    ids_for.append(eid)
                # encoded once with the seqs they get if the submission fits
                bodies = [self._encode(d, eid, next_seq + k) for k, (eid, d) in enumerate(fresh)]
                too_big = [k for k, body in enumerate(bodies) if len(body) > MAX_EVENT_BYTES]
                if too_big:
                    size = len(bodies[too_big[0]])
                    results.append(
                        (sub, EventTooLarge(f"an event of {size} bytes is over {MAX_EVENT_BYTES}"))
                    )
                    continue
                need_low = need_kept = 0
                for body, (_, d) in zip(bodies, fresh, strict=True):
                    prio = d.priority
                    if prio == PRIO_LOW:
                        need_low += len(body)
                    elif prio == PRIO_KEPT:
                        need_kept += len(body)
                if total + need_low + need_kept > self.max_bytes and (need_low or need_kept):
                    # free a twentieth of the cap at least, so notices of eviction stay rare
                    over = max(total + need_low + need_kept - self.max_bytes, self.max_bytes // 20)
                    freed, gone = await self._thin(db, over, exclude=set(evicted))
                    evicted.extend(gone)
                    total -= freed
                after = total + need_low + need_kept
                if (need_low and after > self.max_bytes) or (
                    need_kept and after > self.max_bytes + self.reserve_bytes
                ):
                    refused += len(sub.drafts)
                    results.append(
                        (sub, OutboxFull(f"outbox full ({total} of {self.max_bytes} bytes)"))
                    )
                    continue
                seq_by_id: dict[str, int] = {}
                for (eid, d), body in zip(fresh, bodies, strict=True):
                    rows.append((next_seq, eid, d.type, d.priority, now, body))
                    total += len(body)
                    seq_by_id[eid] = next_seq
                    if d.id is not None:
                        known[d.id] = next_seq
                        client_rows.append((d.id, next_seq, now))
                    next_seq += 1
                accepted = [Accepted(e, seq_by_id.get(e) or known[e]) for e in ids_for]
                results.append((sub, accepted))
            extra: list[Draft] = []
            if evicted:
                evicted = sorted(set(evicted))
                extra.append(self._eviction_draft(seq_ranges(evicted), len(evicted), "size-cap"))
            full_now = refused > 0
            if full_now and not self._full:
                alarm = {"alarm": "outbox-full", "bytes": total, "max_bytes": self.max_bytes}
                extra.append(self._lifecycle_draft("device.health", alarm))
            for d in extra:  # life-cycle events: exempt from the cap, not counted in it
                eid = new_event_id()
                body = self._encode(d, eid, next_seq)
                rows.append((next_seq, eid, d.type, d.priority, now, body))
                next_seq += 1
            if rows:
                await db.executemany(
                    "INSERT INTO events (seq, id, type, prio, accepted, body)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            if client_rows:
                await db.executemany(
                    "INSERT OR REPLACE INTO client_ids (id, seq, accepted) VALUES (?, ?, ?)",
                    client_rows,
                )
            await db.execute(
                "UPDATE meta SET value = CASE key"
                " WHEN 'next_seq' THEN ? WHEN 'evicted' THEN value + ?"
                " WHEN 'refused' THEN value + ? ELSE value END"
                " WHERE key IN ('next_seq', 'evicted', 'refused')",
                (next_seq, len(evicted), refused),
            )
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await db.execute("ROLLBACK")
            raise
        self._next_seq = next_seq
        self._bytes = total
        self._depth += len(rows) - len(evicted)
        self._evicted += len(evicted)
        self._refused += refused
        if self._full != full_now:
            self._full = full_now
            if full_now:
                log.warning("outbox %s is full: refusing events", self.path)
                if self.on_alarm is not None:
                    self.on_alarm("outbox-full", {"bytes": total, "max_bytes": self.max_bytes})
            else:
                log.info("outbox %s accepts events again", self.path)
        if evicted:
            log.info("outbox thinned %d low-value events to stay under its cap", len(evicted))
        for sub, res in results:
            if sub.future.done():
                continue
            if isinstance(res, OutboxError):
                sub.future.set_exception(res)
            else:
                sub.future.set_result(res)
        if rows:
            for listener in self.commit_listeners:
                listener()

    def _encode(self, d: Draft, event_id: str, seq: int) -> bytes:
        f, dev = self.fleet, self.device
        return encode_checked(event_id, seq, f, dev, d.type, d.ts, d.clock, d.data, d.ref)

    async def _known_client_ids(
        self, db: aiosqlite.Connection, group: list[_Submission]
    ) -> dict[str, int]:
        ids = list({d.id for sub in group for d in sub.drafts if d.id is not None})
        known: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            async with db.execute(
                f"SELECT id, seq FROM client_ids WHERE id IN ({marks})", chunk
            ) as cur:
                known.update({k: int(v) for k, v in await cur.fetchall()})
        return known

    async def _thin(
        self, db: aiosqlite.Connection, need: int, exclude: set[int]
    ) -> tuple[int, list[int]]:
        """Delete low-value events, oldest first, every other one, until ``need`` bytes free.

        A second pass takes the remaining low-value events oldest first if thinning was not
        enough. Returns (bytes freed, seqs deleted).
        """
        freed = 0
        gone: list[int] = []
        for step in (2, 1):
            if freed >= need:
                break
            async with db.execute(
                "SELECT seq, length(body) FROM events WHERE prio = 0 ORDER BY seq"
            ) as cur:
                candidates = [(int(s), int(n)) for s, n in await cur.fetchall() if s not in exclude]
            # thinning keeps the first of every pair so the oldest part of the track survives
            for seq, size in candidates[step - 1 :: step]:
                if freed >= need:
                    break
                gone.append(seq)
                exclude.add(seq)
                freed += size
            if gone:
                await db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in gone])
                exclude.update(gone)
        return freed, sorted(set(gone))

    async def announce_acked_earlier(self, lo: int, hi: int) -> None:
        """Tell the hub that seqs ``lo..hi`` were acked by it before (it lost its store)."""
        if lo > hi:
            return
        draft = self._eviction_draft([(lo, hi)], hi - lo + 1, "acked-earlier")
        await self.append([draft])

    # -- the uplink's side -------------------------------------------------------------------

    async def read_after(
        self, seq: int, *, max_bytes: int, max_events: int = 10_000
    ) -> list[tuple[int, bytes]]:
        """Committed events with seq > ``seq`` in seq order, up to ``max_bytes`` of bodies."""
        reader = self._reader
        if reader is None:
            raise OutboxClosed("outbox is not open", str(self.path))
        # one round trip: the running size is summed by SQLite, not row by row in Python
        async with reader.execute(
            "SELECT seq, body FROM (SELECT seq, body,"
            " sum(length(body) + 1) OVER (ORDER BY seq) AS run"
            " FROM events WHERE seq > ? ORDER BY seq LIMIT ?)"
            " WHERE run <= ? ORDER BY seq",
            (seq, max_events, max_bytes),
        ) as cur:
            rows = await cur.fetchall()
        return [(int(s), bytes(body)) for s, body in rows]

    def note_ack(self, watermark: int) -> None:
        """Take the hub's watermark now; delete what it covers within ``ack_flush_s``.

        The uplink's cursor moves at once (``acked``); the file is updated at most once per
        ``ack_flush_s``, so a trickle of events does not cost a transaction per ack. A crash in
        between only means events the hub has are sent again (it de-duplicates them).
        """
        watermark = min(watermark, self._next_seq - 1)
        if watermark <= self.acked:
            return
        self._ack_seen = watermark
        if self._ack_flush is None and not self._closing:
            loop = asyncio.get_running_loop()
            self._ack_flush = loop.call_later(self.ack_flush_s, self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_flush = None
        task = asyncio.get_running_loop().create_task(self.apply_ack(self._ack_seen))
        self._ack_task = task

        def done(t: asyncio.Task[int]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("applying the ack watermark failed: %r", t.exception())

        task.add_done_callback(done)

    async def apply_ack(self, watermark: int) -> int:
        """Delete every event with seq ≤ ``watermark``; return how many were deleted.

        A watermark at or below the current one changes nothing; one beyond the last assigned
        seq is clamped (a hub cannot have stored what was never accepted).
        """
        watermark = min(watermark, self._next_seq - 1)
        if watermark <= self._acked:
            return 0
        db = self._require_db()
        async with self._lock:
            cutoff = self._wall() - self.id_retention_s
            # forgetting acked events needs no fsync of its own: lost in a power cut, the delete
            # only means a resend the hub de-duplicates; the next accepting commit (FULL) syncs
            # the WAL with it anyway. Half the fsyncs of a trickle of events, and less SD wear.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("BEGIN IMMEDIATE")
            try:
                async with db.execute(
                    "SELECT count(*), coalesce(sum(CASE WHEN prio < 2 THEN length(body) END), 0)"
                    " FROM events WHERE seq <= ?",
                    (watermark,),
                ) as cur:
                    row = await cur.fetchone()
                assert row is not None
                await db.execute("DELETE FROM events WHERE seq <= ?", (watermark,))
                await db.execute("DELETE FROM client_ids WHERE accepted < ?", (cutoff,))
                await db.execute("UPDATE meta SET value = ? WHERE key = 'acked'", (watermark,))
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
            finally:
                await db.execute("PRAGMA synchronous=FULL")
            self._acked = watermark
            self._ack_seen = max(self._ack_seen, watermark)
            self._depth -= int(row[0])
            self._bytes -= int(row[1])
            return int(row[0])

    def estimate_bytes_after(self, seq: int) -> int:
        """Roughly how many bytes of events wait above ``seq`` (count times average size)."""
        waiting = self.last_seq - max(seq, self.acked)
        if waiting <= 0 or self._depth <= 0:
            return 0
        return waiting * max(1, self._bytes // self._depth)

    @property
    def acked(self) -> int:
        """The hub's newest ack watermark (applied to the file within ``ack_flush_s``)."""
        return max(self._acked, self._ack_seen)

    @property
    def last_seq(self) -> int:
        """The highest seq assigned so far (0 when none)."""
        return self._next_seq - 1

    @property
    def full(self) -> bool:
        """Whether the last commit had to refuse events."""
        return self._full

    async def stats(self) -> OutboxStats:
        """Depth, size, counters and the acceptance time of the oldest unacked event."""
        oldest: float | None = None
        depth = 0
        if self._reader is not None and self._depth:
            async with self._reader.execute(
                "SELECT count(*), min(accepted) FROM events WHERE seq > ?", (self.acked,)
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                depth = int(row[0])
                oldest = float(row[1]) if row[1] is not None else None
        return OutboxStats(
            depth=depth,
            bytes=self._bytes,
            max_bytes=self.max_bytes,
            last_seq=self.last_seq,
            acked=self.acked,
            oldest_accepted=oldest,
            evicted=self._evicted,
            refused=self._refused,
            corrupt_files=list(self.corrupt_files),
        )
