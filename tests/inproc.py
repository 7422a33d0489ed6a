"""A real aiohttp application on a real port, served from a thread with its own event loop.

For tests that talk HTTP with synchronous clients (schemathesis, raw sockets) to the agent's or
the hub's API bound to real SQLite files: the app and its stores live in the server's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_agent.api import build_app as agent_app
from edge_agent.clock import Clock
from edge_agent.outbox import Outbox
from edge_agent.platform.health import HealthRegistry

Factory = Callable[[], Awaitable[tuple[web.Application, Callable[[], Awaitable[None]]]]]
"""Makes the app (in the server's loop) and returns it with the coroutine that closes its stores."""


class Served:
    """``with Served(factory) as s:`` serves the app on ``s.url`` until the block ends."""

    def __init__(self, factory: Factory) -> None:
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._close: Callable[[], Awaitable[None]] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        """Run a coroutine in the server's loop and return its result."""

        async def wrap() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    async def _start(self) -> None:
        app, self._close = await self._factory()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._close is not None:
            await self._close()

    def __enter__(self) -> Served:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def agent_factory(path: Path, **options: Any) -> Factory:
    """The agent's API on a fresh outbox at ``path`` (``options`` go to ``build_app``)."""

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        outbox = await Outbox.open(path, "acme", "van-042")
        app = agent_app(
            outbox,
            Clock("system"),
            HealthRegistry(),
            device={"fleet": "acme", "device": "van-042"},
            **options,
        )
        return app, outbox.close

    return make
