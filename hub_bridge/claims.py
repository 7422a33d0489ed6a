"""Claims: one-time, expiring tokens a technician gives a new device so it can fetch its
certificate from the hub (``POST /v1/provision``, DESIGN §10 ``hub-bridge claim create``).

A token is 32 random bytes, URL-safe base64 without padding (43 characters). The hub keeps only
its SHA-256 (``token_hash``) with the fleet, device and role it is for, when it expires and
when it was used (``hub_bridge.timeline``): the store leaks no usable token. A technician gets
the text ``lmclaim:{hub_api_url}#{token}`` (``claim_text``), printed and as a QR code in the
terminal (``qr_text``, segno), which ``edge-agent provision --claim`` takes as it is.

An unknown, expired or used claim gets one answer (no oracle), and failed attempts are
rate-limited per client address (``FailedClaims``, a token bucket that only failures drain).
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "CLAIM_PREFIX",
    "ROLES",
    "TOKEN_BYTES",
    "Claim",
    "ClaimError",
    "FailedClaims",
    "claim_text",
    "new_token",
    "parse_claim_text",
    "qr_text",
    "token_hash",
    "valid_token",
]

TOKEN_BYTES: Final = 32
CLAIM_PREFIX: Final = "lmclaim:"
ROLES: Final = ("van", "station")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


class ClaimError(ValueError):
    """A claim text or token that cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim is for, as the hub stored it."""

    fleet: str
    device: str
    role: str
    expires: float
    """When it stops being accepted (epoch seconds)."""


def new_token() -> str:
    """A new claim token: 32 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def valid_token(token: str) -> bool:
    """Whether ``token`` has the shape of a claim token (43 URL-safe base64 characters)."""
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def token_hash(token: str) -> str:
    """What the hub stores of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def claim_text(hub_api_url: str, token: str) -> str:
    """``lmclaim:{hub_api_url}#{token}``: the hub to ask and the token, in one string."""
    parts = urlsplit(hub_api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise ClaimError(f"hub API URL {hub_api_url!r}: must be http(s)://host[:port] (no #)")
    if not valid_token(token):
        raise ClaimError("not a claim token (43 URL-safe base64 characters)")
    return f"{CLAIM_PREFIX}{hub_api_url.rstrip('/')}#{token}"


def parse_claim_text(text: str) -> tuple[str | None, str]:
    """``(hub_api_url, token)`` from a claim text, or ``(None, token)`` from a bare token."""
    text = text.strip()
    if text.startswith(CLAIM_PREFIX):
        url, sep, token = text[len(CLAIM_PREFIX) :].rpartition("#")
        if not sep or not url:
            raise ClaimError(f"{CLAIM_PREFIX}... must be {CLAIM_PREFIX}{{hub_api_url}}#{{token}}")
        if urlsplit(url).scheme not in ("http", "https"):
            raise ClaimError(f"claim text: {url!r} is not an http(s) URL")
    else:
        url, token = None, text
    if not valid_token(token):
        raise ClaimError("not a claim token (43 URL-safe base64 characters)")
    return url, token


def qr_text(data: str, *, dark_terminal: bool = True, border: int = 2) -> str:
    """A QR code of ``data`` for a terminal: Unicode half blocks (``█▀▄``), two module rows per
    line, no ANSI colours (it survives a pipe, a log or an SSH session).

    A terminal shows its glyphs light on dark (``dark_terminal``, most): light modules and the
    quiet zone are drawn; on a light terminal the dark modules are. Needs segno (``[hub]``)."""
    import segno

    # error correction M: a phone still reads it from a dim or scratched terminal photo
    code = segno.make(data, error="m", micro=False)
    rows = [[bool(v) != dark_terminal for v in row] for row in code.matrix_iter(border=border)]
    if len(rows) % 2:
        rows.append([not dark_terminal] * len(rows[0]))
    glyph = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}
    out = io.StringIO()
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        out.write("".join(glyph[t, b] for t, b in zip(top, bottom, strict=True)).rstrip())
        out.write("\n")
    return out.getvalue()


class FailedClaims:
    """Failed claims per client address, as token buckets: each address may fail ``burst``
    times, then once per ``1 / per_s`` seconds; successes cost nothing. At most ``max_clients``
    addresses are tracked (the least recently failing forgotten first), so a scan from many
    addresses cannot grow it without bound. The clock is the caller's (``now``)."""

    def __init__(self, burst: int = 10, per_s: float = 0.1, max_clients: int = 10_000) -> None:
        if burst < 1 or per_s <= 0 or max_clients < 1:
            raise ValueError("burst and max_clients must be at least 1, per_s positive")
        self.burst = burst
        self.per_s = per_s
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, client: str, now: float) -> float:
        found = self._buckets.get(client)
        if found is None:
            return float(self.burst)
        tokens, at = found
        return min(float(self.burst), tokens + max(0.0, now - at) * self.per_s)

    def retry_after(self, client: str, now: float) -> float:
        """0 when ``client`` may try a claim now, else the seconds until it may."""
        level = self._level(client, now)
        if level >= 1.0:
            return 0.0
        return (1.0 - level) / self.per_s

    def failed(self, client: str, now: float) -> None:
        """Count one failed claim of ``client``."""
        level = max(0.0, self._level(client, now) - 1.0)
        self._buckets[client] = (level, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def retry_after_header(self, client: str, now: float) -> str:
        """``Retry-After`` in whole seconds (at least 1)."""
        return str(max(1, math.ceil(self.retry_after(client, now))))

    def __len__(self) -> int:
        return len(self._buckets)
