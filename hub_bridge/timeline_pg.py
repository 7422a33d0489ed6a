"""The central delivery timeline on PostgreSQL: N hub instances on one database (DESIGN §5).

The same store as ``hub_bridge.timeline.Timeline`` (SQLite) with the same meaning, method by
method (``hub_bridge.store.TimelineStore``); the timeline tests run against both. What differs
is how it is done, so that hub instances storing at once need no coordination of their own:

- **De-duplication and the watermark are computed by the database**, in one statement per
  ``store_many`` call: ``lm_store_many`` (PL/pgSQL, in the schema) first locks every device row of
  the call in one order (two hubs storing batches of the same devices wait for each other and
  never deadlock), then per batch inserts all its events with one
  ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (arrays through ``unnest``: no round trip per
  event), tells duplicates from conflicts only when something was not inserted, records the
  accounted ranges (``outbox.evicted``, rejected seqs) and advances the watermark by walking the
  stored seqs and ranges just above it (``lm_advance``). Under the device's row lock every
  statement sees what the other hubs committed for that device, so the stored watermark only
  grows (``greatest`` besides), and an event is stored once however the hubs race.
- **Uniqueness and time partitions.** A unique index of a partitioned table must contain the
  partition key, and neither ``(fleet, device, seq)`` nor ``(fleet, device, id)`` contains a time.
  So the keys live apart: ``event_keys (fleet, device, seq, id, received)`` is one table holding
  both unique constraints (it is what de-duplication, conflicts, the watermark, ``missing`` and
  the ack's ``top``/``check`` read: small rows), and ``events`` (the envelopes, the bulk) is
  partitioned by the day it was received (UTC), a partition created when its first event
  arrives (and the next day's ahead). Retention (``retention_days``) drops whole days of
  ``events`` when a hub opens and when a new day's first event arrives; the keys and accounted
  ranges of those days that their device's watermark passed are deleted then too, in the
  background (a long DELETE must not stall ingest; a BRIN index on ``received`` finds them:
  keys arrive in time order). The watermark is kept: an expired seq is never awaited again.
- **Ingest order for readers** (``events_since``): each event's ``pos`` is its transaction id
  shifted left by 20 bits plus its rank in the transaction. A reader takes only rows whose
  transaction id is below its snapshot's ``xmin`` (every transaction below it has ended), so a
  transaction still running, or committing later, always gets positions above anything
  returned: nothing is skipped, whatever the commit order of N hubs. A transaction holds at
  most 2^20 events; 2^43 transaction ids last for decades at thousands a second. The price: a
  long-running write transaction anywhere in the cluster holds new rows back until it ends.
- **Connections**: a small ``psycopg_pool`` pool, each connection checked before use. When the
  database is down, or a connection drops mid-statement, the call raises
  ``StoreUnavailable`` (nothing committed: devices resend); the pool reconnects by itself once
  the server is back.
- **Schema**: versioned migrations in one transaction under an advisory lock (hubs starting
  together migrate once); a database of a newer version is refused with ``TimelineError``.

Dead letters are committed with ``synchronous_commit=off`` (a flood of garbage costs no flush
per message, as on SQLite); the dead-letter and state-history bounds are the same.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from edge_agent.wire.envelope import encode_checked
from hub_bridge.claims import Claim
from hub_bridge.commands import CommandLimits
from hub_bridge.store import StoreUnavailable, open_pool, pooled, unavailable
from hub_bridge.timeline import (
    _REASON_CHARS,
    _TOPIC_CHARS,
    CLAIM_KEEP_S,
    Batch,
    IssuedCertificate,
    QueuedCommand,
    StoreResult,
    TimelineError,
    TimelineLimits,
    _certificate_row,
    _command_row,
    parse_stored,
    reason_kind,
)

__all__ = ["SCHEMA_VERSION", "PgTimeline"]

log = logging.getLogger(__name__)

_DAY = 86400.0
_PAGE = 2000  # events read per query by events()
_POS_BITS = 20  # events per transaction: below 2**20 (store_many refuses more)
_MIGRATION_LOCK = 0x6C6D5F736368  # pg_advisory_xact_lock keys: the schema, the partitions
_PARTITION_LOCK = 0x6C6D5F706172

_SCHEMA = [
    """
    CREATE TABLE event_keys (
        fleet text NOT NULL,
        device text NOT NULL,
        seq bigint NOT NULL,
        id text NOT NULL,
        received double precision NOT NULL,
        PRIMARY KEY (fleet, device, seq),
        UNIQUE (fleet, device, id)
    );
    CREATE INDEX event_keys_received ON event_keys USING brin (received);
    CREATE TABLE events (
        pos bigint NOT NULL,
        fleet text NOT NULL,
        device text NOT NULL,
        seq bigint NOT NULL,
        id text NOT NULL,
        type text NOT NULL,
        ts text NOT NULL,
        received double precision NOT NULL,
        flags text,
        body text NOT NULL
    ) PARTITION BY RANGE (received);
    CREATE INDEX events_device ON events (fleet, device, seq);
    CREATE INDEX events_pos ON events (pos);
    CREATE TABLE accounted (
        fleet text NOT NULL,
        device text NOT NULL,
        lo bigint NOT NULL,
        hi bigint NOT NULL,
        reason text NOT NULL,
        received double precision NOT NULL,
        PRIMARY KEY (fleet, device, lo, hi)
    );
    CREATE INDEX accounted_pending ON accounted (fleet, device, hi);
    CREATE INDEX accounted_received ON accounted USING brin (received);
    CREATE TABLE devices (
        fleet text NOT NULL,
        device text NOT NULL,
        watermark bigint NOT NULL DEFAULT 0,
        state text,
        state_since double precision,
        birth text,
        last_seen double precision,
        PRIMARY KEY (fleet, device)
    );
    CREATE TABLE device_states (
        id bigserial PRIMARY KEY,
        fleet text NOT NULL,
        device text NOT NULL,
        at double precision NOT NULL,
        state text NOT NULL,
        payload text
    );
    CREATE INDEX device_states_device ON device_states (fleet, device, id);
    CREATE TABLE dead_letters (
        id bigserial PRIMARY KEY,
        first_seen double precision NOT NULL,
        received double precision NOT NULL,
        topic text NOT NULL,
        kind text NOT NULL,
        reason text NOT NULL,
        size bigint NOT NULL,
        count bigint NOT NULL,
        payload bytea,
        UNIQUE (topic, kind)
    );
    CREATE INDEX dead_letters_seen ON dead_letters (received, id);
    CREATE TABLE commands (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        fleet text NOT NULL,
        device text NOT NULL,
        name text NOT NULL,
        payload text NOT NULL,
        created double precision NOT NULL,
        sent_count integer NOT NULL DEFAULT 0,
        last_sent double precision,
        next_send double precision,
        acked_at double precision,
        ok integer,
        error text,
        superseded_by text,
        finished double precision
    );
    CREATE INDEX commands_device ON commands (fleet, device, seq);
    CREATE INDEX commands_due ON commands (next_send) WHERE next_send IS NOT NULL;
    CREATE INDEX commands_finished ON commands (finished) WHERE finished IS NOT NULL;
    CREATE TABLE claims (
        hash text PRIMARY KEY,
        fleet text NOT NULL,
        device text NOT NULL,
        role text NOT NULL,
        created double precision NOT NULL,
        expires double precision NOT NULL,
        used_at double precision,
        used_by text,
        serial text
    );
    CREATE INDEX claims_device ON claims (fleet, device);
    CREATE INDEX claims_expires ON claims (expires);
    CREATE TABLE certificates (
        serial text PRIMARY KEY,
        fleet text NOT NULL,
        device text NOT NULL,
        role text,
        issued_at double precision NOT NULL,
        not_after double precision NOT NULL,
        revoked_at double precision,
        claim text,
        pem text NOT NULL
    );
    CREATE INDEX certificates_device ON certificates (fleet, device);
    CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL;

    -- the watermark of a device whose row the caller has locked: the highest seq up to which
    -- every seq is stored or accounted for (hub_bridge.timeline.advance_watermark's rule)
    CREATE FUNCTION lm_advance(f text, d text) RETURNS bigint LANGUAGE plpgsql AS $$
    DECLARE
        start_wm bigint;
        wm bigint;
        h bigint;
        run_end bigint;
        run_len bigint;
    BEGIN
        SELECT dv.watermark INTO start_wm FROM devices dv WHERE dv.fleet = f AND dv.device = d;
        wm := coalesce(start_wm, 0);
        LOOP
            IF EXISTS (SELECT 1 FROM event_keys k
                       WHERE k.fleet = f AND k.device = d AND k.seq = wm + 1) THEN
                -- the run of stored seqs from wm + 1, read in chunks along the primary key:
                -- in a run, seq - rank is wm (each seq is read once while the watermark passes)
                LOOP
                    SELECT max(t.s), count(*) INTO run_end, run_len FROM (
                        SELECT k.seq AS s, k.seq - row_number() OVER (ORDER BY k.seq) AS g
                        FROM event_keys k WHERE k.fleet = f AND k.device = d AND k.seq > wm
                        ORDER BY k.seq LIMIT 1000) t
                    WHERE t.g = wm;
                    EXIT WHEN run_end IS NULL;
                    wm := run_end;
                    EXIT WHEN run_len < 1000;
                END LOOP;
            END IF;
            SELECT max(a.hi) INTO h FROM accounted a
             WHERE a.fleet = f AND a.device = d AND a.hi > wm AND a.lo <= wm + 1;
            EXIT WHEN h IS NULL;
            wm := h;
        END LOOP;
        IF wm > coalesce(start_wm, 0) THEN
            UPDATE devices dv SET watermark = greatest(dv.watermark, wm)
             WHERE dv.fleet = f AND dv.device = d;
        END IF;
        RETURN wm;
    END $$;

    -- one batch of one device (its row locked by the caller), as Timeline._store_in_tx does
    CREATE FUNCTION lm_store_batch(
        f text, d text, recv double precision, pos0 bigint,
        seqs bigint[], ids text[], types text[], tss text[], flagss text[], bodies text[],
        ev_n integer[], ev_lo bigint[], ev_hi bigint[], ev_reason text[], rejected bigint[],
        OUT o_stored integer, OUT o_duplicates integer, OUT o_conflicts integer,
        OUT o_watermark bigint, OUT o_conflict_seqs bigint[],
        OUT o_top bigint, OUT o_check_seq bigint, OUT o_check_id text
    ) LANGUAGE plpgsql AS $$
    DECLARE
        st_n integer[];
        dup_seqs bigint[] := '{}';
        r record;
        id_seq bigint;
    BEGIN
        o_duplicates := 0;
        o_conflicts := 0;
        o_conflict_seqs := '{}';
        -- the one statement of de-duplication: what is inserted is new in id and in seq,
        -- in the batch's order (a repeat inside the batch is not inserted twice)
        WITH inp AS (
            SELECT t.seq, t.id, t.n::integer AS n
            FROM unnest(seqs, ids) WITH ORDINALITY AS t(seq, id, n)
        ), ins AS (
            INSERT INTO event_keys (fleet, device, seq, id, received)
            SELECT f, d, inp.seq, inp.id, recv FROM inp ORDER BY inp.n
            ON CONFLICT DO NOTHING
            RETURNING event_keys.seq, event_keys.id
        ), st AS (
            SELECT min(inp.n) AS n, ins.seq
            FROM ins JOIN inp ON inp.seq = ins.seq AND inp.id = ins.id
            GROUP BY ins.seq
        ), ev AS (
            INSERT INTO events (pos, fleet, device, seq, id, type, ts, received, flags, body)
            SELECT pos0 + st.n, f, d, st.seq, ids[st.n], types[st.n], tss[st.n], recv,
                   flagss[st.n], bodies[st.n]
            FROM st
        )
        SELECT coalesce(array_agg(st.n ORDER BY st.n), '{}') INTO st_n FROM st;
        o_stored := coalesce(cardinality(st_n), 0);
        IF o_stored < coalesce(cardinality(seqs), 0) THEN
            -- what did not go in, in order: the same event again (its id is there) or its seq
            -- taken by another id (as hub_bridge.timeline._store_batch tells them apart)
            FOR r IN SELECT t.seq, t.id
                     FROM unnest(seqs, ids) WITH ORDINALITY AS t(seq, id, n)
                     WHERE NOT (t.n::integer = ANY (st_n)) ORDER BY t.n LOOP
                SELECT ek.seq INTO id_seq FROM event_keys ek
                 WHERE ek.fleet = f AND ek.device = d AND ek.id = r.id;
                IF FOUND THEN
                    o_duplicates := o_duplicates + 1;
                    -- the same event under a new seq: that seq is accounted for
                    IF id_seq <> r.seq AND NOT EXISTS (
                        SELECT 1 FROM event_keys ek
                         WHERE ek.fleet = f AND ek.device = d AND ek.seq = r.seq) THEN
                        dup_seqs := dup_seqs || r.seq;
                    END IF;
                ELSE
                    o_conflicts := o_conflicts + 1;
                    o_conflict_seqs := o_conflict_seqs || r.seq;
                END IF;
            END LOOP;
        END IF;
        IF coalesce(cardinality(ev_n), 0) + coalesce(cardinality(rejected), 0)
           + cardinality(dup_seqs) > 0 THEN
            INSERT INTO accounted (fleet, device, lo, hi, reason, received)
            SELECT f, d, x.lo, x.hi, x.reason, recv FROM (
                SELECT e.lo, e.hi, e.reason
                FROM unnest(ev_n, ev_lo, ev_hi, ev_reason) AS e(n, lo, hi, reason)
                WHERE e.n = ANY (st_n)
                UNION ALL SELECT s, s, 'rejected' FROM unnest(rejected) AS s
                UNION ALL SELECT s, s, 'duplicate' FROM unnest(dup_seqs) AS s
            ) x
            ON CONFLICT DO NOTHING;
        END IF;
        o_watermark := lm_advance(f, d);
        -- the device's ack made here too (Timeline.ack_payload): no more round trips for it
        SELECT max(k.seq) INTO o_top FROM event_keys k WHERE k.fleet = f AND k.device = d;
        IF o_watermark > 0 THEN
            SELECT k.seq, k.id INTO o_check_seq, o_check_id FROM event_keys k
             WHERE k.fleet = f AND k.device = d AND k.seq <= o_watermark
             ORDER BY k.seq DESC LIMIT 1;
        END IF;
    END $$;

    -- every batch of a store_many call, in order, in the caller's one transaction
    CREATE FUNCTION lm_store_many(
        recv double precision, b_fleet text[], b_device text[], b_events integer[],
        b_ranges integer[], b_rejected integer[],
        seqs bigint[], ids text[], types text[], tss text[], flagss text[], bodies text[],
        ev_n integer[], ev_lo bigint[], ev_hi bigint[], ev_reason text[], rejected bigint[]
    ) RETURNS TABLE (o_stored integer, o_duplicates integer, o_conflicts integer,
                     o_watermark bigint, o_conflict_seqs bigint[],
                     o_top bigint, o_check_seq bigint, o_check_id text)
    LANGUAGE plpgsql AS $$
    DECLARE
        pos0 bigint := pg_current_xact_id()::text::bigint << 20;
        e0 integer := 0;
        r0 integer := 0;
        j0 integer := 0;
        b integer;
        res record;
    BEGIN
        -- every device of the call locked in one order: racing hubs wait, never deadlock
        INSERT INTO devices AS dv (fleet, device, watermark, last_seen)
        SELECT u.fl, u.de, 0, recv
          FROM (SELECT DISTINCT t.fl, t.de FROM unnest(b_fleet, b_device) AS t(fl, de)) u
         ORDER BY u.fl, u.de
        ON CONFLICT (fleet, device) DO UPDATE SET last_seen = EXCLUDED.last_seen;
        FOR b IN 1 .. coalesce(cardinality(b_fleet), 0) LOOP
            SELECT * INTO res FROM lm_store_batch(
                b_fleet[b], b_device[b], recv, pos0 + e0,
                seqs[e0 + 1 : e0 + b_events[b]], ids[e0 + 1 : e0 + b_events[b]],
                types[e0 + 1 : e0 + b_events[b]], tss[e0 + 1 : e0 + b_events[b]],
                flagss[e0 + 1 : e0 + b_events[b]], bodies[e0 + 1 : e0 + b_events[b]],
                ev_n[r0 + 1 : r0 + b_ranges[b]], ev_lo[r0 + 1 : r0 + b_ranges[b]],
                ev_hi[r0 + 1 : r0 + b_ranges[b]], ev_reason[r0 + 1 : r0 + b_ranges[b]],
                rejected[j0 + 1 : j0 + b_rejected[b]]);
            o_stored := res.o_stored;
            o_duplicates := res.o_duplicates;
            o_conflicts := res.o_conflicts;
            o_watermark := res.o_watermark;
            o_conflict_seqs := res.o_conflict_seqs;
            o_top := res.o_top;
            o_check_seq := res.o_check_seq;
            o_check_id := res.o_check_id;
            RETURN NEXT;
            e0 := e0 + b_events[b];
            r0 := r0 + b_ranges[b];
            j0 := j0 + b_rejected[b];
        END LOOP;
    END $$;
    """,
]
SCHEMA_VERSION = len(_SCHEMA)

_STORE = (
    "SELECT * FROM lm_store_many(%b, %b::text[], %b::text[], %b::integer[], %b::integer[],"
    " %b::integer[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::integer[], %b::bigint[], %b::bigint[], %b::text[], %b::bigint[])"
)

_COMMAND_COLUMNS = (
    "id, fleet, device, name, created, sent_count, last_sent, next_send, acked_at, ok, error,"
    " superseded_by, octet_length(payload)"
)

# a device known to be offline is skipped: its birth makes its commands due again
_DUE = (
    " FROM commands c LEFT JOIN devices d ON d.fleet = c.fleet AND d.device = c.device"
    " WHERE c.next_send IS NOT NULL AND d.state IS DISTINCT FROM 'offline'"
)

_PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
)

_TABLES = ("events", "dead_letters", "device_states", "commands", "claims", "certificates")

_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
"""Errors of a database that is down, restarting or overloaded: nothing was committed."""

Connection = psycopg.AsyncConnection[Any]


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The connection URL for libpq and the timeline's own query options
    (``retention_days``), which libpq would refuse."""
    parts = urlsplit(url)
    ours = {"retention_days"}
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in ours}
    rest = urlencode([(k, v) for k, v in query if k not in ours])
    return urlunsplit(parts._replace(query=rest)), options


