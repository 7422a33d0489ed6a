"""Where the agent's drivers and domain logic hand their events: the seam to the outbox.

GNSS, scanning, trips and dock sensors only know this protocol. Two implementations, both in
``edge_agent.recorder`` and both validating through ``make_draft``: ``OutboxSink`` (the agent's,
durable) and ``MemorySink`` (replays and tests: the same checks and refusals, in memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple, Protocol

__all__ = ["Accepted", "EventRefused", "EventSink"]


class EventRefused(Exception):
    """Mixed into a sink's errors that refuse one event for good (too large for the wire, a
    client id already taken by another event): a producer drops that event and goes on instead
    of retrying it with everything else waiting behind it. Invalid events (``EnvelopeError``)
    are refused for good too."""


class Accepted(NamedTuple):
    """An event durably in the outbox: its id and its per-device seq (a named tuple: made for
    every accepted event, where a frozen dataclass cost a microsecond each)."""

    id: str
    seq: int


class EventSink(Protocol):
    """Accepts one event; returns only once it is durable (DESIGN §3.1).

    ``event_id`` is for a producer that must be exactly once across its own crashes: it picks
    the id, writes it ahead, and emits again after a crash; the sink stores an id once (a
    repeat answers the first seq) and refuses one reused for another event.
    """

    async def emit(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        ts: datetime | None = None,
        ref: Mapping[str, Any] | None = None,
        clock: str | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        """Validate, stamp (id, seq, ts, clock) and commit one event.

        ``ts`` defaults to now and ``clock`` to the clock's source; raises EnvelopeError
        (naming the field) for an event the registry refuses, and the sink's errors (the
        outbox's: full, too large, id conflict) when it cannot take it.
        """
        ...
