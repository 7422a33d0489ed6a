"""The hub's HTTP API: health, devices (watermark, gaps, online state), timeline, dead letters,
commands to devices, and carriers' events.

Read-only but for three operations. ``POST /v1/devices/{fleet}/{device}/commands/{name}`` queues
a command (``hub_bridge/commands.py``; what ``hub-bridge send`` calls), answering ``202`` with
its id once it is committed; the running hub publishes it until the device answers. ``GET`` of
``/v1/devices/{fleet}/{device}/commands`` lists a device's commands with their status and
``/v1/commands/{id}`` shows one with its payload. ``POST /v1/fleets/{fleet}/events`` takes a
carrier's envelopes through the MQTT ingest's checks (``hub_bridge/carriers/intake.py``) and
answers what became of each once they are committed.

Access (``hub_bridge/tenants.py``): one guard runs before every operation, by its line in
``ACCESS`` (the right it needs, or why it is open). With tokens, a request without a valid one is
``401`` (``WWW-Authenticate: Bearer``), a token lacking the right or naming a fleet outside its
scope ``403``; listings are filtered to the token's fleets; another fleet's command looked up by
id is ``404``. ``/v1/health`` (liveness, counters for an operator), ``/v1/provision`` (its claim)
and ``/v1/openapi.json`` are open. Without tokens the API is open: the hub listens on loopback
only then (``tenants.check_listen``). An operation without its line in ``ACCESS`` is refused to
everyone, and ``build_app`` refuses to build an app with one.

Provisioning (``hub_bridge/claims.py``, ``hub_bridge/pki.py``): ``POST /v1/provision`` with
``{"claim": TOKEN, "csr": PEM}`` exchanges a claim for a device certificate once (``201``); an
unknown, expired or used claim is ``403`` with one message for all three, a bad CSR ``400``, a
client that failed too many claims ``429`` with ``Retry-After`` (its claims are not even looked
at meanwhile). ``GET /v1/devices/{fleet}/{device}/certificates`` lists what was issued.

The same aiohttp stack as the agent's local API. ``GET /v1/openapi.json`` describes it
(``OPENAPI`` for an open hub, ``SECURED_OPENAPI`` with tokens: OpenAPI 3.1 with the schema of
every answer).

Query parameters are parsed strictly: ``fleet`` and ``device`` are identifiers of the contract,
``after_seq`` and ``limit`` ASCII decimal integers in their range; an unknown or repeated
parameter (on every operation), or a value out of its range, is ``400 {"error"}`` naming the
parameter. A connection idle, or trickling its request, for ``idle_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from edge_agent.platform.health import HealthRegistry
from edge_agent.wire import jsonbounds
from edge_agent.wire.commands import COMMAND_ID_MAX
from edge_agent.wire.envelope import IDENT_RE, SEQ_MAX
from edge_agent.wire.limits import BATCH_MAX_BYTES
from hub_bridge import pki
from hub_bridge.carriers import intake
from hub_bridge.claims import ROLES, Claim, FailedClaims, token_hash, valid_token
from hub_bridge.commands import (
    COMMAND_NAMES,
    PAYLOAD_MAX_BYTES,
    STATUSES,
    CommandError,
    CommandLimits,
    prepare_command,
)
from hub_bridge.config import PkiSettings
from hub_bridge.store import StoreUnavailable, TimelineStore
from hub_bridge.tenants import OPEN, Principal, Tenants
from hub_bridge.timeline import IssuedCertificate

__all__ = [
    "ACCESS",
    "DOCUMENT",
    "OPENAPI",
    "PRINCIPAL",
    "SECURED_OPENAPI",
    "Access",
    "build_app",
    "check_scope",
]

LIMIT_MAX = 10_000
_IDENT = re.compile(IDENT_RE)
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() also takes "²" and "٣"
COMMAND_ID_RE = rf"^[A-Za-z0-9_.:-]{{1,{COMMAND_ID_MAX}}}$"
# fullmatch without the anchors: "$" would also take a trailing newline (a path may carry %0A)
_COMMAND_ID = re.compile(COMMAND_ID_RE.strip("^$"))
_IDENT_FULL = re.compile(IDENT_RE.strip("^$"))
BODY_TIMEOUT_S = 30.0
"""A command body not received within this is answered 408."""
PROVISION_MAX_BYTES = 16 * 1024
"""A provisioning request is a token and a CSR (an RSA-4096 one is under 2 KiB in PEM)."""
CLAIM_REFUSED = "the claim is unknown, expired or already used"
"""The one answer to every claim that is refused: which of the three it was is not told."""


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
_ERROR = {"$ref": "#/components/schemas/Error"}


def _path_param(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": text, "schema": schema}


_DEVICE_PARAMS = [
    _path_param("fleet", {"type": "string", "pattern": IDENT_RE}, "the device's fleet"),
    _path_param("device", {"type": "string", "pattern": IDENT_RE}, "the device"),
]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hub-bridge", "version": "1"},
    "paths": {
        "/v1/health": {
            "get": {
                "summary": "liveness; the hub's counters for an operator",
                "description": (
                    "Open without a token (a liveness probe has none): the answer is then "
                    '{"status": "up"} alone. The counters of the whole hub (events, dead '
                    "letters, every component's state) are given to a token of every fleet "
                    "with the admin right, and to every client of a hub without tokens."
                ),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {
                                "status": {"const": "up"},
                                "events": {"type": "integer", "minimum": 0},
                                "dead_letters": {"type": "integer", "minimum": 0},
                                "components": {"type": "object"},
                            },
                        },
                        "up; for an operator: events stored, dead letters kept, every "
                        "component's state",
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
        "/v1/fleets/{fleet}/events": {
            "post": {
                "summary": "a carrier's events, stored as if its devices had published them",
                "description": (
                    "For carriers without edge devices (their system posts what their own "
                    "tracking knows). The body is one envelope (DESIGN §2), "
                    '{"events": [envelope, ...]} or a JSON array of envelopes, at most '
                    f"{BATCH_MAX_BYTES} bytes and {intake.EVENTS_MAX} envelopes. Every envelope "
                    "passes the MQTT ingest's checks on lm/v1/{fleet}/{device}/events of its "
                    "own device: an invalid one is rejected alone (and dead-lettered, its seq "
                    "accounted for); one whose fleet is not the path's is a forgery, the whole "
                    "request is refused (400) and dead-lettered. The carrier gives each of its "
                    "devices (vehicles, or one feed) seqs as a device does: per device, from 1, "
                    "never reused; an id already stored is a duplicate, a seq stored with "
                    "another id is rejected. Everything stored is committed before the answer: "
                    "the answer is the ack."
                ),
                "parameters": [
                    _path_param("fleet", {"type": "string", "pattern": IDENT_RE}, "the carrier")
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"type": "object", "required": ["events"]},
                                    {"type": "array", "minItems": 1},
                                    {"type": "object", "required": ["id", "seq"]},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"$ref": "#/components/schemas/Ingested"},
                        "what became of each envelope; the watermark of each device named",
                    ),
                    "400": _json(_ERROR, "not JSON, not one of the shapes, empty, or forged"),
                    "408": _json(_ERROR, f"the body was not received within {BODY_TIMEOUT_S:g} s"),
                    "413": _json(_ERROR, "more bytes or envelopes than one request takes"),
                    "503": _json(_ERROR, "the store cannot be written: nothing was stored"),
                },
            }
        },
        "/v1/devices/{fleet}/{device}/commands/{name}": {
            "post": {
                "summary": "queue a command to a device, kept until the device answers it",
                "description": (
                    "The body is the command: a JSON object of at most "
                    f"{PAYLOAD_MAX_BYTES} bytes with its id added, bounded like every input of "
                    "the hub (nesting, 64-bit integers, finite numbers, no lone surrogate), "
                    "without an id of its own. The hub gives it an id and publishes it on "
                    "lm/v1/{fleet}/{device}/cmd/{name} (QoS 1) at once, again at each birth "
                    "of the device and after a capped backoff until the device answers on "
                    "cmd-ack. It supersedes the device's unanswered command of the same name. "
                    "A manifest or a load plan is checked by the device, whose refusal is "
                    "recorded with the command."
                ),
                "parameters": [
                    *_DEVICE_PARAMS,
                    _path_param("name", {"enum": list(COMMAND_NAMES)}, "the command"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "not": {"required": ["id"]}}
                        }
                    },
                },
                "responses": {
                    "202": _json(
                        {"$ref": "#/components/schemas/Queued"}, "committed: the hub sends it"
                    ),
                    "400": _json(_ERROR, "not a bounded JSON object, or a parameter is invalid"),
                    "408": _json(_ERROR, f"the body was not received within {BODY_TIMEOUT_S:g} s"),
                    "413": _json(_ERROR, f"more than {PAYLOAD_MAX_BYTES} bytes with its id"),
                    "503": _json(_ERROR, "the store cannot be written: nothing was queued"),
                },
            }
        },
        "/v1/devices/{fleet}/{device}/commands": {
            "get": {
                "summary": "a device's commands, newest first, with their status",
                "parameters": [
                    *_DEVICE_PARAMS,
                    _int_param("limit", 1, LIMIT_MAX, 100, "at most this many commands"),
                ],
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"$ref": "#/components/schemas/Command"}},
                        "kept commands: unanswered ones, and answered or superseded ones "
                        "within the retention",
                    ),
                    "400": _json(_ERROR, "a parameter is invalid (named)"),
                },
            }
        },
        "/v1/commands/{id}": {
            "get": {
                "summary": "one command with its status and its payload as published",
                "parameters": [
                    _path_param("id", {"type": "string", "pattern": COMMAND_ID_RE}, "its id")
                ],
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                {"$ref": "#/components/schemas/Command"},
                                {
                                    "type": "object",
                                    "required": ["payload"],
                                    "properties": {"payload": {"type": "object"}},
                                },
                            ]
                        },
                        "the command",
                    ),
                    "400": _json(_ERROR, "a parameter is invalid (named)"),
                    "404": _json(_ERROR, "no such command (never queued, or pruned)"),
                },
            }
        },
        "/v1/provision": {
            "post": {
                "summary": "exchange a claim and a CSR for the device's certificate, once",
                "description": (
                    "The claim (hub-bridge claim create) names the fleet, device and role; the "
                    "certificate's subject is CN {fleet}/{device} whatever the CSR says, for the "
                    "CSR's public key (EC P-256/384/521 or RSA of 2048 bits or more, the CSR "
                    "signed with it). The claim is used up in the transaction that records the "
                    "certificate. Failed claims are rate-limited per client address."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["claim", "csr"],
                                "properties": {
                                    "claim": {"type": "string"},
                                    "csr": {"type": "string", "description": "PEM"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(
                        {"$ref": "#/components/schemas/Provisioned"}, "the device's certificate"
                    ),
                    "400": _json(_ERROR, "not a JSON object with claim and csr, or a bad CSR"),
                    "403": _json(_ERROR, "the claim is unknown, expired or used (one message)"),
                    "408": _json(_ERROR, f"the body was not received within {BODY_TIMEOUT_S:g} s"),
                    "413": _json(_ERROR, f"more than {PROVISION_MAX_BYTES} bytes"),
                    "429": {
                        "description": "too many failed claims from this address",
                        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                    "503": _json(_ERROR, "the hub has no CA, or its store cannot be written"),
                },
            }
        },
        "/v1/devices/{fleet}/{device}/certificates": {
            "get": {
                "summary": "the certificates issued to a device, newest first",
                "parameters": _DEVICE_PARAMS,
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"$ref": "#/components/schemas/Certificate"}},
                        "issued certificates with their revocation",
                    ),
                    "400": _json(_ERROR, "a parameter is invalid (named)"),
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
            "Queued": {
                "type": "object",
                "required": ["id", "fleet", "device", "name", "status", "superseded"],
                "properties": {
                    "id": {"type": "string"},
                    "fleet": {"type": "string"},
                    "device": {"type": "string"},
                    "name": {"enum": list(COMMAND_NAMES)},
                    "status": {"const": "queued"},
                    "superseded": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "ids of the unanswered commands of this name it replaces",
                    },
                    "device_known": {
                        "type": "boolean",
                        "description": "whether the hub has heard of the device yet",
                    },
                },
            },
            "Command": {
                "type": "object",
                "required": ["id", "fleet", "device", "name", "status", "created", "sent_count"],
                "properties": {
                    "id": {"type": "string"},
                    "fleet": {"type": "string"},
                    "device": {"type": "string"},
                    "name": {"type": "string"},
                    "status": {"enum": list(STATUSES)},
                    "created": {"type": "number"},
                    "sent_count": {"type": "integer", "minimum": 0},
                    "last_sent": _NUMBER_OR_NULL,
                    "next_send": _NUMBER_OR_NULL,
                    "acked_at": _NUMBER_OR_NULL,
                    "ok": {"type": ["boolean", "null"]},
                    "error": {"type": ["string", "null"]},
                    "superseded_by": {"type": ["string", "null"]},
                    "size": {"type": "integer", "minimum": 0},
                },
            },
            "Provisioned": {
                "type": "object",
                "required": ["fleet", "device", "role", "certificate", "ca", "broker", "hub_api"],
                "properties": {
                    "fleet": {"type": "string"},
                    "device": {"type": "string"},
                    "role": {"enum": list(ROLES)},
                    "certificate": {"type": "string", "description": "PEM, CN {fleet}/{device}"},
                    "ca": {"type": "string", "description": "the fleet CA's certificate, PEM"},
                    "broker": {"type": "string", "description": "mqtts:// URL to connect to"},
                    "hub_api": {"type": "string", "description": "the hub API's URL"},
                    "serial": {"type": "string", "description": "hex"},
                    "not_after": {"type": "number"},
                },
            },
            "Certificate": {
                "type": "object",
                "required": ["serial", "fleet", "device", "issued_at", "not_after", "revoked_at"],
                "properties": {
                    "serial": {"type": "string", "description": "hex"},
                    "fleet": {"type": "string"},
                    "device": {"type": "string"},
                    "role": {"type": ["string", "null"]},
                    "issued_at": {"type": "number"},
                    "not_after": {"type": "number"},
                    "revoked_at": _NUMBER_OR_NULL,
                    "certificate": {"type": "string", "description": "PEM"},
                },
            },
            "Ingested": {
                "type": "object",
                "required": ["stored", "duplicates", "rejected", "events", "watermarks"],
                "properties": {
                    "stored": {"type": "integer", "minimum": 0},
                    "duplicates": {"type": "integer", "minimum": 0},
                    "rejected": {"type": "integer", "minimum": 0},
                    "events": {
                        "type": "array",
                        "description": "one per envelope of the request, in its order",
                        "items": {
                            "type": "object",
                            "required": ["id", "seq", "status"],
                            "properties": {
                                "id": {"type": ["string", "null"]},
                                "seq": {"type": ["integer", "null"]},
                                "device": {"type": "string"},
                                "status": {"enum": ["stored", "duplicate", "rejected"]},
                                "error": {"type": "string"},
                            },
                        },
                    },
                    "watermarks": {
                        "type": "object",
                        "description": "device -> every seq up to it is in the timeline",
                        "additionalProperties": {"type": "integer", "minimum": 0},
                    },
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
        },
    },
}


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call an operation: the token's ``right`` it needs, ``None`` for an operation open
    to anyone, with ``why`` it is open. Whatever the right, a ``fleet`` the request names (path
    or query) must be in the token's scope."""

    right: str | None
    why: str = ""
    token_optional: bool = False
    """Open, but a token changes the answer."""


