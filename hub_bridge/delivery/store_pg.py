"""The delivery tables on the timeline's PostgreSQL database (``hub_bridge.delivery.store``).

The same tables and meaning as ``store_sqlite``, through psycopg 3 (async) and a small
``psycopg_pool`` pool, as ``hub_bridge.timeline_pg`` does. What differs with N hub instances:

- **One projector.** ``lead()`` takes a session-level ``pg_try_advisory_lock`` on a connection
  of its own, held as long as that connection lives; the hub holding it runs the projector and
  the webhook worker, the others serve the API and the stream from the tables and try again
  now and then. If the leader dies, its connection closes, PostgreSQL releases the lock and
  another hub takes over from the last checkpoint (the notices' ids make that harmless).
- **Notices in commit order.** Only the leader logs notices, one transaction at a time, so
  ``pos`` (a ``bigserial``) grows in commit order and a stream tailing ``pos > last`` misses
  nothing.
- **Manifests sent through any hub.** ``commands.seq`` is a ``bigserial`` that N hubs draw from
  at once, so a command may commit after one with a higher seq has been read. Besides the
  commands after the cursor, the recent ones below it (``LATE_COMMANDS_S``) are read again; the
  projector skips the ids it already took.

Errors of a database that is down or restarting raise ``StoreUnavailable``; the pool reconnects
by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hub_bridge.delivery.store import (
    Checkpoint,
    Delivery,
    DeliveryStoreError,
    LoggedNotice,
    NewNotice,
    Outcome,
    Subscription,
)
from hub_bridge.delivery.store_sqlite import (
    delivery_row,
    exception_identity,
    exception_row,
    payload_of,
)
from hub_bridge.store import StoreUnavailable, open_pool, pooled, unavailable

__all__ = ["LATE_COMMANDS_S", "SCHEMA_VERSION", "PgDeliveryStore"]

_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
_LEADER_LOCK = 0x6C6D5F646C76  # "lm_dlv": the projector's advisory lock
_MIGRATION_LOCK = 0x6C6D5F646D67
LATE_COMMANDS_S = 300.0
"""Commands created this recently are read again (a bigserial may commit out of order)."""
_LEADER_CHECK_S = 1.0

Connection = psycopg.AsyncConnection[Any]

_SCHEMA = [
    """
    CREATE TABLE delivery_notices (
        pos bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        fleet text NOT NULL,
        kind text NOT NULL,
        key text NOT NULL,
        ts text NOT NULL,
        created double precision NOT NULL,
        body text NOT NULL
    );
    CREATE INDEX delivery_notices_fleet ON delivery_notices (fleet, pos);
    CREATE INDEX delivery_notices_created ON delivery_notices (created);
    CREATE TABLE delivery_subscriptions (
        id text PRIMARY KEY,
        fleet text NOT NULL,
        url text NOT NULL,
        secret text NOT NULL,
        kinds text NOT NULL,
        types text NOT NULL,
        description text NOT NULL,
        created double precision NOT NULL,
        active boolean NOT NULL DEFAULT true
    );
    CREATE INDEX delivery_subscriptions_fleet ON delivery_subscriptions (fleet);
    CREATE TABLE delivery_queue (
        sub text NOT NULL,
        notice text NOT NULL,
        pos bigint NOT NULL,
        key text NOT NULL,
        state text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        created double precision NOT NULL,
        next_at double precision NOT NULL,
        last_at double precision,
        last_status integer,
        last_error text,
        done_at double precision,
        PRIMARY KEY (sub, notice)
    );
    CREATE INDEX delivery_queue_heads ON delivery_queue (sub, key, pos) WHERE state = 'pending';
    CREATE INDEX delivery_queue_due ON delivery_queue (sub, next_at) WHERE state = 'pending';
    CREATE INDEX delivery_queue_next ON delivery_queue (next_at) WHERE state = 'pending';
    CREATE INDEX delivery_queue_done ON delivery_queue (done_at) WHERE state != 'pending';
    CREATE INDEX delivery_queue_list ON delivery_queue (sub, state, pos);
    CREATE INDEX delivery_queue_notice ON delivery_queue (notice);
    CREATE TABLE delivery_views (
        kind text NOT NULL,
        fleet text NOT NULL,
        key text NOT NULL,
        body text NOT NULL,
        updated double precision NOT NULL,
        PRIMARY KEY (kind, fleet, key)
    );
    CREATE INDEX delivery_views_updated ON delivery_views (updated);
    CREATE TABLE delivery_exceptions (
        id text NOT NULL,
        fleet text NOT NULL,
        type text,
        key text NOT NULL,
        raised_ts text NOT NULL,
        resolved_ts text,
        raised text NOT NULL,
        resolved text,
        pos bigint NOT NULL,
        updated double precision NOT NULL,
        PRIMARY KEY (fleet, id)
    );
    CREATE INDEX delivery_exceptions_updated ON delivery_exceptions (updated);
    CREATE INDEX delivery_exceptions_open ON delivery_exceptions (fleet, pos)
        WHERE resolved_ts IS NULL;
    CREATE INDEX delivery_exceptions_pos ON delivery_exceptions (fleet, pos);
    CREATE TABLE delivery_checkpoint (
        name text PRIMARY KEY,
        events bigint NOT NULL,
        commands bigint NOT NULL,
        hub_seq bigint NOT NULL,
        model text,
        extra text NOT NULL,
        updated double precision NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(_SCHEMA)
_SUB_COLS = "id, fleet, url, secret, kinds, types, description, created, active"
_PLAN_NAMES = ["manifest", "loadplan"]


def _shown(url: str) -> str:
    from hub_bridge.timeline_pg import shown_url

    return shown_url(url)


class PgDeliveryStore:
    """The delivery tables in PostgreSQL. ``await PgDeliveryStore.open(url)``."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection]) -> None:
        self.url = _shown(url)
        self._conninfo = url
        self._pool = pool
        self._leader: Connection | None = None
        self._leader_checked = 0.0
        # the projector and the webhook worker of one hub ask at once at start: without this,
        # one took the lock and the other, refused by its own hub, stood by for seconds
        self._lead_lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 4, wait_s: float = 5.0) -> PgDeliveryStore:
        """Connect and bring the delivery tables up to date; ``StoreUnavailable`` when the
        database cannot be reached within ``wait_s``, ``DeliveryStoreError`` for a newer
        schema."""
        from hub_bridge.timeline_pg import split_url

        conninfo, _options = split_url(url)  # the timeline's own options are not libpq's
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(pool_size, 1),
            open=False,
            timeout=wait_s,
            kwargs={"autocommit": True, "connect_timeout": max(int(wait_s), 1)},
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=365 * 86400.0,
            name="delivery",
        )
        try:
            await open_pool(pool, wait_s)
        except _TRANSIENT as exc:
            raise StoreUnavailable(f"{_shown(url)}: cannot connect: {exc}") from None
        store = cls(conninfo, pool)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    @contextlib.asynccontextmanager
    async def _con(self) -> AsyncIterator[Connection]:
        try:
            async with pooled(self._pool) as con:
                yield con
        except _TRANSIENT as exc:
            raise unavailable(self.url, exc) from exc

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[Connection]:
        async with self._con() as con, con.transaction():
            yield con

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        async with self._con() as con:
            cur = await con.execute(sql, args)
            return list(await cur.fetchall())

    async def _migrate(self) -> None:
        async with self._tx() as con:
            await con.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await con.execute(
                "CREATE TABLE IF NOT EXISTS delivery_schema (version integer NOT NULL)"
            )
            row = await (await con.execute("SELECT max(version) FROM delivery_schema")).fetchone()
            found = int(row[0]) if row and row[0] is not None else 0
            if found > SCHEMA_VERSION:
                raise DeliveryStoreError(
                    f"{self.url}: the delivery tables' schema version {found} is newer than"
                    f" this program's ({SCHEMA_VERSION})"
                )
            for script in _SCHEMA[found:]:
                await con.execute(script)
            if found < SCHEMA_VERSION:
                await con.execute("DELETE FROM delivery_schema")
                await con.execute("INSERT INTO delivery_schema VALUES (%s)", (SCHEMA_VERSION,))

    async def close(self) -> None:
        """Give up the leader lock and close every connection."""
        if self._leader is not None:
            with contextlib.suppress(Exception):
                await self._leader.close()
            self._leader = None
        await self._pool.close()

    async def lead(self) -> bool:
        """Hold (or take) the projector's advisory lock on a connection of its own."""
        async with self._lead_lock:
            return await self._lead()

    async def _lead(self) -> bool:
        now = time.monotonic()
        if self._leader is not None:
            if now - self._leader_checked < _LEADER_CHECK_S:
                return True
            try:
                await self._leader.execute("SELECT 1")
                self._leader_checked = now
                return True
            except _TRANSIENT:
                with contextlib.suppress(Exception):
                    await self._leader.close()
                self._leader = None  # the lock went with the connection
        try:
            con = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5
            )
        except _TRANSIENT as exc:
            raise unavailable(self.url, exc) from exc
        try:
            row = await (
                await con.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK,))
            ).fetchone()
        except _TRANSIENT as exc:
            await con.close()
            raise unavailable(self.url, exc) from exc
        if not (row and row[0]):
            await con.close()
            return False
        self._leader, self._leader_checked = con, now
        return True

    # -- the projector ----------------------------------------------------------------------

    async def log_notices(
        self,
        notices: Sequence[NewNotice],
        views: Sequence[tuple[str, str, str, str | None]] = (),
        now: float = 0.0,
    ) -> list[LoggedNotice]:
        """Log new notices, queue them for their subscribers, keep exceptions, write views:
        one statement for the notices, one for the queue, one for the views (arrays through
        ``unnest``, no round trip per row)."""
        logged: list[LoggedNotice] = []
        async with self._tx() as con:
            cur = await con.execute(f"SELECT {_SUB_COLS} FROM delivery_subscriptions")
            subs = [_subscription(r) for r in await cur.fetchall()]
            fresh: dict[str, int] = {}
            if notices:
                # ordered by the input's order: pos follows the order the model told them in
                cur = await con.execute(
                    "INSERT INTO delivery_notices (id, fleet, kind, key, ts, created, body)"
                    " SELECT id, fleet, kind, key, ts, %s, body FROM unnest("
                    "  %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
                    "  WITH ORDINALITY AS u(id, fleet, kind, key, ts, body, ord)"
                    " ORDER BY ord ON CONFLICT (id) DO NOTHING RETURNING id, pos",
                    (
                        now,
                        [n.id for n in notices],
                        [n.fleet for n in notices],
                        [n.kind for n in notices],
                        [n.key for n in notices],
                        [n.ts for n in notices],
                        [n.body for n in notices],
                    ),
                )
                fresh = {str(i): int(pos) for i, pos in await cur.fetchall()}
            queue: list[tuple[str, str, int, str]] = []
            for n in notices:
                pos = fresh.pop(n.id, None)  # pop: a notice twice in one call is logged once
                if pos is None:
                    continue  # logged before: re-processed after a restart
                logged.append(LoggedNotice(pos, n.id, n.fleet, n.kind, n.key, n.ts, n.body))
                queue += [
                    (s.id, n.id, pos, n.key) for s in subs if s.takes(n.fleet, n.kind, n.subject)
                ]
                if n.kind.startswith("exception."):
                    await self._exception(con, n, pos, now)
            if queue:
                await con.execute(
                    "INSERT INTO delivery_queue (sub, notice, pos, key, created, next_at)"
                    " SELECT sub, notice, pos, key, %s, %s FROM unnest("
                    "  %s::text[], %s::text[], %s::bigint[], %s::text[])"
                    "  AS u(sub, notice, pos, key)"
                    " ON CONFLICT DO NOTHING",
                    (now, now, *(list(col) for col in zip(*queue, strict=True))),
                )
            gone = [(k, f, key) for k, f, key, body in views if body is None]
            kept = [(k, f, key, body) for k, f, key, body in views if body is not None]
            for kind, fleet, key in gone:
                await con.execute(
                    "DELETE FROM delivery_views WHERE kind=%s AND fleet=%s AND key=%s",
                    (kind, fleet, key),
                )
            if kept:
                await con.execute(
                    "INSERT INTO delivery_views (kind, fleet, key, body, updated)"
                    " SELECT kind, fleet, key, body, %s FROM unnest("
                    "  %s::text[], %s::text[], %s::text[], %s::text[]) AS u(kind, fleet, key, body)"
                    " ON CONFLICT (kind, fleet, key)"
                    " DO UPDATE SET body=excluded.body, updated=excluded.updated",
                    (now, *(list(col) for col in zip(*kept, strict=True))),
                )
        return logged

    async def _exception(self, con: Connection, n: NewNotice, pos: int, now: float) -> None:
        eid = exception_identity(n.key, n.subject, payload_of(n.body))
        if n.kind == "exception.raised":
            await con.execute(
                "INSERT INTO delivery_exceptions"
                " (id, fleet, type, key, raised_ts, raised, pos, updated)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (fleet, id) DO UPDATE SET raised_ts=excluded.raised_ts,"
                " raised=excluded.raised, pos=excluded.pos, resolved_ts=NULL, resolved=NULL,"
                " updated=excluded.updated",
                (eid, n.fleet, n.subject, n.key, n.ts, n.body, pos, now),
            )
        else:
            await con.execute(
                "UPDATE delivery_exceptions SET resolved_ts=%s, resolved=%s, updated=%s"
                " WHERE fleet=%s AND id=%s",
                (n.ts, n.body, now, n.fleet, eid),
            )

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        """The projector's last checkpoint under ``name``."""
        rows = await self._all(
            "SELECT events, commands, hub_seq, model, extra FROM delivery_checkpoint WHERE name=%s",
            (name,),
        )
        if not rows:
            return None
        events, commands, hub_seq, model, extra = rows[0]
        return Checkpoint(
            int(events),
            int(commands),
            int(hub_seq),
            None if model is None else json.loads(model),
            json.loads(extra),
        )

    async def save_checkpoint(self, name: str, checkpoint: Checkpoint, now: float) -> None:
        """Replace the checkpoint ``name`` (cursors and model together)."""
        # encoded on a thread: megabytes of JSON for a big fleet's model
        model = (
            None
            if checkpoint.model is None
            else await asyncio.to_thread(json.dumps, checkpoint.model)
        )
        async with self._tx() as con:
            await con.execute(
                "INSERT INTO delivery_checkpoint"
                " (name, events, commands, hub_seq, model, extra, updated)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                " events=excluded.events, commands=excluded.commands,"
                " hub_seq=excluded.hub_seq, model=excluded.model, extra=excluded.extra,"
                " updated=excluded.updated",
                (
                    name,
                    checkpoint.events,
                    checkpoint.commands,
                    checkpoint.hub_seq,
                    model,
                    json.dumps(checkpoint.extra),
                    now,
                ),
            )

    async def commands_since(self, cursor: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Manifests and load plans after ``cursor``, and the recent ones below it again (see
        the module docstring: the caller skips ids it took)."""
        try:
            rows = await self._all(
                "(SELECT seq, id, fleet, device, name, payload, created FROM commands"
                "  WHERE seq > %s AND name = ANY(%s) ORDER BY seq LIMIT %s)"
                " UNION ALL"
                " (SELECT seq, id, fleet, device, name, payload, created FROM commands"
                "  WHERE seq <= %s AND name = ANY(%s) AND created > %s ORDER BY seq LIMIT %s)"
                " ORDER BY seq",
                (
                    cursor,
                    _PLAN_NAMES,
                    limit,
                    cursor,
                    _PLAN_NAMES,
                    time.time() - LATE_COMMANDS_S,
                    limit,
                ),
            )
        except psycopg.errors.UndefinedTable:
            return [], cursor
        out = []
        top = cursor
        for seq, cid, fleet, device, name, payload, created in rows:
            top = max(top, int(seq))
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
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
                f"SELECT {cols} FROM delivery_notices WHERE pos > %s ORDER BY pos LIMIT %s",
                (pos, limit),
            )
        else:
            rows = await self._all(
                f"SELECT {cols} FROM delivery_notices WHERE fleet = %s AND pos > %s"
                " ORDER BY pos LIMIT %s",
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
            "SELECT body FROM delivery_views WHERE kind=%s AND fleet=%s AND key=%s",
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
        where: list[str] = []
        args: list[Any] = []
        if fleet is not None:
            where.append("fleet = %s")
            args.append(fleet)
        if state == "open":
            where.append("resolved_ts IS NULL")
        elif state == "resolved":
            where.append("resolved_ts IS NOT NULL")
        if types:
            where.append("type = ANY(%s)")
            args.append(list(types))
        sql = "SELECT id, fleet, type, key, raised_ts, resolved_ts, raised, resolved"
        sql += " FROM delivery_exceptions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY pos DESC LIMIT %s"
        return [exception_row(r) for r in await self._all(sql, (*args, limit))]

    # -- subscriptions -----------------------------------------------------------------------

    async def add_subscription(self, sub: Subscription) -> None:
        """Store a new subscription (its id must be new)."""
        async with self._tx() as con:
            await con.execute(
                f"INSERT INTO delivery_subscriptions ({_SUB_COLS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    sub.id,
                    sub.fleet,
                    sub.url,
                    sub.secret,
                    json.dumps(list(sub.kinds)),
                    json.dumps(list(sub.types)),
                    sub.description,
                    sub.created,
                    sub.active,
                ),
            )

    async def subscriptions(self, fleet: str | None = None) -> list[Subscription]:
        """The subscriptions of a fleet, or of all fleets, oldest first."""
        if fleet is None:
            rows = await self._all(
                f"SELECT {_SUB_COLS} FROM delivery_subscriptions ORDER BY created"
            )
        else:
            rows = await self._all(
                f"SELECT {_SUB_COLS} FROM delivery_subscriptions WHERE fleet=%s ORDER BY created",
                (fleet,),
            )
        return [_subscription(r) for r in rows]

    async def subscription(self, fleet: str, sid: str) -> Subscription | None:
        """One subscription of ``fleet``."""
        rows = await self._all(
            f"SELECT {_SUB_COLS} FROM delivery_subscriptions WHERE fleet=%s AND id=%s",
            (fleet, sid),
        )
        return _subscription(rows[0]) if rows else None

    async def delete_subscription(self, fleet: str, sid: str) -> bool:
        """Delete a subscription and its queue; True when it existed."""
        async with self._tx() as con:
            cur = await con.execute(
                "DELETE FROM delivery_subscriptions WHERE fleet=%s AND id=%s RETURNING id",
                (fleet, sid),
            )
            gone = await cur.fetchone() is not None
            if gone:
                await con.execute("DELETE FROM delivery_queue WHERE sub=%s", (sid,))
        return gone

    # -- the webhook queue -------------------------------------------------------------------

    async def due(self, sub: Subscription, now: float, limit: int) -> list[Delivery]:
        """Deliveries of ``sub`` due at ``now`` that head their key, in log order."""
        rows = await self._all(
            "SELECT q.notice, q.pos, q.key, n.kind, q.attempts, q.created, n.body"
            " FROM delivery_queue q JOIN delivery_notices n ON n.id = q.notice"
            " WHERE q.sub = %s AND q.state = 'pending' AND q.next_at <= %s"
            # the head of its key, as a subquery per row (an index probe on the heads index):
            # a NOT EXISTS becomes an anti-join that, on a table not analysed yet, the planner
            # runs with the subscription alone as its index condition (50 ms at 5,000 pending)
            " AND q.pos = (SELECT min(p.pos) FROM delivery_queue p WHERE p.sub = q.sub"
            "   AND p.key = q.key AND p.state = 'pending')"
            " ORDER BY q.pos LIMIT %s",
            (sub.id, now, limit),
        )
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
        async with self._tx() as con, con.cursor() as c:
            await c.executemany(
                "UPDATE delivery_queue SET state=%s, attempts=attempts + 1, next_at=%s,"
                " last_at=%s, last_status=%s, last_error=%s, done_at=%s"
                " WHERE sub=%s AND notice=%s AND state='pending'",
                rows,
            )

    async def deliveries(
        self, fleet: str, sid: str, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """A subscription's deliveries, newest first, of one state or all."""
        sql = (
            "SELECT q.notice, q.pos, q.key, n.kind, q.state, q.attempts, q.created, q.next_at,"
            " q.last_at, q.last_status, q.last_error, q.done_at"
            " FROM delivery_queue q JOIN delivery_subscriptions s ON s.id = q.sub"
            " JOIN delivery_notices n ON n.id = q.notice WHERE s.fleet = %s AND q.sub = %s"
        )
        args: list[Any] = [fleet, sid]
        if state is not None:
            sql += " AND q.state = %s"
            args.append(state)
        sql += " ORDER BY q.pos DESC LIMIT %s"
        return [delivery_row(r) for r in await self._all(sql, (*args, limit))]

    async def retry(self, fleet: str, sid: str, notice: str | None, now: float) -> int:
        """Dead deliveries back in the queue, due now, their attempts counted afresh."""
        sql = (
            "UPDATE delivery_queue SET state='pending', attempts=0, next_at=%s, done_at=NULL,"
            " created=%s WHERE sub=%s AND state='dead'"
            " AND sub IN (SELECT id FROM delivery_subscriptions WHERE fleet=%s)"
        )
        args: list[Any] = [now, now, sid, fleet]
        if notice is not None:
            sql += " AND notice=%s"
            args.append(notice)
        async with self._tx() as con:
            cur = await con.execute(sql, args)
            return int(cur.rowcount)

    async def prune(self, before: float, views_before: float | None = None) -> int:
        """Delete finished deliveries and unreferenced notices older than ``before``, and
        views and resolved exceptions not updated since ``views_before``."""
        async with self._tx() as con:
            n = (
                await con.execute(
                    "DELETE FROM delivery_queue WHERE state != 'pending' AND done_at < %s",
                    (before,),
                )
            ).rowcount
            n += (
                await con.execute(
                    "DELETE FROM delivery_notices n WHERE created < %s AND NOT EXISTS"
                    " (SELECT 1 FROM delivery_queue q WHERE q.notice = n.id)",
                    (before,),
                )
            ).rowcount
            if views_before is not None:
                n += (
                    await con.execute(
                        "DELETE FROM delivery_views WHERE updated < %s", (views_before,)
                    )
                ).rowcount
                n += (
                    await con.execute(
                        "DELETE FROM delivery_exceptions WHERE resolved_ts IS NOT NULL"
                        " AND updated < %s",
                        (views_before,),
                    )
                ).rowcount
            return int(n)


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
