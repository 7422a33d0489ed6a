"""The server-sent event stream of notices: ``GET /v1/fleets/{fleet}/stream``.

``StreamHub.run`` tails the durable notification log (``hub_bridge.delivery.store``) and fans
each new notice out to the connected clients of its fleet. Every hub instance runs one, so a
client may connect to any of them; the instance running the projector is woken at once, the
others look every ``poll`` seconds.

Each notice is one SSE event: ``id`` its position in the log, ``event`` its kind, ``data`` the
notice's JSON (the same bytes a webhook receives). A client that reconnects with
``Last-Event-ID`` (browsers' EventSource do it by themselves) first gets what it missed from the
log, then the live notices, with nothing twice and nothing skipped. A client too slow to take
what comes (its buffer of ``buffer`` notices full) is told so in a comment and disconnected: it
reconnects and resumes from the log, and no other client waits for it. A comment every
``heartbeat`` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from hub_bridge.delivery.store import DeliveryStore, LoggedNotice
from hub_bridge.store import StoreUnavailable

__all__ = ["StreamHub", "format_event"]

log = logging.getLogger(__name__)

_BATCH = 500


def format_event(n: LoggedNotice) -> bytes:
    """One notice as an SSE event (the body is one line of JSON: no ``data:`` continuation)."""
    return f"id: {n.pos}\nevent: {n.kind}\ndata: {n.body}\n\n".encode()


@dataclass(eq=False)
class _Client:
    fleet: str
    kinds: frozenset[str]
    queue: asyncio.Queue[LoggedNotice]
    transport: asyncio.BaseTransport | None = None
    overflow: bool = False
    writing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, n: LoggedNotice) -> None:
        if self.overflow or n.fleet != self.fleet or (self.kinds and n.kind not in self.kinds):
            return
        try:
            self.queue.put_nowait(n)
        except asyncio.QueueFull:
            self.overflow = True
            self.closed.set()
            if self.writing and isinstance(self.transport, asyncio.WriteTransport):
                # its handler waits for the socket to drain, which a client that reads nothing
                # never does: drop the connection (the client resumes with Last-Event-ID)
                self.transport.abort()

    async def write(self, resp: web.StreamResponse, data: bytes) -> None:
        self.writing = True
        try:
            await resp.write(data)
        finally:
            self.writing = False


class StreamHub:
    """Fans the notification log out to stream clients. Run ``run()`` in the hub's task group
    and serve ``handle()`` from the route."""

    def __init__(
        self,
        store: DeliveryStore,
        *,
        poll: float = 0.5,
        buffer: int = 1000,
        heartbeat: float = 15.0,
        max_clients: int = 1000,
        health: HealthRegistry | None = None,
    ) -> None:
        self.store = store
        self.poll = poll
        self.buffer = buffer
        self.heartbeat = heartbeat
        self.max_clients = max_clients
        self.health = health or HealthRegistry()
        self._clients: set[_Client] = set()
        self._pos: int | None = None
        self._wake = asyncio.Event()
        self._started = asyncio.Event()

    @property
    def clients(self) -> int:
        """Clients connected now."""
        return len(self._clients)

    def wake(self) -> None:
        """New notices are in the log: fan them out now."""
        self._wake.set()

    async def run(self) -> None:
        """Tail the log until cancelled."""
        while self._pos is None:
            try:
                self._pos = await self.store.last_pos()
            except StoreUnavailable:
                await asyncio.sleep(self.poll)
        self._started.set()
        while True:
            self._wake.clear()
            try:
                rows = await self.store.notices_after(self._pos, None, _BATCH)
            except StoreUnavailable as exc:
                self.health.set_state("stream", "store-unavailable", error=str(exc)[:200])
                rows = []
            for n in rows:
                for c in list(self._clients):
                    c.offer(n)
                self._pos = n.pos
            if len(rows) == _BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):
                    await self._wake.wait()

    async def handle(
        self, request: web.Request, fleet: str, kinds: Sequence[str], last_id: int | None
    ) -> web.StreamResponse:
        """Stream ``fleet``'s notices (of ``kinds``, all when empty) to one client, from after
        ``last_id`` when it resumes, live otherwise."""
        if len(self._clients) >= self.max_clients:
            return web.json_response(
                {"error": f"too many stream clients ({self.max_clients})"}, status=503
            )
        await self._started.wait()
        client = _Client(fleet, frozenset(kinds), asyncio.Queue(self.buffer), request.transport)
        self._clients.add(client)  # before reading the backlog: nothing falls between the two
        sent = (self._pos or 0) if last_id is None else last_id
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        self.health.count("stream", "connected")
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n")
            if last_id is not None:
                sent = await self._backlog(resp, client, sent)
            while not client.overflow:
                get = asyncio.ensure_future(client.queue.get())
                closed = asyncio.ensure_future(client.closed.wait())
                done, _ = await asyncio.wait(
                    {get, closed}, timeout=self.heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                closed.cancel()
                if get not in done:
                    get.cancel()
                    if not done:
                        await client.write(resp, b": keepalive\n\n")
                    continue
                n = get.result()
                if n.pos > sent:
                    await client.write(resp, format_event(n))
                    sent = n.pos
            self.health.count("stream", "overflow")
            await resp.write(b": overflow: reconnect with Last-Event-ID to resume\n\n")
        except (ConnectionResetError, ConnectionError):
            if client.overflow:
                self.health.count("stream", "overflow")
        except StoreUnavailable:  # the backlog cannot be read: the client comes back later
            self.health.count("stream", "store-unavailable")
            with contextlib.suppress(ConnectionError):
                await resp.write(b": the log cannot be read now: reconnect with Last-Event-ID\n\n")
        finally:
            self._clients.discard(client)
        return resp

    async def _backlog(self, resp: web.StreamResponse, client: _Client, sent: int) -> int:
        while True:
            rows = await self.store.notices_after(sent, client.fleet, _BATCH)
            for n in rows:
                if not client.kinds or n.kind in client.kinds:
                    await client.write(resp, format_event(n))
                sent = n.pos
            if len(rows) < _BATCH:
                return sent