ACCESS: dict[tuple[str, str], Access] = {
    ("GET", "/v1/health"): Access(None, "liveness: a probe has no token", token_optional=True),
    ("GET", "/v1/devices"): Access("read"),
    ("GET", "/v1/events"): Access("read"),
    ("GET", "/v1/dead-letters"): Access("read"),
    ("POST", "/v1/fleets/{fleet}/events"): Access("write-events"),
    ("POST", "/v1/devices/{fleet}/{device}/commands/{name}"): Access("commands"),
    ("GET", "/v1/devices/{fleet}/{device}/commands"): Access("read"),
    ("GET", "/v1/commands/{id}"): Access("read"),
    ("POST", "/v1/provision"): Access(None, "authorised by its one-time claim"),
    ("GET", "/v1/devices/{fleet}/{device}/certificates"): Access("read"),
    ("GET", "/v1/openapi.json"): Access(None, "the description of the API"),
}
"""Every operation of the API and who may call it: an operation without a line here is refused
(403) to everyone, and the document below cannot even be built without one."""


def _secured(
    open_doc: dict[str, Any], access: Mapping[tuple[str, str], Access] = ACCESS
) -> dict[str, Any]:
    """The document of a hub with tokens: ``access`` written in, the bearer scheme everywhere,
    ``401``/``403`` on every operation that needs a token, no security on the open ones."""
    doc = copy.deepcopy(open_doc)
    doc["security"] = [{"bearer": []}]
    doc["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "a token of tenants.tokens"}
    }
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            rule = access[(method.upper(), path)]  # KeyError: an operation without a rule
            if rule.right is None:
                # a token is taken where it says more (health), else not looked at
                op["security"] = [{}, {"bearer": []}] if rule.token_optional else []
                continue
            op["description"] = (
                op.get("description", op["summary"]) + f" Needs a token with the right "
                f"{rule.right!r}" + (", scoped to {fleet}." if "{fleet}" in path else ".")
            )
            op["responses"]["401"] = _json(_ERROR, "no token, or not a token of this hub")
            op["responses"]["403"] = _json(
                _ERROR, f"the token lacks the right {rule.right!r}, or a fleet named is not its"
            )
    return doc


