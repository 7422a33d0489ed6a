"""The agent's EventSink on the outbox: validates, stamps time and clock source, commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from edge_agent.clock import Clock
from edge_agent.outbox import Draft, Outbox
from edge_agent.sink import Accepted
from edge_agent.wire.envelope import CLOCKS, EnvelopeError, Ref, format_ts, validate_data

__all__ = ["OutboxSink", "make_draft"]


def make_draft(
    clock: Clock,
    type_: str,
    data: Mapping[str, Any],
    *,
    ts: datetime | str | None = None,
    ref: Mapping[str, Any] | None = None,
    clock_source: str | None = None,
    event_id: str | None = None,
) -> Draft:
    """Validate one event's parts against the registry and make the outbox draft.

    ``ts`` may be a datetime (from a fix), a contract string (from a client) or None (now).
    Raises EnvelopeError naming the field.
    """
    checked = validate_data(type_, data)
    if ref:
        try:
            Ref.model_validate(ref)
        except ValueError as exc:
            raise EnvelopeError("ref", str(exc).splitlines()[-1].strip()) from None
    if ts is None:
        when, source = clock.now()
        ts_text = format_ts(when)
    else:
        ts_text = ts if isinstance(ts, str) else format_ts(ts)
        source = clock_source or clock.now()[1]
    if clock_source is not None:
        source = clock_source
    if source not in CLOCKS:
        raise EnvelopeError("clock", f"{source!r} is not one of {', '.join(CLOCKS)}")
    return Draft(type_, checked, ts_text, source, dict(ref) if ref else None, event_id)


class OutboxSink:
    """What drivers and domain logic emit into: one validated event, durable on return."""

    def __init__(self, outbox: Outbox, clock: Clock) -> None:
        self.outbox = outbox
        self.clock = clock

    async def emit(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        ts: datetime | None = None,
        ref: Mapping[str, Any] | None = None,
        clock: str | None = None,
    ) -> Accepted:
        """Validate, stamp and commit one event; return its id and seq."""
        draft = make_draft(self.clock, type_, data, ts=ts, ref=ref, clock_source=clock)
        return (await self.outbox.append([draft]))[0]

    async def emit_many(self, drafts: Sequence[Draft]) -> list[Accepted]:
        """Commit already-validated drafts together (all or nothing)."""
        return await self.outbox.append(drafts)
