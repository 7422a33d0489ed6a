"""The delivery API: parcels, routes, exceptions, webhook subscriptions and the stream.

``add_delivery_routes(app, doc, store=..., stream=..., check_scope=...)`` adds the operations
below to the hub's aiohttp application and their description to its OpenAPI document::

    GET    /v1/parcels/{id}?fleet=F                        a parcel: status, full history, ETA
    GET    /v1/routes/{id}?fleet=F                         a route's stops, statuses and ETAs
    GET    /v1/exceptions?fleet=F[&state=][&type=][&limit=] exceptions, newest first
    POST   /v1/fleets/{fleet}/webhooks                     subscribe (the secret is shown once)
    GET    /v1/fleets/{fleet}/webhooks                     the fleet's subscriptions
    GET    /v1/fleets/{fleet}/webhooks/{id}                one subscription
    DELETE /v1/fleets/{fleet}/webhooks/{id}                unsubscribe (its queue goes too)
    GET    /v1/fleets/{fleet}/webhooks/{id}/deliveries     its deliveries (pending, delivered, dead)
    POST   /v1/fleets/{fleet}/webhooks/{id}/retry          dead deliveries back in the queue
    GET    /v1/fleets/{fleet}/stream[?kinds=a,b]           server-sent events (Last-Event-ID)

Every operation names its fleet (path or ``fleet`` query) and calls ``check_scope(request,
fleet)`` before it reads anything, so the hub's tokens apply (``DELIVERY_ACCESS`` gives the
right each operation needs). Answers are what the projector last wrote
(``hub_bridge.delivery.store``): the same payloads as the webhooks and the stream carry.
Parameters are parsed strictly: an unknown or repeated one, or a value out of range, is
``400 {"error"}`` naming it.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edge_agent.wire import jsonbounds
from edge_agent.wire.envelope import IDENT_RE
from hub_bridge.delivery.push import is_public_address
from hub_bridge.delivery.sse import StreamHub
from hub_bridge.delivery.store import (
    KINDS,
    STATES,
    DeliveryStore,
    Subscription,
    new_secret,
    new_subscription_id,
)
from hub_bridge.store import StoreUnavailable

__all__ = [
    "DELIVERY_ACCESS",
    "OPENAPI_PATHS",
    "OPENAPI_SCHEMAS",
    "CheckScope",
    "add_delivery_routes",
]

CheckScope = Callable[[web.Request, str], Awaitable[None] | None]
"""Raises an ``aiohttp.web.HTTPException`` (401, 403) when the request may not see ``fleet``."""

ID_MAX = 256
"""Longest parcel or route id taken (label texts, GS1 SSCCs, route names)."""
LIMIT_MAX = 10_000
BODY_MAX = 16 * 1024
BODY_TIMEOUT_S = 30.0
SUBSCRIPTIONS_MAX = 100
"""Subscriptions per fleet."""
URL_MAX = 2048
SECRET_MIN, SECRET_MAX = 16, 256
_IDENT = re.compile(IDENT_RE.strip("^$"))
_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_SUB_ID = re.compile(r"wh_[0-9a-f]{16}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_NOTICE_ID = re.compile(r"[\x21-\x7e]{1,256}")
EXC_STATES = ("open", "resolved", "all")

DELIVERY_ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/v1/parcels/{id}"): "read",
    ("GET", "/v1/routes/{id}"): "read",
    ("GET", "/v1/exceptions"): "read",
    ("POST", "/v1/fleets/{fleet}/webhooks"): "webhooks",
    ("GET", "/v1/fleets/{fleet}/webhooks"): "read",
    ("GET", "/v1/fleets/{fleet}/webhooks/{id}"): "read",
    ("DELETE", "/v1/fleets/{fleet}/webhooks/{id}"): "webhooks",
    ("GET", "/v1/fleets/{fleet}/webhooks/{id}/deliveries"): "read",
    ("POST", "/v1/fleets/{fleet}/webhooks/{id}/retry"): "webhooks",
    ("GET", "/v1/fleets/{fleet}/stream"): "read",
}
"""The right each operation needs (the hub's token rules); ``webhooks`` manages subscriptions."""


# -- the OpenAPI fragments -------------------------------------------------------------------


def _json(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_ERR = _ref("Error")
_BAD = _json(_ERR, "a parameter or the body is invalid (named)")
_UNAVAILABLE = _json(_ERR, "the store cannot be read or written just now")
_FLEET_Q = {
    "name": "fleet",
    "in": "query",
    "required": True,
    "description": "the fleet",
    "schema": {"type": "string", "pattern": IDENT_RE},
}
_FLEET_P = {
    "name": "fleet",
    "in": "path",
    "required": True,
    "description": "the fleet",
    "schema": {"type": "string", "pattern": IDENT_RE},
}
_SUB_P = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the subscription",
    "schema": {"type": "string", "pattern": f"^{_SUB_ID.pattern}$"},
}


def _id_param(text: str) -> dict[str, Any]:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": text,
        "schema": {"type": "string", "minLength": 1, "maxLength": ID_MAX},
    }