SECURED_OPENAPI = _secured(OPENAPI)
"""What a hub with tokens serves; ``OPENAPI`` is the open hub's (no 401 or 403 there)."""
PRINCIPAL = web.RequestKey("principal", Principal)
"""Who the request is (set by the guard; ``OPEN`` on a hub without tokens)."""
DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("document", dict)
"""The app's own OpenAPI document (a copy of ``OPENAPI``): operations added to the app after
``build_app`` (``hub_bridge.delivery.routes.add_delivery_routes``) describe themselves in it."""


def check_scope(request: web.Request, fleet: str) -> None:
    """For operations added to the app after ``build_app`` whose fleet is not in their path or
    ``fleet`` query (the guard checked those already): raise ``403`` when the request's token
    does not see ``fleet``, ``401`` when the request has none."""
    who = request.get(PRINCIPAL)
    if who is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "a bearer token of this hub is required"}),
            content_type="application/json",
            headers={"WWW-Authenticate": _REALM},
        )
    if not who.sees(fleet):
        shown = fleet if fleet.isprintable() and len(fleet) <= 64 else repr(fleet[:64])
        raise web.HTTPForbidden(
            text=json.dumps({"error": f"token {who.name} is not scoped to fleet {shown}"}),
            content_type="application/json",
        )


