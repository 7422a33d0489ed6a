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
     │    └── DiskFull     the file system is full; nothing stored; recovers when room returns
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
import errno
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiosqlite

from edge_agent.platform.sqlite import (
    NewerSchema,
    configure,
    migrate,
    on_connection_thread,
    prepare_private,
    schema_version,
)
from edge_agent.sink import Accepted, EventRefused
from edge_agent.wire.envelope import (
    encode_checked,
    encode_envelope,
    format_ts,
    is_low_value,
    new_event_id,
)
from edge_agent.wire.limits import NOTICE_MAX_RANGES, batch_body_limit
from edge_agent.wire.seqs import seq_ranges

__all__ = [
    "MAX_EVENT_BYTES",
    "PRIO_KEPT",
    "PRIO_LIFECYCLE",
    "PRIO_LOW",
    "SCHEMA_VERSION",
    "DiskFull",
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

T = TypeVar("T")


PRIO_LOW = 0
PRIO_KEPT = 1
PRIO_LIFECYCLE = 2


MAX_EVENT_BYTES = batch_body_limit()
"""The largest envelope that fits alone in one batch on the wire."""

SEQ_FLOOR_BLOCK = 100_000
"""Seqs reserved ahead in the floor file: one small fsynced write per this many events."""

TAIL_BYTES = 1024 * 1024
"""Bodies of the newest committed events kept in memory for the uplink (``read_after``)."""

DISK_RESERVE_BYTES = 4 * 1024 * 1024
"""Default size of the spare file released when the disk fills (room to apply acks)."""

# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF) that mean "no room" or
# "the storage failed", not "the file is damaged": such a file is never moved aside
_NO_ROOM = frozenset({13, 10})  # SQLITE_FULL, SQLITE_IOERR


def _is_no_room(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _NO_ROOM


class OutboxError(Exception):
    """Base of the outbox's errors; ``path`` names the database file."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class OutboxFull(OutboxError):
    """The size cap (and, for kept events, the reserve) is reached: nothing was stored."""


class DiskFull(OutboxFull):
    """The file system has no room for the commit: nothing was stored (HTTP 507 as well)."""


class OutboxSchemaError(OutboxError):
    """The file was written by a newer agent: it is left untouched and the agent stops."""


class EventTooLarge(OutboxError, EventRefused):
    """An event whose envelope would not fit in one batch on the wire (256 KiB)."""


class IdConflict(OutboxError, EventRefused):
    """A client id accepted before with a different event: refused (HTTP 409), nothing stored."""


class OutboxClosed(OutboxError):
    """The outbox closed before the submission could be committed."""


class Draft(NamedTuple):
    """An event before the outbox stamps it: validated type and data, optional id/ts/ref.

    A named tuple, not a frozen dataclass: as immutable, and made several times faster (a
    frozen dataclass sets each field through ``object.__setattr__``), once per accepted event.
    """

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


@dataclass(slots=True)
class _GroupPlan:
    """What one group commit will write, built up submission by submission."""

    next_seq: int
    total: int
    now: float
    stamp: tuple[str, str]  # ts and clock source of the life-cycle events the group may add
    rows: list[tuple[int, str, str, int, float, bytes]] = field(default_factory=list)
    client_rows: list[tuple[str, int, float, bytes]] = field(default_factory=list)
    results: list[tuple[_Submission, list[Accepted] | OutboxError]] = field(default_factory=list)
    evicted: list[int] = field(default_factory=list)
    refused: int = 0


def _digest(type_: str, body: bytes) -> bytes:
    """What a client id stands for: the type, data and ref of its event (not its seq or ts)."""
    content = body[body.index(b',"data":') :]
    return hashlib.blake2b(type_.encode() + content, digest_size=16).digest()


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
    # version 2: what a client id was accepted for, so a reuse with another event is refused
    """
    ALTER TABLE client_ids ADD COLUMN digest BLOB;
    """,
    # version 3: depth and size kept in meta (a start never counts the queue) and an index of
    # the life-cycle notices the uplink sends ahead
    """
    INSERT OR REPLACE INTO meta (key, value) SELECT 'depth', count(*) FROM events;
    INSERT OR REPLACE INTO meta (key, value)
        SELECT 'bytes', coalesce(sum(CASE WHEN prio < 2 THEN length(body) END), 0) FROM events;
    CREATE INDEX events_notice ON events (seq) WHERE prio = 2;
    """,
]
SCHEMA_VERSION = len(_SCHEMA)


SYNC_CHECK_BYTES = 64 * 1024 * 1024
"""Outbox files up to this size are integrity-checked before use; larger ones in the background."""


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def _integrity_check(db: aiosqlite.Connection) -> None:
    """Raise sqlite3.DatabaseError unless ``PRAGMA integrity_check`` says ok."""
    async with db.execute("PRAGMA integrity_check") as cur:
        rows = [r[0] for r in await cur.fetchall()]
    if rows != ["ok"]:
        raise sqlite3.DatabaseError(f"integrity_check: {'; '.join(map(str, rows[:3]))}")


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
        max_event_bytes: int = MAX_EVENT_BYTES,
        disk_reserve_bytes: int = DISK_RESERVE_BYTES,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.fleet = fleet
        self.device = device
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.id_retention_s = id_retention_s
        self.max_event_bytes = min(max_event_bytes, MAX_EVENT_BYTES)
        self.disk_reserve_bytes = disk_reserve_bytes
        self.reserve_path = Path(f"{path}.reserve")
        self._disk_full = False
        self._notices: list[int] = []  # unacked life-cycle seqs, ascending: sent ahead of the rest
        # the newest committed (seq, body), consecutive seqs, at most TAIL_BYTES: what the uplink
        # reads next is nearly always here, so a trickle of events costs no read of the file
        self._tail: deque[tuple[int, bytes]] = deque()
        self._tail_bytes = 0
        self._seq_floor = 0
        self.sync_check_bytes = SYNC_CHECK_BYTES
        self._checked = False
        self._check_task: asyncio.Task[None] | None = None
        self._recovering = False
        self._wall = wall
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: list[_Submission] = []
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._busy_since: float | None = None  # the writer's current group began (monotonic)
        self._closing = False
        self.commit_listeners: list[Callable[[], None]] = []
        """Called after every commit that added events (the uplink wakes on it)."""
        self._next_seq = 1
        self._acked = 0
        self._ack_seen = 0  # the newest watermark heard, applied to the file within ack_flush_s
        self._ack_flush: asyncio.TimerHandle | None = None
        self._ack_task: asyncio.Task[int] | None = None
        self._rebase_task: asyncio.Future[int] | None = None
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
        max_event_bytes: int = MAX_EVENT_BYTES,
        disk_reserve_bytes: int = DISK_RESERVE_BYTES,
        wall: Callable[[], float] = time.time,
    ) -> Outbox:
        """Open (or create, migrate, or replace a corrupt) outbox file and start its writer.

        ``max_event_bytes`` is the largest envelope accepted (it must fit alone in one batch of
        the uplink's size); ``disk_reserve_bytes`` the spare file kept next to the outbox and
        released when the file system fills, so acks can still be applied.
        """
        ob = cls(
            Path(path),
            fleet,
            device,
            max_bytes=max_bytes,
            reserve_bytes=max_bytes // 4 if reserve_bytes is None else reserve_bytes,
            id_retention_s=id_retention_s,
            max_event_bytes=max_event_bytes,
            disk_reserve_bytes=disk_reserve_bytes,
            wall=wall,
        )
        await ob._start()
        return ob

    async def _start(self) -> None:
        prepare_private(self.path)  # events hold personal data: 0600, a new folder 0700
        salvaged: tuple[int, int] | None = None
        moved: str | None = None
        try:
            await self._connect_no_room_retry()
        except OutboxSchemaError:
            await self._disconnect()
            raise
        except sqlite3.DatabaseError as exc:
            await self._disconnect()
            if _is_no_room(exc):
                raise DiskFull(f"{self.path}: cannot open: {exc}", str(self.path)) from None
            salvaged = _salvage_counters(self.path)
            moved = self._move_aside(str(exc))
            await self._connect_and_check()
        fresh = await self._load_counters()
        self._make_reserve()
        self._seq_floor = self._read_seq_floor()
        if moved is not None:
            await self._after_corruption(moved, salvaged)
        elif fresh and self._seq_floor > 0:
            await self._after_replacement(self._seq_floor)
        self._writer = asyncio.create_task(self._write_loop(), name=f"outbox-writer:{self.path}")
        if not self._checked:
            self._check_task = asyncio.create_task(
                self._check_in_background(), name=f"outbox-check:{self.path}"
            )

    async def _check_in_background(self) -> None:
        """The full integrity check of a large file, on its own connection while the agent runs;
        a damaged file is then set aside live, exactly as at a start."""
        try:
            con = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            await self._recover_live(str(exc))
            return
        failure: str | None = None
        try:
            await con.execute("PRAGMA busy_timeout=5000")
            await _integrity_check(con)
        except asyncio.CancelledError:
            await con.interrupt()  # a stop must not wait for a check of gigabytes
            raise
        except sqlite3.DatabaseError as exc:
            failure = None if _is_no_room(exc) else str(exc)
        finally:
            with contextlib.suppress(Exception):
                await con.close()
        if failure is not None:
            self._recovering = True  # close() waits for the recovery instead of cutting it
            try:
                await asyncio.shield(self._recover_live(failure))
            finally:
                self._recovering = False
            return
        self._checked = True
        log.info("outbox %s: integrity check passed", self.path)

    async def _recover_live(self, reason: str) -> None:
        async with self._lock:
            if self._closing:
                return
            salvaged = _salvage_counters(self.path)
            await self._disconnect()
            moved = self._move_aside(reason)
            await self._connect_and_check()
            await self._load_counters()
            await self._after_corruption(moved, salvaged, locked=True)

    async def _connect_no_room_retry(self) -> None:
        """Open; on a full disk, give up the spare file and try once more (never move aside)."""
        try:
            await self._connect_and_check()
        except (sqlite3.DatabaseError, OSError) as exc:
            if not _is_no_room(exc) or not self._release_reserve():
                raise
            await self._disconnect()
            await self._connect_and_check()

    def _make_reserve(self) -> bool:
        """Keep a spare file of ``disk_reserve_bytes`` next to the outbox; True if it exists."""
        if self.disk_reserve_bytes <= 0:
            return False
        try:
            if self.reserve_path.exists():
                return True
            tmp = self.reserve_path.with_name(self.reserve_path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # real blocks (not a sparse file): the space must be there to give back
                chunk = b"\0" * 65536
                left = self.disk_reserve_bytes
                while left > 0:
                    left -= os.write(fd, chunk[: min(left, len(chunk))])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.reserve_path)
            return True
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(self.reserve_path.with_name(self.reserve_path.name + ".tmp"))
            log.warning(
                "outbox: no room for the %d-byte spare file: %s", self.disk_reserve_bytes, exc
            )
            return False

    def _release_reserve(self) -> bool:
        """Delete the spare file (the disk is full); True if there was one to delete."""
        try:
            os.unlink(self.reserve_path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("outbox: cannot delete the spare file %s: %s", self.reserve_path, exc)
            return False
        log.warning("outbox: the disk is full: released the spare file %s", self.reserve_path)
        return True

    async def _connect_and_check(self) -> None:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db = db
        await configure(db)
        # a small file is checked before it is used; a large one (a long dead zone: the check
        # reads every page) is checked in the background, so the agent answers within a second
        self._checked = _file_size(self.path) <= self.sync_check_bytes
        if self._checked:
            await _integrity_check(db)
        else:
            async with db.execute("SELECT count(*) FROM sqlite_master") as cur:  # header, schema
                await cur.fetchall()
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

    async def _after_corruption(
        self, moved: str, salvaged: tuple[int, int] | None, *, locked: bool = False
    ) -> None:
        # seqs must never be reused: continue after the old counter or the seq floor file, or
        # jump ahead by the clock (milliseconds since the epoch exceed any count of events a
        # device can make; a clock that is behind is caught later by the hub's ack check)
        floor = self._read_seq_floor()
        if salvaged is not None or floor:
            next_seq, acked = salvaged or (1, 0)
            next_seq = max(next_seq, floor + 1)
        else:
            next_seq, acked = int(self._wall() * 1000), 0
        await self._restart_seqs(next_seq, acked)
        self._notices = []
        alarm: dict[str, Any] = {"alarm": "outbox-corrupt", "moved_to": moved}
        await self._announce_restart(alarm, acked, next_seq, locked=locked)

    async def _after_replacement(self, floor: int) -> None:
        """A new, empty file where this device had assigned seqs up to ``floor`` before."""
        log.error(
            "outbox %s is new but this device used seqs up to %d: continuing after them",
            self.path,
            floor,
        )
        await self._restart_seqs(floor + 1, 0)
        alarm: dict[str, Any] = {"alarm": "outbox-replaced", "seq_floor": floor}
        await self._announce_restart(alarm, 0, floor + 1)

    async def _announce_restart(
        self, alarm: dict[str, Any], acked: int, next_seq: int, *, locked: bool = False
    ) -> None:
        drafts = [self._lifecycle_draft("device.health", alarm)]
        if next_seq - 1 > acked:
            drafts.extend(self._eviction_drafts([(acked + 1, next_seq - 1)], "corrupt"))
        if locked:
            fut: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
            await self._commit_group([_Submission(drafts, fut)])
        else:
            await self._commit_now(drafts)
        if self.on_alarm is not None:
            self.on_alarm(str(alarm["alarm"]), alarm)

    # -- the seq floor: a sidecar file reserving seqs ahead, the device's own record -----------

    @property
    def seq_floor_path(self) -> Path:
        """``outbox.db.seq``: the highest seq this device may have assigned (reserved ahead)."""
        return Path(f"{self.path}.seq")

    def _read_seq_floor(self) -> int:
        try:
            text = self.seq_floor_path.read_text(encoding="ascii").strip()
            value = int(text) if text.isascii() and text.isdigit() else 0
        except (OSError, ValueError):
            return 0
        return value if 0 < value < 2**62 else 0

    def _reserve_seqs(self, upto: int) -> None:
        """Record (fsynced) that seqs up to ``upto`` may be assigned, before assigning them."""
        if upto <= self._seq_floor:
            return
        value = upto + SEQ_FLOOR_BLOCK
        tmp = self.seq_floor_path.with_name(self.seq_floor_path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{value}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.seq_floor_path)
        except OSError as exc:
            # the outbox file itself stays the first record: a missing floor only weakens the
            # recovery from a lost file (the hub's ack check still catches it)
            log.warning("outbox: cannot record the seq floor in %s: %s", self.seq_floor_path, exc)
            self._seq_floor = upto
            return
        self._seq_floor = value

    async def _restart_seqs(self, next_seq: int, acked: int) -> None:
        db = self._require_db()
        # one statement, its own transaction: nothing is left open if a cancel lands mid-way
        await db.execute(
            "UPDATE meta SET value = CASE key WHEN 'next_seq' THEN ? ELSE ? END"
            " WHERE key IN ('next_seq', 'acked')",
            (next_seq, acked),
        )
        self._next_seq, self._acked = next_seq, acked
        self._drop_tail()

    async def _load_counters(self) -> bool:
        """Load the counters; True when the file has never assigned a seq (a new file).

        Constant time whatever the queue holds: depth and size live in ``meta``, the highest seq
        is the last key of the table, the notices have their own index.
        """
        db = self._require_db()
        async with db.execute("SELECT key, value FROM meta") as cur:
            meta = {k: int(v) for k, v in await cur.fetchall()}
        async with db.execute("SELECT coalesce(max(seq), 0) FROM events") as cur:
            row = await cur.fetchone()
        assert row is not None
        self._depth, self._bytes = meta.get("depth", 0), meta.get("bytes", 0)
        self._next_seq = max(meta.get("next_seq", 1), int(row[0]) + 1)
        self._acked = meta.get("acked", 0)
        self._evicted = meta.get("evicted", 0)
        self._refused = meta.get("refused", 0)
        async with db.execute(
            "SELECT seq FROM events WHERE prio = ? AND seq > ? ORDER BY seq",
            (PRIO_LIFECYCLE, self._acked),
        ) as cur:
            self._notices = [int(r[0]) for r in await cur.fetchall()]
        return self._next_seq == 1

    async def _disconnect(self) -> None:
        for con in (self._reader, self._db):
            if con is not None:
                with contextlib.suppress(Exception):
                    await con.close()
        self._reader = self._db = None
        self._drop_tail()

    async def close(self) -> None:
        """Commit what is queued, apply the last ack, stop the writer and close the file."""
        if self._ack_flush is not None:
            self._ack_flush.cancel()
        if self._ack_task is not None:
            with contextlib.suppress(Exception):
                await self._ack_task
        if self._rebase_task is not None:
            # a renumbering whose caller was cancelled (a lost connection) runs on: the file
            # closes after it, not under it
            with contextlib.suppress(Exception):
                await self._rebase_task
        if self._db is not None and self._ack_seen > self._acked:
            with contextlib.suppress(Exception):
                await self.apply_ack(self._ack_seen)
        self._closing = True
        if self._check_task is not None:
            if not self._recovering:
                self._check_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._check_task
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
        # no shield: a caller cancelled meanwhile cancels only its own answer (the writer skips
        # answers that are done); what was queued is committed all the same. A shield would
        # cost two more turns of the event loop per event, most of the CPU of a trickle.
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                group, self._queue = self._queue, []
                self._busy_since = time.monotonic()
                try:
                    async with self._lock:
                        await self._commit_with_room(group)
                except Exception as exc:  # a failed commit fails its submissions, not the agent
                    if isinstance(exc, DiskFull):
                        err: OutboxError = exc
                    else:
                        log.exception("outbox commit failed")
                        err = OutboxError(f"commit failed: {exc}", str(self.path))
                    for sub in group:
                        if not sub.future.done():
                            sub.future.set_exception(err)
            self._busy_since = None
            if self._closing:
                return

    @property
    def writer_busy_since(self) -> float | None:
        """Since when (``time.monotonic()``) the writer has been committing its current group;
        None while it waits for work. The watchdog's progress probe: a commit stuck on a dead SD
        card keeps this old, and the agent is restarted."""
        return self._busy_since

    async def _commit_with_room(self, group: list[_Submission]) -> None:
        """Commit a group; a full disk gives DiskFull (507), an alarm, and frees the spare file.

        The spare file's room goes to applying acks (deletes need room in the WAL too) and to
        the alarm itself; while the disk stays full every submission gets DiskFull, and the
        first commit after room returns clears the alarm and makes a new spare file.
        """
        if self._disk_full and not self._room_is_back():
            # the room the spare file gave back is kept for acks, not spent on new events
            raise DiskFull("the disk is full: refusing events until room returns", str(self.path))
        try:
            await self._commit_group(group)
        except (sqlite3.DatabaseError, OSError) as exc:
            if not _is_no_room(exc):
                raise
            await self._on_disk_full(str(exc))
            raise DiskFull(f"the disk is full: {exc}", str(self.path)) from None

    def _room_is_back(self) -> bool:
        """On a full disk: whether there is room for the spare file again (then remake it)."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        if st.f_bavail * st.f_frsize < self.disk_reserve_bytes + 64 * 1024:
            return False
        if self.disk_reserve_bytes > 0 and not self._make_reserve():
            return False
        self._disk_full = False
        log.info("outbox %s: room on the disk again", self.path)
        if self.on_alarm is not None:
            self.on_alarm("outbox-full" if self._full else "ok", {})
        return True

    async def _on_disk_full(self, reason: str) -> None:
        first = not self._disk_full
        self._disk_full = True
        self._release_reserve()
        if self._ack_seen > self._acked:
            with contextlib.suppress(Exception):
                await self._apply_ack_locked(self._ack_seen)
        if first:
            log.error("outbox %s: the disk is full (%s): refusing events", self.path, reason)
            alarm = {"alarm": "disk-full", "error": reason[:200]}
            with contextlib.suppress(Exception):  # recorded if the freed room allows
                fut: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
                await self._commit_group(
                    [_Submission([self._lifecycle_draft("device.health", alarm)], fut)]
                )
            if self.on_alarm is not None:
                self.on_alarm("disk-full", {"error": reason[:200]})

    async def _commit_now(self, drafts: Sequence[Draft]) -> list[Accepted]:
        """Commit outside the writer loop (start-up, before the writer exists)."""
        fut: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        async with self._lock:
            await self._commit_group([_Submission(drafts, fut)])
        return fut.result()

    def _stamp(self) -> tuple[str, str]:
        """The outbox's own events' ts and clock source now (``clock_now``, or the wall)."""
        if self.clock_now is not None:
            when, source = self.clock_now()
        else:
            when, source = datetime.fromtimestamp(self._wall(), UTC), "unsynced"
        return format_ts(when), source

    def _lifecycle_draft(
        self, type_: str, data: dict[str, Any], stamp: tuple[str, str] | None = None
    ) -> Draft:
        ts, source = stamp or self._stamp()
        return Draft(type_, data, ts, source, prio=PRIO_LIFECYCLE)

    def _lifecycle_rows(
        self, drafts: list[Draft], first_seq: int, now: float
    ) -> list[tuple[int, str, str, int, float, bytes]]:
        """``events`` rows for life-cycle drafts, with new ids and the seqs from ``first_seq``."""
        rows = []
        for seq, d in enumerate(drafts, first_seq):
            eid = new_event_id()
            rows.append((seq, eid, d.type, d.priority, now, self._encode(d, eid, seq)))
        return rows

    def _eviction_drafts(
        self, ranges: list[tuple[int, int]], reason: str, stamp: tuple[str, str] | None = None
    ) -> list[Draft]:
        """``outbox.evicted`` notices for ``ranges``, split so each fits easily in one batch."""
        out = []
        stamp = stamp or self._stamp()
        for i in range(0, len(ranges), NOTICE_MAX_RANGES):
            part = ranges[i : i + NOTICE_MAX_RANGES]
            count = sum(hi - lo + 1 for lo, hi in part)
            data = {"ranges": [list(r) for r in part], "count": count, "reason": reason}
            out.append(self._lifecycle_draft("outbox.evicted", data, stamp))
        return out

    async def _in_thread(self, fn: Callable[..., T], *args: Any, then: Callable[[T], None]) -> T:
        """Run ``fn(con, *args)`` in one hop to the SQLite thread, then ``then(result)`` here.

        A cancel meanwhile cannot stop the thread (the transaction commits or not on its own),
        so the outcome is awaited and taken in (``then``) first and the cancel raised after:
        the counters in memory never disagree with the file.
        """
        db = self._require_db()
        outcome: list[T] = []  # set on the thread, read here even when the await was cancelled

        def work(con: sqlite3.Connection, *a: Any) -> T:
            result = fn(con, *a)
            outcome.append(result)
            return result

        # awaited directly, not as a shielded task: each layer of task and shield costs turns
        # of the event loop, and on a trickle of events those turns are most of the CPU
        try:
            result = await on_connection_thread(db, work, *args)
        except asyncio.CancelledError:
            # the thread runs the work to its end: a no-op queued behind it marks that end
            await _settled(asyncio.ensure_future(on_connection_thread(db, _nothing)))
            if outcome:
                then(outcome[0])
            raise
        then(result)
        return result

    async def _commit_group(self, group: list[_Submission]) -> None:
        """Commit ``group`` in one transaction, the whole of it in one hop to the SQLite thread
        (``_commit_in_thread``); then answer each submission and wake the listeners."""
        # Events the hub acked are deleted within ack_flush_s; until then they count against
        # the cap. On an outbox past half full the watermark heard is applied first, so that
        # events the hub already holds never make the outbox thin or refuse new ones (a 507
        # right after a drain, found by the stateful spine test).
        if self._ack_seen > self._acked and self._bytes > self.max_bytes // 2:
            await self._apply_ack_locked(self._ack_seen)
        # the floor file is written before seqs beyond it are given (life-cycle notices: margin)
        self._reserve_seqs(self._next_seq + sum(len(sub.drafts) for sub in group) + 10_000)
        plan = _GroupPlan(self._next_seq, self._bytes, self._wall(), self._stamp())
        await self._in_thread(
            self._commit_in_thread, group, plan, then=lambda full: self._answer(plan, full)
        )

    def _commit_in_thread(
        self, con: sqlite3.Connection, group: list[_Submission], plan: _GroupPlan
    ) -> bool:
        """The group commit, on the SQLite thread: plan, insert, count, commit with fsync.

        Reads the outbox's counters but changes none of them (``_answer`` does, on the loop:
        the writer lock keeps every other change out meanwhile). Returns whether events were
        refused for want of room.
        """
        con.execute("BEGIN IMMEDIATE")
        try:
            known = self._known_client_ids(con, group)
            for sub in group:
                self._plan_submission(con, plan, sub, known)
            extra: list[Draft] = []
            if plan.evicted:
                plan.evicted = sorted(set(plan.evicted))
                extra.extend(
                    self._eviction_drafts(seq_ranges(plan.evicted), "size-cap", plan.stamp)
                )
            full_now = plan.refused > 0
            if full_now and not self._full:
                alarm = {"alarm": "outbox-full", "bytes": plan.total, "max_bytes": self.max_bytes}
                extra.append(self._lifecycle_draft("device.health", alarm, plan.stamp))
            # life-cycle events: exempt from the cap, not counted in it
            plan.rows.extend(self._lifecycle_rows(extra, plan.next_seq, plan.now))
            plan.next_seq += len(extra)
            if plan.rows:
                con.executemany(
                    "INSERT INTO events (seq, id, type, prio, accepted, body)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    plan.rows,
                )
            if plan.client_rows:
                con.executemany(
                    "INSERT OR REPLACE INTO client_ids (id, seq, accepted, digest)"
                    " VALUES (?, ?, ?, ?)",
                    plan.client_rows,
                )
            con.execute(
                "UPDATE meta SET value = CASE key"
                " WHEN 'next_seq' THEN ? WHEN 'evicted' THEN value + ?"
                " WHEN 'refused' THEN value + ? WHEN 'depth' THEN ? WHEN 'bytes' THEN ?"
                " ELSE value END"
                " WHERE key IN ('next_seq', 'evicted', 'refused', 'depth', 'bytes')",
                (
                    plan.next_seq,
                    len(plan.evicted),
                    plan.refused,
                    self._depth + len(plan.rows) - len(plan.evicted),
                    plan.total,
                ),
            )
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise
        return full_now

    def _answer(self, plan: _GroupPlan, full_now: bool) -> None:
        """After a group's commit: the counters, each submission's answer, the listeners."""
        self._after_commit(plan, full_now)
        for sub, res in plan.results:
            if sub.future.done():
                continue
            if isinstance(res, OutboxError):
                sub.future.set_exception(res)
            else:
                sub.future.set_result(res)
        if plan.rows:
            for listener in self.commit_listeners:
                listener()

    def _after_commit(self, plan: _GroupPlan, full_now: bool) -> None:
        self._next_seq = plan.next_seq
        self._bytes = plan.total
        self._depth += len(plan.rows) - len(plan.evicted)
        self._evicted += len(plan.evicted)
        self._refused += plan.refused
        self._notices.extend(r[0] for r in plan.rows if r[3] == PRIO_LIFECYCLE)
        self._extend_tail(plan)
        if self._full != full_now:
            self._full = full_now
            if full_now:
                log.warning("outbox %s is full: refusing events", self.path)
                if self.on_alarm is not None:
                    self.on_alarm("outbox-full", {"bytes": plan.total, "max_bytes": self.max_bytes})
            else:
                log.info("outbox %s accepts events again", self.path)
                if self.on_alarm is not None and not self._disk_full:
                    self.on_alarm("ok", {})
        if plan.evicted:
            log.info("outbox thinned %d low-value events to stay under its cap", len(plan.evicted))

    def _plan_submission(
        self,
        con: sqlite3.Connection,
        plan: _GroupPlan,
        sub: _Submission,
        known: dict[str, tuple[int, bytes | None]],
    ) -> None:
        """Give one submission its seqs (or its refusal) within the group's transaction."""
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
        bodies = [self._encode(d, eid, plan.next_seq + k) for k, (eid, d) in enumerate(fresh)]
        too_big = [k for k, body in enumerate(bodies) if len(body) > self.max_event_bytes]
        if too_big:
            size = len(bodies[too_big[0]])
            plan.results.append(
                (sub, EventTooLarge(f"an event of {size} bytes is over {self.max_event_bytes}"))
            )
            return
        digests = {eid: _digest(d.type, body) for (eid, d), body in zip(fresh, bodies, strict=True)}
        # a client id reused for another event is refused, never answered with the old seq
        first_use: set[str] = set()
        for d in sub.drafts:
            if d.id is None:
                continue
            if d.id in fresh_ids and d.id not in first_use:
                first_use.add(d.id)  # this draft is the one the id stands for
                continue
            old = digests.get(d.id) if d.id in fresh_ids else known[d.id][1]
            if old is not None and old != _digest(d.type, self._encode(d, d.id, 0)):
                plan.results.append(
                    (sub, IdConflict(f"id {d.id!r} was accepted before for another event"))
                )
                return
        need_low = need_kept = 0
        for body, (_, d) in zip(bodies, fresh, strict=True):
            prio = d.priority
            if prio == PRIO_LOW:
                need_low += len(body)
            elif prio == PRIO_KEPT:
                need_kept += len(body)
        total = plan.total
        if total + need_low + need_kept > self.max_bytes and (need_low or need_kept):
            # free a twentieth of the cap at least, so notices of eviction stay rare
            over = max(total + need_low + need_kept - self.max_bytes, self.max_bytes // 20)
            freed, gone = self._thin(con, over, exclude=set(plan.evicted))
            plan.evicted.extend(gone)
            plan.total -= freed
            total = plan.total
        after = total + need_low + need_kept
        if (need_low and after > self.max_bytes) or (
            need_kept and after > self.max_bytes + self.reserve_bytes
        ):
            plan.refused += len(sub.drafts)
            plan.results.append(
                (sub, OutboxFull(f"outbox full ({total} of {self.max_bytes} bytes)"))
            )
            return
        seq_by_id: dict[str, int] = {}
        for (eid, d), body in zip(fresh, bodies, strict=True):
            seq = plan.next_seq
            plan.rows.append((seq, eid, d.type, d.priority, plan.now, body))
            plan.total += len(body)
            seq_by_id[eid] = seq
            if d.id is not None:
                known[d.id] = (seq, digests[eid])
                plan.client_rows.append((d.id, seq, plan.now, digests[eid]))
            plan.next_seq += 1
        accepted = [Accepted(e, seq_by_id.get(e) or known[e][0]) for e in ids_for]
        plan.results.append((sub, accepted))

    def _encode(self, d: Draft, event_id: str, seq: int) -> bytes:
        f, dev = self.fleet, self.device
        return encode_checked(event_id, seq, f, dev, d.type, d.ts, d.clock, d.data, d.ref)

    def _known_client_ids(
        self, con: sqlite3.Connection, group: list[_Submission]
    ) -> dict[str, tuple[int, bytes | None]]:
        ids = list({d.id for sub in group for d in sub.drafts if d.id is not None})
        known: dict[str, tuple[int, bytes | None]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = con.execute(
                f"SELECT id, seq, digest FROM client_ids WHERE id IN ({marks})", chunk
            ).fetchall()
            known.update({k: (int(v), None if g is None else bytes(g)) for k, v, g in rows})
        return known

    def _thin(self, con: sqlite3.Connection, need: int, exclude: set[int]) -> tuple[int, list[int]]:
        """Delete low-value events, oldest first, every other one, until ``need`` bytes free.

        A second pass takes the remaining low-value events oldest first if thinning was not
        enough. Returns (bytes freed, seqs deleted).
        """
        freed = 0
        gone: list[int] = []
        for step in (2, 1):
            if freed >= need:
                break
            candidates = [
                (int(s), int(n))
                for s, n in con.execute(
                    "SELECT seq, length(body) FROM events WHERE prio = 0 ORDER BY seq"
                ).fetchall()
                if s not in exclude
            ]
            # thinning keeps the first of every pair so the oldest part of the track survives
            for seq, size in candidates[step - 1 :: step]:
                if freed >= need:
                    break
                gone.append(seq)
                exclude.add(seq)
                freed += size
            if gone:
                con.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in gone])
                exclude.update(gone)
        return freed, sorted(set(gone))

    async def announce_acked_earlier(self, lo: int, hi: int) -> None:
        """Tell the hub that seqs ``lo..hi`` were acked by it before (it lost its store)."""
        if lo > hi:
            return
        await self.append(self._eviction_drafts([(lo, hi)], "acked-earlier"))

    # -- the uplink's side -------------------------------------------------------------------

    def _drop_tail(self) -> None:
        self._tail.clear()
        self._tail_bytes = 0

    def _extend_tail(self, plan: _GroupPlan) -> None:
        """Keep the bodies a commit added; the tail stays consecutive seqs of committed events."""
        tail = self._tail
        if plan.evicted or (tail and plan.rows and tail[-1][0] + 1 != plan.rows[0][0]):
            self._drop_tail()  # thinned rows may be in it; or a gap: start again from here
        for row in plan.rows:
            tail.append((row[0], row[5]))
            self._tail_bytes += len(row[5])
        while self._tail_bytes > TAIL_BYTES and len(tail) > 1:
            self._tail_bytes -= len(tail.popleft()[1])

    def _trim_tail(self, watermark: int) -> None:
        tail = self._tail
        while tail and tail[0][0] <= watermark:
            self._tail_bytes -= len(tail.popleft()[1])

    def _read_tail(self, seq: int, max_bytes: int, max_events: int) -> list[tuple[int, bytes]]:
        """``read_after`` from memory; ``[]`` when the tail does not hold ``seq + 1`` (the
        caller then reads the file)."""
        tail = self._tail
        if not tail or not tail[0][0] <= seq + 1 <= tail[-1][0]:
            return []
        out: list[tuple[int, bytes]] = []
        size = 0
        for row in islice(tail, seq + 1 - tail[0][0], None):
            size += len(row[1]) + 1
            if out and (size > max_bytes or len(out) >= max_events):
                break
            out.append(row)
        return out

    async def read_after(
        self, seq: int, *, max_bytes: int, max_events: int = 10_000
    ) -> list[tuple[int, bytes]]:
        """Committed events with seq > ``seq`` in seq order, up to ``max_bytes`` of bodies.

        The first event is returned even when it alone is larger than ``max_bytes`` (accepted
        under a larger batch size): no event may block the queue behind it.
        """
        reader = self._reader
        if reader is None:
            raise OutboxClosed("outbox is not open", str(self.path))
        cached = self._read_tail(seq, max_bytes, max_events)
        if cached:
            return cached
        # read about twice the rows the byte budget holds at the average size, not 10,000 rows
        # of which a tenth are sent (a backlog drain read each batch ten times over)
        average = max(1, self._bytes // self._depth) if self._depth > 0 else 64
        max_events = min(max_events, max(64, 2 * max_bytes // average))
        # one round trip: the running size is summed by SQLite, not row by row in Python
        # and one thread hop: execute_fetchall, not a cursor's execute, fetch and close
        rows = await reader.execute_fetchall(
            "SELECT seq, body FROM (SELECT seq, body,"
            " sum(length(body) + 1) OVER (ORDER BY seq) AS run,"
            " row_number() OVER (ORDER BY seq) AS n"
            " FROM events WHERE seq > ? ORDER BY seq LIMIT ?)"
            " WHERE run <= ? OR n = 1 ORDER BY seq",
            (seq, max_events, max_bytes),
        )
        return [(int(s), bytes(body)) for s, body in rows]

    def notices_after(self, seq: int) -> list[int]:
        """Seqs of unacked life-cycle events (eviction notices, alarms) above ``seq``.

        The uplink sends these ahead of the window: the hub's watermark may be waiting on seqs
        that only such a notice accounts for.
        """
        acked = self.acked
        if self._notices and self._notices[0] <= acked:
            self._notices = [n for n in self._notices if n > acked]
        return [n for n in self._notices if n > seq]

    async def read_seqs(self, seqs: Sequence[int]) -> list[tuple[int, bytes]]:
        """The committed events of the given seqs that are still in the outbox, in seq order."""
        reader = self._reader
        if reader is None:
            raise OutboxClosed("outbox is not open", str(self.path))
        out: list[tuple[int, bytes]] = []
        for i in range(0, len(seqs), 500):
            chunk = list(seqs[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = await reader.execute_fetchall(
                f"SELECT seq, body FROM events WHERE seq IN ({marks}) ORDER BY seq", chunk
            )
            out.extend((int(s), bytes(b)) for s, b in rows)
        return out

    async def rebase(self, above: int) -> int:
        """Renumber every unacked event to follow ``above`` (see ``_rebase``); shielded: a cancel
        of the caller (a lost connection) must not stop it between its commit and the counters
        that follow it."""
        task = asyncio.ensure_future(self._rebase(above))
        self._rebase_task = task
        task.add_done_callback(_log_rebase_failure)  # its caller may be gone by then
        return await asyncio.shield(task)

    async def _rebase(self, above: int) -> int:
        """Renumber every unacked event to follow ``above``; return the new last seq.

        Used when the hub proves that this device's seqs up to ``above`` are taken by events
        this file does not hold (the file was lost, replaced, or restarted from a clock that
        was behind). Ids stay; the vacated seqs are announced as ``outbox.evicted`` (reason
        ``corrupt``) so the hub's watermark does not wait on them. Nothing is deleted.
        """
        db = self._require_db()
        async with self._lock:
            above = max(above, self._next_seq - 1)
            acked = self._acked
            self._reserve_seqs(above + self._depth + 10_000)
            try:
                await db.execute("BEGIN IMMEDIATE")  # inside: a cancel here still rolls back
                async with db.execute(
                    "SELECT seq, id, type, prio, accepted, body FROM events WHERE seq > ?"
                    " ORDER BY seq",
                    (acked,),
                ) as cur:
                    old = list(await cur.fetchall())
                renumbered: list[tuple[int, str, str, int, float, bytes]] = []
                moved: list[tuple[int, int]] = []
                nxt = above + 1
                for seq, eid, type_, prio, accepted, body in old:
                    env = json.loads(body)
                    env["seq"] = nxt
                    renumbered.append((nxt, eid, type_, prio, accepted, encode_envelope(env)))
                    moved.append((nxt, int(seq)))
                    nxt += 1
                # the vacated seqs are announced in the same transaction: committed apart, a
                # kill between the two commits left seqs the hub would wait for forever
                notices = self._eviction_drafts([(acked + 1, above)], "corrupt")
                announced = self._lifecycle_rows(notices, nxt, self._wall())
                nxt += len(announced)
                await db.execute("DELETE FROM events WHERE seq > ?", (acked,))
                await db.executemany(
                    "INSERT INTO events (seq, id, type, prio, accepted, body)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    renumbered + announced,
                )
                await db.executemany("UPDATE client_ids SET seq = ? WHERE seq = ?", moved)
                new_bytes = (
                    self._bytes
                    + sum(len(r[5]) for r in renumbered if r[3] < PRIO_LIFECYCLE)
                    - sum(len(r[5]) for r in old if r[3] < PRIO_LIFECYCLE)
                )
                depth = self._depth + len(announced)
                await db.execute(
                    "UPDATE meta SET value = CASE key WHEN 'next_seq' THEN ? WHEN 'bytes' THEN ?"
                    " WHEN 'depth' THEN ? ELSE value END"
                    " WHERE key IN ('next_seq', 'bytes', 'depth')",
                    (nxt, new_bytes, depth),
                )
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
            self._next_seq = nxt
            self._drop_tail()  # every unacked event has another seq now
            self._bytes = new_bytes  # life-cycle notices are not counted in the cap
            self._depth = depth
            self._notices = [r[0] for r in renumbered + announced if r[3] == PRIO_LIFECYCLE]
            for listener in self.commit_listeners:
                listener()  # the notice is there to send
        log.error(
            "outbox: the hub holds seqs up to %d that are not this file's: %d unacked events"
            " renumbered after them",
            above,
            len(old),
        )
        if self.on_alarm is not None:
            self.on_alarm("seqs-rebased", {"above": above, "events": len(old)})
        return self._next_seq - 1

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
        seq is clamped (a hub cannot have stored what was never accepted). On a full disk the
        spare file is given up so the delete can be written, and once room is back the alarm
        clears.
        """
        async with self._lock:
            try:
                n = await self._apply_ack_locked(watermark)
            except (sqlite3.DatabaseError, OSError) as exc:
                if not _is_no_room(exc):
                    raise
                self._disk_full = True
                if not self._release_reserve():
                    raise DiskFull(f"cannot apply the ack: {exc}", str(self.path)) from None
                n = await self._apply_ack_locked(watermark)
            if self._disk_full:
                await self._recover_room()
            return n

    async def _recover_room(self) -> None:
        """After deletes on a full disk: give the WAL back, make a spare file, clear the alarm."""
        db = self._require_db()
        with contextlib.suppress(sqlite3.Error):
            # fetched to its end: a cursor left on the row it returns holds the statement open,
            # and the next COMMIT on this connection fails ("SQL statements in progress")
            await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        self._room_is_back()

    async def _apply_ack_locked(self, watermark: int) -> int:
        watermark = min(watermark, self._next_seq - 1)
        if watermark <= self._acked:
            return 0
        cutoff = self._wall() - self.id_retention_s

        def taken(deleted: tuple[int, int]) -> None:
            self._acked = watermark
            self._ack_seen = max(self._ack_seen, watermark)
            self._depth -= deleted[0]
            self._bytes -= deleted[1]
            if self._notices and self._notices[0] <= watermark:
                self._notices = [n for n in self._notices if n > watermark]
            self._trim_tail(watermark)

        count, _ = await self._in_thread(self._ack_in_thread, watermark, cutoff, then=taken)
        return count

    def _ack_in_thread(
        self, con: sqlite3.Connection, watermark: int, cutoff: float
    ) -> tuple[int, int]:
        """Delete what ``watermark`` covers, on the SQLite thread; (events, bytes) deleted."""
        # forgetting acked events needs no fsync of its own: lost in a power cut, the delete
        # only means a resend the hub de-duplicates; the next accepting commit (FULL) syncs
        # the WAL with it anyway. Half the fsyncs of a trickle of events, and less SD wear.
        con.execute("PRAGMA synchronous=NORMAL")
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(
                    "SELECT count(*), coalesce(sum(CASE WHEN prio < 2 THEN length(body) END), 0)"
                    " FROM events WHERE seq <= ?",
                    (watermark,),
                ).fetchone()
                count, size = int(row[0]), int(row[1])
                con.execute("DELETE FROM events WHERE seq <= ?", (watermark,))
                con.execute("DELETE FROM client_ids WHERE accepted < ?", (cutoff,))
                con.execute(
                    "UPDATE meta SET value = CASE key WHEN 'acked' THEN ? WHEN 'depth' THEN ?"
                    " WHEN 'bytes' THEN ? ELSE value END WHERE key IN ('acked', 'depth', 'bytes')",
                    (watermark, self._depth - count, self._bytes - size),
                )
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                raise
        finally:
            with contextlib.suppress(sqlite3.Error):
                con.execute("PRAGMA synchronous=FULL")
        return count, size

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
            # constant time: the rows acked but not yet deleted are few (one flush period)
            rows = list(
                await self._reader.execute_fetchall(
                    "SELECT (SELECT count(*) FROM events WHERE seq > ? AND seq <= ?),"
                    " (SELECT accepted FROM events WHERE seq > ? ORDER BY seq LIMIT 1)",
                    (self._acked, self.acked, self.acked),
                )
            )
            row = rows[0] if rows else None
            if row is not None:
                depth = max(0, self._depth - int(row[0]))
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


def _log_rebase_failure(task: asyncio.Future[int]) -> None:
    """Retrieve a renumbering's failure (logged: its caller may have been cancelled)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("outbox: renumbering failed: %r", task.exception())


def _nothing(_con: sqlite3.Connection) -> None:
    """A no-op for the SQLite thread: once it ran, everything queued before it has ended."""


async def _settled(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` is done, through cancels: it is work handed to another thread, which
    ends on its own (a statement of SQLite, bounded by its busy timeout)."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([task])
