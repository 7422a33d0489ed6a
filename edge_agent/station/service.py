"""The station service: dock sensors, cameras and scanners in, load events out, signals driven.

The runtime starts it as ``await StationService(config, sink, health, clock).run()`` for an
agent with ``device.role: station`` and hands it every ``cmd/loadplan`` (``on_loadplan``). It
runs, per dock, the door and bay drivers, the signal, and (through one ``ScanService``) the
cameras and scanners; every observation goes through one queue to one consumer that steps the
pure ``LoadEngine`` (DESIGN §8).

Order of work for each observation: the engine steps; its signal cues are applied at once (the
dock goes red before anything is written: a misload must stop the worker now); then the events
of everything stepped meanwhile are written ahead with their ids in the state file, committed to
the outbox and the state saved again (``edge_agent.pending``): a crash at any point repeats at
most a commit the outbox recognises, and a restart mid-load neither loses nor repeats an event.

The load plan: a ``cmd/loadplan`` is checked and kept on disk (``station-plan.json``) before it
is acknowledged, so the station works offline from the last plan it was given; the file named by
``station.plan`` is used until one arrives. An invalid plan is refused (the hub's ack says why)
and the one in use stays.

Never raises on bad input or a failing outbox (counted in health ``station``); a device that fails
is reopened by its driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_agent.clock import Clock
from edge_agent.outbox import Draft
from edge_agent.pending import PendingEvents
from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.inbox import Inbox
from edge_agent.producer_files import ProducerFiles
from edge_agent.scan.config import ScanConfig
from edge_agent.scan.events import Read
from edge_agent.sink import EventSink
from edge_agent.station.config import DistanceBayConfig, DockConfig, StationConfig
from edge_agent.station.engine import (
    BayObs,
    DoorObs,
    LoadEngine,
    LoadParams,
    LoadState,
    Observation,
    ScanObs,
    SignalCue,
    StationEvent,
)
from edge_agent.station.plan import LoadPlan, PlanError, load_plan_file, parse_load_plan
from edge_agent.station.sensors import (
    ContactKind,
    DockSignal,
    SensorClock,
    run_contact,
    run_distance_bay,
)
from edge_agent.station.signal import SignalPattern
from edge_agent.wire.commands import CommandRefused
from edge_agent.wire.envelope import parse_ts

__all__ = ["StationService"]

log = logging.getLogger(__name__)

COMPONENT = "station"
PLAN_FILE = "station-plan.json"
STATE_FILE = "station-state.json"
STATE_FORMAT = 1
STEP_BATCH = 256
"""Observations stepped before their events are committed together (one state write, one
outbox group): a burst of reads costs a few fsyncs, not one per read."""
COMMIT_EVERY_S = 0.25
"""Under load, at most about this often a group is written ahead and committed; a read after a
quiet spell is committed at once. Cues never wait for it."""


class _Plan:
    __slots__ = ("payload", "plan")

    def __init__(self, plan: LoadPlan, payload: bytes | None) -> None:
        self.plan = plan
        self.payload = payload


class StationService:
    """Runs a station's docks and load verification (module docstring)."""

    def __init__(
        self,
        config: StationConfig,
        sink: EventSink,
        health: HealthRegistry,
        clock: Clock,
        *,
        state_dir: Path | None = None,
        queue_size: int = 16_384,
        gpiod: ModuleType | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._sink = sink
        self._health = health
        self._clock = clock
        self._gpiod = gpiod
        folder = config.state_dir if config.state_dir is not None else state_dir
        self._files = ProducerFiles(
            folder,
            health,
            COMPONENT,
            document=PLAN_FILE,
            state=STATE_FILE,
            state_format=STATE_FORMAT,
        )
        self._params = LoadParams(
            gateout_codes=frozenset(config.gateout_codes), vehicle_prefix=config.vehicle_prefix
        )
        self.engine = LoadEngine(None, self._params)
        self.state: LoadState = self.engine.new_state()
        self.pending = PendingEvents(sink, health, COMPONENT, sleep=sleep)
        self._sleep = sleep
        self._last_commit = float("-inf")
        # a burst of reads may push out the oldest observation, never a plan
        self._inbox: Inbox[Observation | _Plan] = Inbox(
            queue_size,
            droppable=lambda item: not isinstance(item, _Plan),
            on_overflow=lambda: health.count(COMPONENT, "queue-overflow"),
        )
        self._sensor_clock = SensorClock(utc_now=self._utc_now, monotonic_ns=monotonic_ns)
        self._mono_ns = monotonic_ns
        self.signals: dict[str, DockSignal] = {}
        for dock in config.docks:
            if dock.signal is not None:
                self.signals[dock.id] = DockSignal(
                    dock.id,
                    dock.signal.green,
                    dock.signal.red,
                    dock.signal.buzzer,
                    health,
                    pattern=SignalPattern(dock.signal.green_hold, dock.signal.red_hold),
                    monotonic_ns=monotonic_ns,
                    gpiod=gpiod,
                )
        self._docks = {dock.id for dock in config.docks}
        self._dock_of_source = {c.id: dock.id for dock in config.docks for c in dock.cameras}
        self._dock_of_source.update({s.id: dock.id for dock in config.docks for s in dock.scanners})
        self.cue_log: deque[tuple[int, SignalCue]] = deque(maxlen=1024)
        """The last cues with the monotonic time (ns) they were applied (benchmarks, tests)."""

    def _utc_now(self) -> datetime:
        return self._clock.now()[0]

    # ------------------------------------------------------------------ feeding

    async def on_loadplan(self, payload: bytes) -> None:
        """Check, keep on disk and queue the payload of a ``cmd/loadplan`` command.

        Raises ``CommandRefused`` (the hub's ack says why) for an invalid plan, or one that
        cannot be kept on disk: a plan is acknowledged only once the station can work from it
        offline, after a restart too.
        """
        try:
            plan = parse_load_plan(payload)
        except PlanError as exc:
            self._health.count(COMPONENT, "plan-invalid")
            self._health.set_state(COMPONENT, "plan-invalid", path=exc.path, reason=exc.reason)
            raise CommandRefused(f"loadplan: {exc}") from None
        try:
            await self._files.save_document(bytes(payload))
        except OSError as exc:
            self._health.set_state(COMPONENT, "state-unwritable", error=str(exc))
            raise CommandRefused(f"loadplan: cannot keep it on disk: {exc}") from None
        self._put(_Plan(plan, None))

    def observe(self, obs: Observation) -> None:
        """Queue one observation (never blocks; when the queue is full the oldest observation
        is dropped and counted)."""
        self._put(obs)

    async def on_observation(self, kind: ContactKind, dock: str, state: bool, t: datetime) -> None:
        """The sensors' callback: a debounced door or bay change."""
        if kind == "door":
            self._put(DoorObs(t, dock, state))
        else:
            self._put(BayObs(t, dock, state))

    async def on_read(self, read: Read) -> None:
        """The scan service's callback: a deduplicated read of a dock's camera or scanner."""
        dock = self._dock_of_source.get(read.source)
        if dock is None:  # a source of no dock: configuration checks make this impossible
            self._health.count(COMPONENT, "read-without-dock")
            return
        try:
            obs = ScanObs(self._utc_now(), dock, read.text)
        except ValueError:  # an empty or oversized text: not a label
            self._health.count(COMPONENT, "read-invalid")
            return
        self._put(obs)

    def on_posted(self, drafts: Iterable[Draft]) -> None:
        """Events posted to the agent's local API and committed: each ``scan`` that names its
        dock (``ref.dock``) or comes from a dock's scanner (``data.source``) is read at that
        dock, at its own time. A handheld app that posts its scans needs nothing else."""
        for draft in drafts:
            if draft.type != "scan":
                continue
            ref = draft.ref or {}
            dock = ref.get("dock") or self._dock_of_source.get(str(draft.data.get("source")))
            if not isinstance(dock, str) or dock not in self._docks:
                self._health.count(COMPONENT, "posted-scan-without-dock")
                continue
            try:
                self._put(ScanObs(parse_ts(draft.ts), dock, str(draft.data.get("text", ""))))
            except ValueError:
                self._health.count(COMPONENT, "read-invalid")

    def _put(self, item: Observation | _Plan) -> None:
        self._inbox.put(item)

    async def idle(self) -> None:
        """Wait until ``run`` has started and processed everything queued so far."""
        await self._inbox.idle()

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Run the docks' devices and the engine until cancelled."""
        await self._start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._consume(), name="station-engine")
                for dock in self.config.docks:
                    self._start_dock(tg, dock)
                scan = self._scan_config()
                if scan is not None:
                    from edge_agent.scan.service import ScanService  # OpenCV: only when used

                    service = ScanService(
                        scan, self._sink, self._health, self._clock, deliver=self.on_read
                    )
                    tg.create_task(service.run(), name="station-scan")
        finally:
            await self._save_now()

    def _scan_config(self) -> ScanConfig | None:
        # a camera over a dock door sees several labels at once: every code of each frame
        cameras = [
            c.model_copy(update={"decode": "every"}) for d in self.config.docks for c in d.cameras
        ]
        scanners = [s for d in self.config.docks for s in d.scanners]
        if not cameras and not scanners:
            return None
        return ScanConfig(
            dedup_window=self.config.dedup_window,
            budget=self.config.budget,
            cameras=cameras,
            scanners=scanners,
        )

    def _start_dock(self, tg: asyncio.TaskGroup, dock: DockConfig) -> None:
        contacts: list[tuple[ContactKind, str]] = []
        if dock.door is not None:
            contacts.append(("door", dock.door))
        bay = dock.bay
        if isinstance(bay, DistanceBayConfig):
            tg.create_task(
                run_distance_bay(
                    dock.id,
                    bay.source,
                    bay.protocol,
                    self.on_observation,
                    self._health,
                    self._sensor_clock,
                    occupied_below=bay.occupied_below,
                    free_above=bay.free_above,
                    hold_s=bay.hold,
                    stale_after_s=bay.stale_after,
                ),
                name=f"station:{dock.id}:bay",
            )
        elif bay is not None:
            contacts.append(("bay", bay))
        for kind, url in contacts:
            tg.create_task(
                run_contact(
                    dock.id,
                    kind,
                    url,
                    self.on_observation,
                    self._health,
                    self._sensor_clock,
                    settle_s=dock.settle,
                    unstable_after_s=dock.unstable_after,
                    gpiod=self._gpiod,
                ),
                name=f"station:{dock.id}:{kind}",
            )
        signal = self.signals.get(dock.id)
        if signal is not None:
            tg.create_task(signal.run(), name=f"station:{dock.id}:signal")

    async def _start(self) -> None:
        configured = self.config.plan
        plan = await self._files.load_document(
            parse_load_plan,
            (lambda: load_plan_file(configured)) if configured is not None else None,
            PlanError,
            "plan-invalid",
        )
        self.engine = LoadEngine(plan, self._params)
        state = await self._files.load_state(self.engine.load, self.pending)
        self.state = state if state is not None else self.engine.new_state()
        if self.pending:
            await self.pending.flush()
            await self._save_now()
        if self._health.state(COMPONENT) is None:
            self._set_ok()

    def _set_ok(self) -> None:
        plan = self.engine.plan
        if plan.routes:
            self._health.set_state(COMPONENT, "ok", station=plan.station, routes=len(plan.routes))
        else:
            self._health.set_state(COMPONENT, "no-plan")

    async def _consume(self) -> None:
        events: list[StationEvent] = []
        try:
            while True:
                await self._inbox.wait()
                while True:
                    await self._step_queued(events)
                    # Under load, observations keep being stepped (their cues applied at once)
                    # for up to COMMIT_EVERY_S after the last commit, then committed together:
                    # the write-ahead of the whole state costs per group, not per read.
                    wait = self._last_commit + COMMIT_EVERY_S - time.monotonic()
                    if not events or wait <= 0:
                        break
                    await self._sleep(wait)
                if events:
                    await self._commit(events)
                    events = []
        finally:
            if events:  # stepped but not yet written: a stop must not lose them
                await self._commit(events)

    async def _step_queued(self, events: list[StationEvent]) -> None:
        """Step what is queued (up to ``STEP_BATCH``), adding the events to ``events``."""
        for _ in range(min(STEP_BATCH, len(self._inbox))):
            item = self._inbox.popleft()
            if isinstance(item, _Plan):
                if events:  # the events so far belong to the old plan's steps
                    await self._commit(events)
                    events.clear()
                await self._apply_plan(item.plan)
                continue
            try:
                self.state, result = self.engine.step(self.state, item)
            except ValueError as exc:  # an observation the engine refuses
                self._health.count(COMPONENT, "observation-invalid")
                log.warning("station: observation refused: %s", exc)
                continue
            for cue in result.cues:
                self._cue(cue)
            events.extend(result.events)

    def _cue(self, cue: SignalCue) -> None:
        signal = self.signals.get(cue.dock)
        if signal is not None:
            signal.cue(cue.color)
        self.cue_log.append((self._mono_ns(), cue))

    async def _apply_plan(self, plan: LoadPlan) -> None:
        new = LoadEngine(plan, self._params)
        self.state = new.adopt(self.engine, self.state)
        self.engine = new
        self._health.count(COMPONENT, "plan-applied")
        self._set_ok()
        await self._save_now()

    async def _commit(self, events: list[StationEvent]) -> None:
        self._last_commit = time.monotonic()
        for ev in events:
            self.pending.add(ev.type, ev.t, ev.data, ev.ref)
        await self._save_now()  # written ahead: a crash from here on repeats, never loses
        await self.pending.flush()
        # The state is not saved again here: the next write-ahead (or the stop) drops the
        # committed events from the file, and a restart before it re-commits ids the outbox
        # recognises. One state write per group, not two: the state grows with the shift.

    async def _save_now(self) -> None:
        await self._files.save_state(self.engine.dump(self.state), self.pending)