def _limit(default: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "at most this many",
        "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": default},
    }


_HISTORY_ITEM = {
    "type": "object",
    "required": ["ts", "status", "event", "applied"],
    "properties": {
        "ts": {"type": "string"},
        "status": {"type": ["string", "null"]},
        "event": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "device": {"type": "string"},
                "seq": {"type": ["integer", "null"]},
            },
        },
        "applied": {"type": "boolean"},
        "flag": {"type": "string", "description": "why it was not applied (backwards)"},
    },
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Notice": {
        "type": "object",
        "description": (
            "One change: the body of a webhook and the data of a stream event. `id` is the "
            "same every time the same change is told (receivers de-duplicate on it)."
        ),
        "required": ["id", "kind", "fleet", "ts", "key", "payload"],
        "properties": {
            "id": {"type": "string"},
            "kind": {"enum": list(KINDS)},
            "fleet": {"type": "string"},
            "ts": {"type": "string", "description": "event time, ISO 8601 UTC"},
            "key": {"type": "string", "description": "the parcel, route or device it orders by"},
            "payload": {
                "type": "object",
                "description": "parcel.status: a Parcel; stop.eta: a stop of a Route with "
                "route, fleet and vehicle; exception.*: an Exception as raised or resolved",
            },
        },
    },
    "Parcel": {
        "type": "object",
        "required": ["parcel", "fleet", "status", "history"],
        "properties": {
            "parcel": {"type": "string"},
            "fleet": {"type": "string"},
            "status": {
                "enum": [
                    "planned",
                    "loaded",
                    "out_for_delivery",
                    "approaching",
                    "arrived",
                    "delivered",
                    "failed_attempt",
                    "misloaded",
                    "missing",
                    "returned",
                ]
            },
            "route": {"type": ["string", "null"]},
            "stop": {"type": ["string", "null"]},
            "eta": {"type": ["string", "null"]},
            "history": {"type": "array", "items": _HISTORY_ITEM},
        },
    },
    "Route": {
        "type": "object",
        "required": ["route", "fleet", "stops"],
        "properties": {
            "route": {"type": "string"},
            "fleet": {"type": "string"},
            "vehicle": {"type": ["string", "null"]},
            "status": {"type": "string"},
            "stops": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "status", "eta"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"type": "string"},
                        "eta": {"type": ["string", "null"]},
                        "window": {"type": ["array", "null"], "items": {"type": "string"}},
                        "parcels": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "DeliveryException": {
        "type": "object",
        "required": ["id", "fleet", "type", "state", "raised_at", "raised"],
        "properties": {
            "id": {"type": "string"},
            "fleet": {"type": "string"},
            "type": {"type": ["string", "null"]},
            "key": {"type": "string"},
            "state": {"enum": ["open", "resolved"]},
            "raised_at": {"type": "string"},
            "resolved_at": {"type": ["string", "null"]},
            "raised": _ref("Notice"),
            "resolved": {"oneOf": [_ref("Notice"), {"type": "null"}]},
        },
    },
    "Subscription": {
        "type": "object",
        "required": ["id", "fleet", "url", "kinds", "types", "created", "active"],
        "properties": {
            "id": {"type": "string"},
            "fleet": {"type": "string"},
            "url": {"type": "string"},
            "kinds": {"type": "array", "items": {"enum": list(KINDS)}},
            "types": {"type": "array", "items": {"type": "string"}},
            "description": {"type": "string"},
            "created": {"type": "number"},
            "active": {"type": "boolean"},
            "secret": {
                "type": "string",
                "description": "only in the answer to its creation: keep it, it is not shown again",
            },
        },
    },
    "WebhookDelivery": {
        "type": "object",
        "required": ["notice", "pos", "key", "kind", "state", "attempts"],
        "properties": {
            "notice": {"type": "string"},
            "pos": {"type": "integer"},
            "key": {"type": "string"},
            "kind": {"type": "string"},
            "state": {"enum": list(STATES)},
            "attempts": {"type": "integer", "minimum": 0},
            "created": {"type": "number"},
            "next_at": {"type": ["number", "null"]},
            "last_at": {"type": ["number", "null"]},
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "done_at": {"type": ["number", "null"]},
        },
    },
}

