"""Events written ahead, then committed to the sink: exactly once across a producer's crashes.

A producer whose events come from a state machine (trips, load verification) cannot simply emit
them: a crash after its state moved on but before the outbox commit would lose them, and one
after the commit but before its state was saved would make them again with new ids. So
``PendingEvents`` gives each new event its id first; the producer saves its state with
``dump()`` included (written ahead), then ``flush()`` commits them with those ids (the outbox
stores an id once and answers a repeat with the first seq), then the producer saves again
without them. A crash between any two steps repeats at most a commit the outbox recognises.

``flush`` never raises on a sink that fails: it retries with capped backoff (health
``emit-failed``); an event refused for good (invalid, too large, id taken) is dropped and counted
(``event-invalid``) rather than blocking every later event behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from edge_agent.platform.health import HealthRegistry
from edge_agent.sink import EventRefused, EventSink
from edge_agent.wire.envelope import EnvelopeError, format_ts, new_event_id, parse_ts

__all__ = ["PendingEvents"]

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 30.0


class PendingEvents:
    """A producer's events between its state machine and the sink (module docstring)."""

    def __init__(
        self,
        sink: EventSink,
        health: HealthRegistry,
        component: str,
        *,
        clock: str | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._sink = sink
        self._health = health
        self._component = component
        self._clock = clock
        self._sleep = sleep
        self.items: list[dict[str, Any]] = []
        self.emitted = 0

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(
        self, type_: str, ts: datetime | str, data: Mapping[str, Any], ref: Mapping[str, Any]
    ) -> None:
        """Queue one event with a new id (save the producer's state before ``flush``)."""
        self.items.append(
            {
                "id": new_event_id(),
                "type": type_,
                "ts": ts if isinstance(ts, str) else format_ts(ts),
                "data": dict(data),
                "ref": dict(ref),
            }
        )

    def dump(self) -> list[dict[str, Any]]:
        """The queued events, for the producer's state file."""
        return [dict(item) for item in self.items]

    def load(self, items: Any) -> None:
        """Take back the queued events of a state file (ValueError when they are not a list of
        objects)."""
        if items is None:
            items = []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError("pending events: not a list of objects")
        self.items = [dict(i) for i in items]

    async def flush(self) -> None:
        """Commit every queued event in order (module docstring)."""
        attempt = 0
        while self.items:
            item = self.items[0]
            try:
                await self._emit(item)
            except (EnvelopeError, EventRefused) as exc:
                # refused for good: retrying would not help, and every later event would wait
                log.warning(
                    "%s: dropping a refused %s event: %s", self._component, item.get("type"), exc
                )
                self._health.count(self._component, "event-invalid")
                self.items.pop(0)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self._health.count(self._component, "emit-failed")
                self._health.set_state(
                    self._component, "emit-failed", error=f"{type(exc).__name__}: {exc}"
                )
                await self._sleep(min(BACKOFF_MAX_S, 0.25 * 2 ** min(attempt, 8)))
                continue
            self.items.pop(0)
            self.emitted += 1
            if attempt:
                attempt = 0
                self._health.set_state(self._component, "ok")

    async def _emit(self, item: dict[str, Any]) -> None:
        try:
            ts = parse_ts(item["ts"])
        except (KeyError, TypeError, ValueError) as exc:  # a state file edited by hand
            raise EnvelopeError("ts", str(exc)) from None
        await self._sink.emit(
            item.get("type", ""),
            item.get("data") or {},
            ts=ts,
            ref=item.get("ref") or None,
            clock=self._clock,
            event_id=item.get("id"),
        )
