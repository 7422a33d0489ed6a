"""What a stateful producer (trips, the station) keeps across restarts, read and written once here.

A producer is configured by a *document* that arrives as a command (the trip service's manifest,
the station's load plan) and keeps its engine state with the events written ahead of their commit
(``edge_agent.pending``). ``ProducerFiles`` holds both in a ``StateFiles`` folder and decides, in
one place for every producer, what a bad file means:

- a stored document that no longer parses is moved aside and reported (``<component>:
  <invalid>`` in health, with the path and reason); the configured fallback file is used instead;
- a state file that does not parse or has another format is moved aside and counted
  (``state-corrupt``); the producer starts from a new state rather than not at all;
- a state that cannot be written is reported (``state-unwritable``) and retried at the next save.

Without a folder (replays, some tests) nothing is read or written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edge_agent.pending import PendingEvents
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.statefiles import StateFiles

__all__ = ["ProducerFiles"]

log = logging.getLogger(__name__)

D = TypeVar("D")
S = TypeVar("S")


class _PathError(Protocol):
    path: str
    reason: str


class ProducerFiles:
    """A producer's document and state files (module docstring)."""

    def __init__(
        self,
        folder: Path | None,
        health: HealthRegistry,
        component: str,
        *,
        document: str,
        state: str,
        state_format: int,
    ) -> None:
        self.store = (
            StateFiles(folder, document=document, state=state) if folder is not None else None
        )
        self._health = health
        self._component = component
        self._format = state_format

    async def load_document(
        self,
        parse: Callable[[bytes], D],
        fallback: Callable[[], D] | None,
        errors: type[Exception],
        invalid: str,
    ) -> D | None:
        """The stored document, else the fallback's (a file from the configuration), else None.

        ``errors`` is the document's error type (with ``path`` and ``reason``); ``invalid`` the
        health state that reports one.
        """
        if self.store is not None:
            raw = await asyncio.to_thread(self.store.load_document)
            if raw is not None:
                try:
                    return parse(raw)
                except errors as exc:
                    moved = await asyncio.to_thread(self.store.move_aside, self.store.document_path)
                    self._report(invalid, exc, moved_to=moved)
        if fallback is not None:
            try:
                return await asyncio.to_thread(fallback)
            except errors as exc:
                self._report(invalid, exc)
        return None

    def _report(self, invalid: str, exc: Exception, **detail: Any) -> None:
        err: _PathError = exc  # type: ignore[assignment]
        self._health.set_state(self._component, invalid, path=err.path, reason=err.reason, **detail)

    async def save_document(self, payload: bytes) -> None:
        """Keep a validated document (raises OSError when it cannot be written)."""
        if self.store is not None:
            await asyncio.to_thread(self.store.save_document, payload)

    async def load_state(self, load: Callable[[Any], S], pending: PendingEvents) -> S | None:
        """The stored engine state (``load`` turns its dump back into one) and, into
        ``pending``, the events written ahead; None when there is none or it was unusable."""
        if self.store is None:
            return None
        data = await asyncio.to_thread(self.store.load_state)
        if data is None:
            if self.store.moved_aside:
                self._health.count(self._component, "state-corrupt")
            return None
        try:
            if data.get("format") != self._format:
                raise ValueError("unknown state format")
            state = load(data["engine"])
            pending.load(data.get("pending"))
        except (ValueError, KeyError, TypeError) as exc:
            moved = await asyncio.to_thread(self.store.move_aside, self.store.state_path)
            log.warning("%s: state file unusable (%s), moved to %s", self._component, exc, moved)
            self._health.count(self._component, "state-corrupt")
            pending.load([])
            return None
        return state

    async def save_state(self, engine: dict[str, Any], pending: PendingEvents) -> None:
        """Replace the stored state: the engine's dump and the events written ahead."""
        if self.store is None:
            return
        data = {"format": self._format, "engine": engine, "pending": pending.dump()}
        try:
            await asyncio.to_thread(self.store.save_state, data)
        except OSError as exc:
            self._health.count(self._component, "state-unwritable")
            self._health.set_state(self._component, "state-unwritable", error=str(exc))
