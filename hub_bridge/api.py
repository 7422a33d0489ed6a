"""The hub's HTTP API: health, devices (watermark, gaps, online state), timeline, dead letters.

Read-only; the same aiohttp stack as the agent's local API. ``GET /v1/openapi.json`` describes it
(``OPENAPI``, OpenAPI 3.1 with the schema of every answer).

Query parameters are parsed strictly: ``fleet`` and ``device`` are identifiers of the contract,
``after_seq`` and ``limit`` ASCII decimal integers in their range; an unknown or repeated
parameter (on every operation), or a value out of its range, is ``400 {"error"}`` naming the
parameter. A connection
idle, or trickling its request, for ``idle_timeout`` is closed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from edge_agent.wire.envelope import IDENT_RE, SEQ_MAX
from hub_bridge.timeline import Timeline

__all__ = ["OPENAPI", "build_app"]

LIMIT_MAX = 10_000
_IDENT = re.compile(IDENT_RE)
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() also takes "²" and "٣"


def _int_param(name: str, lo: int, hi: int, default: int, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": text,
        "schema": {"type": "integer", "minimum": lo, "maximum": hi, "default": default},
    }


def _ident_param(name: str, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": text,
        "schema": {"type": "string", "pattern": IDENT_RE},
    }


def _json(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


_BAD = _json({"$ref": "#/components/schemas/Error"}, "a query parameter is invalid (named)")
_NUMBER_OR_NULL = {"type": ["number", "null"]}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hub-bridge", "version": "1"},
    "paths": {
        "/v1/health": {
            "get": {
                "summary": "hub state and counters",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["events", "dead_letters", "components"],
                            "properties": {
                                "events": {"type": "integer", "minimum": 0},
                                "dead_letters": {"type": "integer", "minimum": 0},
                                "components": {"type": "object"},
                            },
                        },
                        "events stored, dead letters kept, every component's state",
                    ),
                    "400": _BAD,
                },
            }
        },
        "/v1/devices": {
            "get": {
                "summary": "devices: watermark, missing seqs, online state",
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"$ref": "#/components/schemas/Device"}},
                        "every device the hub has heard of",
                    ),
                    "400": _BAD,
                },
            }
        },
        "/v1/events": {
            "get": {
                "summary": "the timeline in (fleet, device, seq) order",
                "parameters": [
                    _ident_param("fleet", "only this fleet"),
                    _ident_param("device", "only this device"),
                    _int_param("after_seq", 0, SEQ_MAX, 0, "only seqs above this"),
                    _int_param("limit", 1, LIMIT_MAX, 1000, "at most this many events"),
                ],
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"$ref": "#/components/schemas/StoredEvent"}},
                        "stored envelopes, with the hub's flags under _flags",
                    ),
                    "400": _BAD,
                },
            }
        },
        "/v1/dead-letters": {
            "get": {
                "summary": "the most recent rejected messages",
                "parameters": [
                    _int_param("limit", 1, LIMIT_MAX, 100, "at most this many dead letters")
                ],
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}},
                        "newest first",
                    ),
                    "400": _BAD,
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "this document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), "400": _BAD},
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Device": {
                "type": "object",
                "required": ["fleet", "device", "watermark", "max_seq", "missing", "state"],
                "properties": {
                    "fleet": {"type": "string"},
                    "device": {"type": "string"},
                    "watermark": {"type": "integer", "minimum": 0},
                    "max_seq": {"type": "integer", "minimum": 0},
                    "events": {"type": "integer", "minimum": 0},
                    "missing": {
                        "type": "array",
                        "description": "seq ranges [from, to] above the watermark not yet seen",
                        "items": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    },
                    "state": {"type": ["string", "null"], "enum": ["online", "offline", None]},
                    "state_since": _NUMBER_OR_NULL,
                    "last_seen": _NUMBER_OR_NULL,
                },
            },
            "StoredEvent": {
                "type": "object",
                "description": "an envelope of wire contract v1 (DESIGN §2)",
                "required": ["id", "seq", "fleet", "device", "type", "ts", "clock", "data"],
                "properties": {
                    "id": {"type": "string"},
                    "seq": {"type": "integer", "minimum": 1, "maximum": SEQ_MAX},
                    "fleet": {"type": "string"},
                    "device": {"type": "string"},
                    "type": {"type": "string"},
                    "ts": {"type": "string"},
                    "clock": {"enum": ["gnss", "ntp", "rtc", "unsynced"]},
                    "data": {"type": "object"},
                    "ref": {"type": "object"},
                    "_flags": {"type": "array", "items": {"type": "string"}},
                },
            },
            "DeadLetter": {
                "type": "object",
                "required": ["received", "topic", "reason", "size"],
                "properties": {
                    "received": {"type": "number"},
                    "topic": {"type": "string"},
                    "reason": {"type": "string"},
                    "size": {"type": "integer", "minimum": 0},
                    "count": {"type": "integer", "minimum": 1},
                    "first_seen": _NUMBER_OR_NULL,
                },
            },
        }
    },
}


class QueryError(Exception):
    """A query parameter that is not what its operation takes; ``name`` names it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name


