"""The timeline store's interface: what the bridge, the API and the CLI use of a timeline.

Two implementations stand behind it, chosen by ``timeline.url`` (DESIGN §4, §5;
``hub_bridge.backends.open_timeline``):
``sqlite:///path`` (``hub_bridge.timeline.Timeline``, the embedded default: one hub on one
machine) and ``postgresql://…`` (``hub_bridge.timeline_pg.PgTimeline``: N hub instances on one
database, de-duplication and the watermark computed by the database). Both behave the same; the
timeline tests run against both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol

from hub_bridge.claims import Claim
from hub_bridge.commands import CommandLimits
from hub_bridge.timeline import (
    Batch,
    IssuedCertificate,
    QueuedCommand,
    StoreResult,
    TimelineLimits,
)

__all__ = ["StoreUnavailable", "TimelineStore", "open_pool", "pooled", "unavailable"]


class StoreUnavailable(Exception):
    """The store cannot be written or read just now (database down, disk full, locked too
    long). Nothing was committed: the caller acks nothing and devices resend."""


def unavailable(where: str, exc: BaseException) -> BaseException:
    """What to raise for a database error: ``StoreUnavailable`` (the caller retries later), or
    ``CancelledError`` when this task is being cancelled. A query a cancel interrupted can end
    in a database error (``QueryCanceled``, an ``OperationalError``, or a connection the
    cancel left broken): taken for an unavailable store, the cancel would be lost and the
    caller would retry instead of stopping. (The webhook worker that never stopped was the
    pool's lost cancel: see ``pooled``.)"""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return asyncio.CancelledError()
    return StoreUnavailable(f"{where}: {str(exc).strip()[:300]}")


@contextlib.asynccontextmanager
async def pooled(pool: Any) -> AsyncIterator[Any]:
    """``pool.connection()`` of a psycopg pool, except that a cancel is never lost.

    The pool waits for a free connection with ``asyncio.wait_for``, which on Python 3.11
    returns the connection when it is handed over in the same turn of the loop as a cancel of
    the waiting task, and the cancel is gone (CPython gh-86296, fixed in 3.12). A worker being
    stopped then went on serving and never stopped: the rare hang of the PostgreSQL webhook
    test, its task "cancelling" and waiting in its loop again. A cancel requested while the
    connection was awaited is raised here; the connection goes back to the pool.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    async with pool.connection() as con:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError
        yield con


async def open_pool(pool: Any, wait_s: float) -> None:
    """``pool.open(wait=True, timeout=wait_s)`` of a psycopg pool that closes the pool again
    when the open fails or the task is cancelled meanwhile: no connection or worker task of a
    pool nobody holds is left behind, and a cancel the pool's wait dropped (see ``pooled``) is
    raised."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        await pool.open(wait=True, timeout=wait_s)
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError
    except BaseException:
        await pool.close()
        raise


class TimelineStore(Protocol):
    """Every timeline backend: the same methods with the same meaning (see ``Timeline``)."""

    limits: TimelineLimits

    async def close(self) -> None: ...

    async def store(
        self,
        fleet: str,
        device: str,
        events: Sequence[dict[str, Any]],
        flags: Sequence[list[str]],
        rejected_seqs: Iterable[int] = (),
        received: float | None = None,
    ) -> StoreResult: ...

    async def store_many(
        self, batches: Sequence[Batch], received: float | None = None
    ) -> list[StoreResult]: ...

    async def rejected_before(self, fleet: str, device: str, seqs: list[int]) -> set[int]: ...

    async def dead_letter(self, topic: str, reason: str, payload: bytes) -> int: ...

    async def set_state(self, fleet: str, device: str, state: str, payload: str) -> bool: ...

    async def ack_payload(self, fleet: str, device: str, watermark: int) -> dict[str, Any]: ...

    async def watermarks(self) -> list[tuple[str, str, int]]: ...

    async def devices(self) -> list[dict[str, Any]]: ...

    async def missing(self, fleet: str, device: str, limit: int = 1000) -> list[list[int]]: ...

    def events(
        self,
        fleet: str | None = None,
        device: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        *,
        with_flags: bool = False,
    ) -> AsyncIterator[dict[str, Any]]: ...

    async def events_since(
        self, cursor: int = 0, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int]:
        """Events stored after ``cursor`` in ingest order (at most ``limit``) and the cursor
        after them; never skips an event that commits later with a lower cursor (the delivery
        projection follows the timeline with it)."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def state_history(self, fleet: str, device: str) -> list[dict[str, Any]]: ...

    async def count(self, table: str = "events") -> int: ...

    async def add_command(
        self,
        fleet: str,
        device: str,
        name: str,
        cid: str,
        payload: str,
        limits: CommandLimits,
        now: float | None = None,
    ) -> list[str]: ...

    async def prune_commands(self, limits: CommandLimits, now: float | None = None) -> int: ...

    async def due_commands(self, now: float, limit: int = 100) -> list[QueuedCommand]: ...

    async def next_command_due(self) -> float | None: ...

    async def command_sent(self, cid: str, now: float, next_send: float) -> None: ...

    async def commands_due_now(self, fleet: str, device: str, now: float) -> int: ...

    async def ack_command(
        self,
        fleet: str,
        device: str,
        cid: str,
        ok: bool,
        error: str | None,
        now: float | None = None,
    ) -> str: ...

    async def commands(self, fleet: str, device: str, limit: int = 100) -> list[dict[str, Any]]: ...

    async def command(self, cid: str) -> dict[str, Any] | None: ...

    async def known_device(self, fleet: str, device: str) -> bool: ...

    async def add_claim(
        self,
        token_hash: str,
        fleet: str,
        device: str,
        role: str,
        expires: float,
        now: float | None = None,
    ) -> None: ...

    async def redeem_claim(
        self,
        token_hash: str,
        issue: Callable[[Claim], IssuedCertificate],
        *,
        now: float | None = None,
        used_by: str | None = None,
    ) -> tuple[Claim, IssuedCertificate] | None: ...

    async def claims(self, fleet: str, device: str) -> list[dict[str, Any]]: ...

    async def certificates(self, fleet: str, device: str) -> list[dict[str, Any]]: ...

    async def revoke_device(
        self, fleet: str, device: str, now: float | None = None
    ) -> list[str]: ...

    async def revoked_certificates(self, now: float | None = None) -> list[tuple[int, float]]: ...
