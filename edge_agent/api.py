"""The agent's local HTTP API (DESIGN §4), for the driver's app and handheld scanners.

``POST /v1/events`` takes one event ``{"type", "data", "ts"?, "ref"?, "id"?}`` or a JSON array of
them (a driver app coming out of a dead zone posts its backlog at once; all or nothing) and answers
``201`` only after the outbox committed them; ``400 {"error"}`` names what is wrong and where;
``507`` when the outbox is full. A client-supplied ``id`` makes the POST idempotent. A ``ts`` from
the client is taken as network time (``clock: "ntp"``): phones keep their clocks synchronised.

``GET /v1/health`` reports queue depth, the age of the oldest unacked event, broker state and
every component's state and counters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from edge_agent.clock import Clock
from edge_agent.envelope import EnvelopeError, format_ts, parse_ts
from edge_agent.health import HealthRegistry
from edge_agent.outbox import (
    Draft,
    EventTooLarge,
    Outbox,
    OutboxClosed,
    OutboxError,
    OutboxFull,
)
from edge_agent.recorder import make_draft

__all__ = ["build_app", "parse_submission"]

_EVENT_KEYS = frozenset({"type", "data", "ts", "ref", "id"})
_ID_MAX = 128


def _one(clock: Clock, obj: Any, where: str, now: tuple[str, str]) -> Draft:
    if not isinstance(obj, dict):
        raise EnvelopeError(where, f"an event must be an object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - _EVENT_KEYS)
    if unknown:
        raise EnvelopeError(f"{where}.{unknown[0]}".lstrip("."), "unknown field")
    type_ = obj.get("type")
    if not isinstance(type_, str):
        raise EnvelopeError(f"{where}.type".lstrip("."), "missing or not a string")
    if "data" not in obj:
        raise EnvelopeError(f"{where}.data".lstrip("."), "missing")
    event_id = obj.get("id")
    if event_id is not None and (
        not isinstance(event_id, str)
        or not 0 < len(event_id) <= _ID_MAX
        or not all("!" <= c <= "~" for c in event_id)
    ):
        raise EnvelopeError(
            f"{where}.id".lstrip("."), f"must be 1 to {_ID_MAX} printable ASCII characters"
        )
    ts = obj.get("ts")
    if ts is not None:
        try:
            parse_ts(ts)
        except ValueError as exc:
            raise EnvelopeError(f"{where}.ts".lstrip("."), str(exc)) from None
    ref = obj.get("ref")
    if ref is not None and not isinstance(ref, dict):
        raise EnvelopeError(f"{where}.ref".lstrip("."), "must be an object")
    try:
        return make_draft(
            clock,
            type_,
            obj["data"],
            ts=ts or now[0],
            ref=ref,
            clock_source="ntp" if ts is not None else now[1],
            event_id=event_id,
        )
    except EnvelopeError as exc:
        path = f"{where}.{exc.path}".lstrip(".") if exc.path else where
        raise EnvelopeError(path, exc.reason) from None


def parse_submission(clock: Clock, body: Any, max_batch: int) -> tuple[list[Draft], bool]:
    """Validate a POST body; return the drafts and whether it was a batch (array).

    Raises EnvelopeError whose path names the offending element (``events[3].data.lat``).
    """
    when, source = clock.now()  # one arrival time for every event of the POST without a ts
    now = (format_ts(when), source)
    if isinstance(body, list):
        if not body:
            raise EnvelopeError("", "an empty batch")
        if len(body) > max_batch:
            raise EnvelopeError("", f"a batch of {len(body)} events is over {max_batch}")
        return [_one(clock, item, f"events[{i}]", now) for i, item in enumerate(body)], True
    return [_one(clock, body, "", now)], False


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(
    outbox: Outbox,
    clock: Clock,
    health: HealthRegistry,
    *,
    device: dict[str, str],
    max_body: int = 4 * 1024 * 1024,
    max_batch: int = 10_000,
    extra_health: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> web.Application:
    """The aiohttp application of the local API, bound to one outbox."""

    async def post_events(request: web.Request) -> web.Response:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {max_body} bytes")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        try:
            drafts, is_batch = parse_submission(clock, body, max_batch)
        except EnvelopeError as exc:
            health.count("api", "invalid")
            return _error(400, str(exc))
        try:
            accepted = await outbox.append(drafts)
        except OutboxFull as exc:
            health.count("api", "refused-full")
            return _error(507, str(exc))
        except OutboxClosed:
            return _error(503, "the agent is shutting down")
        except EventTooLarge as exc:
            return _error(413, str(exc))
        except OutboxError as exc:
            return _error(500, str(exc))
        health.count("api", "accepted", len(accepted))
        out = [{"id": a.id, "seq": a.seq} for a in accepted]
        return web.json_response(out if is_batch else out[0], status=201)

    async def get_health(_: web.Request) -> web.Response:
        stats = await outbox.stats()
        now = time.time()
        oldest_age = None if stats.oldest_accepted is None else now - stats.oldest_accepted
        queue = {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "full": outbox.full,
            "last_seq": stats.last_seq,
            "acked": stats.acked,
            "oldest_unacked_age_s": None if oldest_age is None else round(oldest_age, 3),
            "evicted": stats.evicted,
            "refused": stats.refused,
            "corrupt_files": stats.corrupt_files,
        }
        snap = health.snapshot()
        broker = snap.get("broker", {"state": "unknown"})
        payload: dict[str, Any] = {
            **device,
            "queue": queue,
            "broker": broker,
            "clock": {"source": clock.now()[1], "gnss_offset_s": clock.gnss_offset_s()},
            "components": snap,
        }
        if extra_health is not None:
            payload.update(await extra_health())
        return web.json_response(payload)

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/v1/health", get_health)
    return app
