"""The delivery tables on the timeline's SQLite file (``hub_bridge.delivery.store``).

A connection of its own on the same file (WAL lets the bridge's connection and this one read
at once; writers take turns through SQLite's lock, waited for up to ``BUSY_TIMEOUT_MS``), used
from one thread of its own: each call (a whole transaction, or a read) is one hop to that
thread, not one per statement, which is what lets a thousand notices a second through. The
timeline's ``PRAGMA user_version`` belongs to the timeline: these tables keep their version in
``delivery_schema`` and migrate in one transaction, refusing a newer one.

Manifests and load plans are read from the timeline's own ``commands`` table (the hub queues
them there when they are sent through it): the one durable record of what was sent, so no hook
between the API and the projector can lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.platform.sqlite import make_private, prepare_private
from hub_bridge.delivery.store import (
    Checkpoint,
    Delivery,
    DeliveryStoreError,
    LoggedNotice,
    NewNotice,
    Outcome,
    Subscription,
)
from hub_bridge.store import StoreUnavailable

__all__ = [
    "BUSY_TIMEOUT_MS",
    "LATE_COMMANDS_S",
    "SCHEMA_VERSION",
    "SqliteDeliveryStore",
    "delivery_row",
    "exception_identity",
    "exception_row",
    "payload_of",
]

BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for the bridge's transaction to end."""

