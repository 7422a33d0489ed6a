"""Tenants of the hub API: bearer tokens, each scoped to fleets and holding rights (issue 11).

A token has a name (for logs and answers, never the secret), a scope and rights::

    tenants:
      tokens:
        - name: ops                      # the operator: every fleet
          fleets: all
          rights: [read, write-events, commands, admin]
          token_file: /etc/hub-bridge/tokens/ops
        - name: fastlane                 # a 3PL carrier: its own fleet only
          fleet: 3pl-fastlane
          rights: [read, write-events]
          token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

The secret is never in the configuration in clear: ``token_sha256`` is the SHA-256 (hex) of the
token, ``token_file`` a file holding the token itself (read again when it changes, so a rotation
needs no restart). A presented token is hashed and compared with every configured hash in
constant time (``hmac.compare_digest``, no early exit): the time taken says nothing of which
token, or which prefix, was close.

Rights: ``read`` (devices, events, dead letters, commands, certificates of the token's fleets),
``write-events`` (``POST /v1/fleets/{fleet}/events``), ``commands`` (queue a command to a device
of its fleets), ``webhooks`` (subscribe and unsubscribe its fleets' webhooks: the delivery API),
``admin`` (the hub's own counters in ``GET /v1/health``; only with ``fleets: all``). The scope
rule, the same on every route: a fleet named in the request (path or query) outside the token's
scope is ``403``; a listing that names no fleet is filtered to the token's fleets; a command
looked up by its id that belongs to another fleet is ``404`` (its id must not tell that it
exists).

Pure: no I/O but reading token files; ``hub_bridge.api`` applies it to requests.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.wire.envelope import IDENT_RE

__all__ = [
    "OPEN",
    "RIGHTS",
    "Principal",
    "Tenants",
    "TenantsConfig",
    "TokenConfig",
    "TokenError",
    "bearer_of",
    "check_listen",
    "new_token",
    "token_problem",
]

_Fleets = Literal["all"] | list[str] | None
Right = Literal["read", "write-events", "commands", "webhooks", "admin"]
RIGHTS: tuple[Right, ...] = ("read", "write-events", "commands", "webhooks", "admin")
TOKEN_MIN = 16
TOKEN_MAX = 512
_BEARER = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_RELOAD_S = 1.0
"""A token file is looked at (one stat) at most this often: a rotation is seen within it."""


class TokenError(ValueError):
    """A token that cannot be used: its file is missing, unreadable or not a token. The message
    names the token and the file, never the secret."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: the token's name, its fleets (``None``: every fleet) and rights."""

    name: str
    fleets: frozenset[str] | None
    rights: frozenset[str]

    def sees(self, fleet: str) -> bool:
        """Whether ``fleet`` is within this principal's scope."""
        return self.fleets is None or fleet in self.fleets

    def can(self, right: str) -> bool:
        """Whether this principal holds ``right``."""
        return right in self.rights

    @property
    def operator(self) -> bool:
        """Scoped to every fleet."""
        return self.fleets is None


OPEN = Principal("open", None, frozenset(RIGHTS))
"""Every request of a hub without tokens (loopback only, see ``check_listen``)."""


class TokenConfig(BaseModel):
    """One API token: its name, scope (``fleet``, ``fleets`` or ``fleets: all``), rights and
    where its secret is (``token_sha256`` or ``token_file``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    fleet: str | None = Field(default=None, pattern=IDENT_RE)
    fleets: Literal["all"] | list[str] | None = None
    rights: list[Right] = Field(default_factory=lambda: list[Right](["read"]), min_length=1)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    token_file: Path | None = None

    @field_validator("fleets")
    @classmethod
    def _fleets(cls, fleets: _Fleets) -> _Fleets:
        if isinstance(fleets, list):
            if not fleets:
                raise ValueError("an empty list: name at least one fleet, or all")
            for f in fleets:
                if not re.fullmatch(IDENT_RE.strip("^$"), f):
                    raise ValueError(f"{f!r} is not a fleet id ({IDENT_RE})")
        return fleets

    @model_validator(mode="after")
    def _one_of_each(self) -> TokenConfig:
        if (self.fleet is None) == (self.fleets is None):
            raise ValueError(f"token {self.name}: give its scope as fleet or fleets, one of them")
        if (self.token_sha256 is None) == (self.token_file is None):
            raise ValueError(
                f"token {self.name}: give token_sha256 or token_file, one of them"
                " (the token itself is never written in the configuration)"
            )
        if "admin" in self.rights and self.fleets != "all":
            raise ValueError(f"token {self.name}: admin is for a token of all fleets (fleets: all)")
        return self

    @property
    def scope(self) -> frozenset[str] | None:
        """The fleets of this token; ``None`` for every fleet."""
        if self.fleets == "all":
            return None
        if self.fleet is not None:
            return frozenset({self.fleet})
        assert isinstance(self.fleets, list)
        return frozenset(self.fleets)


class TenantsConfig(BaseModel):
    """The ``tenants:`` section of the hub configuration: the API's tokens. Without any, the
    API is open, which ``check_listen`` allows on a loopback listen address only."""

    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenConfig] = Field(default_factory=list, max_length=10_000)

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: list[TokenConfig]) -> list[TokenConfig]:
        seen: set[str] = set()
        for t in tokens:
            if t.name in seen:
                raise ValueError(f"token name {t.name!r} is given twice")
            seen.add(t.name)
        hashes = [t.token_sha256.lower() for t in tokens if t.token_sha256 is not None]
        if len(hashes) != len(set(hashes)):
            raise ValueError("two tokens have the same token_sha256")
        return tokens

    def build(self) -> Tenants | None:
        """The tokens, their files read (``TokenError`` naming a bad one); ``None`` when no
        token is configured (the open API)."""
        if not self.tokens:
            return None
        return Tenants([_Token.of(t) for t in self.tokens])


def check_listen(host: str, tenants: TenantsConfig) -> None:
    """Refuse (``ValueError``) an API listening beyond loopback without tokens: anyone on the
    network could read every fleet's timeline and command every device."""
    if tenants.tokens or is_loopback_host(host):
        return
    raise ValueError(
        f"api.listen on {host or 'every address'} without tenants.tokens: the API would be open"
        " to the network; add tokens (tenants.tokens) or listen on 127.0.0.1"
    )


