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

Who may ask (issue 10): a client on loopback needs nothing; any other client sends
``Authorization: Bearer <token>`` (``api.token_file``, made by ``edge-agent provision``, or
``api.token``) or gets ``401`` with ``WWW-Authenticate: Bearer``. The token is compared in
constant time (SHA-256 digests through ``hmac.compare_digest``); the file is read again whenever
it changes (inode, size, mtime or ctime), so a rotated token works at once, without a restart; a
missing, empty or invalid file refuses every client but loopback and says so in health
(``components.api.state``). Loopback is the peer address of the TCP connection and nothing else:
``X-Forwarded-For`` and the like are never read, and the API must not be put behind a reverse
proxy (every client would then be loopback).

Every client address has a token bucket (``api.rate``: 50 requests/s, 200 in a burst; IPv6
clients by their /64, which one host may hold whole): over it, ``429`` with ``Retry-After``.
A wrong token also takes from a much smaller bucket (10 a minute, 10 in a burst); once that is
empty the address gets ``429`` for everything, its right token included, until it refills, so
guessing stays slow. The buckets live in one table of at most ``api.rate.clients`` addresses
(least recently used out), so a flood of addresses cannot grow memory. Loopback is exempt by
default (``api.rate.limit_loopback``): a program on the device itself is trusted with the
device already and is bounded by the outbox (507); limiting it would protect nothing and would
throttle the apps and tools that post from the device. Both refusals are answered before the
body is read, and counted in health (``api`` counters ``auth-refused``, ``rate-limited``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edge_agent.clock import Clock
from edge_agent.config import ApiConfig, token_problem
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
from edge_agent.platform.ratelimit import RateLimiter, retry_after
from edge_agent.recorder import make_draft
from edge_agent.wire.envelope import TS_RE, EnvelopeError, format_ts, parse_ts, registered_types
from edge_agent.wire.jsonbounds import JsonBoundsError, Unrepresentable, join_path, loads

__all__ = [
    "BearerToken",
    "Guard",
    "build_app",
    "client_key",
    "openapi_document",
    "parse_submission",
]

log = logging.getLogger(__name__)

_EVENT_KEYS = frozenset({"type", "data", "ts", "ref", "id"})
_ID_MAX = 128
_ID_BAD = re.compile(r"[^!-~]")  # an id is printable ASCII without spaces
_TYPE_MAX = 128
_AGENT_ONLY = ("outbox.",)
_LINGER_S = 1.0
_REALM = 'Bearer realm="edge-agent"'
_TOKEN_FILE_MAX = 4096  # a token file is a line; more is not a token, and is not read whole
_RACY_NS = 2_000_000_000  # a file changed this recently may change again unseen (see refresh)
LOOPBACK = "loopback"
"""The one client key of every loopback peer (127.0.0.0/8, ::1)."""


class BearerToken:
    """The API's bearer token: fixed (``api.token``), or read from ``api.token_file`` and read
    again whenever the file changes, so a rotation needs no restart.

    ``state`` is ``ok`` or why no client can be let in: ``token-missing``, ``token-empty``,
    ``token-invalid``, ``token-unreadable``; ``detail`` says more (never the token)."""

    def __init__(self, *, token: str | None = None, path: Path | None = None) -> None:
        if (token is None) == (path is None):
            raise ValueError("BearerToken: give a token or a path, one of them")
        self.path = path
        self._digest: bytes | None = None
        self._seen: tuple[int, int, int, int] | None = None
        self._racy = False
        self.state = "ok"
        self.detail = ""
        if token is not None:
            problem = token_problem(token)
            if problem is not None:
                raise ValueError(f"api.token {problem}")
            self._digest = hashlib.sha256(token.encode()).digest()
        else:
            self.refresh()

    def _set(self, digest: bytes | None, state: str, detail: str) -> None:
        self._digest, self.state, self.detail = digest, state, detail

    def refresh(self) -> None:
        """Read the file again if it changed since the last read (a ``stat``: cheap enough for
        every request; reading a line of a local file does not stall the loop)."""
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen = None
            self._set(None, "token-missing", f"{self.path}: no such file")
            return
        except OSError as exc:
            self._seen = None
            self._set(None, "token-unreadable", f"{self.path}: {exc.strerror or exc}")
            return
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key == self._seen and not self._racy:
            return
        self._seen = key
        # A write within the file system's timestamp granularity of the last one, with the same
        # size, leaves the key unchanged (git's "racy clean" case): while the file is that young,
        # read it every time
        self._racy = time.time_ns() - st.st_mtime_ns < _RACY_NS
        self._read()

    def _read(self) -> None:
        assert self.path is not None
        try:
            # O_NONBLOCK: a FIFO put in the token's place must not hang the loop on open
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            self._set(None, "token-missing", f"{self.path}: no such file")
            return
        except OSError as exc:
            self._set(None, "token-unreadable", f"{self.path}: {exc.strerror or exc}")
            return
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self._set(None, "token-invalid", f"{self.path}: not a regular file")
                return
            raw = os.read(fd, _TOKEN_FILE_MAX + 1)
        except OSError as exc:
            self._set(None, "token-unreadable", f"{self.path}: {exc.strerror or exc}")
            return
        finally:
            os.close(fd)
        if len(raw) > _TOKEN_FILE_MAX:
            self._set(None, "token-invalid", f"{self.path}: over {_TOKEN_FILE_MAX} bytes")
            return
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            self._set(None, "token-invalid", f"{self.path}: not ASCII text")
            return
        if not token:
            self._set(None, "token-empty", f"{self.path}: empty")
            return
        problem = token_problem(token)
        if problem is not None:
            self._set(None, "token-invalid", f"{self.path}: the token {problem}")
            return
        self._set(hashlib.sha256(token.encode()).digest(), "ok", "")

    @property
    def usable(self) -> bool:
        """Whether a client can be let in at all (a token is known)."""
        return self._digest is not None

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` is the token, in time independent of where they differ (and of
        their lengths: digests are compared)."""
        if self._digest is None:
            return False
        given = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(given, self._digest)


@functools.lru_cache(maxsize=1024)
def client_key(peer: str | None) -> tuple[bool, Hashable]:
    """(is loopback, rate-limit key) of a peer address: ``LOOPBACK`` for 127.0.0.0/8 and ::1
    (also IPv4-mapped), an IPv4 address as it is, an IPv6 address by its /64.

    Cached (a bounded LRU, as the buckets are): ``ipaddress`` parses in Python, and the same
    few peers ask again and again; a flood of addresses only cycles the cache."""
    if peer is None:
        return False, "unknown"
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%wlan0)
    except ValueError:
        return False, peer[:64]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return True, LOOPBACK
    if isinstance(addr, ipaddress.IPv6Address):
        return False, str(ipaddress.IPv6Network((addr, 64), strict=False))
    return False, str(addr)


class Guard:
    """Authentication and rate limits of the local API, as one aiohttp middleware."""

    def __init__(
        self, config: ApiConfig, health: HealthRegistry, now: Callable[[], float] = time.monotonic
    ) -> None:
        rate = config.rate
        self.health = health
        self.now = now
        self.limit_loopback = rate.limit_loopback
        self.requests = RateLimiter(rate.per_client, rate.burst, rate.clients)
        self.failures = RateLimiter(rate.failed_auth, rate.failed_auth_burst, rate.clients)
        self.per_client, self.burst = rate.per_client, rate.burst
        self.token: BearerToken | None = None
        if config.token_file is not None:
            self.token = BearerToken(path=config.token_file)
        elif config.token is not None:
            self.token = BearerToken(token=config.token.get_secret_value())
        self._reported: tuple[str, str] | None = None
        self.report()

    def report(self) -> None:
        """Read the token file again if it changed, and put its state in health (once per
        change: a transition is logged)."""
        if self.token is None:
            return
        self.token.refresh()
        now = (self.token.state, self.token.detail)
        if now == self._reported:
            return
        self._reported = now
        how = "token file" if self.token.path is not None else "token"
        if self.token.usable:
            self.health.set_state("api", "ok", access=how)
        else:
            self.health.set_state(
                "api",
                self.token.state,
                problem=self.token.detail,
                refusing="every client but loopback",
            )

    def _too_many(self, wait: float, why: str) -> web.Response:
        self.health.count("api", "rate-limited")
        seconds = retry_after(wait)
        response = _error(429, f"{why}; retry in {seconds} s")
        response.headers["Retry-After"] = str(seconds)
        return response

    def _unauthorized(self, message: str, challenge: str) -> web.Response:
        self.health.count("api", "auth-refused")
        response = _error(401, message)
        response.headers["WWW-Authenticate"] = challenge
        return response

    def check(self, peer: str | None, authorization: str | None) -> web.Response | None:
        """The refusal for a request from ``peer`` with this ``Authorization`` header, or None
        to let it through."""
        loopback, key = client_key(peer)
        now = self.now()
        if not loopback or self.limit_loopback:
            # a locked-out address is refused before its token is looked at: else the answer
            # to a guess would still tell a right one from a wrong one
            wait = self.failures.peek(key, now)
            if wait > 0:
                return self._too_many(wait, "too many failed authentications from this address")
            wait = self.requests.take(key, now)
            if wait > 0:
                why = f"over {self.per_client:g} requests/s (burst {self.burst}) per client"
                return self._too_many(wait, why)
        if loopback:
            return None
        if self.token is None:
            return self._unauthorized("this API answers loopback clients only", _REALM)
        self.report()
        if not self.token.usable:
            return self._unauthorized(
                "the agent has no usable API token: ask on the device (GET /v1/health)", _REALM
            )
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if not authorization:
            return self._unauthorized("Authorization: Bearer <token> is required", _REALM)
        if scheme.lower() != "bearer" or not self.token.matches(presented.strip()):
            self.failures.take(key, now)
            return self._unauthorized(
                "the bearer token is wrong", f'{_REALM}, error="invalid_token"'
            )
        return None

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Refuse (401, 429) before the handler reads anything of the body."""
        # the TCP peer only: a forwarding header is the client's word, not a fact
        peername = (
            None if request.transport is None else request.transport.get_extra_info("peername")
        )
        peer = peername[0] if isinstance(peername, tuple) and peername else None
        refusal = self.check(peer, request.headers.get("Authorization"))
        if refusal is not None:
            return refusal
        return await handler(request)


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
                    # a reference given as null is taken as absent, as the validator does
                    "parcel": {
                        "anyOf": [
                            {"type": "null"},
                            {"type": "string", "minLength": 1, "maxLength": 256},
                            {
                                "type": "array",
                                "items": {"type": "string", "minLength": 1, "maxLength": 256},
                            },
                        ]
                    },
                    **{
                        k: {"type": ["string", "null"], "minLength": 1, "maxLength": 256}
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

    def header(text: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": text, "schema": schema}

    # every operation may be refused these two ways (the guard runs before any handler)
    refusals = {
        "401": {
            **answer(
                "from an address other than loopback: no bearer token, a wrong one, or the agent"
                " has none usable"
            ),
            "headers": {"WWW-Authenticate": header("Bearer", {"type": "string"})},
        },
        "429": {
            **answer("over the client's rate limit, or too many failed authentications"),
            "headers": {
                "Retry-After": header("seconds to wait", {"type": "integer", "minimum": 1})
            },
        },
    }

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
                        **refusals,
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
                        },
                        **refusals,
                    },
                }
            },
            "/v1/trip": {
                "get": {
                    "summary": "the van's route, its current or next stop and the hub's ETAs"
                    " (the driver app's view)",
                    "description": "stop.state: at (inside the stop's zone), approaching (inside"
                    " its approach zone), next (the manifest's first stop not visited). stops:"
                    " the manifest's stops with the hub's latest ETA and status (cmd/eta; null"
                    " and planned before the first); eta_at: when the hub computed them. The"
                    " van does not compute ETAs: one ETA in every channel.",
                    "responses": {
                        "200": {
                            "description": "the trip; route null when no manifest is in use",
                            "content": {"application/json": {"schema": _trip_schema()}},
                        },
                        **refusals,
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
                        },
                        **refusals,
                    },
                }
            },
        },
        # loopback clients need nothing (the empty requirement); every other one the token
        "security": [{}, {"bearer": []}],
        "components": {
            "schemas": {"Event": event, "Accepted": accepted, "Error": _schema_error()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "required from every address but loopback: the token of"
                    " api.token_file (edge-agent provision writes it) or api.token",
                }
            },
        },
    }


def _trip_schema() -> dict[str, Any]:
    ts = {"type": ["string", "null"], "format": "date-time"}
    return {
        "type": "object",
        "required": ["route", "stop", "stops", "eta_at"],
        "properties": {
            "route": {"type": ["string", "null"]},
            "stop": {
                "type": ["object", "null"],
                "required": ["id", "state"],
                "properties": {
                    "id": {"type": "string"},
                    "state": {"enum": ["at", "approaching", "next"]},
                },
            },
            "stops": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "eta", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "eta": ts,
                        "status": {"type": "string"},
                    },
                },
            },
            "eta_at": ts,
        },
    }


_NO_TRIP: dict[str, Any] = {"route": None, "stop": None, "stops": [], "eta_at": None}


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
    access: ApiConfig | None = None,
    trip: Callable[[], dict[str, Any]] | None = None,
) -> web.Application:
    """The aiohttp application of the local API, bound to one outbox.

    ``access`` is the ``api:`` section: its token and rate limits (``Guard``). Without it, the
    defaults: no token, so every client but loopback gets 401.

    ``on_accepted`` sees the events of every POST once they are committed (the station reads
    the scans a handheld app posts); it must not block and its errors are not the client's.

    ``trip`` gives the body of ``GET /v1/trip`` (the runtime's trip service and the hub's
    ETAs); without it the route is null.

    ``body_timeout``: seconds to receive a POST body once its headers arrived (else 408).
    ``idle_timeout``: seconds a connection may stay without a complete request (idle between
    requests, or trickling its request line and headers) before it is closed.
    """
    document = openapi_document(max_body, max_batch)
    guard = Guard(access if access is not None else ApiConfig(), health)

    async def post_events(request: web.Request) -> web.Response:
        try:
            if request.content.is_eof():
                # the whole body came with the headers (a small POST): nothing to time
                raw = await request.read()
            else:
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
        guard.report()  # a token file that went away since the last request shows here too
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

    async def get_trip(_: web.Request) -> web.Response:
        return web.json_response(_NO_TRIP if trip is None else trip())

    async def get_openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    # keepalive_timeout is armed when a connection opens and re-armed after each request: a
    # client that sends nothing, or trickles its headers, is closed after idle_timeout. After an
    # answer given before the body was read (408, 413), aiohttp reads and drops the rest for
    # lingering_time (so the client sees the answer, not a reset), then closes: 1 s, not 10 s
    app = web.Application(
        client_max_size=max_body,
        handler_args={"keepalive_timeout": idle_timeout, "lingering_time": _LINGER_S},
        middlewares=[guard.middleware],
    )
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/trip", get_trip)
    app.router.add_get("/v1/openapi.json", get_openapi)
    return app