_SCHEMA = [
    """
    CREATE TABLE delivery_notices (
        pos INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        fleet TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        ts TEXT NOT NULL,
        created REAL NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX delivery_notices_fleet ON delivery_notices (fleet, pos);
    CREATE INDEX delivery_notices_created ON delivery_notices (created);
    CREATE TABLE delivery_subscriptions (
        id TEXT PRIMARY KEY,
        fleet TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        kinds TEXT NOT NULL,
        types TEXT NOT NULL,
        description TEXT NOT NULL,
        created REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    ) WITHOUT ROWID;
    CREATE INDEX delivery_subscriptions_fleet ON delivery_subscriptions (fleet);
    CREATE TABLE delivery_queue (
        sub TEXT NOT NULL,
        notice TEXT NOT NULL,
        pos INTEGER NOT NULL,
        key TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        next_at REAL NOT NULL,
        last_at REAL,
        last_status INTEGER,
        last_error TEXT,
        done_at REAL,
        PRIMARY KEY (sub, notice)
    ) WITHOUT ROWID;
    CREATE INDEX delivery_queue_heads ON delivery_queue (sub, key, pos) WHERE state = 'pending';
    CREATE INDEX delivery_queue_due ON delivery_queue (sub, next_at) WHERE state = 'pending';
    CREATE INDEX delivery_queue_next ON delivery_queue (next_at) WHERE state = 'pending';
    CREATE INDEX delivery_queue_done ON delivery_queue (done_at) WHERE state != 'pending';
    CREATE INDEX delivery_queue_list ON delivery_queue (sub, state, pos);
    CREATE TABLE delivery_views (
        kind TEXT NOT NULL,
        fleet TEXT NOT NULL,
        key TEXT NOT NULL,
        body TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (kind, fleet, key)
    ) WITHOUT ROWID;
    CREATE INDEX delivery_views_updated ON delivery_views (updated);
    CREATE TABLE delivery_exceptions (
        id TEXT NOT NULL,
        fleet TEXT NOT NULL,
        type TEXT,
        key TEXT NOT NULL,
        raised_ts TEXT NOT NULL,
        resolved_ts TEXT,
        raised TEXT NOT NULL,
        resolved TEXT,
        pos INTEGER NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (fleet, id)
    ) WITHOUT ROWID;
    CREATE INDEX delivery_exceptions_updated ON delivery_exceptions (updated);
    CREATE INDEX delivery_exceptions_open ON delivery_exceptions (fleet, pos)
        WHERE resolved_ts IS NULL;
    CREATE INDEX delivery_exceptions_pos ON delivery_exceptions (fleet, pos);
    CREATE TABLE delivery_checkpoint (
        name TEXT PRIMARY KEY,
        events INTEGER NOT NULL,
        commands INTEGER NOT NULL,
        hub_seq INTEGER NOT NULL,
        model TEXT,
        extra TEXT NOT NULL,
        updated REAL NOT NULL
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(_SCHEMA)

_T = TypeVar("_T")
_PLAN_NAMES = ("manifest", "loadplan")
LATE_COMMANDS_S = 300.0
"""Commands created this recently are read again even below the cursor (see commands_since)."""
_SUB_COLS = "id, fleet, url, secret, kinds, types, description, created, active"
_SUBS_SQL = f"SELECT {_SUB_COLS} FROM delivery_subscriptions ORDER BY created"


def exception_identity(key: str, subject: str | None, payload: dict[str, Any]) -> str:
    """The exception a raised/resolved notice is about: its payload's ``id`` when it has one,
    else its key and type (one open exception per key and type)."""
    eid = payload.get("id")
    if isinstance(eid, str) and eid:
        return eid
    return f"{key}:{subject or ''}"


def payload_of(body: str) -> dict[str, Any]:
    doc = json.loads(body)
    payload = doc.get("payload") if isinstance(doc, dict) else None
    return payload if isinstance(payload, dict) else {}


class SqliteDeliveryStore:
    """The delivery tables in an SQLite file. ``await SqliteDeliveryStore.open(path)``."""

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        threads: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
    ) -> None:
        self.path = path
        self._writer, self._reader = writer, reader
        # every call runs whole (a transaction, or a read) on the thread of its connection: one
        # hop per call, not one per statement, and calls never interleave. Reads have their own
        # connection and thread (WAL: they see the last commit), so a commit waiting for the
        # disk holds up no read
        self._wthread, self._rthread = threads

    @classmethod
    async def open(cls, path: str | Path) -> SqliteDeliveryStore:
        """Open the file (created private if missing) and bring the delivery tables up to date."""
        p = Path(path)
        prepare_private(p)
        threads = (
            ThreadPoolExecutor(1, thread_name_prefix="delivery-write"),
            ThreadPoolExecutor(1, thread_name_prefix="delivery-read"),
        )
        loop = asyncio.get_running_loop()
        opened: list[sqlite3.Connection] = []
        try:
            opened.append(await loop.run_in_executor(threads[0], _connect, p, True))
            opened.append(await loop.run_in_executor(threads[1], _connect, p, False))
        except BaseException as exc:
            for con in opened:
                con.close()
            for t in threads:
                t.shutdown(wait=False)
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(f"{p}: {exc}") from exc
            raise
        return cls(p, opened[0], opened[1], threads)

    async def close(self) -> None:
        """Close the connections."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._wthread, self._writer.close)
        await loop.run_in_executor(self._rthread, self._reader.close)
        self._wthread.shutdown(wait=True)
        self._rthread.shutdown(wait=True)

    async def lead(self) -> bool:
        """Always: an SQLite timeline has one hub."""
        return True

    async def _run(self, thread: ThreadPoolExecutor, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on ``thread``; a cancel waits for it to end (its transaction
        committed or rolled back) before it goes on."""
        work = asyncio.get_running_loop().run_in_executor(thread, fn, *args)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            raise
        except sqlite3.OperationalError as exc:  # locked too long, disk full: transient
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return await self._run(self._rthread, _fetch, self._reader, sql, args)

    async def _write(self, fn: Callable[..., _T], *args: Any, durable: bool = False) -> _T:
        """``fn(con, *args)`` in one transaction. Derived data (notices, the queue's states,
        the checkpoint) is committed without an fsync of its own: a power cut loses at most the
        last commits, which the projector makes again from the timeline and the worker sends
        again (at least once). What the API acknowledged (subscriptions) is ``durable``."""
        return await self._run(self._wthread, _in_tx, self._writer, durable, fn, *args)

    # -- the projector ----------------------------------------------------------------------

    async def log_notices(
        self,
        notices: Sequence[NewNotice],
        views: Sequence[tuple[str, str, str, str | None]] = (),
        now: float = 0.0,
    ) -> list[LoggedNotice]:
        """Log new notices, queue them for their subscribers, keep exceptions, write views."""
        return await self._write(_log_notices, list(notices), list(views), now)

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        """The projector's last checkpoint under ``name``."""
        rows = await self._all(
            "SELECT events, commands, hub_seq, model, extra FROM delivery_checkpoint WHERE name=?",
            (name,),
        )
        if not rows:
            return None
        events, commands, hub_seq, model, extra = rows[0]
        return Checkpoint(
            int(events),
            int(commands),
            int(hub_seq),
            None if model is None else json.loads(_inflate(model)),
            json.loads(extra),
        )

    async def save_checkpoint(self, name: str, checkpoint: Checkpoint, now: float) -> None:
        """Replace the checkpoint ``name`` (one transaction: cursors and model together)."""

        def work(con: sqlite3.Connection) -> None:
            # encoded here, on the store's thread: megabytes of JSON for a big fleet's model,
            # compressed (fast level: 5-10x smaller) so the write holds the lock for less long
            model = (
                None
                if checkpoint.model is None
                else zlib.compress(json.dumps(checkpoint.model).encode(), 1)
            )
            row = (
                name,
                checkpoint.events,
                checkpoint.commands,
                checkpoint.hub_seq,
                model,
                json.dumps(checkpoint.extra),
                now,
            )
            con.execute(
                "INSERT INTO delivery_checkpoint"
                " (name, events, commands, hub_seq, model, extra, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " events=excluded.events, commands=excluded.commands,"
                " hub_seq=excluded.hub_seq, model=excluded.model, extra=excluded.extra,"
                " updated=excluded.updated",
                row,
            )

        await self._write(work)

    async def commands_since(self, cursor: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Manifests and load plans from the timeline's ``commands`` table after ``cursor``,
        and the recent ones below it again (a seq freed by pruning the newest command is used
        again by SQLite): the caller skips the ids it took."""
        names = ",".join("?" * len(_PLAN_NAMES))
        try:
            rows = await self._all(
                "SELECT * FROM ("
                f" SELECT seq, id, fleet, device, name, payload, created FROM commands"
                f"  WHERE seq > ? AND name IN ({names}) ORDER BY seq LIMIT ?)"
                " UNION ALL SELECT * FROM ("
                f" SELECT seq, id, fleet, device, name, payload, created FROM commands"
                f"  WHERE seq <= ? AND name IN ({names}) AND created > ? ORDER BY seq LIMIT ?)"
                " ORDER BY seq",
                (
                    cursor,
                    *_PLAN_NAMES,
                    limit,
                    cursor,
                    *_PLAN_NAMES,
                    time.time() - LATE_COMMANDS_S,
                    limit,
                ),
            )
        except StoreUnavailable as exc:
            if "no such table" in str(exc):  # no timeline in this file (tests of push alone)
                return [], cursor
            raise
        out = []
        top = cursor
        for seq, cid, fleet, device, name, payload, created in rows:
            top = max(top, int(seq))
            try:
                doc = json.loads(payload)
            except ValueError:
                continue  # the API stores only JSON objects: nothing else can be a plan
            out.append(
                {
                    "id": cid,
                    "fleet": fleet,
                    "device": device,
                    "name": name,
                    "payload": doc,
                    "created": float(created),
                }
            )
        return out, top

    # -- the stream ------------------------------------------------------------------------

    async def notices_after(
        self, pos: int, fleet: str | None = None, limit: int = 1000
    ) -> list[LoggedNotice]:
        """Logged notices after ``pos`` (of one fleet or all), in log order."""
        cols = "pos, id, fleet, kind, key, ts, body"
        if fleet is None:
            rows = await self._all(
                f"SELECT {cols} FROM delivery_notices WHERE pos > ? ORDER BY pos LIMIT ?",
                (pos, limit),
            )
        else:
            rows = await self._all(
                f"SELECT {cols} FROM delivery_notices WHERE fleet = ? AND pos > ?"
                " ORDER BY pos LIMIT ?",
                (fleet, pos, limit),
            )
        return [LoggedNotice(int(r[0]), *r[1:]) for r in rows]

    async def last_pos(self) -> int:
        """The position of the last logged notice (0 when none)."""
        rows = await self._all("SELECT max(pos) FROM delivery_notices")
        return int(rows[0][0] or 0)

    # -- views and exceptions ----------------------------------------------------------------

    async def view(self, kind: str, fleet: str, key: str) -> dict[str, Any] | None:
        """The projector's last answer for a parcel or a route."""
        rows = await self._all(
            "SELECT body FROM delivery_views WHERE kind=? AND fleet=? AND key=?",
            (kind, fleet, key),
        )
        return None if not rows else dict(json.loads(rows[0][0]))

    async def exceptions(
        self,
        fleet: str | None,
        state: str = "open",
        types: Sequence[str] = (),
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Exceptions newest first: ``open``, ``resolved`` or ``all``, of some types."""
        where, args = [], []
        if fleet is not None:
            where.append("fleet = ?")
            args.append(fleet)
        if state == "open":
            where.append("resolved_ts IS NULL")
        elif state == "resolved":
            where.append("resolved_ts IS NOT NULL")
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        sql = "SELECT id, fleet, type, key, raised_ts, resolved_ts, raised, resolved"
        sql += " FROM delivery_exceptions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY pos DESC LIMIT ?"
        rows = await self._all(sql, (*args, limit))
        return [exception_row(r) for r in rows]

    # -- subscriptions -----------------------------------------------------------------------

    async def add_subscription(self, sub: Subscription) -> None:
        """Store a new subscription (its id must be new)."""
        row = (
            sub.id,
            sub.fleet,
            sub.url,
            sub.secret,
            json.dumps(list(sub.kinds)),
            json.dumps(list(sub.types)),
            sub.description,
            sub.created,
            int(sub.active),
        )

        def work(con: sqlite3.Connection) -> None:
            con.execute(
                f"INSERT INTO delivery_subscriptions ({_SUB_COLS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._write(work, durable=True)

    async def subscriptions(self, fleet: str | None = None) -> list[Subscription]:
        """The subscriptions of a fleet, or of all fleets, oldest first."""
        if fleet is None:
            rows = await self._all(_SUBS_SQL)
        else:
            rows = await self._all(
                f"SELECT {_SUB_COLS} FROM delivery_subscriptions WHERE fleet=? ORDER BY created",
                (fleet,),
            )
        return [_subscription(r) for r in rows]

    async def subscription(self, fleet: str, sid: str) -> Subscription | None:
        """One subscription of ``fleet``."""
        rows = await self._all(
            f"SELECT {_SUB_COLS} FROM delivery_subscriptions WHERE fleet=? AND id=?",
            (fleet, sid),
        )
        return _subscription(rows[0]) if rows else None

    async def delete_subscription(self, fleet: str, sid: str) -> bool:
        """Delete a subscription and its queue; True when it existed."""

        def work(con: sqlite3.Connection) -> bool:
            gone = (
                con.execute(
                    "DELETE FROM delivery_subscriptions WHERE fleet=? AND id=? RETURNING id",
                    (fleet, sid),
                ).fetchone()
                is not None
            )
            if gone:
                con.execute("DELETE FROM delivery_queue WHERE sub=?", (sid,))
            return gone

        return await self._write(work, durable=True)

    # -- the webhook queue -------------------------------------------------------------------

    async def due(self, sub: Subscription, now: float, limit: int) -> list[Delivery]:
        """Deliveries of ``sub`` due at ``now`` that head their key, in log order."""
        rows = await self._all(_DUE_SQL, (sub.id, now, limit))
        return [
            Delivery(sub.id, nid, int(pos), key, kind, int(att), float(created), sub.url,
                     sub.secret, body)
            for nid, pos, key, kind, att, created, body in rows
        ]  # fmt: skip

    async def next_due(self) -> float | None:
        """When the earliest pending delivery is due."""
        rows = await self._all("SELECT min(next_at) FROM delivery_queue WHERE state='pending'")
        return None if rows[0][0] is None else float(rows[0][0])

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Record attempts: delivered, dead, or due again at ``next_at``."""
        if not outcomes:
            return
        rows = []
        for o in outcomes:
            state = "delivered" if o.delivered else "dead" if o.dead else "pending"
            done = o.at if state != "pending" else None
            next_at = o.next_at if o.next_at is not None else o.at
            rows.append((state, next_at, o.at, o.status, o.error, done, o.sub, o.notice))

        def work(con: sqlite3.Connection) -> None:
            con.executemany(
                "UPDATE delivery_queue SET state=?, attempts=attempts + 1, next_at=?,"
                " last_at=?, last_status=?, last_error=?, done_at=?"
                " WHERE sub=? AND notice=? AND state='pending'",
                rows,
            )

        await self._write(work)

    async def deliveries(
        self, fleet: str, sid: str, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """A subscription's deliveries, newest first, of one state or all."""
        sql = (
            "SELECT q.notice, q.pos, q.key, n.kind, q.state, q.attempts, q.created, q.next_at,"
            " q.last_at, q.last_status, q.last_error, q.done_at"
            " FROM delivery_queue q JOIN delivery_subscriptions s ON s.id = q.sub"
            " JOIN delivery_notices n ON n.id = q.notice WHERE s.fleet = ? AND q.sub = ?"
        )
        args: list[Any] = [fleet, sid]
        if state is not None:
            sql += " AND q.state = ?"
            args.append(state)
        sql += " ORDER BY q.pos DESC LIMIT ?"
        rows = await self._all(sql, (*args, limit))
        return [delivery_row(r) for r in rows]

    async def retry(self, fleet: str, sid: str, notice: str | None, now: float) -> int:
        """Dead deliveries back in the queue, due now, their attempts counted afresh."""
        sql = (
            "UPDATE delivery_queue SET state='pending', attempts=0, next_at=?, done_at=NULL,"
            " created=? WHERE sub=? AND state='dead'"
            " AND sub IN (SELECT id FROM delivery_subscriptions WHERE fleet=?)"
        )
        args: list[Any] = [now, now, sid, fleet]
        if notice is not None:
            sql += " AND notice=?"
            args.append(notice)

        def work(con: sqlite3.Connection) -> int:
            return int(con.execute(sql, args).rowcount)

        return await self._write(work, durable=True)

    async def prune(self, before: float, views_before: float | None = None) -> int:
        """Delete finished deliveries and unreferenced notices older than ``before``, and
        views and resolved exceptions not updated since ``views_before``."""

        def work(con: sqlite3.Connection) -> int:
            n = con.execute(
                "DELETE FROM delivery_queue WHERE state != 'pending' AND done_at < ?", (before,)
            ).rowcount
            n += con.execute(
                "DELETE FROM delivery_notices WHERE created < ? AND NOT EXISTS"
                " (SELECT 1 FROM delivery_queue q WHERE q.notice = delivery_notices.id)",
                (before,),
            ).rowcount
            if views_before is not None:
                n += con.execute(
                    "DELETE FROM delivery_views WHERE updated < ?", (views_before,)
                ).rowcount
                n += con.execute(
                    "DELETE FROM delivery_exceptions WHERE resolved_ts IS NOT NULL AND updated < ?",
                    (views_before,),
                ).rowcount
            return int(n)

        return await self._write(work)


_DUE_SQL = (
    "SELECT q.notice, q.pos, q.key, n.kind, q.attempts, q.created, n.body"
    " FROM delivery_queue q INDEXED BY delivery_queue_list"
    " JOIN delivery_notices n ON n.id = q.notice"
    " WHERE q.sub = ? AND q.state = 'pending' AND q.next_at <= ?"
    " AND NOT EXISTS (SELECT 1 FROM delivery_queue p WHERE p.sub = q.sub"
    "   AND p.key = q.key AND p.state = 'pending' AND p.pos < q.pos)"
    " ORDER BY q.pos LIMIT ?"
)


def _inflate(model: str | bytes) -> str | bytes:
    """A checkpoint's model as written: zlib-compressed JSON (text from before compression)."""
    return zlib.decompress(model) if isinstance(model, bytes) else model


def _fetch(con: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    return con.execute(sql, args).fetchall()


def _begin(con: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock in steps of half a millisecond.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ... up to 100 ms between tries, so a writer
    that finds the bridge committing may sleep 50-100 ms for a lock free after one: too slow for
    notices that should leave within a few dozen milliseconds. The connection's own timeout is
    1 ms; this loop tries again until ``BUSY_TIMEOUT_MS``."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            con.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.0005)


def _in_tx(con: sqlite3.Connection, durable: bool, fn: Callable[..., _T], *args: Any) -> _T:
    if durable:
        con.execute("PRAGMA synchronous=FULL")
    try:
        _begin(con)
        try:
            out = fn(con, *args)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
    finally:
        if durable:
            con.execute("PRAGMA synchronous=NORMAL")
    return out


def _log_notices(
    con: sqlite3.Connection,
    notices: list[NewNotice],
    views: list[tuple[str, str, str, str | None]],
    now: float,
) -> list[LoggedNotice]:
    subs = [_subscription(r) for r in con.execute(_SUBS_SQL).fetchall()]
    logged: list[LoggedNotice] = []
    queue: list[tuple[Any, ...]] = []
    for n in notices:
        row = con.execute(
            "INSERT INTO delivery_notices (id, fleet, kind, key, ts, created, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING pos",
            (n.id, n.fleet, n.kind, n.key, n.ts, now, n.body),
        ).fetchone()
        if row is None:
            continue  # logged before: re-processed after a restart
        pos = int(row[0])
        logged.append(LoggedNotice(pos, n.id, n.fleet, n.kind, n.key, n.ts, n.body))
        queue += [
            (s.id, n.id, pos, n.key, now, now) for s in subs if s.takes(n.fleet, n.kind, n.subject)
        ]
        if n.kind.startswith("exception."):
            eid = exception_identity(n.key, n.subject, payload_of(n.body))
            if n.kind == "exception.raised":
                # raised again after a resolve (a new occurrence, the same identity): reopen
                con.execute(
                    "INSERT INTO delivery_exceptions"
                    " (id, fleet, type, key, raised_ts, raised, pos, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (fleet, id) DO UPDATE SET raised_ts=excluded.raised_ts,"
                    " raised=excluded.raised, pos=excluded.pos, resolved_ts=NULL, resolved=NULL,"
                    " updated=excluded.updated",
                    (eid, n.fleet, n.subject, n.key, n.ts, n.body, pos, now),
                )
            else:
                con.execute(
                    "UPDATE delivery_exceptions SET resolved_ts=?, resolved=?, updated=?"
                    " WHERE fleet=? AND id=?",
                    (n.ts, n.body, now, n.fleet, eid),
                )
    if queue:
        con.executemany(
            "INSERT OR IGNORE INTO delivery_queue (sub, notice, pos, key, created, next_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            queue,
        )
    gone = [(k, f, key) for k, f, key, body in views if body is None]
    kept = [(k, f, key, body, now) for k, f, key, body in views if body is not None]
    if gone:
        con.executemany("DELETE FROM delivery_views WHERE kind=? AND fleet=? AND key=?", gone)
    if kept:
        con.executemany(
            "INSERT INTO delivery_views (kind, fleet, key, body, updated) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, fleet, key) DO UPDATE SET body=excluded.body,"
            " updated=excluded.updated",
            kept,
        )
    return logged


def _connect(path: Path, writer: bool) -> sqlite3.Connection:
    """Open the file on its thread: WAL, a busy timeout; the writer migrates the tables."""
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                          check_same_thread=False)  # fmt: skip
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        # the writer waits for the lock in its own loop (_begin); a reader is never locked out
        # in WAL but by a checkpoint's brief moments
        con.execute(f"PRAGMA busy_timeout={1 if writer else BUSY_TIMEOUT_MS}")
        make_private(path)
        if writer:
            _in_tx(con, True, _migrate, path)
        else:
            con.execute("PRAGMA query_only=ON")
    except BaseException:
        con.close()
        raise
    return con


def _migrate(con: sqlite3.Connection, path: Path) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS delivery_schema (version INTEGER NOT NULL)")
    row = con.execute("SELECT max(version) FROM delivery_schema").fetchone()
    version = int(row[0]) if row and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        raise DeliveryStoreError(
            f"{path}: the delivery tables' schema version {version} is newer than this"
            f" program's ({SCHEMA_VERSION})"
        )
    for step in _SCHEMA[version:]:
        for statement in step.split(";"):
            if statement.strip():
                con.execute(statement)
    if version < SCHEMA_VERSION:
        con.execute("DELETE FROM delivery_schema")
        con.execute("INSERT INTO delivery_schema VALUES (?)", (SCHEMA_VERSION,))


def _subscription(row: Sequence[Any]) -> Subscription:
    sid, fleet, url, secret, kinds, types, description, created, active = row
    return Subscription(
        sid,
        fleet,
        url,
        secret,
        tuple(json.loads(kinds)),
        tuple(json.loads(types)),
        description,
        float(created),
        bool(active),
    )


def exception_row(row: Sequence[Any]) -> dict[str, Any]:
    eid, fleet, etype, key, raised_ts, resolved_ts, raised, resolved = row
    return {
        "id": eid,
        "fleet": fleet,
        "type": etype,
        "key": key,
        "state": "open" if resolved_ts is None else "resolved",
        "raised_at": raised_ts,
        "resolved_at": resolved_ts,
        "raised": json.loads(raised),
        "resolved": None if resolved is None else json.loads(resolved),
    }


def delivery_row(row: Sequence[Any]) -> dict[str, Any]:
    notice, pos, key, kind, state, att, created, next_at, last_at, status, error, done = row
    return {
        "notice": notice,
        "pos": int(pos),
        "key": key,
        "kind": kind,
        "state": state,
        "attempts": int(att),
        "created": created,
        "next_at": next_at if state == "pending" else None,
        "last_at": last_at,
        "last_status": status,
        "last_error": error,
        "done_at": done,
    }
