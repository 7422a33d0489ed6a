"""Posting a carrier's envelopes to the hub API (``POST /v1/fleets/{fleet}/events``).

``HubClient`` is a small blocking client (the standard library's ``urllib``: an import runs once,
from a command line): the fleet's devices as the hub knows them (where seqs go on), and envelopes
in batches no larger than the hub takes, each batch's answer added up in ``Posted``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from edge_agent.wire.limits import BATCH_MAX_BYTES

__all__ = ["HubClient", "HubError", "Posted"]

TIMEOUT_S = 60.0
_BODY_MAX = BATCH_MAX_BYTES - 1024
"""A request's body stays under the hub's default limit (``ingest.max_batch_bytes``)."""


class HubError(Exception):
    """The hub cannot be reached, or refused a request as a whole (status and its error)."""


@dataclass(slots=True)
class Posted:
    """What the hub did with the envelopes posted: counts, the rejected ones with their
    reason, each device's last watermark."""

    stored: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    watermarks: dict[str, int] = field(default_factory=dict)
    requests: int = 0


class HubClient:
    """The hub API at ``base`` (``http(s)://host:port``) with a carrier's ``token``."""

    def __init__(self, base: str, token: str, *, timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HubError(f"{base!r}: the hub's URL is http(s)://host:port")
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        req = urllib.request.Request(
            self.base + path,
            data=body,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:  # its socket too
                try:
                    reason = json.loads(exc.read()).get("error", "")
                except (ValueError, AttributeError, OSError):
                    reason = ""
            raise HubError(f"{method} {path}: {exc.code} {reason}".rstrip()) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise HubError(f"{method} {self.base}{path}: {exc}") from None

    def next_seqs(self, fleet: str) -> dict[str, int]:
        """Each device of ``fleet`` the hub knows → the seq after its highest stored or
        accounted one (a duplicate's seq is accounted, not stored: never given again)."""
        devices = self._call("GET", "/v1/devices")
        return {
            str(d["device"]): max(int(d["max_seq"]), int(d["watermark"])) + 1
            for d in devices
            if isinstance(d, dict) and d.get("fleet") == fleet
        }

    def post(self, fleet: str, envelopes: Sequence[dict[str, Any]], batch: int = 500) -> Posted:
        """Post ``envelopes`` in requests of at most ``batch`` envelopes and ``_BODY_MAX``
        bytes; stop at the first request the hub refuses as a whole (``HubError``)."""
        out = Posted()
        path = f"/v1/fleets/{quote(fleet, safe='')}/events"
        chunk: list[bytes] = []
        size = 0
        for env in envelopes:
            text = json.dumps(env, separators=(",", ":")).encode()
            if chunk and (len(chunk) >= batch or size + len(text) + 16 > _BODY_MAX):
                self._send(path, chunk, out)
                chunk, size = [], 0
            chunk.append(text)
            size += len(text) + 1
        if chunk:
            self._send(path, chunk, out)
        return out

    def _send(self, path: str, chunk: list[bytes], out: Posted) -> None:
        answer = self._call("POST", path, b'{"events":[' + b",".join(chunk) + b"]}")
        out.requests += 1
        out.stored += int(answer.get("stored", 0))
        out.duplicates += int(answer.get("duplicates", 0))
        out.rejected += [e for e in answer.get("events", []) if e.get("status") == "rejected"]
        out.watermarks.update(answer.get("watermarks", {}))