def _params(query: Mapping[str, str], allowed: Mapping[str, Any]) -> dict[str, Any]:
    """Parse ``query`` strictly against ``allowed`` (name -> (lo, hi, default) for integers,
    ``None`` for identifiers); raise QueryError naming the parameter."""
    keys = [k for k, _ in query.items()]  # multidict dedups keys(): items() has them all
    for name in keys:
        if name not in allowed:
            shown = name if name.isprintable() and len(name) <= 64 else repr(name[:64])
            known = f"known: {', '.join(allowed)}" if allowed else "this operation takes none"
            raise QueryError(shown, f"unknown parameter ({known})")
        if keys.count(name) > 1:
            raise QueryError(name, "given more than once")
    out: dict[str, Any] = {}
    for name, spec in allowed.items():
        raw = query.get(name)
        if spec is None:
            if raw is not None and not _IDENT.match(raw):
                raise QueryError(name, f"must match {IDENT_RE}")
            out[name] = raw
            continue
        lo, hi, default = spec
        if raw is None:
            out[name] = default
        elif not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
            raise QueryError(name, f"must be an integer from {lo} to {hi}")
        else:
            out[name] = int(raw)
    return out


def _bad_query(exc: QueryError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=400)


def build_app(
    timeline: Timeline, health: HealthRegistry, *, idle_timeout: float = 30.0
) -> web.Application:
    """The aiohttp application of the hub API."""

    async def get_health(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        return web.json_response(
            {
                "events": await timeline.count("events"),
                "dead_letters": await timeline.count("dead_letters"),
                "components": health.snapshot(),
            }
        )

    async def get_devices(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        return web.json_response(await timeline.devices())

    async def get_events(request: web.Request) -> web.Response:
        try:
            q = _params(
                request.query,
                {
                    "fleet": None,
                    "device": None,
                    "after_seq": (0, SEQ_MAX, 0),
                    "limit": (1, LIMIT_MAX, 1000),
                },
            )
        except QueryError as exc:
            return _bad_query(exc)
        out = [
            env
            async for env in timeline.events(
                q["fleet"], q["device"], q["after_seq"], q["limit"], with_flags=True
            )
        ]
        return web.json_response(out)

    async def get_dead(request: web.Request) -> web.Response:
        try:
            q = _params(request.query, {"limit": (1, LIMIT_MAX, 100)})
        except QueryError as exc:
            return _bad_query(exc)
        return web.json_response(await timeline.dead_letters(q["limit"]))

    async def get_openapi(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        return web.json_response(OPENAPI)

    # keepalive_timeout is armed when a connection opens and re-armed after each request: a
    # client that sends nothing, or trickles its headers, is closed after idle_timeout
    app = web.Application(handler_args={"keepalive_timeout": idle_timeout})
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/devices", get_devices)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/dead-letters", get_dead)
    app.router.add_get("/v1/openapi.json", get_openapi)
    return app