_SIGNING = (
    "Each POST carries X-LM-Event (the notice's kind), X-LM-Delivery (the notice's id, the "
    "same on every retry) and X-LM-Signature: t=UNIX,v1=HEX where HEX is the "
    "HMAC-SHA256 of the bytes `{t}.{body}` keyed with the subscription's secret. A 2xx "
    "answer delivers it; anything else is retried with exponential backoff and jitter, then "
    "the delivery is dead (listed under deliveries, put back by retry). Notices of one key "
    "(a parcel, a route) are delivered in order."
)

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/parcels/{id}": {
        "get": {
            "summary": "a parcel: its status, its full history across devices, its ETA",
            "parameters": [_id_param("the parcel (its label text)"), _FLEET_Q],
            "responses": {
                "200": _json(_ref("Parcel"), "the parcel"),
                "400": _BAD,
                "404": _json(_ERR, "no such parcel in this fleet"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/routes/{id}": {
        "get": {
            "summary": "a route: its stops with their statuses and ETAs",
            "parameters": [_id_param("the route"), _FLEET_Q],
            "responses": {
                "200": _json(_ref("Route"), "the route"),
                "400": _BAD,
                "404": _json(_ERR, "no such route in this fleet"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/exceptions": {
        "get": {
            "summary": "a fleet's exceptions, the most recently raised first",
            "parameters": [
                _FLEET_Q,
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "description": "open (default), resolved or all",
                    "schema": {"enum": list(EXC_STATES), "default": "open"},
                },
                {
                    "name": "type",
                    "in": "query",
                    "required": False,
                    "description": "only these types, comma-separated (late_risk,misload)",
                    "schema": {"type": "string", "maxLength": 1024, "pattern": "^[a-z0-9_.,]*$"},
                },
                _limit(100),
            ],
            "responses": {
                "200": _json({"type": "array", "items": _ref("DeliveryException")}, "exceptions"),
                "400": _BAD,
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/fleets/{fleet}/webhooks": {
        "post": {
            "summary": "subscribe a URL to the fleet's notices",
            "description": "The body names the URL (http or https), the notice kinds taken "
            "(all when empty), the exception types or causing event types taken (all when "
            "empty), and the signing secret (one is generated when absent). The answer shows "
            "the secret once. " + _SIGNING,
            "parameters": [_FLEET_P],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["url"],
                            "additionalProperties": False,
                            "properties": {
                                "url": {"type": "string", "maxLength": URL_MAX},
                                "kinds": {"type": "array", "items": {"enum": list(KINDS)}},
                                "types": {
                                    "type": "array",
                                    "items": {"type": "string", "pattern": "^[a-z][a-z0-9_.]*$"},
                                },
                                "secret": {
                                    "type": "string",
                                    "minLength": SECRET_MIN,
                                    "maxLength": SECRET_MAX,
                                },
                                "description": {"type": "string", "maxLength": 200},
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _json(_ref("Subscription"), "subscribed; the secret is in the answer"),
                "400": _BAD,
                "408": _json(_ERR, f"the body was not received within {BODY_TIMEOUT_S:g} s"),
                "409": _json(_ERR, f"the fleet has {SUBSCRIPTIONS_MAX} subscriptions already"),
                "413": _json(_ERR, f"more than {BODY_MAX} bytes"),
                "503": _UNAVAILABLE,
            },
        },
        "get": {
            "summary": "the fleet's webhook subscriptions (without their secrets)",
            "parameters": [_FLEET_P],
            "responses": {
                "200": _json({"type": "array", "items": _ref("Subscription")}, "oldest first"),
                "400": _BAD,
                "503": _UNAVAILABLE,
            },
        },
    },
    "/v1/fleets/{fleet}/webhooks/{id}": {
        "get": {
            "summary": "one subscription, with how many deliveries are pending and dead",
            "parameters": [_FLEET_P, _SUB_P],
            "responses": {
                "200": _json(_ref("Subscription"), "the subscription"),
                "400": _BAD,
                "404": _json(_ERR, "no such subscription in this fleet"),
                "503": _UNAVAILABLE,
            },
        },
        "delete": {
            "summary": "unsubscribe: the subscription and its queue are deleted",
            "parameters": [_FLEET_P, _SUB_P],
            "responses": {
                "204": {"description": "deleted"},
                "400": _BAD,
                "404": _json(_ERR, "no such subscription in this fleet"),
                "503": _UNAVAILABLE,
            },
        },
    },
    "/v1/fleets/{fleet}/webhooks/{id}/deliveries": {
        "get": {
            "summary": "a subscription's deliveries, newest first",
            "parameters": [
                _FLEET_P,
                _SUB_P,
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "description": "only pending, delivered or dead ones",
                    "schema": {"enum": list(STATES)},
                },
                _limit(100),
            ],
            "responses": {
                "200": _json({"type": "array", "items": _ref("WebhookDelivery")}, "deliveries"),
                "400": _BAD,
                "404": _json(_ERR, "no such subscription in this fleet"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/fleets/{fleet}/webhooks/{id}/retry": {
        "post": {
            "summary": "put dead deliveries back in the queue (one notice, or all)",
            "parameters": [_FLEET_P, _SUB_P],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"notice": {"type": "string", "maxLength": 256}},
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["requeued"],
                        "properties": {"requeued": {"type": "integer", "minimum": 0}},
                    },
                    "how many went back in the queue",
                ),
                "400": _BAD,
                "404": _json(_ERR, "no such subscription in this fleet"),
                "408": _json(_ERR, f"the body was not received within {BODY_TIMEOUT_S:g} s"),
                "413": _json(_ERR, f"more than {BODY_MAX} bytes"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/fleets/{fleet}/stream": {
        "get": {
            "summary": "the fleet's notices as server-sent events, live",
            "description": "Each event: `id` its position in the notification log, `event` "
            "the notice's kind, `data` the Notice's JSON. Reconnect with the Last-Event-ID "
            "header (or `last_event_id`) to get what was missed first, from the log. A client "
            "too slow to keep up is told in a comment and disconnected (it resumes the same "
            "way). A comment is sent every 15 s when nothing happens.",
            "parameters": [
                _FLEET_P,
                {
                    "name": "kinds",
                    "in": "query",
                    "required": False,
                    "description": "only these kinds, comma-separated",
                    "schema": {"type": "string", "maxLength": 256},
                },
                {
                    "name": "last_event_id",
                    "in": "query",
                    "required": False,
                    "description": "resume after this position (as the Last-Event-ID header)",
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "resume after this position",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                },
            ],
            "responses": {
                "200": {
                    "description": "the stream (text/event-stream), until the client leaves",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _BAD,
                "503": _json(_ERR, "too many stream clients, or the store cannot be read"),
            },
        }
    },
}


# -- parsing -----------------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _shown(text: str) -> str:
    return text if text.isprintable() and len(text) <= 64 else repr(text[:64])


def _query(request: web.Request, allowed: Mapping[str, Any]) -> dict[str, Any]:
    """Strict query parsing: ``allowed`` maps a name to ``"ident"``, ``"text"``, a tuple of
    choices, or ``(lo, hi, default)`` integers."""
    keys = [k for k, _ in request.query.items()]
    for name in keys:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise _BadRequest(400, f"{_shown(name)}: unknown parameter (known: {known})")
        if keys.count(name) > 1:
            raise _BadRequest(400, f"{name}: given more than once")
    out: dict[str, Any] = {}
    for name, spec in allowed.items():
        raw = request.query.get(name)
        if spec == "ident":
            if raw is not None and not _IDENT.fullmatch(raw):
                raise _BadRequest(400, f"{name}: must match {IDENT_RE}")
            out[name] = raw
        elif spec == "text":
            if raw is not None and (len(raw) > 1024 or not raw.isprintable()):
                raise _BadRequest(400, f"{name}: at most 1024 printable characters")
            out[name] = raw
        elif isinstance(spec, tuple) and spec and isinstance(spec[0], str):
            if raw is not None and raw not in spec:
                raise _BadRequest(400, f"{name}: one of {', '.join(spec)}")
            out[name] = raw
        else:
            lo, hi, default = spec
            if raw is None:
                out[name] = default
            elif not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
                raise _BadRequest(400, f"{name}: must be an integer from {lo} to {hi}")
            else:
                out[name] = int(raw)
    return out


def _fleet_query(q: Mapping[str, Any]) -> str:
    fleet = q.get("fleet")
    if fleet is None:
        raise _BadRequest(400, "fleet: required (the fleet the parcel, route or exception is of)")
    return str(fleet)


def _path_fleet(request: web.Request) -> str:
    fleet = request.match_info["fleet"]
    if not _IDENT.fullmatch(fleet):
        raise _BadRequest(400, f"fleet: must match {IDENT_RE}")
    return fleet


def _path_id(request: web.Request) -> str:
    pid = request.match_info["id"]
    if not 1 <= len(pid) <= ID_MAX or not pid.isprintable():
        raise _BadRequest(400, f"id: 1 to {ID_MAX} printable characters")
    return pid


def _sub_id(request: web.Request) -> str:
    sid = request.match_info["id"]
    if not _SUB_ID.fullmatch(sid):
        raise _BadRequest(400, f"id: not a subscription id ({_SUB_ID.pattern})")
    return sid


def _list_of(value: Any, name: str, check: Callable[[str], bool], what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 64:
        raise _BadRequest(400, f"{name}: a list of at most 64 {what}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not check(item):
            raise _BadRequest(400, f"{name}[{i}]: not {what}")
    return tuple(dict.fromkeys(value))


def check_url(url: Any) -> str:
    """A webhook URL: http(s), a host, no credentials, no fragment, at most ``URL_MAX``."""
    if not isinstance(url, str) or not url:
        raise _BadRequest(400, "url: a string is required")
    if len(url) > URL_MAX or not url.isprintable() or any(c.isspace() for c in url):
        raise _BadRequest(400, f"url: at most {URL_MAX} printable characters, no spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _BadRequest(400, f"url: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _BadRequest(400, "url: must be http(s)://host[:port]/path")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise _BadRequest(400, "url: no credentials and no fragment (the secret signs)")
    if port == 0:
        raise _BadRequest(400, "url: port 0")
    return url


async def check_public(url: str) -> None:
    """Refuse (400) a receiver that is not on a public address: its address literal, or every
    address its name resolves to now (each connection is checked again when it is made)."""
    host = (urlsplit(url).hostname or "").strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = [host]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise _BadRequest(400, f"url: {host!r} cannot be resolved ({exc})") from None
        addresses = [str(info[4][0]) for info in infos]
    if not any(is_public_address(a) for a in addresses):
        raise _BadRequest(
            400,
            f"url: {host!r} is not on a public address (a receiver inside the hub's network needs"
            " delivery.webhooks.allow_private)",
        )


async def _body(request: web.Request, required: bool) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > BODY_MAX:
        raise _BadRequest(413, f"the body is more than {BODY_MAX} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.content.iter_chunked(16 * 1024):
                size += len(chunk)
                if size > BODY_MAX:
                    raise _BadRequest(413, f"the body is more than {BODY_MAX} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _BadRequest(408, f"the body was not received within {BODY_TIMEOUT_S:g} s") from None
    raw = b"".join(chunks)
    if not raw.strip():
        if required:
            raise _BadRequest(400, "the body must be a JSON object")
        return {}
    try:
        doc = jsonbounds.loads(raw)
        if not isinstance(doc, dict):
            raise _BadRequest(400, "the body must be a JSON object")
        jsonbounds.check(doc)
    except jsonbounds.JsonBoundsError as exc:
        raise _BadRequest(400, f"the body is {exc}") from None
    return doc


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _json_text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="application/json")


# -- the routes ----------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_delivery_routes(
    app: web.Application,
    doc: dict[str, Any] | None,
    *,
    store: DeliveryStore,
    stream: StreamHub | None = None,
    check_scope: CheckScope | None = None,
    clock: Callable[[], float] = time.time,
    allow_private: bool = True,
) -> None:
    """Add the delivery operations to ``app`` and their description to ``doc`` (an OpenAPI
    3.1 document with ``paths`` and ``components.schemas``; None leaves it alone).
    ``stream`` serves ``/stream`` (503 without it); ``check_scope`` is called with every
    request's fleet before anything is read."""
    if doc is not None:
        doc.setdefault("paths", {}).update(OPENAPI_PATHS)
        doc.setdefault("components", {}).setdefault("schemas", {}).update(OPENAPI_SCHEMAS)

    async def scope(request: web.Request, fleet: str) -> None:
        if check_scope is not None:
            result = check_scope(request, fleet)
            if inspect.isawaitable(result):
                await result

    def op(fn: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except _BadRequest as exc:
                return _error(exc.status, str(exc))
            except StoreUnavailable as exc:
                return _error(503, f"the delivery store is unavailable: {str(exc)[:200]}")

        return handler

    async def get_parcel(request: web.Request) -> web.StreamResponse:
        q = _query(request, {"fleet": "ident"})
        pid, fleet = _path_id(request), _fleet_query(q)
        await scope(request, fleet)
        found = await store.view("parcel", fleet, pid)
        if found is None:
            return _error(404, f"no parcel {_shown(pid)} in fleet {fleet}")
        return web.json_response(found)

    async def get_route(request: web.Request) -> web.StreamResponse:
        q = _query(request, {"fleet": "ident"})
        rid, fleet = _path_id(request), _fleet_query(q)
        await scope(request, fleet)
        found = await store.view("route", fleet, rid)
        if found is None:
            return _error(404, f"no route {_shown(rid)} in fleet {fleet}")
        return web.json_response(found)

    async def get_exceptions(request: web.Request) -> web.StreamResponse:
        q = _query(
            request,
            {"fleet": "ident", "state": EXC_STATES, "type": "text", "limit": (1, LIMIT_MAX, 100)},
        )
        fleet = _fleet_query(q)
        types = tuple(t for t in (q["type"] or "").split(",") if t)
        for t in types:
            if not _TYPE.fullmatch(t):
                raise _BadRequest(400, f"type: {_shown(t)} is not an exception type")
        await scope(request, fleet)
        found = await store.exceptions(fleet, q["state"] or "open", types, q["limit"])
        return web.json_response(found)

    async def post_webhook(request: web.Request) -> web.StreamResponse:
        _query(request, {})
        fleet = _path_fleet(request)
        await scope(request, fleet)
        body = await _body(request, required=True)
        unknown = set(body) - {"url", "kinds", "types", "secret", "description"}
        if unknown:
            raise _BadRequest(400, f"{_shown(sorted(unknown)[0])}: unknown field")
        url = check_url(body.get("url"))
        if not allow_private:
            await check_public(url)
        kinds = _list_of(body.get("kinds"), "kinds", lambda k: k in KINDS, "a notice kind")
        types = _list_of(body.get("types"), "types", lambda t: bool(_TYPE.fullmatch(t)), "a type")
        secret = body.get("secret")
        if secret is None:
            secret = new_secret()
        elif (
            not isinstance(secret, str)
            or not SECRET_MIN <= len(secret) <= SECRET_MAX
            or not secret.isascii()
            or not secret.isprintable()
        ):
            raise _BadRequest(
                400, f"secret: {SECRET_MIN} to {SECRET_MAX} printable ASCII characters"
            )
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > 200:
            raise _BadRequest(400, "description: a string of at most 200 characters")
        if len(await store.subscriptions(fleet)) >= SUBSCRIPTIONS_MAX:
            raise _BadRequest(409, f"fleet {fleet} has {SUBSCRIPTIONS_MAX} subscriptions already")
        sub = Subscription(
            new_subscription_id(), fleet, url, secret, kinds, types, description, clock()
        )
        await store.add_subscription(sub)
        return web.json_response({**sub.public(), "secret": secret}, status=201)

    async def get_webhooks(request: web.Request) -> web.StreamResponse:
        _query(request, {})
        fleet = _path_fleet(request)
        await scope(request, fleet)
        return web.json_response([s.public() for s in await store.subscriptions(fleet)])

    async def _subscription(request: web.Request) -> Subscription:
        fleet = _path_fleet(request)
        await scope(request, fleet)
        sid = _sub_id(request)
        sub = await store.subscription(fleet, sid)
        if sub is None:
            raise _BadRequest(404, f"no subscription {sid} in fleet {fleet}")
        return sub

    async def get_webhook(request: web.Request) -> web.StreamResponse:
        _query(request, {})
        sub = await _subscription(request)
        return web.json_response(sub.public())

    async def delete_webhook(request: web.Request) -> web.StreamResponse:
        _query(request, {})
        sub = await _subscription(request)
        await store.delete_subscription(sub.fleet, sub.id)
        return web.Response(status=204)

    async def get_deliveries(request: web.Request) -> web.StreamResponse:
        q = _query(request, {"state": STATES, "limit": (1, LIMIT_MAX, 100)})
        sub = await _subscription(request)
        return web.json_response(await store.deliveries(sub.fleet, sub.id, q["state"], q["limit"]))

    async def post_retry(request: web.Request) -> web.StreamResponse:
        _query(request, {})
        sub = await _subscription(request)
        body = await _body(request, required=False)
        if set(body) - {"notice"}:
            raise _BadRequest(400, f"{_shown(sorted(set(body) - {'notice'})[0])}: unknown field")
        notice = body.get("notice")
        if notice is not None and (not isinstance(notice, str) or not _NOTICE_ID.fullmatch(notice)):
            raise _BadRequest(400, "notice: a notice id (1 to 256 printable ASCII characters)")
        n = await store.retry(sub.fleet, sub.id, notice, clock())
        return web.json_response({"requeued": n})

    async def get_stream(request: web.Request) -> web.StreamResponse:
        q = _query(request, {"kinds": "text", "last_event_id": (0, 2**63 - 1, None)})
        fleet = _path_fleet(request)
        await scope(request, fleet)
        kinds = tuple(k for k in (q["kinds"] or "").split(",") if k)
        for k in kinds:
            if k not in KINDS:
                raise _BadRequest(400, f"kinds: {_shown(k)} is not one of {', '.join(KINDS)}")
        last: int | None = q["last_event_id"]
        header = request.headers.get("Last-Event-ID")
        if header is not None and header.strip():
            if not _DIGITS.fullmatch(header.strip()) or len(header.strip()) > 19:
                raise _BadRequest(400, "Last-Event-ID: the id of an event of this stream")
            last = int(header.strip())
        if stream is None:
            return _error(503, "the stream is not running on this hub")
        return await stream.handle(request, fleet, kinds, last)

    r = app.router
    # a label's text may hold a "/" (%2F): the id is the rest of the path, whatever it holds
    # (a newline too: it is refused as not printable, in JSON, not by the router)
    r.add_get("/v1/parcels/{id:[\\s\\S]+}", op(get_parcel))
    r.add_get("/v1/routes/{id:[\\s\\S]+}", op(get_route))
    r.add_get("/v1/exceptions", op(get_exceptions))
    r.add_post("/v1/fleets/{fleet}/webhooks", op(post_webhook))
    r.add_get("/v1/fleets/{fleet}/webhooks", op(get_webhooks))
    r.add_get("/v1/fleets/{fleet}/webhooks/{id}", op(get_webhook))
    r.add_delete("/v1/fleets/{fleet}/webhooks/{id}", op(delete_webhook))
    r.add_get("/v1/fleets/{fleet}/webhooks/{id}/deliveries", op(get_deliveries))
    r.add_post("/v1/fleets/{fleet}/webhooks/{id}/retry", op(post_retry))
    r.add_get("/v1/fleets/{fleet}/stream", op(get_stream))
