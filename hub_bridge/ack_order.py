"""One device's acks published one at a time across N hub instances, in increasing order.

With a shared subscription the broker hands a device's consecutive batches to different hub
instances. Each computes the device's watermark in its storing transaction, under the device's
row lock, so the watermarks *committed* never go back; but two instances' *publishes* can still
cross on their way to the broker (A commits 2020, B commits 2040, B's ack arrives first, then
A's 2020): seen in the chaos test. An agent takes an ack below one it had as "the hub lost what
it acked" and announces the gap, so the order matters.

``PgAckOrder.turn(fleet, device)`` closes that: a PostgreSQL advisory lock per device (on a
small pool of its own), taken before the device's current watermark is read and held until the
broker has acknowledged the ack (the caller publishes inside the turn). Every instance thus
publishes the watermark current when its turn came, turns follow one another, and the broker
receives each device's acks in increasing order. Devices do not wait on each other (one lock
key each); the cost is two short round trips per device per group. The watermark is read from
the timeline's ``devices`` table (``fleet``, ``device``, ``watermark``), which both stores have.

``LocalAckOrder`` is the one-instance case (SQLite, or no share group): nothing to take turns
with; the caller's own watermark is current.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from hub_bridge.store import pooled

__all__ = ["AckOrder", "LocalAckOrder", "PgAckOrder", "open_ack_order"]


class AckOrder(Protocol):
    """Turns for publishing a device's ack."""

    def turn(self, fleet: str, device: str) -> contextlib.AbstractAsyncContextManager[int | None]:
        """Inside: this instance's turn for the device; yields the device's current watermark
        (None: the caller's own is current)."""
        ...

    async def close(self) -> None:
        """Release what the turns hold."""
        ...


class LocalAckOrder:
    """One hub instance: its acks are already in order (groups are committed one at a time)."""

    @contextlib.asynccontextmanager
    async def turn(self, fleet: str, device: str) -> AsyncIterator[int | None]:
        yield None

    async def close(self) -> None:
        return None


class PgAckOrder:
    """Turns from PostgreSQL advisory locks, one key per device (see the module's text)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, size: int = 4) -> PgAckOrder:
        """A pool of up to ``size`` connections to the timeline's database ``url``."""
        from psycopg_pool import AsyncConnectionPool  # only where PostgreSQL is used

        from hub_bridge.timeline_pg import split_url

        conninfo, _ = split_url(url)
        pool: Any = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=size,
            open=False,
            timeout=10.0,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,  # a server restart leaves dead ones
            name="ack-order",
        )
        await pool.open(wait=False)
        return cls(pool)

    @contextlib.asynccontextmanager
    async def turn(self, fleet: str, device: str) -> AsyncIterator[int | None]:
        key = f"lm-ack/{fleet}/{device}"
        async with pooled(self._pool) as con:
            await con.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
            try:
                cur = await con.execute(
                    "SELECT watermark FROM devices WHERE fleet=%s AND device=%s", (fleet, device)
                )
                row = await cur.fetchone()
                yield None if row is None else int(row[0])
            finally:
                # a connection that broke meanwhile took its session lock with it
                with contextlib.suppress(Exception):
                    await con.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    async def close(self) -> None:
        await self._pool.close()


async def open_ack_order(timeline_url: str, shared: bool) -> AckOrder:
    """Turns for a hub on ``timeline_url``: PostgreSQL advisory locks when instances share
    the devices (``shared``: a share group on a PostgreSQL timeline), else none needed."""
    if shared and timeline_url.split(":", 1)[0] in ("postgresql", "postgres"):
        return await PgAckOrder.open(timeline_url)
    return LocalAckOrder()
