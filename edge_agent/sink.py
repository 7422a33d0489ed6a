"""Where the agent's drivers and domain logic hand their events: the seam to the outbox.

GNSS, scanning, trips and dock sensors only know this protocol, so each can be tested with the
real outbox behind it (``OutboxSink``) or replayed without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = ["Accepted", "EventSink"]


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event durably in the outbox: its id and its per-device seq."""

    id: str
    seq: int


class EventSink(Protocol):
    """Accepts one event; returns only once it is durable (DESIGN §3.1)."""

    async def emit(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        ts: datetime | None = None,
        ref: Mapping[str, Any] | None = None,
        clock: str | None = None,
    ) -> Accepted:
        """Validate, stamp (id, seq, ts, clock) and commit one event."""
        ...
