"""What the delivery tests share: a real local webhook receiver that misbehaves on command, and
notices made by hand for the push and stream tests (the projection test uses the real model)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from hub_bridge.delivery.push import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from hub_bridge.delivery.store import NewNotice, canonical_json, notice_subject

Action = str | float
"""What the receiver does with one request: ``"ok"``, ``"fail"`` (500), ``"close"`` (drops the
connection without an answer), ``"gone"`` (410) or a float: answer 200 after that many seconds."""


def notice(
    fleet: str, kind: str, key: str, n: int, payload: dict[str, Any] | None = None
) -> NewNotice:
    """A notice as the projector would log it: its body the canonical JSON of the notice."""
    nid = f"{kind}:{fleet}:{key}:{n}"
    body_payload = payload if payload is not None else {"parcel": key, "n": n}
    doc = {
        "id": nid,
        "kind": kind,
        "fleet": fleet,
        "ts": f"2026-12-03T08:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "key": key,
        "payload": body_payload,
    }
    return NewNotice(
        nid, fleet, kind, key, doc["ts"], canonical_json(doc), notice_subject(kind, body_payload)
    )


def chaos(delivery: str, attempt: int) -> Action:
    """A receiver that fails, delays and drops connections, deterministically per delivery and
    attempt: about a third of first tries fail one way or another, later tries mostly pass."""
    h = hashlib.sha256(f"{delivery}/{attempt}".encode()).digest()[0]
    if attempt <= 2 and h < 40:
        return "fail"
    if attempt <= 2 and h < 60:
        return "close"
    if h < 140:
        return (h % 8) / 100  # 0-70 ms: answers come back out of order
    return "ok"


@dataclass
class Hit:
    path: str
    delivery: str
    event: str
    signed: bool
    action: Action
    body: dict[str, Any]


@dataclass
class Receiver:
    """A real HTTP server on a free loopback port that records every webhook request."""

    secrets: dict[str, str] = field(default_factory=dict)
    """Path -> the subscription's secret (to verify signatures)."""
    plan: Callable[[str, int], Action] = lambda _d, _a: "ok"
    """What to do with attempt number ``a`` (1, 2, ...) of delivery ``d``."""
    hits: list[Hit] = field(default_factory=list)
    delivered: dict[str, list[str]] = field(default_factory=dict)
    """Path -> the ids of the notices answered 2xx, in the order the answers were sent."""
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    inflight: int = 0
    max_inflight: int = 0
    server: TestServer | None = None

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    def url(self, name: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/{name}"))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.path
        delivery = request.headers.get(DELIVERY_HEADER, "")
        secret = self.secrets.get(path)
        signed = secret is not None and verify(
            secret, request.headers.get(SIGNATURE_HEADER, ""), raw, time.time()
        )
        n = self.attempts.get((path, delivery), 0) + 1
        self.attempts[(path, delivery)] = n
        action = self.plan(delivery, n)
        self.hits.append(
            Hit(path, delivery, request.headers.get(EVENT_HEADER, ""), signed, action,
                json.loads(raw))
        )  # fmt: skip
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if action == "fail":
                return web.json_response({"error": "try later"}, status=500)
            if action == "gone":
                return web.json_response({"error": "gone"}, status=410)
            if action == "close":
                assert request.transport is not None
                request.transport.close()  # no answer at all: the sender sees a dropped line
                raise web.HTTPInternalServerError()
            if isinstance(action, float):
                await asyncio.sleep(action)
            self.delivered.setdefault(path, []).append(delivery)
            return web.json_response({"ok": True})
        finally:
            self.inflight -= 1


async def wait_until(cond: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``cond`` on the event loop until true; fail naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)
