"""The agent's local HTTP API (DESIGN §4), for the driver's app and handheld scanners.

``POST /v1/events`` takes one event ``{"type", "data", "ts"?, "ref"?, "id"?}`` or a JSON array of
them (a driver app coming out of a dead zone posts its backlog at once; all or nothing) and answers
``201`` only after the outbox committed them; ``400 {"error"}`` names what is wrong and where;
``507`` when the outbox is full. A client-supplied ``id`` makes the POST idempotent; the same id
with another event is ``409``. A ``ts`` from the client is taken as network time
(``clock: "ntp"``): phones keep their clocks synchronised.

``GET /v1/health`` reports queue depth, the age of the oldest unacked event, broker state and
every component's state and counters. ``GET /v1/openapi.json`` describes the API.

Every input is bounded here, at the first boundary it crosses (``edge_agent.wire.jsonbounds``, the
same bounds the hub holds): the body's size (``max_body``: 413), the time to receive it
(``body_timeout``: 408, the connection closed at most a second later), the time a connection may
sit idle or trickle its request line and headers (``idle_timeout``, aiohttp's keep-alive timer,
armed from the connection's start: closed), the events in one POST (``max_batch``), and every
value: nesting, number range, ``NaN``/``Infinity``, lone surrogates (400 naming the path). No
input gives a 500: an outbox that cannot store answers 507 (full) or 503 (closing, or storage
failing).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edge_agent.clock import Clock
from edge_agent.outbox import (
    Draft,
    EventTooLarge,
    IdConflict,
    Outbox,
    OutboxClosed,
    OutboxError,
    OutboxFull,
)
from edge_agent.platform.health import HealthRegistry
from edge_agent.recorder import make_draft
from edge_agent.wire.envelope import TS_RE, EnvelopeError, format_ts, parse_ts, registered_types
from edge_agent.wire.jsonbounds import JsonBoundsError, Unrepresentable, join_path, loads

__all__ = ["build_app", "openapi_document", "parse_submission"]

log = logging.getLogger(__name__)

_EVENT_KEYS = frozenset({"type", "data", "ts", "ref", "id"})
_ID_MAX = 128
_ID_BAD = re.compile(r"[^!-~]")  # an id is printable ASCII without spaces
_TYPE_MAX = 128
_AGENT_ONLY = ("outbox.",)
_LINGER_S = 1.0


def _one(clock: Clock, obj: Any, where: str, now: tuple[str, str]) -> Draft:
    if not isinstance(obj, dict):
        if isinstance(obj, Unrepresentable):  # NaN, 1e400, a 5000-digit integer: say so
            raise EnvelopeError(where, obj.reason)
        raise EnvelopeError(where, f"an event must be an object, not {type(obj).__name__}")
    if not _EVENT_KEYS.issuperset(obj):
        unknown = sorted(set(obj) - _EVENT_KEYS)
        raise EnvelopeError(join_path(where, [unknown[0]]), "unknown field")
    type_ = obj.get("type")
    if not isinstance(type_, str) or not 0 < len(type_) <= _TYPE_MAX:
        raise EnvelopeError(
            f"{where}.type".lstrip("."), f"missing or not a string of 1 to {_TYPE_MAX} characters"
        )
    if type_.startswith(_AGENT_ONLY):
        # the outbox's own notices account for seqs at the hub: no client may send one
        raise EnvelopeError(f"{where}.type".lstrip("."), f"{type_!r} is the agent's own")
    if "data" not in obj:
        raise EnvelopeError(f"{where}.data".lstrip("."), "missing")
    event_id = obj.get("id")
    if event_id is not None and (
        not isinstance(event_id, str)
        or not 0 < len(event_id) <= _ID_MAX
        or _ID_BAD.search(event_id) is not None
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


def _schema_error() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    }


def openapi_document(max_body: int = 4 * 1024 * 1024, max_batch: int = 10_000) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the local API (served at ``GET /v1/openapi.json``)."""
    exact = [t for t in registered_types() if not t.endswith("*")]
    event = {
        "type": "object",
        "description": "One event; data is checked against the registry of its type (DESIGN §2)"
        " and bounded: at most 32 nested containers, 64-bit integers, finite numbers, no lone"
        " surrogates.",
        "required": ["type", "data"],
        "additionalProperties": False,
        "properties": {
            "type": {
                "anyOf": [
                    {"enum": exact},
                    {"type": "string", "pattern": r"^exception(\.[a-z][a-z0-9_]*)+$"},
                ],
                "description": "a registered type: " + ", ".join(registered_types()),
            },
            "data": {"type": "object"},
            "ts": {
                "type": ["string", "null"],
                "pattern": TS_RE,
                "description": "network time of the event, UTC with milliseconds (null: absent)",
            },
            "ref": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {
                    "parcel": {
                        "anyOf": [
                            {"type": "string", "minLength": 1, "maxLength": 256},
                            {
                                "type": "array",
                                "items": {"type": "string", "minLength": 1, "maxLength": 256},
                            },
                        ]
                    },
                    **{
                        k: {"type": "string", "minLength": 1, "maxLength": 256}
                        for k in ("shipment", "stop", "route", "vehicle", "dock")
                    },
                },
            },
            "id": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": _ID_MAX,
                "pattern": "^[\\x21-\\x7e]+$",
                "description": "a client id: the same id answers the same seq (idempotent);"
                " null: absent",
            },
        },
    }
    accepted = {
        "type": "object",
        "required": ["id", "seq"],
        "properties": {"id": {"type": "string"}, "seq": {"type": "integer", "minimum": 1}},
    }
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def answer(text: str) -> dict[str, Any]:
        return {"description": text, **error}

    return {
        "openapi": "3.1.0",
        "info": {"title": "edge-agent local API", "version": "1"},
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "accept one event, or an array of them (all or nothing)",
                    "requestBody": {
                        "required": True,
                        "description": f"at most {max_body} bytes, {max_batch} events",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Event"},
                                        {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": max_batch,
                                            "items": {"$ref": "#/components/schemas/Event"},
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "committed to the outbox with fsync: the id and seq"
                            " of the event, or of each event of the array in order",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Accepted"},
                                            {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Accepted"},
                                            },
                                        ]
                                    }
                                }
                            },
                        },
                        "400": answer("invalid: the error names the path (events[3].data.lat)"),
                        "408": answer("the body did not arrive in time (the connection closes)"),
                        "409": answer("a client id accepted before for another event"),
                        "413": answer("the body, or one event, is too large"),
                        "503": answer("the agent is shutting down, or its storage fails"),
                        "507": answer("the outbox is full (kept events only, reserve used up)"),
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "summary": "queue, broker, clock and every component's state and counters",
                    "responses": {
                        "200": {
                            "description": "the agent's health",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["queue", "broker", "clock", "components"],
                                        "properties": {
                                            "queue": {
                                                "type": "object",
                                                "required": ["depth", "bytes", "last_seq"],
                                            },
                                            "broker": {"type": "object"},
                                            "clock": {"type": "object"},
                                            "components": {"type": "object"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {"Event": event, "Accepted": accepted, "Error": _schema_error()},
        },
    }


def build_app(
    outbox: Outbox,
    clock: Clock,
    health: HealthRegistry,
    *,
    device: dict[str, str],
    max_body: int = 4 * 1024 * 1024,
    max_batch: int = 10_000,
    body_timeout: float = 30.0,
    idle_timeout: float = 30.0,
    extra_health: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    on_accepted: Callable[[list[Draft]], None] | None = None,
) -> web.Application:
    """The aiohttp application of the local API, bound to one outbox.

    ``on_accepted`` sees the events of every POST once they are committed (the station reads
    the scans a handheld app posts); it must not block and its errors are not the client's.

    ``body_timeout``: seconds to receive a POST body once its headers arrived (else 408).
    ``idle_timeout``: seconds a connection may stay without a complete request (idle between
    requests, or trickling its request line and headers) before it is closed.
    """
    document = openapi_document(max_body, max_batch)

    async def post_events(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(body_timeout):
                raw = await request.read()
        except TimeoutError:
            health.count("api", "slow-body")
            response = _error(408, f"the body did not arrive within {body_timeout:g} s")
            response.force_close()  # what is left of the body would be read as a next request
            return response
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {max_body} bytes")
        except HttpProcessingError as exc:  # a broken chunked or compressed body
            response = _error(400, f"body: {exc.message}")
            response.force_close()
            return response
        except ConnectionError:
            # aiohttp ends the body this way when what followed the headers broke the framing
            # (and when the client went away): nothing can be answered, the connection is dropped
            if request.transport is not None:
                request.transport.close()
            return _error(400, "body: the connection broke while it was read")
        try:
            body = loads(raw)
        except JsonBoundsError as exc:
            health.count("api", "invalid")
            return _error(400, f"body: {exc}")
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
        except IdConflict as exc:
            health.count("api", "id-conflict")
            return _error(409, str(exc))
        except OutboxError as exc:
            # the storage failed (not the input): the client may retry later
            health.count("api", "storage-error")
            return _error(503, f"the outbox cannot store events: {exc}")
        health.count("api", "accepted", len(accepted))
        if on_accepted is not None:
            try:
                on_accepted(drafts)
            except Exception:  # a listener's bug must not turn a committed POST into an error
                log.exception("a listener of accepted events failed")
                health.count("api", "listener-failed")
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

    async def get_openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    # keepalive_timeout is armed when a connection opens and re-armed after each request: a
    # client that sends nothing, or trickles its headers, is closed after idle_timeout. After an
    # answer given before the body was read (408, 413), aiohttp reads and drops the rest for
    # lingering_time (so the client sees the answer, not a reset), then closes: 1 s, not 10 s
    app = web.Application(
        client_max_size=max_body,
        handler_args={"keepalive_timeout": idle_timeout, "lingering_time": _LINGER_S},
    )
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/openapi.json", get_openapi)
    return app
