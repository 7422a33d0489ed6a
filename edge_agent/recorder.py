"""The EventSinks: ``OutboxSink`` (the agent's) and ``MemorySink`` (replays and tests).

Both validate every event with ``make_draft`` (the registry's data schema, ``ref``, ``ts`` and
clock source), so an event a replay or a test accepts is one the agent's outbox accepts too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from edge_agent.clock import Clock
from edge_agent.outbox import (
    MAX_EVENT_BYTES,
    Draft,
    EventTooLarge,
    IdConflict,
    Outbox,
    OutboxFull,
)
from edge_agent.sink import Accepted
from edge_agent.wire.envelope import (
    CLOCKS,
    EnvelopeError,
    Ref,
    encode_checked,
    format_ts,
    new_event_id,
    validate_data,
)
from edge_agent.wire.plain import plain_ref

__all__ = ["MemorySink", "OutboxSink", "make_draft"]


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
    if ref and not plain_ref(ref):  # the usual parcel or stop id: plain tests decide
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
        event_id: str | None = None,
    ) -> Accepted:
        """Validate, stamp and commit one event; return its id and seq (see ``EventSink``)."""
        draft = make_draft(
            self.clock, type_, data, ts=ts, ref=ref, clock_source=clock, event_id=event_id
        )
        return (await self.outbox.append([draft]))[0]


class MemorySink:
    """An EventSink in memory, for replays and tests: the outbox's checks without the file.

    Events go through ``make_draft`` as on ``OutboxSink``, and the outbox's own refusals are
    made the same way: an envelope over ``max_event_bytes`` (EventTooLarge), a client id reused
    for another event (IdConflict; a repeat of the same event answers its first seq), and, with
    ``capacity``, OutboxFull once that many events are held. ``events`` are the envelopes as
    the outbox would store them, seqs from 1.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        fleet: str = "local",
        device: str = "local",
        max_event_bytes: int = MAX_EVENT_BYTES,
        capacity: int | None = None,
    ) -> None:
        self.clock = clock
        self.fleet = fleet
        self.device = device
        self.max_event_bytes = max_event_bytes
        self.capacity = capacity
        self.events: list[dict[str, Any]] = []
        self._by_id: dict[str, tuple[Accepted, bytes]] = {}

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
        """Validate and keep one event; return its id and seq (see ``EventSink``)."""
        d = make_draft(
            self.clock, type_, data, ts=ts, ref=ref, clock_source=clock, event_id=event_id
        )
        eid = d.id or new_event_id()
        seq = len(self.events) + 1
        body = encode_checked(
            eid, seq, self.fleet, self.device, d.type, d.ts, d.clock, d.data, d.ref
        )
        # what a client id stands for, as the outbox compares it: type, data and ref
        content = d.type.encode() + body[body.index(b',"data":') :]
        known = self._by_id.get(eid)
        if known is not None:
            if known[1] != content:
                raise IdConflict(f"id {eid!r} was accepted before for another event")
            return known[0]
        if len(body) > self.max_event_bytes:
            raise EventTooLarge(f"an event of {len(body)} bytes is over {self.max_event_bytes}")
        if self.capacity is not None and len(self.events) >= self.capacity:
            raise OutboxFull(f"the sink holds its capacity of {self.capacity} events")
        accepted = Accepted(eid, seq)
        self.events.append(json.loads(body))
        self._by_id[eid] = (accepted, content)
        return accepted
