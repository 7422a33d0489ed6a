"""The central delivery timeline on SQLite: events stored once, watermarks, dead letters, devices.

Each ``(fleet, device, id)`` is stored once and each ``(fleet, device, seq)`` holds one event
(DESIGN §3.2). The *watermark* of a device is the highest seq up to which every seq is accounted
for: stored, announced evicted by the device (``outbox.evicted``), or rejected as invalid. It is
computed from the database inside the storing transaction, so several hub instances on one
database need no coordination (DESIGN §5).

Tables: ``events`` (ingest order in ``ingest``), ``accounted`` (seq ranges given up by a device,
or rejected), ``devices`` (watermark, online state), ``device_states`` (each device's last state
transitions), ``dead_letters`` (rejected messages with their reasons), ``commands`` (commands to
devices kept until answered, bounded as ``hub_bridge.commands`` says), ``claims`` (provisioning
claims: the SHA-256 of each token, never the token, with its device, role, expiry and use) and
``certificates`` (every device certificate issued, and its revocation).

A claim is redeemed (``redeem_claim``) in one transaction on a connection of its own, run in a
thread: the claim is checked, the certificate issued and recorded, and the claim marked used, or
nothing happens; two devices presenting one claim at once get one certificate between them.

What a misbehaving client sends cannot fill the disk (``TimelineLimits``): a dead letter keeps a
small sample of its payload; the same reason from the same topic again only counts (``count``,
``first_seen``, ``received`` = last seen), with numbers in the reason ignored so "column 7" and
"column 9" are one reason; at most ``dead_letter_max_rows`` rows are kept, the least recently seen
deleted first; each device keeps its last ``state_history`` state transitions. Dead letters are
committed without an fsync of their own (the next batch's commit syncs them): a flood of garbage
costs no disk flush per message, and a crash can lose only the last few dead letters.

The file and its ``-wal``/``-shm`` are private to the hub's user (0600, ``sqlite_schema``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from edge_agent.platform.sqlite import NewerSchema, configure, migrate, prepare_private
from edge_agent.wire.envelope import SEQ_MAX, encode_checked
from hub_bridge.claims import Claim
from hub_bridge.commands import CommandLimits, command_status

__all__ = [
    "SCHEMA_VERSION",
    "Batch",
    "IssuedCertificate",
    "QueuedCommand",
    "StoreResult",
    "Timeline",
    "TimelineError",
    "TimelineLimits",
]

# what of a dead letter is kept, whatever the configuration: topics and reasons are cut
_TOPIC_CHARS = 256
_REASON_CHARS = 1024

_SCHEMA = [
    """
    CREATE TABLE events (
        ingest INTEGER PRIMARY KEY,
        fleet TEXT NOT NULL,
        device TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        ts TEXT NOT NULL,
        received REAL NOT NULL,
        flags TEXT,
        body TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_seq ON events (fleet, device, seq);
    CREATE UNIQUE INDEX events_id ON events (fleet, device, id);
    CREATE TABLE accounted (
        fleet TEXT NOT NULL,
        device TEXT NOT NULL,
        lo INTEGER NOT NULL,
        hi INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (fleet, device, lo, hi)
    ) WITHOUT ROWID;
    CREATE TABLE devices (
        fleet TEXT NOT NULL,
        device TEXT NOT NULL,
        watermark INTEGER NOT NULL DEFAULT 0,
        state TEXT,
        state_since REAL,
        birth TEXT,
        last_seen REAL,
        PRIMARY KEY (fleet, device)
    ) WITHOUT ROWID;
    CREATE TABLE device_states (
        fleet TEXT NOT NULL, device TEXT NOT NULL, at REAL NOT NULL, state TEXT NOT NULL,
        payload TEXT
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        received REAL NOT NULL,
        topic TEXT NOT NULL,
        reason TEXT NOT NULL,
        size INTEGER NOT NULL,
        payload BLOB
    );
    """,
    # 2: dead letters counted per (topic, reason kind) with a small sample; history indexes
    """
    CREATE TABLE dead_letters_v2 (
        id INTEGER PRIMARY KEY,
        first_seen REAL NOT NULL,
        received REAL NOT NULL,
        topic TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        size INTEGER NOT NULL,
        count INTEGER NOT NULL,
        payload BLOB
    );
    INSERT INTO dead_letters_v2 (first_seen, received, topic, kind, reason, size, count, payload)
        SELECT min(received), max(received), substr(topic, 1, 256), substr(reason, 1, 1024),
               substr(reason, 1, 1024), max(size), count(*), substr(payload, 1, 1024)
        FROM dead_letters GROUP BY substr(topic, 1, 256), substr(reason, 1, 1024)
        ORDER BY max(id);
    DROP TABLE dead_letters;
    ALTER TABLE dead_letters_v2 RENAME TO dead_letters;
    CREATE UNIQUE INDEX dead_letters_key ON dead_letters (topic, kind);
    CREATE INDEX dead_letters_seen ON dead_letters (received);
    CREATE INDEX device_states_device ON device_states (fleet, device);
    """,
    # version 3: the ranges a device's watermark has not passed yet, found without reading
    # every range it ever announced (a day of thinning announces hundreds of thousands)
    """
    CREATE INDEX accounted_pending ON accounted (fleet, device, hi);
    """,
    # version 4: commands to devices, kept until answered (hub_bridge/commands.py); next_send is
    # when the hub publishes it (again), NULL once it is finished (answered or superseded)
    """
    CREATE TABLE commands (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        fleet TEXT NOT NULL,
        device TEXT NOT NULL,
        name TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        sent_count INTEGER NOT NULL DEFAULT 0,
        last_sent REAL,
        next_send REAL,
        acked_at REAL,
        ok INTEGER,
        error TEXT,
        superseded_by TEXT,
        finished REAL
    );
    CREATE INDEX commands_device ON commands (fleet, device, seq);
    CREATE INDEX commands_due ON commands (next_send) WHERE next_send IS NOT NULL;
    CREATE INDEX commands_finished ON commands (finished) WHERE finished IS NOT NULL;
    """,
    # version 5: provisioning (hub_bridge/claims.py, hub_bridge/pki.py): claims by the SHA-256
    # of their token; certificates by serial (hex: X.509 serials are up to 159 bits)
    """
    CREATE TABLE claims (
        hash TEXT PRIMARY KEY,
        fleet TEXT NOT NULL,
        device TEXT NOT NULL,
        role TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        used_at REAL,
        used_by TEXT,
        serial TEXT
    ) WITHOUT ROWID;
    CREATE INDEX claims_device ON claims (fleet, device);
    CREATE INDEX claims_expires ON claims (expires);
    CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        fleet TEXT NOT NULL,
        device TEXT NOT NULL,
        role TEXT,
        issued_at REAL NOT NULL,
        not_after REAL NOT NULL,
        revoked_at REAL,
        claim TEXT,
        pem TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX certificates_device ON certificates (fleet, device);
    CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL;
    """,
]
SCHEMA_VERSION = len(_SCHEMA)


CLAIM_KEEP_S = 30 * 86400.0
"""Claims expired (used or not) longer than this are deleted when a claim is added."""

_T = TypeVar("_T")


class TimelineError(Exception):
    """The timeline file cannot be used (newer schema, unreadable)."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A device certificate as the store records it."""

    serial: int
    not_after: float
    """Epoch seconds."""
    pem: str


def _certificate_row(row: Sequence[Any]) -> dict[str, Any]:
    serial, fleet, device, role, issued, not_after, revoked, pem = row
    return {
        "serial": serial,
        "fleet": fleet,
        "device": device,
        "role": role,
        "issued_at": issued,
        "not_after": not_after,
        "revoked_at": revoked,
        "certificate": pem,
    }


@dataclass(frozen=True, slots=True)
class TimelineLimits:
    """How much the timeline keeps of what is not the timeline itself (hub ``ingest.*`` keys)."""

    dead_letter_keep_bytes: int = 1024
    """The sample of a rejected payload that is kept."""
    dead_letter_max_rows: int = 10_000
    """Distinct dead letters kept; the least recently seen go first."""
    state_history: int = 100
    """State transitions kept per device."""


def reason_kind(reason: str) -> str:
    """The reason with every number as ``N``: what repeats when a client repeats a mistake."""
    return re.sub(r"\d+", "N", reason[:_REASON_CHARS])


@dataclass(frozen=True, slots=True)
class Batch:
    """One device's validated events of one message, as ``store_many`` takes them."""

    fleet: str
    device: str
    events: Sequence[dict[str, Any]]
    flags: Sequence[list[str]]
    rejected_seqs: tuple[int, ...] = ()
    bodies: Sequence[str] | None = None
    """Each event's stored text (``ingest.BatchCheck.bodies``); None: encoded when stored."""
    proof: tuple[int, int, str] | None = None
    """The message's seq range and ``seqs.batch_digest`` of its events, valid or rejected, for
    the device's ack (``"got"``); stores do not read it."""


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What storing one batch did."""

    stored: int
    duplicates: int
    conflicts: int
    watermark: int
    conflict_seqs: tuple[int, ...] = ()
    """Seqs of the batch already stored with another id: the device reuses seqs it should not."""
    ack: dict[str, Any] | None = field(default=None, compare=False)
    """The device's ack after this batch (``ack_payload``), made in the storing transaction;
    None when the store does not make it (the caller asks ``ack_payload``)."""


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    """A command due to be published: where, what, and how often it was published before."""

    id: str
    fleet: str
    device: str
    name: str
    payload: str
    sent_count: int


_COMMAND_COLUMNS = (
    "id, fleet, device, name, created, sent_count, last_sent, next_send, acked_at, ok, error,"
    " superseded_by, length(CAST(payload AS BLOB))"
)


def _command_row(row: Sequence[Any]) -> dict[str, Any]:
    cid, fleet, device, name, created, sent, last, nxt, acked, ok, error, sup, size = row
    return {
        "id": cid,
        "fleet": fleet,
        "device": device,
        "name": name,
        "status": command_status(int(sent), acked is not None, bool(ok), sup is not None),
        "created": created,
        "sent_count": int(sent),
        "last_sent": last,
        "next_send": nxt,
        "acked_at": acked,
        "ok": None if ok is None else bool(ok),
        "error": error,
        "superseded_by": sup,
        "size": int(size),
    }


_ADVANCE_CHUNK = 10_000


def parse_stored(body: str | bytes) -> dict[str, Any]:
    """A stored envelope's text as a dict. Every stored event is read back by the projector:
    orjson takes a third of the standard parser's time; anything it refuses (nothing stored
    by this hub should be) goes to the standard parser."""
    try:
        env: dict[str, Any] = orjson.loads(body)
    except orjson.JSONDecodeError:
        env = json.loads(body)
    return env


def advance_watermark(wm: int, seqs: Sequence[int], ranges: Sequence[tuple[int, int]]) -> int:
    """The highest seq up to which every seq is stored (``seqs``, ascending) or accounted for
    (``ranges``, inclusive, ascending by ``lo``), starting from ``wm``. Linear in both: the
    watermark only grows, so no stored seq or range is looked at twice."""
    i = j = 0
    while True:
        while i < len(seqs) and seqs[i] <= wm:
            i += 1
        if i < len(seqs) and seqs[i] == wm + 1:
            wm += 1
            continue
        best = wm
        while j < len(ranges) and ranges[j][0] <= wm + 1:
            best = max(best, ranges[j][1])
            j += 1
        if best > wm:
            wm = best
            continue
        return wm


_INSERT_ROWS = 1000
"""Most events in one INSERT statement (9 parameters each: well under SQLite's 32766)."""


@lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    # both unique keys ((fleet, device, id), (fleet, device, seq)) are the de-duplication: a
    # row that collides is skipped, and RETURNING says which rows went in
    values = ",".join(["(?,?,?,?,?,?,?,?,?)"] * rows)
    return (
        "INSERT INTO events (fleet, device, seq, id, type, ts, received, flags, body)"
        f" VALUES {values} ON CONFLICT DO NOTHING RETURNING seq, id"
    )


def _body(env: dict[str, Any]) -> str:
    return encode_checked(
        env["id"],
        env["seq"],
        env["fleet"],
        env["device"],
        env["type"],
        env["ts"],
        env["clock"],
        env["data"],
        env.get("ref"),
    ).decode()


def _store_batch(con: sqlite3.Connection, batch: Batch, received: float) -> StoreResult:
    """One batch inside the caller's transaction: insert, classify what did not go in,
    account for given-up seqs, advance the watermark, and make the device's ack."""
    fleet, device, events = batch.fleet, batch.device, batch.events
    bodies = batch.bodies if batch.bodies is not None else [_body(e) for e in events]
    row = con.execute(
        "INSERT INTO devices (fleet, device, watermark, last_seen) VALUES (?, ?, 0, ?)"
        " ON CONFLICT (fleet, device) DO UPDATE SET last_seen = excluded.last_seen"
        " RETURNING watermark",
        (fleet, device, received),
    ).fetchone()
    start = int(row[0])
    params: list[Any] = []
    for env, fl, body in zip(events, batch.flags, bodies, strict=True):
        params += (fleet, device, env["seq"], env["id"], env["type"], env["ts"], received,
                   ",".join(fl) or None, body)  # fmt: skip
    went_in: set[tuple[int, str]] = set()
    width = 9 * _INSERT_ROWS
    for k in range(0, len(params), width):
        chunk = params[k : k + width]
        cur = con.execute(_insert_sql(len(chunk) // 9), chunk)
        went_in.update((int(s), str(i)) for s, i in cur.fetchall())
    stored = len(went_in)
    accounted: list[tuple[str, str, int, int, str]] = []
    duplicates = conflicts = 0
    conflict_seqs: list[int] = []
    inserted: list[int] = []
    for env in events:
        seq, eid = int(env["seq"]), str(env["id"])
        if (seq, eid) in went_in:
            went_in.discard((seq, eid))  # a second copy in the batch did not go in
            inserted.append(seq)
            if env["type"] == "outbox.evicted":
                reason = str(env["data"].get("reason", "evicted"))
                for lo, hi in env["data"]["ranges"]:
                    accounted.append((fleet, device, int(lo), int(hi), reason))
            continue
        # not stored: the same event again (its id is there), or its seq taken by another id
        held = con.execute(
            "SELECT seq FROM events WHERE fleet=? AND device=? AND id=?", (fleet, device, eid)
        ).fetchone()
        if held is not None:
            duplicates += 1
            if int(held[0]) != seq and not _seq_taken(con, fleet, device, seq):
                # the same event again under a new seq (a client retried after the agent
                # forgot its id): the new seq is accounted for, not stored
                accounted.append((fleet, device, seq, seq, "duplicate"))
        else:
            conflicts += 1
            conflict_seqs.append(seq)
    for seq in batch.rejected_seqs:
        accounted.append((fleet, device, seq, seq, "rejected"))
    if accounted:
        con.executemany(
            "INSERT OR IGNORE INTO accounted (fleet, device, lo, hi, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            accounted,
        )
    # what this batch brought, contiguous above the stored watermark, moves it in memory; the
    # database is read only for what lies beyond (normally nothing: two index probes)
    wm = start
    for seq in sorted(inserted):
        if seq == wm + 1:
            wm = seq
        elif seq > wm:
            break
    wm = _advance_from(con, fleet, device, wm)
    if wm != start:
        con.execute(
            "UPDATE devices SET watermark=? WHERE fleet=? AND device=?", (wm, fleet, device)
        )
    return StoreResult(
        stored, duplicates, conflicts, wm, tuple(conflict_seqs), _ack(con, fleet, device, wm)
    )


def _seq_taken(con: sqlite3.Connection, fleet: str, device: str, seq: int) -> bool:
    return (
        con.execute(
            "SELECT 1 FROM events WHERE fleet=? AND device=? AND seq=?", (fleet, device, seq)
        ).fetchone()
        is not None
    )


def _advance_from(con: sqlite3.Connection, fleet: str, device: str, wm: int) -> int:
    """The watermark from ``wm`` (every seq up to it accounted for) over what is stored."""
    while True:
        seqs = [
            int(r[0])
            for r in con.execute(
                "SELECT seq FROM events WHERE fleet=? AND device=? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (fleet, device, wm, _ADVANCE_CHUNK),
            )
        ]
        # only ranges the watermark has not passed and that can matter for this chunk
        bound = seqs[-1] + 1 if len(seqs) == _ADVANCE_CHUNK else SEQ_MAX
        ranges = [
            (int(lo), int(hi))
            for lo, hi in con.execute(
                "SELECT lo, hi FROM accounted WHERE fleet=? AND device=? AND hi > ? AND lo <= ?"
                " ORDER BY lo",
                (fleet, device, wm, bound),
            )
        ]
        before = wm
        wm = advance_watermark(wm, seqs, ranges)
        if wm == before or len(seqs) < _ADVANCE_CHUNK:
            return wm


def _ack(con: sqlite3.Connection, fleet: str, device: str, watermark: int) -> dict[str, Any]:
    """``Timeline.ack_payload`` inside the storing transaction."""
    payload: dict[str, Any] = {"seq": watermark}
    row = con.execute(
        "SELECT max(seq) FROM events WHERE fleet=? AND device=?", (fleet, device)
    ).fetchone()
    if row is not None and row[0] is not None:
        payload["top"] = max(watermark, int(row[0]))
    if watermark > 0:
        row = con.execute(
            "SELECT seq, id FROM events WHERE fleet=? AND device=? AND seq <= ?"
            " ORDER BY seq DESC LIMIT 1",
            (fleet, device, watermark),
        ).fetchone()
        if row is not None:
            payload["check"] = [int(row[0]), str(row[1])]
    return payload


class Timeline:
    """The hub's store. ``await Timeline.open(path)``, then ``close()``."""

    def __init__(
        self, path: Path, db: aiosqlite.Connection, limits: TimelineLimits | None = None
    ) -> None:
        self.path = path
        self._db = db
        self.limits = limits or TimelineLimits()
        self._synced = True  # synchronous=FULL in force (dead letters switch it off: see below)
        # One connection, several writers (the bridge, the API's commands): a transaction
        # spans awaits, so another writer's statements would land inside it (or fail with
        # "cannot start a transaction within a transaction"). Writes take turns here.
        self._writing = asyncio.Lock()
        # events are stored on a connection of their own, on one thread of their own
        # (``store_many``); it exists from the first batch on
        self._ingest = ThreadPoolExecutor(1, thread_name_prefix="timeline-ingest")
        self._w: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str | Path, limits: TimelineLimits | None = None) -> Timeline:
        """Open or create the timeline (WAL, synchronous=FULL, private) and migrate it."""
        p = Path(path)
        prepare_private(p)
        db = await aiosqlite.connect(p, isolation_level=None)
        try:
            # several hub instances may share the file: wait longer for the write lock
            await configure(db, busy_timeout_ms=10_000)
            await migrate(db, _SCHEMA)
        except NewerSchema as exc:
            await db.close()
            raise TimelineError(f"{p}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        return cls(p, db, limits)

    async def _durable(self, on: bool) -> None:
        # One PRAGMA per switch, not per message: a flood of dead letters runs unsynced and the
        # first batch after it syncs everything (WAL frames are flushed in order).
        if self._synced != on:
            await self._db.execute(f"PRAGMA synchronous={'FULL' if on else 'NORMAL'}")
            self._synced = on

    async def close(self) -> None:
        """Close the database."""
        async with self._writing:  # a batch being stored ends first
            if self._w is not None:
                await asyncio.get_running_loop().run_in_executor(self._ingest, self._w.close)
                self._w = None
        self._ingest.shutdown(wait=True)
        await self._db.close()

    # -- storing ------------------------------------------------------------------------------

    async def store(
        self,
        fleet: str,
        device: str,
        events: Sequence[dict[str, Any]],
        flags: Sequence[list[str]],
        rejected_seqs: Iterable[int] = (),
        received: float | None = None,
    ) -> StoreResult:
        """Store a validated batch of one device in one transaction; return the new watermark.

        Duplicates (same id) are not stored again; an event whose seq is taken by another id is
        a conflict and is not stored (the caller dead-letters it). ``outbox.evicted`` events and
        ``rejected_seqs`` mark seqs as accounted for.
        """
        batch = Batch(fleet, device, events, flags, tuple(rejected_seqs))
        return (await self.store_many([batch], received))[0]

    async def store_many(
        self, batches: Sequence[Batch], received: float | None = None
    ) -> list[StoreResult]:
        """Store several batches (of one or several devices) in one transaction, in order; one
        result per batch. The hub commits what queued up meanwhile at once: one fsync for many
        batches while a fleet drains its backlogs.

        The whole transaction runs in one call on the ingest connection's own thread: one
        thread hop per group instead of one per statement. A cancel waits for it to end
        (committed or rolled back) before it goes on: the next writer never finds it open."""
        async with self._writing:
            received = time.time() if received is None else received
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self._ingest, self._store_many_sync, batches, received)
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait([work])
                raise

    def _ingest_connection(self) -> sqlite3.Connection:
        # opened on the ingest thread, used only there (the executor has one thread)
        if self._w is None:
            con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            con.execute("PRAGMA synchronous=FULL")  # every ingest commit is durable
            self._w = con
        return self._w

    def _store_many_sync(self, batches: Sequence[Batch], received: float) -> list[StoreResult]:
        con = self._ingest_connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            results = [_store_batch(con, b, received) for b in batches]
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        return results

    async def rejected_before(self, fleet: str, device: str, seqs: list[int]) -> set[int]:
        """Which of ``seqs`` were rejected already (a resend need not be dead-lettered again)."""
        if not seqs:
            return set()
        marks = ",".join("?" * len(seqs))
        async with self._db.execute(
            "SELECT lo FROM accounted WHERE fleet=? AND device=? AND reason='rejected'"
            f" AND lo = hi AND lo IN ({marks})",
            (fleet, device, *seqs),
        ) as cur:
            return {int(r[0]) for r in await cur.fetchall()}

    async def dead_letter(self, topic: str, reason: str, payload: bytes) -> int:
        """Record a rejected message; return how often its (topic, reason kind) was seen.

        The first time a row is made with a sample of ``limits.dead_letter_keep_bytes``; again,
        the row counts it and keeps the latest reason and sample. Past
        ``limits.dead_letter_max_rows`` rows the least recently seen are deleted.
        """
        async with self._writing:
            now = time.time()
            topic = topic[:_TOPIC_CHARS]
            reason = reason[:_REASON_CHARS]
            sample = payload[: self.limits.dead_letter_keep_bytes]
            db = self._db
            await self._durable(False)
            try:
                await db.execute("BEGIN IMMEDIATE")  # inside: a cancel here still rolls back
                async with db.execute(
                    "INSERT INTO dead_letters"
                    " (first_seen, received, topic, kind, reason, size, count, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT (topic, kind) DO UPDATE SET"
                    " received=excluded.received, reason=excluded.reason, size=excluded.size,"
                    " count=count + 1, payload=excluded.payload RETURNING count",
                    (now, now, topic, reason_kind(reason), reason, len(payload), sample),
                ) as cur:
                    row = await cur.fetchone()
                count = int(row[0]) if row else 1
                if count == 1:
                    await self._trim_dead_letters()
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
            return count

    async def _trim_dead_letters(self) -> None:
        keep = self.limits.dead_letter_max_rows
        # the cutoff row is found through the index on received: cheap at 10,000 rows
        async with self._db.execute(
            "SELECT received, id FROM dead_letters ORDER BY received DESC, id DESC"
            " LIMIT 1 OFFSET ?",
            (keep,),
        ) as cur:
            cutoff = await cur.fetchone()
        if cutoff is not None:
            await self._db.execute(
                "DELETE FROM dead_letters WHERE received < ? OR (received = ? AND id <= ?)",
                (cutoff[0], cutoff[0], cutoff[1]),
            )

    async def set_state(self, fleet: str, device: str, state: str, payload: str) -> bool:
        """Record a device's state message; return True when it changed the state."""
        async with self._writing:
            now = time.time()
            async with self._db.execute(
                "SELECT state FROM devices WHERE fleet=? AND device=?", (fleet, device)
            ) as cur:
                row = await cur.fetchone()
            if row is not None and row[0] == state:
                return False
            await self._durable(True)
            try:
                await self._db.execute("BEGIN IMMEDIATE")  # inside: a cancel here still rolls back
                await self._db.execute(
                    "INSERT INTO devices (fleet, device, watermark, state, state_since, birth)"
                    " VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT (fleet, device) DO UPDATE SET"
                    " state=excluded.state, state_since=excluded.state_since,"
                    " birth=CASE WHEN excluded.state='online' THEN excluded.birth ELSE birth END",
                    (fleet, device, state, now, payload),
                )
                await self._db.execute(
                    "INSERT INTO device_states (fleet, device, at, state, payload)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (fleet, device, now, state, payload),
                )
                # the history is bounded per device: the oldest transitions beyond it go
                await self._db.execute(
                    "DELETE FROM device_states WHERE fleet=? AND device=? AND rowid <= ("
                    " SELECT rowid FROM device_states WHERE fleet=? AND device=?"
                    " ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                    (fleet, device, fleet, device, self.limits.state_history),
                )
                await self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._db.execute("ROLLBACK")
                raise
            return True

    # -- reading ------------------------------------------------------------------------------

    async def ack_payload(self, fleet: str, device: str, watermark: int) -> dict[str, Any]:
        """The ack a device is sent: ``{"seq": watermark, "top": M, "check": [S, ID]}``.

        ``top`` is the highest seq stored for the device and ``check`` names the stored event
        at the highest seq up to the watermark: a device whose outbox was lost or replaced (its
        seqs restarting below what the hub holds) sees that these seqs are not its events and
        continues after them instead of taking the ack for its own (DESIGN §3.2).
        """
        payload: dict[str, Any] = {"seq": watermark}
        async with self._db.execute(
            "SELECT max(seq) FROM events WHERE fleet=? AND device=?", (fleet, device)
        ) as cur:
            row = await cur.fetchone()
        if row is not None and row[0] is not None:
            payload["top"] = max(watermark, int(row[0]))
        if watermark > 0:
            async with self._db.execute(
                "SELECT seq, id FROM events WHERE fleet=? AND device=? AND seq <= ?"
                " ORDER BY seq DESC LIMIT 1",
                (fleet, device, watermark),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                payload["check"] = [int(row[0]), str(row[1])]
        return payload

    async def watermarks(self) -> list[tuple[str, str, int]]:
        """Every known device's (fleet, device, watermark)."""
        async with self._db.execute("SELECT fleet, device, watermark FROM devices") as cur:
            return [(str(f), str(d), int(w)) for f, d, w in await cur.fetchall()]

    async def devices(self) -> list[dict[str, Any]]:
        """Every device: watermark, state and since when, highest seq stored, missing seqs."""
        out = []
        async with self._db.execute(
            "SELECT fleet, device, watermark, state, state_since, last_seen FROM devices"
            " ORDER BY fleet, device"
        ) as cur:
            rows = await cur.fetchall()
        for fleet, device, wm, state, since, seen in rows:
            async with self._db.execute(
                "SELECT max(seq), count(*) FROM events WHERE fleet=? AND device=?",
                (fleet, device),
            ) as cur:
                top = await cur.fetchone()
            max_seq = int(top[0]) if top and top[0] is not None else 0
            out.append(
                {
                    "fleet": fleet,
                    "device": device,
                    "watermark": int(wm),
                    "max_seq": max_seq,
                    "events": int(top[1]) if top else 0,
                    "missing": await self.missing(fleet, device, limit=100),
                    "state": state,
                    "state_since": since,
                    "last_seen": seen,
                }
            )
        return out

    async def missing(self, fleet: str, device: str, limit: int = 1000) -> list[list[int]]:
        """Seq ranges above the watermark not yet accounted for (what the hub still awaits)."""
        async with self._db.execute(
            "SELECT watermark FROM devices WHERE fleet=? AND device=?", (fleet, device)
        ) as cur:
            row = await cur.fetchone()
        wm = int(row[0]) if row else 0
        async with self._db.execute(
            "SELECT seq FROM events WHERE fleet=? AND device=? AND seq > ? ORDER BY seq",
            (fleet, device, wm),
        ) as cur:
            seqs = [int(r[0]) for r in await cur.fetchall()]
        gaps: list[list[int]] = []
        expect = wm + 1
        for s in seqs:
            if s > expect:
                gaps.append([expect, s - 1])
                if len(gaps) >= limit:
                    break
            expect = s + 1
        return gaps

    async def events(
        self,
        fleet: str | None = None,
        device: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        *,
        with_flags: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stored envelopes in (fleet, device, seq) order; ``with_flags`` adds the hub's flags
        (``future-ts``) under ``_flags``, outside the contract envelope."""
        where = ["seq > ?"]
        args: list[Any] = [after_seq]
        if fleet is not None:
            where.append("fleet = ?")
            args.append(fleet)
        if device is not None:
            where.append("device = ?")
            args.append(device)
        sql = f"SELECT body, flags FROM events WHERE {' AND '.join(where)}"
        sql += " ORDER BY fleet, device, seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        async with self._db.execute(sql, args) as cur:
            async for body, flags in cur:
                env = parse_stored(body)
                if flags and with_flags:
                    env["_flags"] = flags.split(",")
                yield env

    async def events_since(
        self, cursor: int = 0, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int]:
        """Events stored after ``cursor``, in ingest order, at most ``limit``; and the cursor
        to pass next time (``cursor`` itself when nothing is new).

        The cursor is the ``ingest`` rowid: the hub is the one writer of this file and commits
        in rowid order, so a reader polling with its cursor misses nothing and sees nothing
        twice. 0 starts from the beginning."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        async with self._db.execute(
            "SELECT ingest, body FROM events WHERE ingest > ? ORDER BY ingest LIMIT ?",
            (cursor, limit),
        ) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            return [], cursor
        return [parse_stored(body) for _, body in rows], int(rows[-1][0])

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recently seen dead letters first: when (last), topic, reason, size (of the
        last), how many times, and since when."""
        async with self._db.execute(
            "SELECT received, topic, reason, size, count, first_seen FROM dead_letters"
            " ORDER BY received DESC, id DESC LIMIT ?",
            (limit,),
        ) as cur:
            return [
                {
                    "received": r,
                    "topic": t,
                    "reason": why,
                    "size": n,
                    "count": c,
                    "first_seen": first,
                }
                for r, t, why, n, c, first in await cur.fetchall()
            ]

    async def state_history(self, fleet: str, device: str) -> list[dict[str, Any]]:
        """A device's kept state transitions, oldest first: ``{"at", "state"}``."""
        async with self._db.execute(
            "SELECT at, state FROM device_states WHERE fleet=? AND device=? ORDER BY rowid",
            (fleet, device),
        ) as cur:
            return [{"at": at, "state": st} for at, st in await cur.fetchall()]

    async def count(self, table: str = "events") -> int:
        """Rows of ``events``, ``dead_letters``, ``device_states``, ``commands``, ``claims`` or
        ``certificates``."""
        tables = ("events", "dead_letters", "device_states", "commands", "claims", "certificates")
        if table not in tables:
            raise ValueError(table)
        async with self._db.execute(f"SELECT count(*) FROM {table}") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- commands to devices (hub_bridge/commands.py) -------------------------------------------

    async def add_command(
        self,
        fleet: str,
        device: str,
        name: str,
        cid: str,
        payload: str,
        limits: CommandLimits,
        now: float | None = None,
    ) -> list[str]:
        """Queue command ``cid`` (committed with fsync: the API answers 202 only then), due at
        once; return the ids it superseded: the device's unfinished commands of the same name.

        In the same transaction the device's commands are cut to ``limits.max_per_device``
        (finished ones first, oldest first) and finished ones older than ``limits.retention_s``
        are deleted.
        """
        async with self._writing:
            now = time.time() if now is None else now
            db = self._db
            await self._durable(True)
            try:
                await db.execute("BEGIN IMMEDIATE")  # inside: a cancel here still rolls back
                async with db.execute(
                    "UPDATE commands SET superseded_by=?, next_send=NULL, finished=?"
                    " WHERE fleet=? AND device=? AND name=? AND finished IS NULL RETURNING id",
                    (cid, now, fleet, device, name),
                ) as cur:
                    superseded = sorted(str(r[0]) for r in await cur.fetchall())
                await db.execute(
                    "INSERT INTO commands (id, fleet, device, name, payload, created, next_send)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (cid, fleet, device, name, payload, now, now),
                )
                # unfinished first, then the newest: what is cut is finished and old
                await db.execute(
                    "DELETE FROM commands WHERE seq IN (SELECT seq FROM commands"
                    " WHERE fleet=? AND device=? ORDER BY finished IS NULL DESC, seq DESC"
                    " LIMIT -1 OFFSET ?)",
                    (fleet, device, limits.max_per_device),
                )
                await db.execute(
                    "DELETE FROM commands WHERE finished IS NOT NULL AND finished < ?",
                    (now - limits.retention_s,),
                )
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
            return superseded

    async def prune_commands(self, limits: CommandLimits, now: float | None = None) -> int:
        """Delete commands answered or superseded more than ``limits.retention_s`` ago."""
        async with self._writing:
            now = time.time() if now is None else now
            async with self._db.execute(
                "DELETE FROM commands WHERE finished IS NOT NULL AND finished < ?",
                (now - limits.retention_s,),
            ) as cur:
                return max(cur.rowcount, 0)

    # a device known to be offline is skipped: its birth makes its commands due again
    _DUE = (
        " FROM commands c LEFT JOIN devices d ON d.fleet = c.fleet AND d.device = c.device"
        " WHERE c.next_send IS NOT NULL AND d.state IS NOT 'offline'"
    )

    async def due_commands(self, now: float, limit: int = 100) -> list[QueuedCommand]:
        """Unfinished commands whose time to be published has come, the longest waiting first,
        of devices not known to be offline."""
        async with self._db.execute(
            "SELECT c.id, c.fleet, c.device, c.name, c.payload, c.sent_count"
            f"{self._DUE} AND c.next_send <= ? ORDER BY c.next_send LIMIT ?",
            (now, limit),
        ) as cur:
            return [
                QueuedCommand(str(i), str(f), str(d), str(n), str(p), int(s))
                for i, f, d, n, p, s in await cur.fetchall()
            ]

    async def next_command_due(self) -> float | None:
        """When the next command is due (of a device not known to be offline), if any."""
        async with self._db.execute(f"SELECT min(c.next_send){self._DUE}") as cur:
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def command_sent(self, cid: str, now: float, next_send: float) -> None:
        """Command ``cid`` was published at ``now``; publish it again at ``next_send`` unless it
        is finished by then (an answer may have come while it was being published)."""
        async with self._writing:
            await self._db.execute(
                "UPDATE commands SET sent_count = sent_count + 1, last_sent = ?,"
                " next_send = CASE WHEN finished IS NULL THEN ? END WHERE id = ?",
                (now, next_send, cid),
            )

    async def commands_due_now(self, fleet: str, device: str, now: float) -> int:
        """A device's birth: its unfinished commands are due at ``now``; how many there are."""
        async with (
            self._writing,
            self._db.execute(
                "UPDATE commands SET next_send=? WHERE fleet=? AND device=? AND finished IS NULL",
                (now, fleet, device),
            ) as cur,
        ):
            return max(cur.rowcount, 0)

    async def ack_command(
        self,
        fleet: str,
        device: str,
        cid: str,
        ok: bool,
        error: str | None,
        now: float | None = None,
    ) -> str:
        """Record a device's answer to command ``cid`` (with fsync); say what it was:
        ``recorded``; ``again`` (answered before: the first answer stays); ``unknown`` (no such
        command); ``wrong-device`` (the command of another device: the answer is ignored, the
        topic it came on is the device's identity, never the id)."""
        async with self._writing:
            now = time.time() if now is None else now
            async with self._db.execute(
                "SELECT fleet, device FROM commands WHERE id=?", (cid,)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return "unknown"
            if (row[0], row[1]) != (fleet, device):
                return "wrong-device"
            await self._durable(True)
            async with self._db.execute(
                "UPDATE commands SET acked_at=?, ok=?, error=?, next_send=NULL,"
                " finished=coalesce(finished, ?) WHERE id=? AND acked_at IS NULL",
                (now, int(ok), error, now, cid),
            ) as cur:
                changed = cur.rowcount
            return "recorded" if changed == 1 else "again"

    async def commands(self, fleet: str, device: str, limit: int = 100) -> list[dict[str, Any]]:
        """A device's kept commands, newest first, with their status (no payload)."""
        async with self._db.execute(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE fleet=? AND device=?"
            " ORDER BY seq DESC LIMIT ?",
            (fleet, device, limit),
        ) as cur:
            return [_command_row(r) for r in await cur.fetchall()]

    async def command(self, cid: str) -> dict[str, Any] | None:
        """One command with its status and its payload as published, or None."""
        async with self._db.execute(
            f"SELECT {_COMMAND_COLUMNS}, payload FROM commands WHERE id=?", (cid,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        out = _command_row(row[:-1])
        out["payload"] = json.loads(row[-1])
        return out

    async def known_device(self, fleet: str, device: str) -> bool:
        """Whether the hub has heard of the device (an event or a state message)."""
        async with self._db.execute(
            "SELECT 1 FROM devices WHERE fleet=? AND device=?", (fleet, device)
        ) as cur:
            return await cur.fetchone() is not None

    # -- provisioning: claims and certificates (hub_bridge/claims.py, hub_bridge/pki.py) --------

    def _own_transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one IMMEDIATE transaction on a connection of its own (in a thread):
        the shared connection's tasks cannot interleave statements into it."""
        con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")
            con.execute("BEGIN IMMEDIATE")
            try:
                result = work(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return result
        finally:
            con.close()

    async def add_claim(
        self,
        token_hash: str,
        fleet: str,
        device: str,
        role: str,
        expires: float,
        now: float | None = None,
    ) -> None:
        """Record a claim by its token's hash (with fsync); claims expired longer than
        ``CLAIM_KEEP_S`` are deleted in the same transaction."""
        when = time.time() if now is None else now

        def work(con: sqlite3.Connection) -> None:
            con.execute(
                "INSERT INTO claims (hash, fleet, device, role, created, expires)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, fleet, device, role, when, expires),
            )
            con.execute("DELETE FROM claims WHERE expires < ?", (when - CLAIM_KEEP_S,))

        await asyncio.to_thread(self._own_transaction, work)

    async def redeem_claim(
        self,
        token_hash: str,
        issue: Callable[[Claim], IssuedCertificate],
        *,
        now: float | None = None,
        used_by: str | None = None,
    ) -> tuple[Claim, IssuedCertificate] | None:
        """Exchange a claim for a certificate, once: in one transaction the claim is checked
        (known, not expired, not used), ``issue(claim)`` makes the certificate, which is
        recorded, and the claim is marked used. None for an unknown, expired or used claim
        (nothing changed); an exception from ``issue`` leaves the claim unused."""
        when = time.time() if now is None else now

        def work(con: sqlite3.Connection) -> tuple[Claim, IssuedCertificate] | None:
            row = con.execute(
                "SELECT fleet, device, role, expires FROM claims"
                " WHERE hash=? AND used_at IS NULL AND expires > ?",
                (token_hash, when),
            ).fetchone()
            if row is None:
                return None
            claim = Claim(str(row[0]), str(row[1]), str(row[2]), float(row[3]))
            cert = issue(claim)
            serial = format(cert.serial, "x")
            con.execute(
                "INSERT INTO certificates"
                " (serial, fleet, device, role, issued_at, not_after, claim, pem)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (serial, claim.fleet, claim.device, claim.role, when, cert.not_after,
                 token_hash, cert.pem),
            )  # fmt: skip
            con.execute(
                "UPDATE claims SET used_at=?, used_by=?, serial=? WHERE hash=?",
                (when, used_by, serial, token_hash),
            )
            return claim, cert

        return await asyncio.to_thread(self._own_transaction, work)

    async def claims(self, fleet: str, device: str) -> list[dict[str, Any]]:
        """A device's kept claims, newest first (their hashes are not shown)."""
        async with self._db.execute(
            "SELECT role, created, expires, used_at, used_by, serial FROM claims"
            " WHERE fleet=? AND device=? ORDER BY created DESC",
            (fleet, device),
        ) as cur:
            return [
                {
                    "fleet": fleet,
                    "device": device,
                    "role": role,
                    "created": created,
                    "expires": expires,
                    "used_at": used_at,
                    "used_by": used_by,
                    "serial": serial,
                }
                for role, created, expires, used_at, used_by, serial in await cur.fetchall()
            ]

    async def certificates(self, fleet: str, device: str) -> list[dict[str, Any]]:
        """The certificates issued to a device, newest first, with their revocation."""
        async with self._db.execute(
            "SELECT serial, fleet, device, role, issued_at, not_after, revoked_at, pem"
            " FROM certificates WHERE fleet=? AND device=? ORDER BY issued_at DESC, serial",
            (fleet, device),
        ) as cur:
            return [_certificate_row(r) for r in await cur.fetchall()]

    async def revoke_device(self, fleet: str, device: str, now: float | None = None) -> list[str]:
        """Revoke every certificate of a device not revoked yet and void its unused claims, in
        one transaction (with fsync); return the serials revoked now (hex)."""
        when = time.time() if now is None else now

        def work(con: sqlite3.Connection) -> list[str]:
            serials = sorted(
                str(r[0])
                for r in con.execute(
                    "UPDATE certificates SET revoked_at=? WHERE fleet=? AND device=?"
                    " AND revoked_at IS NULL RETURNING serial",
                    (when, fleet, device),
                ).fetchall()
            )
            # a claim given out for the device before it was revoked must not bring it back
            con.execute(
                "UPDATE claims SET used_at=?, used_by='revoked' WHERE fleet=? AND device=?"
                " AND used_at IS NULL",
                (when, fleet, device),
            )
            return serials

        return await asyncio.to_thread(self._own_transaction, work)

    async def revoked_certificates(self, now: float | None = None) -> list[tuple[int, float]]:
        """(serial, revoked at) of every revoked certificate not yet expired: what the CRL
        lists (an expired certificate is refused without it)."""
        when = time.time() if now is None else now
        async with self._db.execute(
            "SELECT serial, revoked_at FROM certificates"
            " WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY serial",
            (when,),
        ) as cur:
            return [(int(str(s), 16), float(r)) for s, r in await cur.fetchall()]
