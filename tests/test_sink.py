"""The two EventSinks answer alike: what the in-memory sink of replays and tests accepts, the
agent's outbox sink accepts, and what the outbox refuses, the in-memory sink refuses too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock import Clock
from edge_agent.outbox import EventTooLarge, IdConflict, Outbox, OutboxFull
from edge_agent.recorder import MemorySink, OutboxSink
from edge_agent.sink import Accepted, EventSink
from edge_agent.wire.envelope import EnvelopeError, validate_envelope

WHEN = datetime(2026, 3, 2, 8, 0, 1, 250_000, tzinfo=UTC)
ID = "0190f1e2-aaaa-7bbb-8ccc-000000000001"
Emit = Callable[[EventSink], Awaitable[Accepted]]


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-001")
    yield ob
    await ob.close()


async def stored(outbox: Outbox) -> list[dict[str, Any]]:
    rows = await outbox.read_after(0, max_bytes=1 << 30)
    return [json.loads(body) for _, body in rows]


def arrive(sink: EventSink, **kw: Any) -> Awaitable[Accepted]:
    data = {"zone": "S1", "lat": 52.5, "lon": 13.4}
    kw.setdefault("ref", {"route": "r-1", "stop": "S1"})
    return sink.emit("trip.arrive", data, ts=WHEN, **kw)


async def test_both_store_the_same_envelope(outbox: Outbox) -> None:
    clock = Clock("system")
    memory = MemorySink(clock, fleet="acme", device="van-001")
    for sink in (OutboxSink(outbox, clock), memory):
        assert (await arrive(sink, clock="gnss", event_id=ID)) == Accepted(ID, 1)
        assert (await sink.emit("device.health", {"ok": True}, ts=WHEN)).seq == 2
    ours, theirs = memory.events, await stored(outbox)
    assert ours[0] == theirs[0]
    assert {**ours[1], "id": ""} == {**theirs[1], "id": ""}  # the sink's own ids differ
    for env in memory.events:
        validate_envelope(env)
    assert memory.events[0]["ts"] == "2026-03-02T08:00:01.250Z"
    assert memory.events[0]["clock"] == "gnss"


REFUSED: list[tuple[str, Emit, type[Exception], str]] = [
    ("unknown type", lambda s: s.emit("trip.nope", {}), EnvelopeError, "type"),
    ("bad data", lambda s: s.emit("trip.arrive", {"lat": "north"}), EnvelopeError, "data"),
    ("bad ref", lambda s: arrive(s, ref={"stop": 7}), EnvelopeError, "ref"),
    ("bad clock", lambda s: arrive(s, clock="sundial"), EnvelopeError, "clock"),
    (
        "too large for one batch",
        lambda s: s.emit("device.health", {f"k{i}": "x" * 1000 for i in range(300)}),
        EventTooLarge,
        "",
    ),
]


@pytest.mark.parametrize(("what", "emit", "error", "field"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_both_refuse_the_same_events(
    outbox: Outbox, what: str, emit: Emit, error: type[Exception], field: str
) -> None:
    clock = Clock("system")
    memory = MemorySink(clock)
    for sink in (OutboxSink(outbox, clock), memory):
        with pytest.raises(error) as caught:
            await emit(sink)
        if isinstance(caught.value, EnvelopeError):
            assert caught.value.path.startswith(field)
    assert memory.events == [] and await stored(outbox) == []


async def test_a_client_id_is_stored_once_and_never_reused(outbox: Outbox) -> None:
    clock = Clock("system")
    memory = MemorySink(clock)
    for sink in (OutboxSink(outbox, clock), memory):
        first = await arrive(sink, clock="gnss", event_id=ID)
        assert await arrive(sink, clock="gnss", event_id=ID) == first  # a retry after a crash
        with pytest.raises(IdConflict):
            await sink.emit("device.health", {"ok": True}, event_id=ID)
    assert len(memory.events) == len(await stored(outbox)) == 1


async def test_a_full_memory_sink_refuses_as_a_full_outbox_does() -> None:
    sink = MemorySink(Clock("system"), capacity=1)
    await sink.emit("device.health", {"ok": True})
    with pytest.raises(OutboxFull):
        await sink.emit("device.health", {"ok": True})
    assert len(sink.events) == 1
