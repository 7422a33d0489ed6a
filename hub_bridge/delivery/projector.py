"""The delivery projection: follows the timeline, feeds the delivery model, logs its notices.

``Projector.step()`` is one round, and ``run()`` repeats it:

1. manifests and load plans queued through the hub since the last round
   (``store.commands_since``) go to ``model.define``;
2. events stored since the last round (``timeline.events_since``, in ingest order) go to
   ``model.apply`` (the model orders them by event time itself);
3. every ``tick`` seconds ``model.tick(now)`` runs the time-driven rules (a device stale, GNSS
   lost, late risk);
4. in one transaction of the delivery store: the notices are logged and queued for the webhook
   subscribers, exceptions recorded, and the API's views of every parcel and route touched
   rewritten; exceptions raised by the hub's own rules also go into the timeline as events of
   the fleet's pseudo-device ``hub`` (``exception.{type}``: raised, then resolved, with the
   reason), so the timeline holds them like any device's events;
5. the webhook worker and the stream are woken; every ``checkpoint`` seconds the cursors and
   ``model.dump()`` are saved together;
6. with ``send_etas`` (``hub-bridge run`` does it), the routes whose views changed go to their
   vans as ``cmd/eta`` commands (``hub_bridge.delivery.vaneta``: a stop's status at once, ETAs
   alone at most every ``van_eta_interval``), queued by a task of their own in the hub's
   command queue: the driver app reads the hub's ETA from the van's ``GET /v1/trip``.

After a crash the projector resumes from the last checkpoint and processes again what came
after it. The model makes the same notices from the same input with the same ids, so the log
(``ON CONFLICT DO NOTHING``) and the queue receive nothing twice, and the hub's exception events
are de-duplicated by their id like any event. Any store failure mid-round does the same:
the model goes back to the checkpoint.

With N hub instances on one PostgreSQL database exactly one projector runs: the one holding
the store's leader lock (``store.lead()``, ``pg_try_advisory_lock``); the others wait to take
over. On SQLite there is one hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.units import Duration
from edge_agent.wire.envelope import EnvelopeError, format_ts, parse_ts, validate_envelope
from hub_bridge.commands import CommandError, CommandLimits, prepare_command
from hub_bridge.delivery.push import PushSettings, WebhookWorker
from hub_bridge.delivery.sse import StreamHub
from hub_bridge.delivery.store import (
    Checkpoint,
    DeliveryStore,
    NewNotice,
    canonical_json,
    notice_subject,
)
from hub_bridge.delivery.vaneta import DEFAULT_INTERVAL_S, EtaCommand, VanEtaPlanner
from hub_bridge.ingest import HUB_DEVICE
from hub_bridge.store import StoreUnavailable

__all__ = [
    "HUB_DEVICE",
    "CommandQueue",
    "DeliveryConfig",
    "DeliveryService",
    "ModelLike",
    "NoticeLike",
    "Projector",
    "ProjectorSettings",
    "hub_event_id",
]

log = logging.getLogger(__name__)

"""The pseudo-device whose events are the exceptions the hub's own rules raise (one per fleet;
no real device may take this id)."""

_REF_KEYS = ("parcel", "shipment", "stop", "route", "vehicle", "dock")
_PLANS_KEPT = 1000  # plan ids remembered: more than a store can send again (LATE_COMMANDS_S)


class NoticeLike(Protocol):
    """What the projector reads of ``hub_bridge.delivery.model.Notice``."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def fleet(self) -> str: ...
    @property
    def ts(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    def to_json(self) -> dict[str, Any]: ...


class ModelLike(Protocol):
    """What the projector uses of ``hub_bridge.delivery.model.DeliveryModel``."""

    def define(
        self, fleet: str, device: str, name: str, payload: dict[str, Any], ts: str
    ) -> Sequence[NoticeLike]: ...
    def apply(self, envelope: dict[str, Any]) -> Sequence[NoticeLike]: ...
    def tick(self, now: float) -> Sequence[NoticeLike]: ...
    def parcel(self, fleet: str, parcel_id: str) -> dict[str, Any] | None: ...
    def route(self, fleet: str, route_id: str) -> dict[str, Any] | None: ...
    def dump(self) -> dict[str, Any]: ...


class EventLog(Protocol):
    """What the projector uses of the timeline (``hub_bridge.store.TimelineStore``)."""

    async def events_since(
        self, cursor: int = 0, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int]: ...

    async def store(
        self,
        fleet: str,
        device: str,
        events: Sequence[dict[str, Any]],
        flags: Sequence[list[str]],
        rejected_seqs: Iterable[int] = (),
        received: float | None = None,
    ) -> Any: ...

    async def ack_payload(self, fleet: str, device: str, watermark: int) -> dict[str, Any]: ...


class CommandQueue(Protocol):
    """What the projector uses of the hub's command queue (``TimelineStore.add_command``)."""

    async def add_command(
        self,
        fleet: str,
        device: str,
        name: str,
        cid: str,
        payload: str,
        limits: CommandLimits,
        now: float | None = None,
    ) -> list[str]: ...


ModelFactory = Callable[[dict[str, Any] | None], ModelLike]
"""Makes the model: from a dump, or empty (None)."""


def default_model(dump: dict[str, Any] | None) -> ModelLike:
    """The delivery model of ``hub_bridge.delivery.model``, new or loaded from ``dump``."""
    from hub_bridge.delivery.model import DeliveryModel

    model: ModelLike = DeliveryModel() if dump is None else DeliveryModel.load(dump)
    return model


_MAX_GIVE_WAY_S = 2.0  # the longest pause for ingest between two rounds of the projector


@dataclass(frozen=True, slots=True)
class ProjectorSettings:
    """How often the projector looks, ticks and checkpoints."""

    poll: float = 0.2
    """Seconds between looks at the timeline when nothing wakes it."""
    batch: int = 1000
    """Events read per round."""
    tick: float = 5.0
    """Seconds between runs of the time-driven rules."""
    checkpoint: float = 30.0
    """Seconds between checkpoints (what is re-processed after a crash: 30 s of events take a
    few seconds; a checkpoint of a big fleet's model is megabytes)."""
    leader_poll: float = 5.0
    """Seconds between tries to become the projector, for a hub that is not."""
    name: str = "delivery"
    busy_share: float = 0.25
    """While the hub's ingest has messages waiting, the share of the hub's time the projector
    takes at most: storing and acknowledging what the vans send comes first (their outboxes
    drain sooner), and the projection catches up once the backlog is gone."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhooksConfig(_Section):
    """``delivery.webhooks``: how webhooks are retried and how many go at once."""

    max_attempts: int = Field(default=12, ge=1, le=100)
    max_age: Duration = Field(default=86400.0, gt=0)
    backoff_base: Duration = Field(default=2.0, gt=0)
    backoff_cap: Duration = Field(default=3600.0, gt=0)
    timeout: Duration = Field(default=10.0, gt=0, le=300)
    concurrency: int = Field(default=64, ge=1, le=1000)
    per_subscription: int = Field(default=32, ge=1, le=1000)
    retention: Duration = Field(default=2 * 86400.0, gt=0)
    views_retention: Duration = Field(default=90 * 86400.0, gt=0)
    allow_private: bool = False
    """Receivers on loopback or private addresses allowed (a lab, a dispatch system inside the
    operator's network); off, the hub refuses them at subscription and at every connection."""

    def settings(self) -> PushSettings:
        """The worker's settings."""
        return PushSettings(
            max_attempts=self.max_attempts,
            max_age=self.max_age,
            backoff_base=self.backoff_base,
            backoff_cap=max(self.backoff_cap, self.backoff_base),
            timeout=self.timeout,
            concurrency=self.concurrency,
            per_subscription=self.per_subscription,
            retention=self.retention,
            views_retention=self.views_retention,
            allow_private=self.allow_private,
        )


class StreamConfig(_Section):
    """``delivery.stream``: the server-sent event stream."""

    buffer: int = Field(default=1000, ge=10, le=100_000)
    heartbeat: Duration = Field(default=15.0, gt=0)
    max_clients: int = Field(default=1000, ge=1, le=100_000)
    poll: Duration = Field(default=0.5, gt=0)


class DeliveryConfig(_Section):
    """The hub's ``delivery:`` section (issue 12: statuses, ETAs, exceptions, push)."""

    enabled: bool = True
    poll: Duration = Field(default=0.2, gt=0)
    tick: Duration = Field(default=5.0, gt=0)
    checkpoint: Duration = Field(default=30.0, gt=0)
    busy_share: float = Field(default=0.25, gt=0, le=1)
    """While ingest has messages waiting, the projector's share of the hub's time at most."""
    van_eta_interval: Duration = Field(default=DEFAULT_INTERVAL_S, gt=0, le=3600)
    """Least time between two ``cmd/eta`` of a route whose ETAs alone changed (a stop's status
    change goes at once): the van's ``GET /v1/trip`` shows the hub's ETAs."""
    webhooks: WebhooksConfig = WebhooksConfig()
    stream: StreamConfig = StreamConfig()

    def projector(self) -> ProjectorSettings:
        """The projector's settings."""
        return ProjectorSettings(
            poll=self.poll, tick=self.tick, checkpoint=self.checkpoint, busy_share=self.busy_share
        )


def hub_event_id(notice_id: str, ts: str) -> str:
    """The timeline id of the hub's event for a notice: UUIDv7-shaped (the notice's time in
    its first 48 bits), the rest from a hash of the notice id, so it is the same every time."""
    try:
        ms = int(parse_ts(ts).timestamp() * 1000)
    except ValueError:
        ms = 0
    rand = int.from_bytes(hashlib.sha256(notice_id.encode()).digest()[:10], "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _contract_ts(ts: str) -> str:
    """``ts`` as the envelope wants it (milliseconds, ``Z``), whatever ISO form it came in."""
    try:
        return format_ts(parse_ts(ts))
    except ValueError:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return format_ts(when if when.tzinfo else when.replace(tzinfo=UTC))


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _touched(env: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The parcels and routes an event names (their views are rewritten after it)."""
    ref = env.get("ref") or {}
    data = env.get("data") or {}
    parcels = set(_ids(ref.get("parcel"))) | set(_ids(data.get("parcel")))
    for name in ("parcels", "missing"):
        parcels |= set(_ids(data.get(name)))
    routes = set(_ids(ref.get("route"))) | set(_ids(data.get("route")))
    return parcels, routes


def _planned(name: str, payload: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The parcels and routes a manifest or load plan names."""
    parcels: set[str] = set()
    routes: set[str] = set()
    if name == "manifest":
        routes |= set(_ids(payload.get("route")))
        for stop in payload.get("stops") or []:
            if isinstance(stop, Mapping):
                parcels |= set(_ids(stop.get("parcels")))
    else:
        for r in payload.get("routes") or []:
            if isinstance(r, Mapping):
                routes |= set(_ids(r.get("route")))
                parcels |= set(_ids(r.get("parcels")))
    return parcels, routes


class Projector:
    """Follows ``timeline`` into ``store`` through the delivery model."""

    def __init__(
        self,
        timeline: EventLog,
        store: DeliveryStore,
        settings: ProjectorSettings | None = None,
        *,
        model_factory: ModelFactory = default_model,
        health: HealthRegistry | None = None,
        clock: Callable[[], float] = time.time,
        on_logged: Callable[[int], None] | None = None,
    ) -> None:
        self.timeline = timeline
        self.store = store
        self.settings = settings or ProjectorSettings()
        self.health = health or HealthRegistry()
        self._factory = model_factory
        self._clock = clock
        self._on_logged = on_logged
        self._wake = asyncio.Event()
        self.model: ModelLike | None = None
        self.cp = Checkpoint()
        self._dirty = False
        self._last_tick = clock()  # the first tick after one interval: events come first
        self._last_cp = 0.0
        self._hub_seq: dict[str, int] = {}
        self._plans_taken: dict[str, None] = {}  # ids of the last plans defined, oldest first
        self.rounds = 0
        self._van_eta: VanEtaPlanner | None = None
        self._commands: CommandQueue | None = None
        self._command_limits = CommandLimits()
        self._commands_changed: Callable[[], None] | None = None
        self._eta_out: dict[tuple[str, str], EtaCommand] = {}
        self._eta_ready = asyncio.Event()
        self._ingest_busy: Callable[[], bool] = lambda: False
        self._eta_sending = False

    def send_etas(
        self,
        queue: CommandQueue,
        limits: CommandLimits,
        commands_changed: Callable[[], None],
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        """Queue each active route's ETAs for its vehicle as a ``cmd/eta`` command in ``queue``
        (``hub_bridge.delivery.vaneta``) and call ``commands_changed`` so the bridge publishes
        them. Call before ``run`` and ``send_etas_loop`` start."""
        self._van_eta = VanEtaPlanner(interval)
        self._commands, self._command_limits = queue, limits
        self._commands_changed = commands_changed

    def wake(self) -> None:
        """Events were stored: look now rather than at the next poll."""
        self._wake.set()

    async def resume(self) -> None:
        """Load the last checkpoint (or start empty): the model and the cursors."""
        cp = await self.store.load_checkpoint(self.settings.name)
        self.cp = cp or Checkpoint()
        try:
            self.model = self._factory(self.cp.model)
        except Exception as exc:  # a dump this version cannot read: rebuild from the timeline
            log.warning("delivery model checkpoint unreadable (%s): projecting from the start", exc)
            self.health.count("projector", "checkpoint-unreadable")
            self.cp = Checkpoint()
            self.model = self._factory(None)
        self._hub_seq = {str(k): int(v) for k, v in self.cp.extra.get("hub_seq", {}).items()}
        self._plans_taken = dict.fromkeys(str(x) for x in self.cp.extra.get("plans", []))
        self._dirty = False
        self._last_cp = self._clock()

    async def checkpoint(self) -> None:
        """Save the cursors and the model now."""
        if self.model is None:
            return
        # dumped on a thread (megabytes of JSON for a big fleet): the event loop goes on
        # serving the API meanwhile; the model does not change, this task is its only user
        self.cp.model = await asyncio.to_thread(self.model.dump)
        self.cp.extra = {"hub_seq": dict(self._hub_seq), "plans": list(self._plans_taken)}
        await self.store.save_checkpoint(self.settings.name, self.cp, self._clock())
        self._dirty = False
        self._last_cp = self._clock()

    async def step(self) -> int:
        """One round; returns how many events and plans it took (0: nothing new)."""
        if self.model is None:
            await self.resume()
        model = self.model
        assert model is not None
        now = self._clock()
        notices: list[NoticeLike] = []
        parcels: set[tuple[str, str]] = set()
        routes: set[tuple[str, str]] = set()

        plans, ccur = await self.store.commands_since(self.cp.commands, 100)
        plans = [p for p in plans if p["id"] not in self._plans_taken]
        for p in plans:
            self._plans_taken[p["id"]] = None
            while len(self._plans_taken) > _PLANS_KEPT:
                del self._plans_taken[next(iter(self._plans_taken))]
            ts = format_ts(datetime.fromtimestamp(p["created"], UTC))
            try:
                notices += model.define(p["fleet"], p["device"], p["name"], p["payload"], ts)
            except Exception:  # a plan the device will refuse must not stop the projection
                self.health.count("projector", "define-failed")
                log.exception("delivery model: %s for %s/%s", p["name"], p["fleet"], p["device"])
                continue
            ps, rs = _planned(p["name"], p["payload"])
            parcels |= {(p["fleet"], x) for x in ps}
            routes |= {(p["fleet"], x) for x in rs}

        events, ecur = await self.timeline.events_since(self.cp.events, self.settings.batch)
        for env in events:
            if env.get("device") == HUB_DEVICE and str(env.get("type", "")).startswith(
                "exception."
            ):
                continue  # the hub's own exceptions, made from notices already
            try:
                notices += model.apply(env)
            except Exception:  # one event the model chokes on must not stop the projection
                self.health.count("projector", "apply-failed")
                log.exception("delivery model: event %s of %s/%s", env.get("id"),
                              env.get("fleet"), env.get("device"))  # fmt: skip
                continue
            ps, rs = _touched(env)
            parcels |= {(env["fleet"], x) for x in ps}
            routes |= {(env["fleet"], x) for x in rs}

        if now - self._last_tick >= self.settings.tick:
            notices += model.tick(now)
            self._last_tick = now

        for n in notices:
            if n.kind == "parcel.status":
                parcels.add((n.fleet, n.key))
            elif n.kind == "stop.eta":
                routes.add((n.fleet, n.key))
            ref = n.payload.get("ref")
            if isinstance(ref, Mapping):
                parcels |= {(n.fleet, x) for x in _ids(ref.get("parcel"))}
                routes |= {(n.fleet, x) for x in _ids(ref.get("route"))}

        views: list[tuple[str, str, str, str | None]] = []
        for fleet, pid in sorted(parcels):
            found = model.parcel(fleet, pid)
            if found is not None:
                views.append(("parcel", fleet, pid, canonical_json(found)))
        for fleet, rid in sorted(routes):
            found = model.route(fleet, rid)
            if found is not None:
                views.append(("route", fleet, rid, canonical_json(found)))
                if self._van_eta is not None:
                    self._van_eta.offer(fleet, found, now)

        rows = [
            NewNotice(
                n.id,
                n.fleet,
                n.kind,
                n.key,
                n.ts,
                canonical_json(n.to_json()),
                notice_subject(n.kind, n.payload),
            )
            for n in notices
        ]
        await self._hub_events(notices)
        logged = await self.store.log_notices(rows, views, now) if rows or views else []
        self.cp.commands, self.cp.events = ccur, ecur
        self._queue_etas(now)
        took = len(plans) + len(events)
        if took or notices:
            self._dirty = True
        if logged:
            self.health.count("projector", "notices", len(logged))
            if self._on_logged is not None:
                self._on_logged(len(logged))
        if took:
            self.health.count("projector", "events", len(events))
        if self._dirty and self._clock() - self._last_cp >= self.settings.checkpoint:
            await self.checkpoint()
        self.rounds += 1
        return took

    def _queue_etas(self, now: float) -> None:
        """Hand the ``cmd/eta`` commands due now to ``send_etas_loop`` (after the views are
        committed: the van never shows an ETA the hub's API does not). Queuing a command is a
        commit of its own: done off the round, it does not delay the statuses and webhooks."""
        if self._van_eta is None:
            return
        for cmd in self._van_eta.due(now):
            key = (cmd.fleet, cmd.route)
            self._eta_out.pop(key, None)  # one per route: the newest, last
            self._eta_out[key] = cmd
        if self._eta_out:
            self._eta_ready.set()

    async def send_etas_loop(self) -> None:
        """Queue the ``cmd/eta`` commands ``_queue_etas`` hands over, until cancelled; a store
        failure sends the route's ETAs again at the next round."""
        planner, queue = self._van_eta, self._commands
        if planner is None or queue is None:
            return
        while True:
            await self._eta_ready.wait()
            self._eta_ready.clear()
            batch, self._eta_out = list(self._eta_out.values()), {}
            self._eta_sending = True
            queued = failed = 0
            for cmd in batch:
                body = canonical_json(cmd.payload).encode()
                try:
                    cid, payload = prepare_command(body)
                except CommandError as exc:  # a route of thousands of stops: over the limit
                    self.health.count("projector", "eta-command-invalid")
                    log.warning("cmd/eta for route %s not queued: %s", cmd.route, exc)
                    continue
                try:
                    await queue.add_command(
                        cmd.fleet, cmd.device, "eta", cid, payload, self._command_limits
                    )
                except (StoreUnavailable, sqlite3.OperationalError) as exc:
                    planner.failed(cmd)
                    failed += 1
                    self.health.count("projector", "eta-command-failed")
                    log.warning("cmd/eta for route %s not queued: %s", cmd.route, exc)
                    continue
                queued += 1
            if queued:
                self.health.count("projector", "eta-commands", queued)
                if self._commands_changed is not None:
                    self._commands_changed()
            self._eta_sending = False
            if failed:
                await asyncio.sleep(self.settings.poll * 5)  # the store is down: not a hot loop

    @property
    def etas_waiting(self) -> bool:
        """Whether ``cmd/eta`` commands are handed over and not queued (or failed) yet."""
        return bool(self._eta_out) or self._eta_ready.is_set() or self._eta_sending

    async def _hub_events(self, notices: Sequence[NoticeLike]) -> None:
        """The hub's own exceptions as timeline events of the fleet's ``hub`` pseudo-device."""
        by_fleet: dict[str, list[dict[str, Any]]] = {}
        for n in notices:
            if n.kind not in ("exception.raised", "exception.resolved"):
                continue
            etype = notice_subject(n.kind, n.payload)
            if etype is None or etype.startswith("exception."):
                continue  # a device's own exception.* is in the timeline already
            env = await self._hub_envelope(n, etype)
            if env is not None:
                by_fleet.setdefault(n.fleet, []).append(env)
        for fleet, envs in by_fleet.items():
            await self.timeline.store(fleet, HUB_DEVICE, envs, [[] for _ in envs])

    async def _hub_envelope(self, n: NoticeLike, etype: str) -> dict[str, Any] | None:
        if n.fleet not in self._hub_seq:
            ack = await self.timeline.ack_payload(n.fleet, HUB_DEVICE, 0)
            self._hub_seq[n.fleet] = int(ack.get("top", 0))
        seq = self._hub_seq[n.fleet] + 1
        ref_in = n.payload.get("ref")
        ref = {
            k: v
            for k, v in (ref_in.items() if isinstance(ref_in, Mapping) else ())
            if k in _REF_KEYS and isinstance(v, str)
        }
        env: dict[str, Any] = {
            "id": hub_event_id(n.id, _contract_ts(n.ts)),
            "seq": seq,
            "fleet": n.fleet,
            "device": HUB_DEVICE,
            "type": f"exception.{etype}",
            "ts": _contract_ts(n.ts),
            "clock": "ntp",
            "data": {"notice": n.id, "state": n.kind.rpartition(".")[2], **n.payload},
        }
        if ref:
            env["ref"] = ref
        try:
            checked = validate_envelope(env)
        except (EnvelopeError, ValueError) as exc:
            self.health.count("projector", "hub-event-invalid")
            log.warning("exception %s not stored in the timeline: %s", n.id, exc)
            return None
        self._hub_seq[n.fleet] = seq
        return checked

    def yield_to(self, ingest_busy: Callable[[], bool]) -> None:
        """Give way to the hub's ingest while ``ingest_busy()`` (see ``busy_share``)."""
        self._ingest_busy = ingest_busy

    async def run(self) -> None:
        """Project until cancelled, while this hub is the leader; on a store failure go back
        to the last checkpoint and try again."""
        s = self.settings
        while True:
            try:
                if not await self.store.lead():
                    self.health.set_state("projector", "standby")
                    self.model = None
                    await asyncio.sleep(s.leader_poll)
                    continue
                self._wake.clear()
                began = time.monotonic()
                took = await self.step()
                self.health.set_state("projector", "ok")
                if took and self._ingest_busy():
                    # ingest first: a round of t seconds is followed by a pause that keeps
                    # the projector's share of the time at busy_share while messages wait
                    spent = time.monotonic() - began
                    share = min(max(s.busy_share, 0.01), 1.0)
                    await asyncio.sleep(min(spent * (1 - share) / share, _MAX_GIVE_WAY_S))
            except (StoreUnavailable, sqlite3.OperationalError) as exc:
                self.health.set_state("projector", "store-unavailable", error=str(exc)[:200])
                self.model = None  # back to the checkpoint: what was applied is applied again
                await asyncio.sleep(s.poll * 5)
                continue
            if took < s.batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(s.poll):
                        await self._wake.wait()


class DeliveryService:
    """The projector, the webhook worker and the stream of one hub, as one task."""

    def __init__(
        self,
        timeline: EventLog,
        store: DeliveryStore,
        config: DeliveryConfig | None = None,
        *,
        health: HealthRegistry | None = None,
        model_factory: ModelFactory = default_model,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = config or DeliveryConfig()
        self._van_eta_interval = cfg.van_eta_interval
        self.health = health or HealthRegistry()
        self.stream = StreamHub(
            store,
            poll=cfg.stream.poll,
            buffer=cfg.stream.buffer,
            heartbeat=cfg.stream.heartbeat,
            max_clients=cfg.stream.max_clients,
            health=self.health,
        )
        self.worker = WebhookWorker(store, cfg.webhooks.settings(), health=self.health, clock=clock)
        self.projector = Projector(
            timeline,
            store,
            cfg.projector(),
            model_factory=model_factory,
            health=self.health,
            clock=clock,
            on_logged=self._logged,
        )

    def _logged(self, _n: int) -> None:
        self.worker.wake()
        self.stream.wake()

    def send_etas(
        self, queue: CommandQueue, limits: CommandLimits, commands_changed: Callable[[], None]
    ) -> None:
        """Send each route's ETAs to its van (``Projector.send_etas``), every
        ``van_eta_interval`` at most when only ETAs changed."""
        self.projector.send_etas(queue, limits, commands_changed, self._van_eta_interval)

    def yield_to(self, ingest_busy: Callable[[], bool]) -> None:
        """The projector gives way to the hub's ingest while ``ingest_busy()``."""
        self.projector.yield_to(ingest_busy)

    def events_stored(self) -> None:
        """Call when the bridge committed events: the projector looks at once."""
        self.projector.wake()

    async def run(self) -> None:
        """Run all three until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.projector.run(), name="projector")
            tg.create_task(self.worker.run(), name="webhooks")
            tg.create_task(self.stream.run(), name="stream")
            tg.create_task(self.projector.send_etas_loop(), name="van-eta")