def shown_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _partition_name(day: int) -> str:
    return "events_" + time.strftime("%Y%m%d", time.gmtime(day * _DAY))


def _result(
    stored: int,
    duplicates: int,
    conflicts: int,
    watermark: int,
    conflict_seqs: list[int] | None,
    top: int | None,
    check_seq: int | None,
    check_id: str | None,
) -> StoreResult:
    ack: dict[str, Any] = {"seq": int(watermark)}
    if top is not None:
        ack["top"] = max(int(watermark), int(top))
    if check_seq is not None:
        ack["check"] = [int(check_seq), str(check_id)]
    return StoreResult(
        int(stored),
        int(duplicates),
        int(conflicts),
        int(watermark),
        tuple(int(x) for x in conflict_seqs or ()),
        ack,
    )


class PgTimeline:
    """The hub's store on PostgreSQL. ``await PgTimeline.open(url)``, then ``close()``."""

    def __init__(
        self,
        url: str,
        pool: AsyncConnectionPool[Connection],
        limits: TimelineLimits | None = None,
        retention_days: float | None = None,
    ) -> None:
        self.url = shown_url(url)
        self._pool = pool
        self.limits = limits or TimelineLimits()
        self.retention_days = retention_days
        """Events received longer ago than this are dropped (whole days); None keeps all."""
        self._partitions: set[int] = set()  # days whose partition is known to exist
        self._pruning: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        limits: TimelineLimits | None = None,
        *,
        retention_days: float | None = None,
        pool_size: int = 8,
        wait_s: float = 5.0,
    ) -> PgTimeline:
        """Connect (a pool of up to ``pool_size``), migrate the schema, apply the retention.

        ``retention_days`` may also come in the URL (``?retention_days=90``). Raises
        ``StoreUnavailable`` when the database cannot be reached within ``wait_s`` seconds and
        ``TimelineError`` for a database this hub cannot use (a newer schema, a bad option).
        """
        conninfo, options = split_url(url)
        if "retention_days" in options:
            try:
                retention_days = float(options["retention_days"])
            except ValueError:
                raise TimelineError(
                    f"{shown_url(url)}: retention_days must be a number of days,"
                    f" not {options['retention_days']!r}"
                ) from None
        if retention_days is not None and not retention_days > 0:
            raise TimelineError(f"{shown_url(url)}: retention_days must be above 0")
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(pool_size, 1),
            open=False,
            timeout=wait_s,
            kwargs={"autocommit": True, "connect_timeout": max(int(wait_s), 1)},
            check=AsyncConnectionPool.check_connection,  # a server restart leaves dead ones
            reconnect_timeout=365 * _DAY,  # keep trying: the hub outlives a database outage
            name="timeline",
        )
        try:
            await open_pool(pool, wait_s)
        except _TRANSIENT as exc:
            raise StoreUnavailable(f"{shown_url(url)}: cannot connect: {exc}") from None
        timeline = cls(url, pool, limits, retention_days)
        try:
            await timeline._migrate()
            await timeline.apply_retention()
        except BaseException:
            await pool.close()
            raise
        return timeline

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        try:
            async with pooled(self._pool) as con:
                yield con
        except _TRANSIENT as exc:
            raise unavailable(self.url, exc) from exc

    async def _migrate(self) -> None:
        async with self._connection() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await con.execute("CREATE TABLE IF NOT EXISTS lm_schema (version integer NOT NULL)")
            row = await (await con.execute("SELECT max(version) FROM lm_schema")).fetchone()
            found = int(row[0]) if row and row[0] is not None else 0
            if found > SCHEMA_VERSION:
                raise TimelineError(
                    f"{self.url}: schema version {found} is newer than this program's"
                    f" ({SCHEMA_VERSION})"
                )
            for script in _SCHEMA[found:]:
                await con.execute(script)
            if found < SCHEMA_VERSION:
                await con.execute("DELETE FROM lm_schema")
                await con.execute("INSERT INTO lm_schema VALUES (%s)", (SCHEMA_VERSION,))

    async def close(self) -> None:
        """Stop the retention's pruning if it runs; close every connection."""
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
        await self._pool.close()

    # -- partitions and retention ---------------------------------------------------------------

    async def _ensure_partition(self, received: float) -> None:
        day = int(received // _DAY)
        if day in self._partitions:
            return
        if self.retention_days is not None:
            # a new day is when old days expire: their partitions go first (quick), the keys
            # the watermark passed are deleted meanwhile (a long DELETE: ingest goes on)
            await self._drop_partitions(time.time() - self.retention_days * _DAY)
            self._prune_soon()
        async with self._connection() as con, con.transaction():
            # hubs creating the same day's partition at once: one does, the other finds it
            await con.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for d in (day, day + 1):  # tomorrow's too: midnight takes no DDL lock
                await con.execute(
                    f"CREATE TABLE IF NOT EXISTS {_partition_name(d)} PARTITION OF events"
                    f" FOR VALUES FROM ({d * _DAY!r}) TO ({(d + 1) * _DAY!r})"
                )
        self._partitions.update((day, day + 1))

    async def partitions(self) -> list[str]:
        """The names of the event partitions, oldest first."""
        async with self._connection() as con:
            cur = await con.execute(_PARTITIONS)
            return [str(r[0]) for r in await cur.fetchall()]

    async def apply_retention(self, now: float | None = None) -> list[str]:
        """Drop the event partitions wholly older than ``retention_days``, and the keys and
        accounted ranges of that age below their device's watermark; return the partitions
        dropped. Nothing without a retention."""
        if self.retention_days is None:
            return []
        now = time.time() if now is None else now
        cutoff = now - self.retention_days * _DAY
        dropped = await self._drop_partitions(cutoff)
        await self._prune(cutoff)
        return dropped

    def _prune_soon(self) -> None:
        if self._pruning is None or self._pruning.done():
            self._pruning = asyncio.create_task(self._prune_quietly(), name="timeline-prune")

    async def _prune_quietly(self) -> None:
        days = self.retention_days or 0.0
        try:
            await self._prune(time.time() - days * _DAY)
        except StoreUnavailable as exc:  # the next new day tries again
            log.warning("timeline retention: %s", exc)
        except Exception:  # a bug here must not go unseen, nor stop ingest
            log.exception("timeline retention failed")

    async def _drop_partitions(self, cutoff: float) -> list[str]:
        dropped = []
        async with self._connection() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            cur = await con.execute(_PARTITIONS)
            for (name,) in await cur.fetchall():
                day = calendar.timegm(time.strptime(name[len("events_") :], "%Y%m%d"))
                if day + _DAY <= cutoff:
                    await con.execute(f"DROP TABLE IF EXISTS {name}")
                    dropped.append(str(name))
                    self._partitions.discard(int(day // _DAY))
        return dropped

    async def _prune(self, cutoff: float) -> None:
        cutoff = cutoff // _DAY * _DAY  # whole days, as the partitions: keys go with their events
        async with self._connection() as con:
            # what the watermark passed long ago: never awaited again, never asked for
            await con.execute(
                "DELETE FROM event_keys k USING devices d WHERE k.received < %s"
                " AND d.fleet = k.fleet AND d.device = k.device AND k.seq <= d.watermark",
                (cutoff,),
            )
            await con.execute(
                "DELETE FROM accounted a USING devices d WHERE a.received < %s"
                " AND d.fleet = a.fleet AND d.device = a.device AND a.hi <= d.watermark",
                (cutoff,),
            )

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
        """Store a validated batch of one device in one transaction (``Timeline.store``)."""
        batch = Batch(fleet, device, events, flags, tuple(rejected_seqs))
        return (await self.store_many([batch], received))[0]

    async def store_many(
        self, batches: Sequence[Batch], received: float | None = None
    ) -> list[StoreResult]:
        """Store several batches in one transaction, in order; one result per batch: one
        statement (``lm_store_many``) sends them all, whatever their number."""
        if not batches:
            return []
        received = time.time() if received is None else received
        b_fleet, b_device, b_events, b_ranges, b_rejected = [], [], [], [], []
        seqs: list[int] = []
        ids: list[str] = []
        types: list[str] = []
        tss: list[str] = []
        flagss: list[str | None] = []
        bodies: list[str] = []
        ev_n: list[int] = []
        ev_lo: list[int] = []
        ev_hi: list[int] = []
        ev_reason: list[str] = []
        rejected: list[int] = []
        for batch in batches:
            texts = batch.bodies
            ranges_before = len(ev_n)
            for k, (env, fl) in enumerate(zip(batch.events, batch.flags, strict=True)):
                eid, seq = str(env["id"]), int(env["seq"])
                seqs.append(seq)
                ids.append(eid)
                types.append(str(env["type"]))
                tss.append(str(env["ts"]))
                flagss.append(",".join(fl) or None)
                if texts is not None and "\x00" not in texts[k]:
                    bodies.append(texts[k])
                else:  # encoded here, or again: PostgreSQL's text takes no NUL character
                    bodies.append(
                        encode_checked(
                            eid, seq, batch.fleet, batch.device, env["type"], env["ts"],
                            env["clock"], env["data"], env.get("ref"),
                        ).decode()
                    )  # fmt: skip
                if env["type"] == "outbox.evicted":
                    reason = str(env["data"].get("reason", "evicted"))
                    for lo, hi in env["data"]["ranges"]:
                        ev_n.append(k + 1)
                        ev_lo.append(int(lo))
                        ev_hi.append(int(hi))
                        ev_reason.append(reason)
            b_fleet.append(batch.fleet)
            b_device.append(batch.device)
            b_events.append(len(batch.events))
            b_ranges.append(len(ev_n) - ranges_before)
            b_rejected.append(len(batch.rejected_seqs))
            rejected.extend(int(s) for s in batch.rejected_seqs)
        if len(seqs) >= 1 << _POS_BITS:
            raise ValueError(f"{len(seqs)} events in one transaction: at most {(1 << 20) - 1}")
        params = (
            received, b_fleet, b_device, b_events, b_ranges, b_rejected,
            seqs, ids, types, tss, flagss, bodies, ev_n, ev_lo, ev_hi, ev_reason, rejected,
        )  # fmt: skip
        await self._ensure_partition(received)
        for attempt in (1, 2):
            try:
                async with self._connection() as con:
                    rows = await (await con.execute(_STORE, params)).fetchall()
                break
            except psycopg.errors.CheckViolation:
                # no partition for the day: another hub's retention dropped it meanwhile
                if attempt == 2:
                    raise
                self._partitions.clear()
                await self._ensure_partition(received)
        return [_result(*row) for row in rows]

    async def rejected_before(self, fleet: str, device: str, seqs: list[int]) -> set[int]:
        """Which of ``seqs`` were rejected already (a resend need not be dead-lettered again)."""
        if not seqs:
            return set()
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT lo FROM accounted WHERE fleet=%s AND device=%s AND reason='rejected'"
                " AND lo = hi AND lo = ANY(%s::bigint[])",
                (fleet, device, list(seqs)),
            )
            return {int(r[0]) for r in await cur.fetchall()}

    async def dead_letter(self, topic: str, reason: str, payload: bytes) -> int:
        """Record a rejected message; return how often its (topic, reason kind) was seen
        (``Timeline.dead_letter``: counted, a small sample kept, the rows bounded)."""
        now = time.time()
        # PostgreSQL's text takes no NUL character, and a reason may quote what a client sent
        topic = topic[:_TOPIC_CHARS].replace("\x00", "\ufffd")
        reason = reason[:_REASON_CHARS].replace("\x00", "\ufffd")
        sample = payload[: self.limits.dead_letter_keep_bytes]
        async with self._connection() as con, con.transaction():
            # garbage floods cost no flush each: the next durable commit flushes them
            await con.execute("SET LOCAL synchronous_commit = off")
            cur = await con.execute(
                "INSERT INTO dead_letters AS dl"
                " (first_seen, received, topic, kind, reason, size, count, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s, 1, %s) ON CONFLICT (topic, kind) DO UPDATE SET"
                " received=EXCLUDED.received, reason=EXCLUDED.reason, size=EXCLUDED.size,"
                " count=dl.count + 1, payload=EXCLUDED.payload RETURNING count",
                (now, now, topic, reason_kind(reason), reason, len(payload), sample),
            )
            row = await cur.fetchone()
            count = int(row[0]) if row else 1
            if count == 1:
                cur = await con.execute(
                    "SELECT received, id FROM dead_letters ORDER BY received DESC, id DESC"
                    " LIMIT 1 OFFSET %s",
                    (self.limits.dead_letter_max_rows,),
                )
                cutoff = await cur.fetchone()
                if cutoff is not None:
                    await con.execute(
                        "DELETE FROM dead_letters WHERE received < %s"
                        " OR (received = %s AND id <= %s)",
                        (cutoff[0], cutoff[0], cutoff[1]),
                    )
        return count

    async def set_state(self, fleet: str, device: str, state: str, payload: str) -> bool:
        """Record a device's state message; return True when it changed the state."""
        now = time.time()
        async with self._connection() as con, con.transaction():
            # the device's row locked: two hubs taking the same message record it once
            cur = await con.execute(
                "INSERT INTO devices (fleet, device) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                " RETURNING 1",
                (fleet, device),
            )
            fresh = await cur.fetchone() is not None  # a new device: the payload is its birth
            cur = await con.execute(
                "SELECT state FROM devices WHERE fleet=%s AND device=%s FOR UPDATE",
                (fleet, device),
            )
            row = await cur.fetchone()
            if row is not None and row[0] == state:
                return False
            await con.execute(
                "UPDATE devices SET state=%s, state_since=%s,"
                " birth=CASE WHEN %s OR %s = 'online' THEN %s ELSE birth END"
                " WHERE fleet=%s AND device=%s",
                (state, now, fresh, state, payload, fleet, device),
            )
            await con.execute(
                "INSERT INTO device_states (fleet, device, at, state, payload)"
                " VALUES (%s, %s, %s, %s, %s)",
                (fleet, device, now, state, payload),
            )
            # the history is bounded per device: the oldest transitions beyond it go
            await con.execute(
                "DELETE FROM device_states WHERE fleet=%s AND device=%s AND id <= ("
                " SELECT id FROM device_states WHERE fleet=%s AND device=%s"
                " ORDER BY id DESC LIMIT 1 OFFSET %s)",
                (fleet, device, fleet, device, self.limits.state_history),
            )
        return True

    # -- reading ------------------------------------------------------------------------------

    async def ack_payload(self, fleet: str, device: str, watermark: int) -> dict[str, Any]:
        """The ack a device is sent: ``{"seq": watermark, "top": M, "check": [S, ID]}``
        (``Timeline.ack_payload``)."""
        payload: dict[str, Any] = {"seq": watermark}
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT max(seq) FROM event_keys WHERE fleet=%s AND device=%s", (fleet, device)
            )
            row = await cur.fetchone()
            if row is not None and row[0] is not None:
                payload["top"] = max(watermark, int(row[0]))
            if watermark > 0:
                cur = await con.execute(
                    "SELECT seq, id FROM event_keys WHERE fleet=%s AND device=%s AND seq <= %s"
                    " ORDER BY seq DESC LIMIT 1",
                    (fleet, device, watermark),
                )
                row = await cur.fetchone()
                if row is not None:
                    payload["check"] = [int(row[0]), str(row[1])]
        return payload

    async def watermarks(self) -> list[tuple[str, str, int]]:
        """Every known device's (fleet, device, watermark)."""
        async with self._connection() as con:
            cur = await con.execute("SELECT fleet, device, watermark FROM devices")
            return [(str(f), str(d), int(w)) for f, d, w in await cur.fetchall()]

    async def devices(self) -> list[dict[str, Any]]:
        """Every device: watermark, state and since when, highest seq stored, missing seqs."""
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT d.fleet, d.device, d.watermark, d.state, d.state_since, d.last_seen,"
                " k.top, coalesce(k.n, 0) FROM devices d LEFT JOIN LATERAL ("
                " SELECT max(seq) AS top, count(*) AS n FROM event_keys"
                " WHERE fleet = d.fleet AND device = d.device) k ON true"
                " ORDER BY d.fleet, d.device"
            )
            rows = await cur.fetchall()
        return [
            {
                "fleet": fleet,
                "device": device,
                "watermark": int(wm),
                "max_seq": int(top) if top is not None else 0,
                "events": int(n),
                "missing": await self.missing(fleet, device, limit=100),
                "state": state,
                "state_since": since,
                "last_seen": seen,
            }
            for fleet, device, wm, state, since, seen, top, n in rows
        ]

    async def missing(self, fleet: str, device: str, limit: int = 1000) -> list[list[int]]:
        """Seq ranges above the watermark not yet accounted for (what the hub still awaits)."""
        async with self._connection() as con:
            cur = await con.execute(
                "WITH w AS (SELECT coalesce((SELECT watermark FROM devices"
                " WHERE fleet=%s AND device=%s), 0) AS wm)"
                " SELECT prev + 1, seq - 1 FROM (SELECT k.seq,"
                " lag(k.seq, 1, w.wm) OVER (ORDER BY k.seq) AS prev FROM event_keys k, w"
                " WHERE k.fleet=%s AND k.device=%s AND k.seq > w.wm) t"
                " WHERE seq > prev + 1 ORDER BY seq LIMIT %s",
                (fleet, device, fleet, device, limit),
            )
            return [[int(lo), int(hi)] for lo, hi in await cur.fetchall()]

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
        under ``_flags`` (``Timeline.events``).

        Read in pages of ``_PAGE`` along the (fleet, device, seq) index, each page one query
        on a connection returned at once: printing the whole timeline holds no transaction
        open (which would hold back ``events_since``) and no connection while the caller
        works."""
        where = ["seq > %s"]
        args: list[Any] = [after_seq]
        if fleet is not None:
            where.append("fleet = %s")
            args.append(fleet)
        if device is not None:
            where.append("device = %s")
            args.append(device)
        left = limit
        last: tuple[str, str, int] | None = None
        while left is None or left > 0:
            page = _PAGE if left is None else min(left, _PAGE)
            clauses, params = list(where), list(args)
            if last is not None:
                clauses.append("(fleet, device, seq) > (%s, %s, %s)")
                params += last
            async with self._connection() as con:
                cur = await con.execute(
                    "SELECT fleet, device, seq, body, flags FROM events"
                    f" WHERE {' AND '.join(clauses)} ORDER BY fleet, device, seq LIMIT %s",
                    (*params, page),
                )
                rows = await cur.fetchall()
            for f, d, seq, body, flags in rows:
                env = parse_stored(body)
                if flags and with_flags:
                    env["_flags"] = flags.split(",")
                yield env
                last = (f, d, seq)
            if left is not None:
                left -= len(rows)
            if len(rows) < page:
                return

    async def events_since(
        self, cursor: int = 0, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int]:
        """Events stored after ``cursor``, in ingest order, at most ``limit``; and the cursor
        to pass next time (``cursor`` itself when nothing is new). 0 starts from the beginning.

        Only rows of transactions below the snapshot's ``xmin`` are read (the module's
        docstring): a row that commits later always comes after the cursor returned."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT pos, body FROM events WHERE pos > %s"
                " AND pos < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)"
                " ORDER BY pos LIMIT %s",
                (cursor, limit),
            )
            rows = await cur.fetchall()
        if not rows:
            return [], cursor
        return [parse_stored(body) for _, body in rows], int(rows[-1][0])

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recently seen dead letters first: when (last), topic, reason, size (of the
        last), how many times, and since when."""
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT received, topic, reason, size, count, first_seen FROM dead_letters"
                " ORDER BY received DESC, id DESC LIMIT %s",
                (limit,),
            )
            return [
                {
                    "received": r,
                    "topic": t,
                    "reason": why,
                    "size": int(n),
                    "count": int(c),
                    "first_seen": first,
                }
                for r, t, why, n, c, first in await cur.fetchall()
            ]

    async def state_history(self, fleet: str, device: str) -> list[dict[str, Any]]:
        """A device's kept state transitions, oldest first: ``{"at", "state"}``."""
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT at, state FROM device_states WHERE fleet=%s AND device=%s ORDER BY id",
                (fleet, device),
            )
            return [{"at": at, "state": st} for at, st in await cur.fetchall()]

    async def count(self, table: str = "events") -> int:
        """Rows of ``events``, ``dead_letters``, ``device_states``, ``commands``, ``claims`` or
        ``certificates``."""
        if table not in _TABLES:
            raise ValueError(table)
        async with self._connection() as con:
            row = await (await con.execute(f"SELECT count(*) FROM {table}")).fetchone()
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
        """Queue command ``cid``, due at once; return the ids it superseded; the device's
        commands cut to ``limits`` in the same transaction (``Timeline.add_command``)."""
        now = time.time() if now is None else now
        async with self._connection() as con, con.transaction():
            cur = await con.execute(
                "UPDATE commands SET superseded_by=%s, next_send=NULL, finished=%s"
                " WHERE fleet=%s AND device=%s AND name=%s AND finished IS NULL RETURNING id",
                (cid, now, fleet, device, name),
            )
            superseded = sorted(str(r[0]) for r in await cur.fetchall())
            await con.execute(
                "INSERT INTO commands (id, fleet, device, name, payload, created, next_send)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (cid, fleet, device, name, payload, now, now),
            )
            # unfinished first, then the newest: what is cut is finished and old
            await con.execute(
                "DELETE FROM commands WHERE seq IN (SELECT seq FROM commands"
                " WHERE fleet=%s AND device=%s ORDER BY finished IS NULL DESC, seq DESC"
                " OFFSET %s)",
                (fleet, device, limits.max_per_device),
            )
            await con.execute(
                "DELETE FROM commands WHERE finished IS NOT NULL AND finished < %s",
                (now - limits.retention_s,),
            )
        return superseded

    async def prune_commands(self, limits: CommandLimits, now: float | None = None) -> int:
        """Delete commands answered or superseded more than ``limits.retention_s`` ago."""
        now = time.time() if now is None else now
        async with self._connection() as con:
            cur = await con.execute(
                "DELETE FROM commands WHERE finished IS NOT NULL AND finished < %s",
                (now - limits.retention_s,),
            )
            return max(cur.rowcount, 0)

    async def due_commands(self, now: float, limit: int = 100) -> list[QueuedCommand]:
        """Unfinished commands whose time to be published has come, the longest waiting first,
        of devices not known to be offline."""
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT c.id, c.fleet, c.device, c.name, c.payload, c.sent_count"
                f"{_DUE} AND c.next_send <= %s ORDER BY c.next_send LIMIT %s",
                (now, limit),
            )
            return [
                QueuedCommand(str(i), str(f), str(d), str(n), str(p), int(s))
                for i, f, d, n, p, s in await cur.fetchall()
            ]

    async def next_command_due(self) -> float | None:
        """When the next command is due (of a device not known to be offline), if any."""
        async with self._connection() as con:
            row = await (await con.execute(f"SELECT min(c.next_send){_DUE}")).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def command_sent(self, cid: str, now: float, next_send: float) -> None:
        """Command ``cid`` was published at ``now``; publish it again at ``next_send`` unless it
        is finished by then."""
        async with self._connection() as con:
            await con.execute(
                "UPDATE commands SET sent_count = sent_count + 1, last_sent = %s,"
                " next_send = CASE WHEN finished IS NULL THEN %s END WHERE id = %s",
                (now, next_send, cid),
            )

    async def commands_due_now(self, fleet: str, device: str, now: float) -> int:
        """A device's birth: its unfinished commands are due at ``now``; how many there are."""
        async with self._connection() as con:
            cur = await con.execute(
                "UPDATE commands SET next_send=%s WHERE fleet=%s AND device=%s"
                " AND finished IS NULL",
                (now, fleet, device),
            )
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
        """Record a device's answer to command ``cid``: ``recorded``, ``again``, ``unknown`` or
        ``wrong-device`` (``Timeline.ack_command``)."""
        now = time.time() if now is None else now
        async with self._connection() as con:
            cur = await con.execute("SELECT fleet, device FROM commands WHERE id=%s", (cid,))
            row = await cur.fetchone()
            if row is None:
                return "unknown"
            if (row[0], row[1]) != (fleet, device):
                return "wrong-device"
            cur = await con.execute(
                "UPDATE commands SET acked_at=%s, ok=%s, error=%s, next_send=NULL,"
                " finished=coalesce(finished, %s) WHERE id=%s AND acked_at IS NULL",
                (now, int(ok), error, now, cid),
            )
            return "recorded" if cur.rowcount == 1 else "again"

    async def commands(self, fleet: str, device: str, limit: int = 100) -> list[dict[str, Any]]:
        """A device's kept commands, newest first, with their status (no payload)."""
        async with self._connection() as con:
            cur = await con.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE fleet=%s AND device=%s"
                " ORDER BY seq DESC LIMIT %s",
                (fleet, device, limit),
            )
            return [_command_row(r) for r in await cur.fetchall()]

    async def command(self, cid: str) -> dict[str, Any] | None:
        """One command with its status and its payload as published, or None."""
        async with self._connection() as con:
            cur = await con.execute(
                f"SELECT {_COMMAND_COLUMNS}, payload FROM commands WHERE id=%s", (cid,)
            )
            row = await cur.fetchone()
        if row is None:
            return None
        out = _command_row(row[:-1])
        out["payload"] = json.loads(row[-1])
        return out

    async def known_device(self, fleet: str, device: str) -> bool:
        """Whether the hub has heard of the device (an event or a state message)."""
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT 1 FROM devices WHERE fleet=%s AND device=%s", (fleet, device)
            )
            return await cur.fetchone() is not None

    # -- provisioning: claims and certificates (hub_bridge/claims.py, hub_bridge/pki.py) --------

    async def add_claim(
        self,
        token_hash: str,
        fleet: str,
        device: str,
        role: str,
        expires: float,
        now: float | None = None,
    ) -> None:
        """Record a claim by its token's hash; claims expired longer than ``CLAIM_KEEP_S`` are
        deleted in the same transaction."""
        when = time.time() if now is None else now
        async with self._connection() as con, con.transaction():
            await con.execute(
                "INSERT INTO claims (hash, fleet, device, role, created, expires)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (token_hash, fleet, device, role, when, expires),
            )
            await con.execute("DELETE FROM claims WHERE expires < %s", (when - CLAIM_KEEP_S,))

    async def redeem_claim(
        self,
        token_hash: str,
        issue: Callable[[Claim], IssuedCertificate],
        *,
        now: float | None = None,
        used_by: str | None = None,
    ) -> tuple[Claim, IssuedCertificate] | None:
        """Exchange a claim for a certificate, once (``Timeline.redeem_claim``): the claim's
        row is locked, so of two redeemers at once (on two hubs even) the second finds it
        used and gets None."""
        when = time.time() if now is None else now
        async with self._connection() as con, con.transaction():
            cur = await con.execute(
                "SELECT fleet, device, role, expires FROM claims"
                " WHERE hash=%s AND used_at IS NULL AND expires > %s FOR UPDATE",
                (token_hash, when),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            claim = Claim(str(row[0]), str(row[1]), str(row[2]), float(row[3]))
            cert = await asyncio.to_thread(issue, claim)  # signing must not stall the loop
            serial = format(cert.serial, "x")
            await con.execute(
                "INSERT INTO certificates"
                " (serial, fleet, device, role, issued_at, not_after, claim, pem)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (serial, claim.fleet, claim.device, claim.role, when, cert.not_after,
                 token_hash, cert.pem),
            )  # fmt: skip
            await con.execute(
                "UPDATE claims SET used_at=%s, used_by=%s, serial=%s WHERE hash=%s",
                (when, used_by, serial, token_hash),
            )
        return claim, cert

    async def claims(self, fleet: str, device: str) -> list[dict[str, Any]]:
        """A device's kept claims, newest first (their hashes are not shown)."""
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT role, created, expires, used_at, used_by, serial FROM claims"
                " WHERE fleet=%s AND device=%s ORDER BY created DESC",
                (fleet, device),
            )
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
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT serial, fleet, device, role, issued_at, not_after, revoked_at, pem"
                " FROM certificates WHERE fleet=%s AND device=%s ORDER BY issued_at DESC, serial",
                (fleet, device),
            )
            return [_certificate_row(r) for r in await cur.fetchall()]

    async def revoke_device(self, fleet: str, device: str, now: float | None = None) -> list[str]:
        """Revoke every certificate of a device not revoked yet and void its unused claims, in
        one transaction; return the serials revoked now (hex)."""
        when = time.time() if now is None else now
        async with self._connection() as con, con.transaction():
            cur = await con.execute(
                "UPDATE certificates SET revoked_at=%s WHERE fleet=%s AND device=%s"
                " AND revoked_at IS NULL RETURNING serial",
                (when, fleet, device),
            )
            serials = sorted(str(r[0]) for r in await cur.fetchall())
            # a claim given out for the device before it was revoked must not bring it back
            await con.execute(
                "UPDATE claims SET used_at=%s, used_by='revoked' WHERE fleet=%s AND device=%s"
                " AND used_at IS NULL",
                (when, fleet, device),
            )
        return serials

    async def revoked_certificates(self, now: float | None = None) -> list[tuple[int, float]]:
        """(serial, revoked at) of every revoked certificate not yet expired: what the CRL
        lists."""
        when = time.time() if now is None else now
        async with self._connection() as con:
            cur = await con.execute(
                "SELECT serial, revoked_at FROM certificates"
                " WHERE revoked_at IS NOT NULL AND not_after > %s ORDER BY serial",
                (when,),
            )
            return [(int(str(s), 16), float(r)) for s, r in await cur.fetchall()]
