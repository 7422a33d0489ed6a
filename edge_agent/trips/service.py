"""The trip service: fixes and manifests in, trip events through the sink, state kept on disk.

The runtime starts it as ``await TripService(config, sink, health, clock).run()`` and feeds it:

- ``await on_fix(fix)`` (or ``submit_fix(fix)`` from a synchronous callback) for every filtered
  fix of the GNSS service;
- ``await on_manifest(payload)`` with the bytes of each ``cmd/manifest`` command.

Both go through one queue to one consumer, so a manifest applies between two fixes, never during
one. Fixes pass the reorder buffer (``reorder.FixOrder``), then the step engine; a new manifest
first drains the buffer through the old zones, then carries the state over (``adopt``).

Exactly once, across crashes: the events a fix produces are written ahead with their ids into
the state file, then committed (``edge_agent.pending``).

Never raises on bad input or a failing outbox: an invalid manifest is counted and reported in
health (``trips``: ``manifest-invalid``, the old one stays), a failing commit is retried with
capped backoff (``emit-failed``), an unreadable state file is moved aside.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from edge_agent.clock import Clock
from edge_agent.gnss.fix import Fix
from edge_agent.pending import PendingEvents
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.inbox import Inbox
from edge_agent.producer_files import ProducerFiles
from edge_agent.sink import EventSink
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.engine import EngineParams, EngineState, TripEngine, TripEvent
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import Manifest, ManifestError, load_manifest_file, parse_manifest
from edge_agent.trips.reorder import FixOrder
from edge_agent.wire.commands import CommandRefused

__all__ = ["TripService"]

COMPONENT = "trips"
SAVE_EVERY_S = 60.0
STATE_FORMAT = 1
MANIFEST_FILE = "trips-manifest.json"
STATE_FILE = "trips-state.json"


class _Manifest:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class TripService:
    """Runs the trip engine on live fixes and emits its events (see the module docstring)."""

    def __init__(
        self,
        config: TripsConfig,
        sink: EventSink,
        health: HealthRegistry,
        clock: Clock,
        *,
        state_dir: Path | None = None,
        queue_size: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._sink = sink
        self._health = health
        self._clock = clock
        self._mono = monotonic
        self._sleep = sleep
        folder = config.state_dir if config.state_dir is not None else state_dir
        self._files = ProducerFiles(
            folder,
            health,
            COMPONENT,
            document=MANIFEST_FILE,
            state=STATE_FILE,
            state_format=STATE_FORMAT,
        )
        self._params = EngineParams.from_config(config)
        # a burst of fixes may push out the oldest fix, never a manifest
        self._inbox: Inbox[Fix | _Manifest] = Inbox(
            queue_size,
            droppable=lambda item: isinstance(item, Fix),
            on_overflow=lambda: health.count(COMPONENT, "queue-overflow"),
        )
        self.manifest: Manifest | None = None
        self.engine = TripEngine(build_zones(None, config), self._params)
        self.state: EngineState = self.engine.new_state()
        self._order = FixOrder(config.reorder_window, config.max_time_jump)
        self.pending = PendingEvents(sink, health, COMPONENT, clock="gnss", sleep=sleep)
        self._saved_fixes = -1
        self._saved_at = monotonic()

    # ------------------------------------------------------------------ feeding

    def submit_fix(self, fix: Fix) -> None:
        """Queue a fix (never blocks; when the queue is full the oldest item is dropped)."""
        self._put(fix)

    async def on_fix(self, fix: Fix) -> None:
        """Queue a fix (the async form of ``submit_fix``)."""
        self._put(fix)

    async def on_manifest(self, payload: bytes) -> None:
        """Check and queue the payload of a ``cmd/manifest`` command.

        An invalid manifest is counted, reported in health and refused (``CommandRefused``:
        the hub's ack says why); the one in use stays.
        """
        try:
            parse_manifest(payload)
        except ManifestError as exc:
            self._health.count(COMPONENT, "manifest-invalid")
            self._health.set_state(COMPONENT, "manifest-invalid", path=exc.path, reason=exc.reason)
            raise CommandRefused(f"manifest: {exc}") from None
        self._put(_Manifest(bytes(payload)))

    def _put(self, item: Fix | _Manifest) -> None:
        self._inbox.put(item)

    async def idle(self) -> None:
        """Wait until ``run`` has started and processed everything queued so far."""
        await self._inbox.idle()

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Process fixes and manifests until cancelled."""
        await self._start()
        try:
            while True:
                if not await self._inbox.wait(max(0.5, self.config.reorder_window)):
                    # no fix for a while (a tunnel): release what the buffer holds
                    await self._step_all(self._order.flush())
                    await self._maybe_save()
                    continue
                item = self._inbox.popleft()
                if isinstance(item, _Manifest):
                    await self._apply_manifest(item.payload)
                else:
                    await self._take_fix(item)
                await self._maybe_save()
        finally:
            await self._save_now()

    async def _start(self) -> None:
        configured = self.config.manifest
        manifest = await self._files.load_document(
            parse_manifest,
            (lambda: load_manifest_file(configured)) if configured is not None else None,
            ManifestError,
            "manifest-invalid",
        )
        self._use(manifest)
        state = await self._files.load_state(self.engine.load, self.pending)
        if state is not None:
            self.state = state
        if self.pending:
            await self.pending.flush()
            await self._save_now()
        if self._health.state(COMPONENT) is None:
            self._health.set_state(COMPONENT, "ok" if manifest is not None else "no-manifest")

    def _use(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        zones = build_zones(manifest, self.config)
        self.engine = TripEngine(zones, self._params, manifest.route if manifest else None)
        self.state = self.engine.new_state()

    async def _take_fix(self, fix: Fix) -> None:
        now, source = self._clock.now()
        if source == "ntp" and fix.time > now + timedelta(seconds=self.config.max_time_jump):
            # the system clock is synchronised and this fix claims to be from the future
            self._health.count(COMPONENT, "fix-future")
            return
        before = self._order.counters.copy()
        due = self._order.push(fix)
        for reason, n in (self._order.counters - before).items():
            self._health.count(COMPONENT, f"fix-{reason}", n)
        await self._step_all(due)

    async def _step_all(self, fixes: list[Fix]) -> None:
        for fix in fixes:
            old, dup = self.state.dropped_old, self.state.dropped_duplicate
            self.state, events = self.engine.step(self.state, fix)
            if self.state.dropped_old != old:
                self._health.count(COMPONENT, "fix-old")
            if self.state.dropped_duplicate != dup:
                self._health.count(COMPONENT, "fix-duplicate")
            if events:
                await self._commit(events)

    async def _apply_manifest(self, payload: bytes) -> None:
        try:
            manifest = parse_manifest(payload)
        except ManifestError as exc:
            self._health.count(COMPONENT, "manifest-invalid")
            self._health.set_state(COMPONENT, "manifest-invalid", path=exc.path, reason=exc.reason)
            return
        # the fixes still buffered belong to the old zones
        await self._step_all(self._order.flush())
        old = self.engine
        new = TripEngine(build_zones(manifest, self.config), self._params, manifest.route)
        self.state = new.adopt(old, self.state)
        self.engine = new
        self.manifest = manifest
        self._health.count(COMPONENT, "manifest-applied")
        self._health.set_state(COMPONENT, "ok", route=manifest.route, stops=len(manifest.stops))
        try:
            await self._files.save_document(payload)
        except OSError as exc:
            self._health.set_state(COMPONENT, "state-unwritable", error=str(exc))
        await self._save_now()

    # ------------------------------------------------------------------ events

    async def _commit(self, events: list[TripEvent]) -> None:
        for ev in events:
            self.pending.add(ev.type, ev.ts, ev.data, ev.ref)
        await self._save_now()  # written ahead: a crash from here on repeats, never loses
        await self.pending.flush()
        await self._save_now()

    # ------------------------------------------------------------------ persistence

    async def _maybe_save(self) -> None:
        if self.state.fixes != self._saved_fixes and self._mono() - self._saved_at >= SAVE_EVERY_S:
            await self._save_now()

    async def _save_now(self) -> None:
        self._saved_at = self._mono()
        self._saved_fixes = self.state.fixes
        await self._files.save_state(self.engine.dump(self.state), self.pending)