def is_loopback_host(host: str) -> bool:
    """Whether a listen host is reachable from this machine only (a name is not)."""
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def new_token() -> tuple[str, str]:
    """A new API token (32 random bytes, URL-safe base64) and what the configuration keeps of
    it (``token_sha256``): give the first to the tenant, write the second in ``tenants.tokens``."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token).hex()


def token_digest(token: str) -> bytes:
    """What is compared: the SHA-256 of the token's UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a bearer token (never quoting it), or ``None``."""
    if not TOKEN_MIN <= len(token) <= TOKEN_MAX:
        return f"must be {TOKEN_MIN} to {TOKEN_MAX} characters (it has {len(token)})"
    if _BEARER.fullmatch(token) is None:
        return "may hold only letters, digits and -._~+/ (then = padding), as RFC 6750 says"
    return None


@dataclass(slots=True)
class _Token:
    principal: Principal
    digest: bytes | None
    path: Path | None = None
    _seen: tuple[int, int, int] | None = None
    _checked: float = field(default=-1e18)

    @classmethod
    def of(cls, config: TokenConfig) -> _Token:
        principal = Principal(config.name, config.scope, frozenset(config.rights))
        if config.token_sha256 is not None:
            return cls(principal, bytes.fromhex(config.token_sha256))
        token = cls(principal, None, config.token_file)
        token.refresh(time.monotonic(), strict=True)
        return token

    def refresh(self, now: float, *, strict: bool = False) -> None:
        """Read the token file again if it changed (one stat, at most every ``_RELOAD_S``). A
        file gone bad later disables this token (no request matches it) until it is fixed;
        ``strict`` (at start) raises instead."""
        if self.path is None or (not strict and abs(now - self._checked) < _RELOAD_S):
            return
        self._checked = now
        name = self.principal.name
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if key == self._seen:
                return
            self._seen = key
            text = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            self.digest, self._seen = None, None
            if strict:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                raise TokenError(f"token {name}: {self.path}: {reason}") from None
            return
        problem = token_problem(text)
        if problem is not None:
            self.digest = None
            if strict:
                raise TokenError(f"token {name}: {self.path}: the token {problem}")
            return
        self.digest = token_digest(text)


class Tenants:
    """The configured tokens: who a bearer token is."""

    def __init__(self, tokens: Iterable[_Token], clock: Callable[[], float] = time.monotonic):
        self._tokens = list(tokens)
        self._clock = clock

    @classmethod
    def from_tokens(
        cls, tokens: Iterable[tuple[str, frozenset[str] | None, Iterable[str], str]]
    ) -> Tenants:
        """Tenants from ``(name, fleets or None, rights, token)`` in clear (tests, tools)."""
        return cls(
            _Token(Principal(name, fleets, frozenset(rights)), token_digest(secret))
            for name, fleets, rights, secret in tokens
        )

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization`` header, or ``None`` (no token, not Bearer, or
        no match). Every configured token is compared, whatever matched first."""
        secret = bearer_of(authorization)
        if secret is None:
            return None
        digest = token_digest(secret)
        now = self._clock()
        found: Principal | None = None
        for token in self._tokens:
            token.refresh(now)
            if token.digest is not None and hmac.compare_digest(digest, token.digest):
                found = token.principal
        return found


def bearer_of(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer TOKEN`` (scheme case-insensitive), or ``None``."""
    if not authorization:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or token_problem(secret) is not None:
        return None
    return secret