_REALM = 'Bearer realm="hub-bridge"'
DEAD_LETTER_SCAN = 100_000
"""Most dead letters read to find a fleet-scoped token's own (dead letters of every fleet share
one bounded table, the newest first)."""


def _fleet_of_topic(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) >= 3 and parts[:2] == ["lm", "v1"] and _IDENT_FULL.fullmatch(parts[2]):
        return parts[2]
    return None


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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _device_of(request: web.Request) -> tuple[str, str]:
    fleet, device = request.match_info["fleet"], request.match_info["device"]
    for name, value in (("fleet", fleet), ("device", device)):
        if not _IDENT_FULL.fullmatch(value):
            raise QueryError(name, f"must match {IDENT_RE}")
    return fleet, device


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused (CommandError 413) as soon as it is longer than ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise CommandError(f"the command is {request.content_length} bytes, more than {limit}", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise CommandError(f"the command is more than {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(
    timeline: TimelineStore,
    health: HealthRegistry,
    *,
    idle_timeout: float = 30.0,
    commands_changed: Callable[[], None] | None = None,
    command_limits: CommandLimits | None = None,
    provisioning: PkiSettings | None = None,
    failed_claims: FailedClaims | None = None,
    clock: Callable[[], float] = time.monotonic,
    tenants: Tenants | None = None,
    max_batch_bytes: int = BATCH_MAX_BYTES,
    future_tolerance_s: float = 600.0,
    extra_access: Mapping[tuple[str, str], Access | str] | None = None,
) -> web.Application:
    """The aiohttp application of the hub API. ``commands_changed`` is called once a command
    is queued (the bridge publishes it then); ``command_limits`` bound the queue;
    ``provisioning`` enables ``POST /v1/provision`` (503 without it), ``failed_claims`` limits
    failed claims per address on ``clock``. ``tenants`` are the API's tokens (``None``: the API
    is open, for a loopback listen address only, see ``tenants.check_listen``);
    ``max_batch_bytes`` and ``future_tolerance_s`` are the ingest's (``ingest.*``), applied to
    carriers' posts as to MQTT batches. ``extra_access`` are the rules of operations added to
    the app after it is built (``(METHOD, path) -> right``, e.g. ``DELIVERY_ACCESS``), their
    description going into ``app[DOCUMENT]``; the app refuses to start with an operation, or a
    documented one, that has no rule."""
    access: dict[tuple[str, str], Access] = dict(ACCESS)
    for key, rule in (extra_access or {}).items():
        access[key] = rule if isinstance(rule, Access) else Access(rule)
    limits = command_limits or CommandLimits()
    # "is None", not "or": an empty FailedClaims is falsy (it has a length)
    limiter = FailedClaims() if failed_claims is None else failed_claims
    authority = None if provisioning is None else pki.AuthorityCache(provisioning.dir)

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The access rule of the operation (``ACCESS``), before anything else of it runs."""
        info = request.match_info
        if info.http_exception is not None:
            return await handler(request)  # the router's 404 or 405: no operation to guard
        resource = info.route.resource
        method = "GET" if request.method == "HEAD" else request.method
        rule = access.get((method, resource.canonical if resource is not None else ""))
        if rule is None:  # fail closed: a route added without its line in ACCESS
            return _error(403, "this operation has no access rule: refused to everyone")
        header = request.headers.get("Authorization")
        principal = OPEN if tenants is None else tenants.authenticate(header)
        if rule.right is None:
            if principal is not None:
                request[PRINCIPAL] = principal
            return await handler(request)
        if principal is None:
            health.count("api", "unauthenticated")
            challenge = _REALM if header is None else f'{_REALM}, error="invalid_token"'
            return web.json_response(
                {"error": "a bearer token of this hub is required (Authorization: Bearer ...)"},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        if not principal.can(rule.right):
            health.count("api", "forbidden")
            return _error(403, f"token {principal.name} lacks the right {rule.right!r}")
        for fleet in (info.get("fleet"), *request.query.getall("fleet", [])):
            if fleet is not None and not principal.sees(fleet):
                health.count("api", "forbidden")
                shown = fleet if fleet.isprintable() and len(fleet) <= 64 else repr(fleet[:64])
                return _error(403, f"token {principal.name} is not scoped to fleet {shown}")
        request[PRINCIPAL] = principal
        return await handler(request)

    async def get_health(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        who = request.get(PRINCIPAL)
        if who is None or not (who.operator and who.can("admin")):
            return web.json_response({"status": "up"})
        return web.json_response(
            {
                "status": "up",
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
        who = request[PRINCIPAL]
        return web.json_response([d for d in await timeline.devices() if who.sees(d["fleet"])])

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
        who = request[PRINCIPAL]
        # a fleet outside the token's scope was refused (403) by the guard; without one, the
        # token's own fleets, one after the other in fleet order: the answer's order is kept
        fleets: list[str | None] = [q["fleet"]]
        if q["fleet"] is None and who.fleets is not None:
            fleets = [*sorted(who.fleets)]
        out: list[dict[str, Any]] = []
        for fleet in fleets:
            left = q["limit"] - len(out)
            if left <= 0:
                break
            out += [
                env
                async for env in timeline.events(
                    fleet, q["device"], q["after_seq"], left, with_flags=True
                )
            ]
        return web.json_response(out)

    async def get_dead(request: web.Request) -> web.Response:
        try:
            q = _params(request.query, {"limit": (1, LIMIT_MAX, 100)})
        except QueryError as exc:
            return _bad_query(exc)
        who = request[PRINCIPAL]
        if who.operator:
            return web.json_response(await timeline.dead_letters(q["limit"]))
        # a token's own: those on its fleets' topics among the newest, read in growing steps
        want, scan = q["limit"], q["limit"]
        while True:
            rows = await timeline.dead_letters(scan)
            own = [r for r in rows if who.sees(_fleet_of_topic(r["topic"]) or "")]
            if len(own) >= want or len(rows) < scan or scan >= DEAD_LETTER_SCAN:
                return web.json_response(own[:want])
            scan = min(scan * 8, DEAD_LETTER_SCAN)

    async def post_command(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
            fleet, device = _device_of(request)
        except QueryError as exc:
            return _bad_query(exc)
        name = request.match_info["name"]
        if name not in COMMAND_NAMES:
            shown = name if name.isprintable() and len(name) <= 64 else repr(name[:64])
            return _error(400, f"name: {shown} is not a command ({', '.join(COMMAND_NAMES)})")
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await _read_body(request, PAYLOAD_MAX_BYTES)
            cid, payload = prepare_command(body)
        except TimeoutError:
            return _error(408, f"the body was not received within {BODY_TIMEOUT_S:g} s")
        except CommandError as exc:
            return _error(exc.status, str(exc))
        try:
            superseded = await timeline.add_command(fleet, device, name, cid, payload, limits)
            known = await timeline.known_device(fleet, device)
        except (sqlite3.OperationalError, StoreUnavailable) as exc:
            health.count("commands", "store-failed")
            return _error(503, f"the command could not be stored: {str(exc)[:200]}")
        health.count("commands", "queued")
        if superseded:
            health.count("commands", "superseded", len(superseded))
        if commands_changed is not None:
            commands_changed()
        answer = {
            "id": cid,
            "fleet": fleet,
            "device": device,
            "name": name,
            "status": "queued",
            "superseded": superseded,
            "device_known": known,
        }
        return web.json_response(answer, status=202)

    async def get_commands(request: web.Request) -> web.Response:
        try:
            q = _params(request.query, {"limit": (1, LIMIT_MAX, 100)})
            fleet, device = _device_of(request)
        except QueryError as exc:
            return _bad_query(exc)
        return web.json_response(await timeline.commands(fleet, device, q["limit"]))

    async def get_command(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        cid = request.match_info["id"]
        if not _COMMAND_ID.fullmatch(cid):
            return _error(400, f"id: must match {COMMAND_ID_RE}")
        found = await timeline.command(cid)
        # another fleet's command is not there for this token: 404, not 403, so that an id
        # does not tell another tenant that it exists
        if found is None or not request[PRINCIPAL].sees(found["fleet"]):
            return _error(404, f"no command {cid}")
        return web.json_response(found)

    async def post_provision(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        client = request.remote or "unknown"
        wait = limiter.retry_after(client, clock())
        if wait > 0:
            health.count("provision", "rate-limited")
            return web.json_response(
                {"error": f"too many failed claims from {client}: try again in {wait:.0f} s"},
                status=429,
                headers={"Retry-After": limiter.retry_after_header(client, clock())},
            )
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await _read_body(request, PROVISION_MAX_BYTES)
        except TimeoutError:
            return _error(408, f"the body was not received within {BODY_TIMEOUT_S:g} s")
        except CommandError:
            return _error(413, f"a provisioning request is at most {PROVISION_MAX_BYTES} bytes")
        try:
            doc = jsonbounds.loads(body)
            if not isinstance(doc, dict):
                return _error(400, 'the body must be a JSON object {"claim", "csr"}')
            jsonbounds.check(doc)
        except jsonbounds.JsonBoundsError as exc:
            return _error(400, f"the body is {exc}")
        token, csr_pem = doc.get("claim"), doc.get("csr")
        if not isinstance(token, str):
            return _error(400, "claim: a string is required")
        if not isinstance(csr_pem, str):
            return _error(400, "csr: a string (PEM) is required")
        try:
            csr = pki.parse_csr(csr_pem)
        except pki.CsrError as exc:
            health.count("provision", "bad-csr")
            return _error(400, str(exc))
        if provisioning is None or authority is None:
            return _error(503, "provisioning is not configured on this hub")
        try:
            ca = await asyncio.to_thread(authority.get)
        except pki.PkiError as exc:
            health.count("provision", "no-ca")
            return _error(503, f"the hub cannot issue certificates: {exc}")

        def issue(claim: Claim) -> IssuedCertificate:
            cert = pki.issue_certificate(
                ca.cert, ca.key, csr, claim.fleet, claim.device, provisioning.cert_validity_days
            )
            return IssuedCertificate(
                cert.serial_number,
                cert.not_valid_after_utc.timestamp(),
                pki.cert_pem(cert).decode(),
            )

        redeemed = None
        if valid_token(token):
            try:
                redeemed = await timeline.redeem_claim(token_hash(token), issue, used_by=client)
            except (sqlite3.Error, StoreUnavailable) as exc:
                health.count("provision", "store-failed")
                return _error(503, f"the certificate could not be recorded: {str(exc)[:200]}")
            except pki.PkiError as exc:
                health.count("provision", "issue-failed")
                return _error(503, f"the certificate could not be issued: {exc}")
        if redeemed is None:
            limiter.failed(client, clock())
            health.count("provision", "claim-refused")
            return _error(403, CLAIM_REFUSED)
        claim, issued = redeemed
        health.count("provision", "issued")
        answer = {
            "fleet": claim.fleet,
            "device": claim.device,
            "role": claim.role,
            "certificate": issued.pem,
            "ca": pki.cert_pem(ca.cert).decode(),
            "broker": provisioning.broker_url,
            "hub_api": provisioning.hub_api_url,
            "serial": format(issued.serial, "x"),
            "not_after": issued.not_after,
        }
        return web.json_response(answer, status=201)

    async def get_certificates(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
            fleet, device = _device_of(request)
        except QueryError as exc:
            return _bad_query(exc)
        return web.json_response(await timeline.certificates(fleet, device))

    async def post_fleet_events(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        fleet = request.match_info["fleet"]
        if not _IDENT_FULL.fullmatch(fleet):
            return _error(400, f"fleet: must match {IDENT_RE}")
        everyone = intake.topic_of(fleet, None)
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await _read_body(request, max_batch_bytes)
        except TimeoutError:
            return _error(408, f"the body was not received within {BODY_TIMEOUT_S:g} s")
        except CommandError as exc:
            reason = f"oversize: {str(exc).removeprefix('the command is ')}"
            return await _refused(everyone, 413, reason, b"")
        try:
            sorted_ = intake.read_body(
                fleet, body, time.time(), future_tolerance_s=future_tolerance_s
            )
        except intake.IntakeError as exc:
            return await _refused(exc.topic, exc.status, exc.reason, body)
        try:
            await _dead_letter_rejects(sorted_)
            results = await timeline.store_many(sorted_.batches)
            answer = intake.answer(sorted_, results)
            for topic, reason in intake.conflicts(sorted_):
                await timeline.dead_letter(topic, reason, body)
        except (sqlite3.OperationalError, StoreUnavailable) as exc:
            health.count("carriers", "store-failed")
            return _error(503, f"the events could not be stored: {str(exc)[:200]}")
        health.count("carriers", "stored", answer["stored"])
        health.count("carriers", "duplicates", answer["duplicates"])
        health.count("carriers", "rejected", answer["rejected"])
        return web.json_response(answer)

    async def _refused(topic: str, status: int, reason: str, body: bytes) -> web.Response:
        health.count("carriers", "dead-letter")
        try:
            await timeline.dead_letter(topic, reason, body)
        except (sqlite3.OperationalError, StoreUnavailable):
            health.count("carriers", "store-failed")  # the refusal is answered all the same
        return _error(status, reason)

    async def _dead_letter_rejects(sorted_: intake.Intake) -> None:
        """The rejects of a request, but those the same device's seq had already (a carrier
        resending a request is recorded once, as a device resending a batch)."""
        by_device: dict[str, list[int]] = {}
        for _, _, _, device, seq in sorted_.rejects:
            if device is not None and seq is not None:
                by_device.setdefault(device, []).append(seq)
        seen = {
            (device, s)
            for device, seqs in by_device.items()
            for s in await timeline.rejected_before(sorted_.fleet, device, seqs[:500])
        }
        for topic, reason, sample, device, seq in sorted_.rejects:
            if (device, seq) in seen:
                continue
            health.count("carriers", "dead-letter")
            await timeline.dead_letter(topic, reason, sample)

    async def get_openapi(request: web.Request) -> web.Response:
        try:
            _params(request.query, {})
        except QueryError as exc:
            return _bad_query(exc)
        doc = request.app[DOCUMENT]
        return web.json_response(doc if tenants is None else _secured(doc, access))

    # keepalive_timeout is armed when a connection opens and re-armed after each request: a
    # client that sends nothing, or trickles its headers, is closed after idle_timeout
    # a request line or header up to 64 KiB reaches the app (aiohttp's own refusal past its
    # default 8 KiB is text/plain, not the documented JSON error)
    handler_args = {
        "keepalive_timeout": idle_timeout,
        "max_line_size": 64 * 1024,
        "max_field_size": 64 * 1024,
    }
    app = web.Application(handler_args=handler_args, middlewares=[guard])
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/devices", get_devices)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/dead-letters", get_dead)
    app.router.add_post("/v1/fleets/{fleet}/events", post_fleet_events)
    app.router.add_post("/v1/devices/{fleet}/{device}/commands/{name}", post_command)
    app.router.add_get("/v1/devices/{fleet}/{device}/commands", get_commands)
    app.router.add_get("/v1/commands/{id}", get_command)
    app.router.add_post("/v1/provision", post_provision)
    app.router.add_get("/v1/devices/{fleet}/{device}/certificates", get_certificates)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app[DOCUMENT] = copy.deepcopy(OPENAPI)

    async def every_operation_has_its_rule(app: web.Application) -> None:
        """At start, once every operation was added: one without a rule stops the hub."""
        ops = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        }
        ops |= {(m.upper(), p) for p, methods in app[DOCUMENT]["paths"].items() for m in methods}
        missing = sorted(ops - set(access))
        if missing:
            shown = ", ".join(f"{m} {p}" for m, p in missing)
            raise RuntimeError(f"hub API: no access rule for {shown} (ACCESS, extra_access)")

    app.on_startup.append(every_operation_has_its_rule)
    return app
