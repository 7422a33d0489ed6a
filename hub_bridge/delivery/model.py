"""The delivery model, pure: stored events in; parcel statuses, ETAs, exceptions and notices out.

``DeliveryModel`` is what the hub derives from its timeline (DESIGN §9), with no I/O and no clock
of its own (time comes from the events' ``ts`` and from ``tick(now)``)::

    model = DeliveryModel(settings=None)
    model.define(fleet, device, "manifest" | "loadplan", payload, ts) -> list[Notice]
    model.apply(envelope) -> list[Notice]        # one stored event
    model.tick(now) -> list[Notice]              # the rules that time alone can fire
    model.parcel(fleet, id) / model.route(fleet, id) / model.exceptions(fleet) -> views
    model.dump() -> JSON data;  DeliveryModel.load(data, settings) -> the same model

Each change becomes a ``Notice`` (``parcel.status``, ``stop.eta``, ``exception.raised``,
``exception.resolved``) whose payload is what the API shows, and whose ``id`` depends only on
the input: a replay of the same events after a crash yields the same ids, so a durable queue
keyed by it enqueues nothing twice.

How events move things (the parcel rules are in ``status``, the ETA in ``eta``, the exceptions'
names in ``exceptions``):

- a van's events find their route by ``ref.route``, else by the manifest last sent to the
  device; ``trip.*`` with ``ref.stop`` act on that stop's parcels, ``trip.depart`` and
  ``trip.arrive`` without it are the depot (out for delivery; back: the route is done);
- ``scan`` names its parcel by ``ref.parcel`` or its text, ``pod`` by ``data.parcel``, the
  station's ``load.*`` by their data; a parcel no plan named is created on first sight;
- each ``gnss.fix`` (newer than the last) and each trip event of an active route recomputes the
  ETA of every stop still ahead; a stop is ahead until the van arrives there (or at a stop after
  it: the ones it passed by are ``skipped``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent.wire.envelope import format_ts
from hub_bridge.delivery.eta import Learning, Leg, VanLeg, predict, sequence_place
from hub_bridge.delivery.exceptions import ExceptionBook, ExceptionState
from hub_bridge.delivery.geo import distance_m
from hub_bridge.delivery.plan import PlanError, parse_loadplan, parse_manifest
from hub_bridge.delivery.settings import DeliverySettings
from hub_bridge.delivery.status import Entry, replay

__all__ = ["DeliveryModel", "DeliverySettings", "Notice", "PlanError"]

DUMP_VERSION = 1
SEEN_KEEP = 4096
TRAIL_KEEP = 128  # recent pings kept per route: 20 min moving, hours parked
STOOD_MPS = 1.0  # slower than this between two pings: standing, not driving
KINDS = ("parcel.status", "stop.eta", "exception.raised", "exception.resolved")


@dataclass(frozen=True, slots=True)
class Notice:
    """One change worth telling: ``kind`` (one of ``KINDS``), for ``fleet``, at ``ts`` (ISO),
    ordered per ``key`` (a parcel, route or device id), with the API's view as ``payload``.
    ``id`` is the same whenever the same input yields it."""

    id: str
    kind: str
    fleet: str
    ts: str
    key: str
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The notice as JSON data (what a webhook or the stream carries)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "fleet": self.fleet,
            "ts": self.ts,
            "key": self.key,
            "payload": self.payload,
        }


def _iso(t: float) -> str:
    return format_ts(datetime.fromtimestamp(t, UTC))


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _maybe_epoch(ts: Any) -> float | None:
    try:
        return _epoch(ts)
    except (TypeError, ValueError, AttributeError):
        return None


def _nid(*parts: object) -> str:
    """A short deterministic id for notices whose natural key would be long."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class StopState:
    """A stop of a route as the model follows it."""

    id: str
    lat: float
    lon: float
    parcels: list[str]
    window: list[float] | None
    kind: str
    status: str = "planned"  # planned, approaching, arrived, departed, skipped
    eta: float | None = None
    eta_at: float | None = None
    notified_eta: float | None = None
    arrived_t: float | None = None
    departed_t: float | None = None

    @property
    def ahead(self) -> bool:
        """Not yet reached (nor passed by)."""
        return self.status in ("planned", "approaching")


@dataclass(slots=True)
class RouteState:
    """A route: its vehicle (the device its manifest went to), stops and where the van is."""

    route: str
    fleet: str
    vehicle: str | None
    depot: list[float] | None
    stops: list[StopState]
    status: str = "planned"  # planned, active, done
    started_t: float | None = None
    ended_t: float | None = None
    leg_t0: float | None = None
    leg_from: list[float] | None = None
    leg_odometer: float = 0.0
    leg_stood: float = 0.0
    at_stop: int | None = None
    fix: list[float] | None = None  # [t, lat, lon]
    motion: list[float | None] = field(default_factory=lambda: [None, None])  # track, speed
    trail: list[list[float]] = field(default_factory=list)  # recent pings: t, lat, lon, speed
    extra: list[str] = field(default_factory=list)  # parcels of a load plan, not of a stop
    defined_t: float | None = None

    def where(self, t: float) -> tuple[float, float] | None:
        """Where the van was at ``t``, from its recent pings: the ping at most 15 s away, or
        the one before when the van stood between it and the next (a parked van pings every
        5 min), or when it was parked at the last ping and ``t`` is within that ping interval;
        None when the pings cannot say."""
        before = next((p for p in reversed(self.trail) if p[0] <= t), None)
        after = next((p for p in self.trail if p[0] >= t), None)
        for p in (before, after):
            if p is not None and abs(p[0] - t) <= 15.0:
                return p[1], p[2]
        if before is None:
            return None
        if after is not None:
            if distance_m(before[1], before[2], after[1], after[2]) < 30.0:
                return before[1], before[2]
            return None
        if 0 <= before[3] < STOOD_MPS and t - before[0] <= 330.0:
            return before[1], before[2]
        return None

    def stop(self, sid: str) -> StopState | None:
        """The stop named ``sid``."""
        for st in self.stops:
            if st.id == sid:
                return st
        return None


@dataclass(slots=True)
class ParcelState:
    """A parcel: its route and stop (when a plan named them), status and history."""

    parcel: str
    fleet: str
    route: str | None = None
    stop: str | None = None
    status: str = "planned"
    history: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class DeviceState:
    """A device: the route its last manifest gave it, its latest event and fix times."""

    fleet: str
    device: str
    route: str | None = None
    last_t: float | None = None
    last_fix_t: float | None = None
    heard_t: float | None = None
    """When the hub last heard from it, on the clock ``tick`` is given (not the event's ts: a
    backlog of old events after an outage is a device speaking now, not a silent one)."""
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=SEEN_KEEP))
    seen_set: set[str] = field(default_factory=set)

    def first_sight(self, event_id: str) -> bool:
        """Whether ``event_id`` is new (the latest ``SEEN_KEEP`` ids are remembered)."""
        if event_id in self.seen_set:
            return False
        if len(self.seen) == self.seen.maxlen:
            self.seen_set.discard(self.seen[0])
        self.seen.append(event_id)
        self.seen_set.add(event_id)
        return True


@dataclass(slots=True)
class _Scan:
    """A parcel scanned at a stop the van has left: due for ``scan_without_pod`` at ``due``."""

    fleet: str
    parcel: str
    route: str
    stop: str
    device: str
    due: float
    event: dict[str, Any]


# ------------------------------------------------------------------------------------- model


class DeliveryModel:
    """Parcels, routes, ETAs and exceptions of every fleet, from events (module docstring)."""

    def __init__(self, settings: DeliverySettings | None = None) -> None:
        self.settings = settings if settings is not None else DeliverySettings()
        self.routes: dict[tuple[str, str], RouteState] = {}
        self.parcels: dict[tuple[str, str], ParcelState] = {}
        self.devices: dict[tuple[str, str], DeviceState] = {}
        self.learning: dict[str, Learning] = {}
        self.book = ExceptionBook()
        self.scans: list[_Scan] = []
        self.arrival = 0
        self._now: float | None = None  # the latest ``tick``'s now: the hub's clock, as known

    # ------------------------------------------------------------------ definitions

    def define(self, fleet: str, device: str, name: str, payload: Any, ts: str) -> list[Notice]:
        """A manifest or load plan sent to ``device`` at ``ts``: routes, stops, parcels and
        windows. Raises ``PlanError`` (``path``, ``reason``) for a payload it cannot use, and
        ``ValueError`` for another command name."""
        if name == "manifest":
            plan = parse_manifest(payload)
            key = (fleet, plan.route)
            old = self.routes.get(key)
            stops = [
                StopState(
                    s.id,
                    s.lat,
                    s.lon,
                    list(s.parcels),
                    list(s.window) if s.window else None,
                    s.kind,
                )
                for s in plan.stops
            ]
            if old is not None:
                # a manifest sent again (a resend, or an update): keep what already happened
                for st in stops:
                    prev = old.stop(st.id)
                    if prev is not None:
                        st.status, st.eta, st.eta_at = prev.status, prev.eta, prev.eta_at
                        st.notified_eta = prev.notified_eta
                        st.arrived_t, st.departed_t = prev.arrived_t, prev.departed_t
                old.stops = stops
                old.vehicle = device
                old.depot = list(plan.depot) if plan.depot else old.depot
                route = old
            else:
                route = RouteState(
                    plan.route, fleet, device, list(plan.depot) if plan.depot else None, stops
                )
                route.defined_t = _maybe_epoch(ts)
                self.routes[key] = route
            self._device(fleet, device).route = plan.route
            for st in stops:
                for pid in st.parcels:
                    p = self._parcel(fleet, pid)
                    p.route, p.stop = plan.route, st.id
            return []
        if name == "loadplan":
            for lr in parse_loadplan(payload):
                key = (fleet, lr.route)
                if key not in self.routes:
                    self.routes[key] = RouteState(lr.route, fleet, lr.vehicle, None, [])
                    self.routes[key].defined_t = _maybe_epoch(ts)
                elif self.routes[key].vehicle is None:
                    self.routes[key].vehicle = lr.vehicle
                for pid in lr.parcels:
                    self._adopt(fleet, pid, lr.route)
            return []
        raise ValueError(f"command {name!r} defines nothing (manifest or loadplan)")

    # ------------------------------------------------------------------ events

    def apply(self, envelope: dict[str, Any]) -> list[Notice]:
        """One stored event (a validated envelope); the notices it causes. An event seen before
        (same fleet, device and id) changes nothing."""
        fleet, device = envelope["fleet"], envelope["device"]
        type_ = envelope["type"]
        dev = self._device(fleet, device)
        if not dev.first_sight(envelope["id"]):
            return []
        self.arrival += 1
        t = _epoch(envelope["ts"])
        out: list[Notice] = []
        # any word from a device ends its silence
        self._resolve(out, f"device_stale:{fleet}:{device}", envelope["ts"], "the device spoke")
        if dev.last_t is None or t > dev.last_t:
            dev.last_t = t
        heard = t if self._now is None else max(t, self._now)
        dev.heard_t = heard if dev.heard_t is None else max(dev.heard_t, heard)
        data = envelope.get("data") or {}
        ref = envelope.get("ref") or {}
        if type_ == "gnss.fix":
            self._on_fix(out, dev, envelope, t, data)
        elif type_.startswith("trip."):
            self._on_trip(out, dev, envelope, t, ref)
        elif type_ == "scan":
            pid = _one(ref.get("parcel")) or data.get("text")
            if isinstance(pid, str):
                self._entry(out, fleet, pid, envelope, t, "scan")
        elif type_ == "pod":
            self._on_pod(out, dev, envelope, t, data)
        elif type_.startswith("load."):
            self._on_load(out, envelope, t, data)
        elif type_.startswith("exception."):
            self._on_device_exception(out, envelope, ref)
        self._time_rules(out, dev, dev.last_t)
        return out

    def tick(self, now: float) -> list[Notice]:
        """The rules time alone fires, judged at ``now`` (epoch seconds): a device on an active
        route silent too long, a scanned parcel still without its PoD."""
        out: list[Notice] = []
        s = self.settings
        at = _iso(now)
        first = self._now is None
        self._now = now if self._now is None else max(self._now, now)
        for dev in self.devices.values():
            if first and dev.heard_t is not None:
                # heard before the model knew the hub's clock (a start or a restart replaying
                # the timeline): counted as heard now, so a replayed backlog is not silence
                dev.heard_t = max(dev.heard_t, now)
            route = self._active(dev)
            if route is None or dev.last_t is None or dev.heard_t is None:
                continue
            if now - dev.heard_t > s.stale_after_s:
                self._raise(
                    out,
                    ExceptionState(
                        f"device_stale:{dev.fleet}:{dev.device}",
                        "device_stale",
                        dev.fleet,
                        f"no event from {dev.device} for {int(now - dev.heard_t)} s "
                        f"(more than {s.stale_after_s:g} s) on route {route.route}",
                        at,
                        {"device": dev.device, "route": route.route},
                        data={"last_event": _iso(dev.last_t)},
                    ),
                )
        self._scan_rule(out, now)
        return out

    # ------------------------------------------------------------------ views

    def parcel(self, fleet: str, parcel_id: str) -> dict[str, Any] | None:
        """A parcel's status and its full history (the API's ``GET /v1/parcels/{id}``)."""
        p = self.parcels.get((fleet, parcel_id))
        return None if p is None else self._parcel_view(p)

    def route(self, fleet: str, route_id: str) -> dict[str, Any] | None:
        """A route's stops with their statuses and ETAs (``GET /v1/routes/{id}``)."""
        r = self.routes.get((fleet, route_id))
        return None if r is None else self._route_view(r)

    def exceptions(self, fleet: str, *, open_only: bool = False) -> list[dict[str, Any]]:
        """A fleet's exceptions, in the order they were raised."""
        return [
            e.view()
            for e in self.book.items.values()
            if e.fleet == fleet and (e.open or not open_only)
        ]

    def _parcel_view(self, p: ParcelState) -> dict[str, Any]:
        _, steps = replay(p.history)
        history = []
        for st in steps:
            e = st.entry
            item: dict[str, Any] = {
                "ts": e.ts,
                "status": st.status,
                "event": {"id": e.id, "type": e.type, "device": e.device, "seq": e.seq},
                "applied": st.applied,
            }
            if st.flag is not None:
                item["flag"] = st.flag
            history.append(item)
        eta = None
        if p.route is not None and p.stop is not None:
            r = self.routes.get((p.fleet, p.route))
            stop = r.stop(p.stop) if r is not None else None
            if stop is not None and stop.ahead and stop.eta is not None:
                eta = _iso(stop.eta)
        return {
            "parcel": p.parcel,
            "fleet": p.fleet,
            "status": p.status,
            "route": p.route,
            "stop": p.stop,
            "eta": eta,
            "history": history,
        }

    def _stop_view(self, st: StopState) -> dict[str, Any]:
        return {
            "id": st.id,
            "status": st.status,
            "eta": _iso(st.eta) if st.eta is not None and st.ahead else None,
            "window": [_iso(st.window[0]), _iso(st.window[1])] if st.window else None,
            "parcels": list(st.parcels),
        }

    def _route_view(self, r: RouteState) -> dict[str, Any]:
        return {
            "route": r.route,
            "fleet": r.fleet,
            "vehicle": r.vehicle,
            "status": r.status,
            "stops": [self._stop_view(st) for st in r.stops],
        }

    def forget(self, before: float) -> int:
        """Drop what no one will follow any more, so a hub running for months keeps a bounded
        model: routes done (or defined and never started) before ``before``, parcels of no
        live route with nothing since, exceptions resolved before. The learning stays. Returns
        how many routes, parcels and exceptions went."""
        gone = 0
        for key, r in list(self.routes.items()):
            ended = r.ended_t if r.status == "done" else None
            if r.status == "planned":
                ended = r.defined_t
            if ended is not None and ended < before:
                del self.routes[key]
                gone += 1
        for key, p in list(self.parcels.items()):
            last = max((e.t for e in p.history), default=None)
            live = p.route is not None and (p.fleet, p.route) in self.routes
            if not live and (last is None or last < before):
                del self.parcels[key]
                gone += 1
        keep = {
            i
            for i, e in self.book.items.items()
            if e.open or e.resolved_at is None or _epoch(e.resolved_at) >= before
        }
        gone += len(self.book.items) - len(keep)
        self.book.forget(keep)
        return gone

    # ------------------------------------------------------------------ persistence

    def dump(self) -> dict[str, Any]:
        """The whole model as JSON data (``load`` reads it back)."""
        return {
            "version": DUMP_VERSION,
            "arrival": self.arrival,
            "routes": [
                {**_fields(r, exclude=("stops",)), "stops": [_fields(s) for s in r.stops]}
                for r in self.routes.values()
            ],
            "parcels": [
                {**_fields(p, exclude=("history",)), "history": [e.to_json() for e in p.history]}
                for p in self.parcels.values()
            ],
            "devices": [
                {
                    "fleet": d.fleet,
                    "device": d.device,
                    "route": d.route,
                    "last_t": d.last_t,
                    "last_fix_t": d.last_fix_t,
                    "seen": list(d.seen),
                }
                for d in self.devices.values()
            ],
            "learning": {f: lr.to_json() for f, lr in self.learning.items()},
            "exceptions": self.book.to_json(),
            "scans": [_fields(s) for s in self.scans],
        }

    @classmethod
    def load(cls, data: dict[str, Any], settings: DeliverySettings | None = None) -> DeliveryModel:
        """A model from ``dump`` data. Raises ``ValueError`` for data of another version."""
        if data.get("version") != DUMP_VERSION:
            raise ValueError(f"delivery model dump version {data.get('version')!r} is not mine")
        m = cls(settings)
        m.arrival = int(data["arrival"])
        for r in data["routes"]:
            stops = [StopState(**s) for s in r["stops"]]
            route = RouteState(**{**r, "stops": stops})
            m.routes[(route.fleet, route.route)] = route
        for p in data["parcels"]:
            hist = [Entry.from_json(e) for e in p["history"]]
            parcel = ParcelState(**{**p, "history": hist})
            m.parcels[(parcel.fleet, parcel.parcel)] = parcel
        for d in data["devices"]:
            dev = DeviceState(d["fleet"], d["device"], d["route"], d["last_t"], d["last_fix_t"])
            for i in d["seen"]:
                dev.first_sight(i)
            m.devices[(dev.fleet, dev.device)] = dev
        m.learning = {f: Learning.from_json(v) for f, v in data["learning"].items()}
        m.book = ExceptionBook.from_json(data["exceptions"])
        m.scans = [_Scan(**s) for s in data["scans"]]
        return m

    # ------------------------------------------------------------------ internals: lookups

    def _device(self, fleet: str, device: str) -> DeviceState:
        dev = self.devices.get((fleet, device))
        if dev is None:
            dev = self.devices[(fleet, device)] = DeviceState(fleet, device)
        return dev

    def _parcel(self, fleet: str, pid: str) -> ParcelState:
        p = self.parcels.get((fleet, pid))
        if p is None:
            p = self.parcels[(fleet, pid)] = ParcelState(pid, fleet)
        return p

    def _learning(self, fleet: str) -> Learning:
        lr = self.learning.get(fleet)
        if lr is None:
            lr = self.learning[fleet] = Learning()
        return lr

    def _route_of(self, dev: DeviceState, ref: dict[str, Any]) -> RouteState | None:
        rid = ref.get("route") or dev.route
        return self.routes.get((dev.fleet, rid)) if isinstance(rid, str) else None

    def _active(self, dev: DeviceState) -> RouteState | None:
        r = self.routes.get((dev.fleet, dev.route)) if dev.route else None
        return r if r is not None and r.status == "active" else None

    # ------------------------------------------------------------------ internals: parcels

    def _entry(
        self,
        out: list[Notice],
        fleet: str,
        pid: str,
        env: dict[str, Any],
        t: float,
        action: str,
    ) -> None:
        """Put an event into a parcel's history (in event-time order) and recompute its status."""
        p = self._parcel(fleet, pid)
        if any(e.id == env["id"] and e.device == env["device"] for e in p.history):
            return
        entry = Entry(
            t,
            env["ts"],
            action,
            env["id"],
            env["type"],
            env["device"],
            int(env["seq"]),
            self.arrival,
        )
        hist = p.history
        if not hist or hist[-1].key() <= entry.key():
            hist.append(entry)
        else:  # a late event: into its place, then the status again from the start
            k = len(hist)
            while k > 0 and hist[k - 1].key() > entry.key():
                k -= 1
            hist.insert(k, entry)
        status, steps = replay(hist)
        if status != p.status:
            p.status = status
            cause = next((st.entry for st in reversed(steps) if st.applied), entry)
            out.append(
                Notice(
                    f"status:{_nid(fleet, pid, cause.id, status)}",
                    "parcel.status",
                    fleet,
                    env["ts"],
                    pid,
                    self._parcel_view(p),
                )
            )

    def _route_parcels(self, route: RouteState) -> list[str]:
        got = [pid for st in route.stops for pid in st.parcels]
        seen = set(got)
        # parcels only a load plan (or the station) put on the route, still on it
        for pid in route.extra:
            p = self.parcels.get((route.fleet, pid))
            if pid not in seen and p is not None and p.route == route.route:
                got.append(pid)
                seen.add(pid)
        return got

    # ------------------------------------------------------------------ internals: events

    def _on_fix(
        self, out: list[Notice], dev: DeviceState, env: dict[str, Any], t: float, data: Any
    ) -> None:
        lat, lon = data.get("lat"), data.get("lon")
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            return
        if dev.last_fix_t is not None and t <= dev.last_fix_t:
            return  # an old fix arriving late: the newest position stands
        dev.last_fix_t = t
        self._resolve(out, f"gnss_lost:{dev.fleet}:{dev.device}", env["ts"], "a fix again")
        route = self._active(dev)
        if route is None:
            return
        if route.fix is not None and route.at_stop is None and route.leg_t0 is not None:
            step = distance_m(route.fix[1], route.fix[2], lat, lon)
            route.leg_odometer += step
            # stood still since the last ping (a break, a jam)? A van parked at its last stop
            # pings every 5 min: judge by the time since it left, not since that ping
            since = t - max(route.fix[0], route.leg_t0)
            if since > 0 and step < STOOD_MPS * since:
                route.leg_stood += since
        track, speed = data.get("track_deg"), data.get("speed_mps")
        route.fix = [t, float(lat), float(lon)]
        route.trail.append(
            [t, float(lat), float(lon), float(speed) if isinstance(speed, int | float) else -1.0]
        )
        if len(route.trail) > TRAIL_KEEP:
            del route.trail[: len(route.trail) - TRAIL_KEEP]
        route.motion = [
            float(track) if isinstance(track, int | float) else None,
            float(speed) if isinstance(speed, int | float) else None,
        ]
        self._eta(out, route, env)

    def _on_trip(
        self, out: list[Notice], dev: DeviceState, env: dict[str, Any], t: float, ref: Any
    ) -> None:
        route = self._route_of(dev, ref)
        if route is None:
            return
        type_, fleet = env["type"], dev.fleet
        sid = ref.get("stop")
        stop = route.stop(sid) if isinstance(sid, str) else None
        lr = self._learning(fleet)
        s = self.settings
        if sid is None:
            # the parcels take every depot event into their histories, whatever order they
            # come in; the route's live state (ETA, legs) moves only forwards
            if type_ == "trip.depart":
                if route.status == "planned":
                    route.status, route.started_t = "active", t
                    dev.route = route.route
                if (
                    route.status == "active"
                    and route.at_stop is None
                    and not any(st.arrived_t is not None for st in route.stops)
                ):
                    route.leg_t0, route.leg_odometer, route.leg_stood = t, 0.0, 0.0
                    route.leg_from = list(route.depot) if route.depot else None
                for pid in self._route_parcels(route):
                    self._entry(out, fleet, pid, env, t, "depart_depot")
            elif type_ == "trip.arrive":
                if route.status == "active" and (route.started_t is None or t > route.started_t):
                    route.status, route.ended_t = "done", t
                    for exc in self.book.open_about(fleet, "route", route.route):
                        self._resolve(out, exc.id, env["ts"], "the route is done")
                for pid in self._route_parcels(route):
                    self._entry(out, fleet, pid, env, t, "arrive_depot")
            return
        if stop is None:
            return
        if route.status == "planned":
            route.status, route.started_t = "active", t
            dev.route = route.route
        parcels = list(stop.parcels)
        if type_ == "trip.approach":
            if stop.status == "planned":
                stop.status = "approaching"
                self._stop_notice(out, route, stop, env)
            for pid in parcels:
                self._entry(out, fleet, pid, env, t, "approach")
        elif type_ == "trip.arrive":
            if stop.ahead:
                idx = next(k for k, st in enumerate(route.stops) if st is stop)
                # the leg from the last stop (or the depot) taught a speed, a detour, a pause
                if route.leg_t0 is not None and route.leg_from is not None:
                    straight = distance_m(route.leg_from[0], route.leg_from[1], stop.lat, stop.lon)
                    if route.fix is not None:
                        # the odometer up to the last fix, and the last stretch from it
                        odo = route.leg_odometer + distance_m(
                            route.fix[1], route.fix[2], stop.lat, stop.lon
                        )
                        moving = t - route.leg_t0 - route.leg_stood
                        lr.learn_leg(route.leg_t0, moving, odo, straight, s)
                    place = sequence_place(idx, len(route.stops))
                    lr.learn_pause(place, route.leg_stood, s)
                for earlier in route.stops[:idx]:
                    if earlier.ahead:
                        earlier.status = "skipped"
                        self._stop_notice(out, route, earlier, env)
                stop.status, stop.arrived_t = "arrived", t
                route.at_stop = idx
                self._resolve(
                    out,
                    f"late_risk:{fleet}:{route.route}:{stop.id}",
                    env["ts"],
                    "the van reached the stop",
                )
                self._stop_notice(out, route, stop, env)
            for pid in parcels:
                self._entry(out, fleet, pid, env, t, "arrive")
            self._eta(out, route, env)
        elif type_ == "trip.depart":
            if stop.status == "arrived":
                stop.status, stop.departed_t = "departed", t
                if stop.arrived_t is not None:
                    lr.learn_dwell(stop.kind, stop.arrived_t, t - stop.arrived_t, s)
                self._stop_notice(out, route, stop, env)
            elif stop.ahead:
                stop.status, stop.departed_t = "departed", t
                self._stop_notice(out, route, stop, env)
            self._resolve(
                out,
                f"dwell_long:{fleet}:{route.route}:{stop.id}",
                env["ts"],
                "the van left the stop",
            )
            route.at_stop = None
            route.leg_t0, route.leg_odometer, route.leg_stood = t, 0.0, 0.0
            route.leg_from = [stop.lat, stop.lon]
            for pid in parcels:
                self._entry(out, fleet, pid, env, t, "depart_stop")
                p = self.parcels[(fleet, pid)]
                if p.status != "delivered" and any(e.action == "scan" for e in p.history):
                    self.scans.append(
                        _Scan(
                            fleet,
                            pid,
                            route.route,
                            stop.id,
                            dev.device,
                            t + s.scan_no_pod_grace_s,
                            _event_ref(env),
                        )
                    )
            self._eta(out, route, env)

    def _on_pod(
        self, out: list[Notice], dev: DeviceState, env: dict[str, Any], t: float, data: Any
    ) -> None:
        pid = data.get("parcel")
        if not isinstance(pid, str):
            return
        kind = data.get("kind")
        self._entry(out, dev.fleet, pid, env, t, "failed" if kind == "none" else "pod")
        p = self.parcels[(dev.fleet, pid)]
        if kind != "none":
            self._resolve(out, f"scan_without_pod:{dev.fleet}:{pid}", env["ts"], "the PoD came")
        # where was it captured: the phone's position, else the van's last fix (if recent)
        route = self.routes.get((dev.fleet, p.route)) if p.route else None
        stop = route.stop(p.stop) if route is not None and p.stop else None
        if stop is None:
            return
        lat, lon, src = data.get("lat"), data.get("lon"), "the PoD's position"
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            there = route.where(t) if route is not None else None
            if there is None:
                return
            (lat, lon), src = there, "the van's position"
        d = distance_m(float(lat), float(lon), stop.lat, stop.lon)
        if d > self.settings.pod_far_m:
            self._raise(
                out,
                ExceptionState(
                    f"pod_far:{dev.fleet}:{pid}:{env['id']}",
                    "pod_far",
                    dev.fleet,
                    f"PoD of {pid} captured {d:.0f} m from stop {stop.id} ({src}; more than "
                    f"{self.settings.pod_far_m:g} m)",
                    env["ts"],
                    _ref(parcel=pid, stop=stop.id, route=p.route, device=dev.device),
                    _event_ref(env),
                    {"distance_m": round(d)},
                ),
            )

    def _on_load(self, out: list[Notice], env: dict[str, Any], t: float, data: Any) -> None:
        type_, fleet, ts = env["type"], env["fleet"], env["ts"]
        if type_ == "load.verified":
            pid = data.get("parcel")
            if isinstance(pid, str):
                self._adopt(fleet, pid, data.get("route"))
                self._entry(out, fleet, pid, env, t, "verified")
                for exc in self.book.open_about(fleet, "parcel", pid):
                    if exc.type in ("misload", "missing"):
                        self._resolve(out, exc.id, ts, f"verified on {data.get('vehicle')}")
        elif type_ == "load.misload":
            pid = data.get("parcel")
            if isinstance(pid, str):
                self._adopt(fleet, pid, data.get("expected_route"))
                self._entry(out, fleet, pid, env, t, "misload")
                p = self.parcels[(fleet, pid)]
                self._raise(
                    out,
                    ExceptionState(
                        f"misload:{fleet}:{pid}:{data.get('dock')}:{data.get('vehicle')}",
                        "misload",
                        fleet,
                        f"{pid} of route {data.get('expected_route')} (vehicle "
                        f"{data.get('expected_vehicle')}, dock {data.get('expected_dock')}) "
                        f"loaded on {data.get('vehicle')} at dock {data.get('dock')}",
                        ts,
                        _ref(
                            parcel=pid,
                            route=p.route,
                            dock=data.get("dock"),
                            vehicle=data.get("vehicle"),
                            device=env["device"],
                        ),
                        _event_ref(env),
                    ),
                )
                if p.status != "misloaded":  # already corrected (a late misload event)
                    self._resolve(out, self._last_id, ts, "verified at its own dock")
        elif type_ == "load.missing":
            parcels = data.get("parcels")
            if not isinstance(parcels, list):
                return
            for pid in parcels:
                if not isinstance(pid, str):
                    continue
                self._adopt(fleet, pid, data.get("route"))
                self._entry(out, fleet, pid, env, t, "missing")
                p = self.parcels[(fleet, pid)]
                if p.status == "misloaded":
                    continue  # on another van: the misload says it already
                self._raise(
                    out,
                    ExceptionState(
                        f"missing:{fleet}:{pid}:{data.get('route')}",
                        "missing",
                        fleet,
                        f"{pid} not loaded when vehicle {data.get('vehicle')} of route "
                        f"{data.get('route')} left",
                        ts,
                        _ref(
                            parcel=pid,
                            route=data.get("route"),
                            vehicle=data.get("vehicle"),
                            device=env["device"],
                        ),
                        _event_ref(env),
                    ),
                )
                if p.status == "loaded":  # verified later in event time (a late missing)
                    self._resolve(out, self._last_id, ts, "verified later")

    def _adopt(self, fleet: str, pid: str, route: Any) -> None:
        """A parcel a load plan or the station puts on ``route``, unless a manifest did."""
        p = self._parcel(fleet, pid)
        if p.route is None and isinstance(route, str):
            p.route = route
            r = self.routes.get((fleet, route))
            if r is not None:
                r.extra.append(pid)

    def _on_device_exception(
        self, out: list[Notice], env: dict[str, Any], ref: dict[str, Any]
    ) -> None:
        fleet, t = env["fleet"], _epoch(env["ts"])
        data = env.get("data") or {}
        reason = data.get("reason") or data.get("message") or env["type"]
        r = {k: v for k, v in ref.items() if isinstance(v, str)}
        r["device"] = env["device"]
        dev = self.devices[(fleet, env["device"])]
        route = self._route_of(dev, ref)
        if route is not None and "route" not in r:
            r["route"] = route.route
        self._raise(
            out,
            ExceptionState(
                f"{env['type']}:{fleet}:{env['device']}:{env['id']}",
                env["type"],
                fleet,
                str(reason)[:512],
                env["ts"],
                r,
                _event_ref(env),
                dict(data),
            ),
        )
        pid = _one(ref.get("parcel"))
        if pid is not None:
            self._entry(out, fleet, pid, env, t, "failed")

    # ------------------------------------------------------------------ internals: ETA

    def _eta(self, out: list[Notice], route: RouteState, env: dict[str, Any]) -> None:
        """Recompute the ETA of every stop still ahead of an active route."""
        if route.status != "active" or route.fix is None:
            return
        placed = [(k, st) for k, st in enumerate(route.stops) if st.ahead]
        if not placed:
            return
        ahead = [st for _, st in placed]
        s = self.settings
        at = route.stops[route.at_stop] if route.at_stop is not None else None
        t, lat, lon = route.fix
        now = max(t, _epoch(env["ts"]))
        if at is not None:
            lat, lon = at.lat, at.lon
        van = VanLeg(
            now,
            lat,
            lon,
            route.leg_t0,
            route.leg_odometer,
            route.leg_stood,
            at.kind if at is not None else None,
            at.arrived_t if at is not None else None,
            route.motion[0],
            route.motion[1],
        )
        n = len(route.stops)
        legs = [Leg(st.id, st.lat, st.lon, st.kind, sequence_place(k, n)) for k, st in placed]
        for st, (_, eta) in zip(
            ahead, predict(van, legs, self._learning(route.fleet), s), strict=True
        ):
            st.eta, st.eta_at = eta, now
            if st.notified_eta is None or abs(eta - st.notified_eta) >= s.eta_notice_delta_s:
                st.notified_eta = eta
                self._stop_notice(out, route, st, env)
            self._late_rule(out, route, st, env, now)

    def _stop_notice(
        self, out: list[Notice], route: RouteState, st: StopState, env: dict[str, Any]
    ) -> None:
        out.append(
            Notice(
                f"eta:{_nid(route.fleet, route.route, st.id, env['device'], env['id'])}",
                "stop.eta",
                route.fleet,
                env["ts"],
                route.route,
                {
                    "route": route.route,
                    "fleet": route.fleet,
                    "vehicle": route.vehicle,
                    **self._stop_view(st),
                    # whose views change with it: the stop's parcels show its ETA too
                    "ref": {"route": route.route, "stop": st.id, "parcel": list(st.parcels)},
                },
            )
        )

    # ------------------------------------------------------------------ internals: exceptions

    _last_id: str = ""

    def _raise(self, out: list[Notice], exc: ExceptionState) -> None:
        self._last_id = exc.id
        if self.book.raise_(exc):
            out.append(
                Notice(
                    f"{exc.id}:raised",
                    "exception.raised",
                    exc.fleet,
                    exc.raised_at,
                    _exc_key(exc),
                    exc.view(),
                )
            )

    def _resolve(self, out: list[Notice], exc_id: str, at: str, why: str) -> None:
        exc = self.book.resolve(exc_id, at, why)
        if exc is not None:
            out.append(
                Notice(
                    f"{exc.id}:resolved",
                    "exception.resolved",
                    exc.fleet,
                    at,
                    _exc_key(exc),
                    exc.view(),
                )
            )

    def _late_rule(
        self, out: list[Notice], route: RouteState, st: StopState, env: dict[str, Any], now: float
    ) -> None:
        if st.window is None or st.eta is None:
            return
        s = self.settings
        end = st.window[1]
        exc_id = f"late_risk:{route.fleet}:{route.route}:{st.id}"
        if self.book.is_open(exc_id):
            if st.eta <= end - s.late_clear_s:
                self._resolve(out, exc_id, env["ts"], f"ETA {_iso(st.eta)} is inside the window")
        elif now < end and st.eta > end + s.late_margin_s:
            self._raise(
                out,
                ExceptionState(
                    exc_id,
                    "late_risk",
                    route.fleet,
                    f"ETA {_iso(st.eta)} at stop {st.id} is {int(st.eta - end)} s after its "
                    f"window ends ({_iso(end)})",
                    env["ts"],
                    _ref(stop=st.id, route=route.route, vehicle=route.vehicle),
                    _event_ref(env),
                    {"eta": _iso(st.eta), "window": [_iso(st.window[0]), _iso(end)]},
                ),
            )

    def _time_rules(self, out: list[Notice], dev: DeviceState, t: float | None) -> None:
        """The rules judged by the device's own latest event time: GNSS lost, dwell far above
        normal, scans without a PoD."""
        route = self._active(dev)
        if route is None or t is None:
            return
        s = self.settings
        since = dev.last_fix_t if dev.last_fix_t is not None else route.started_t
        if since is not None and t - since > s.gnss_lost_after_s:
            self._raise(
                out,
                ExceptionState(
                    f"gnss_lost:{dev.fleet}:{dev.device}",
                    "gnss_lost",
                    dev.fleet,
                    f"no fix from {dev.device} for {int(t - since)} s (more than "
                    f"{s.gnss_lost_after_s:g} s) while on route {route.route}",
                    _iso(t),
                    _ref(device=dev.device, route=route.route),
                    data={"last_fix": _iso(since)},
                ),
            )
        if route.at_stop is not None:
            st = route.stops[route.at_stop]
            if st.arrived_t is not None and st.status == "arrived":
                normal = self._learning(dev.fleet).dwell_s(st.kind, st.arrived_t, s)
                limit = max(normal * s.dwell_factor, normal + s.dwell_extra_s)
                if t - st.arrived_t > limit:
                    self._raise(
                        out,
                        ExceptionState(
                            f"dwell_long:{dev.fleet}:{route.route}:{st.id}",
                            "dwell_long",
                            dev.fleet,
                            f"at stop {st.id} for {int(t - st.arrived_t)} s; normal is "
                            f"{int(normal)} s",
                            _iso(t),
                            _ref(
                                stop=st.id,
                                route=route.route,
                                vehicle=route.vehicle,
                                device=dev.device,
                            ),
                            data={"normal_s": round(normal), "limit_s": round(limit)},
                        ),
                    )
        self._scan_rule(out, t, dev.device)

    def _scan_rule(self, out: list[Notice], now: float, device: str | None = None) -> None:
        keep = []
        for sc in self.scans:
            if device is not None and sc.device != device:
                keep.append(sc)
                continue
            p = self.parcels.get((sc.fleet, sc.parcel))
            if p is None or p.status == "delivered":
                continue
            if sc.due > now:
                keep.append(sc)
                continue
            self._raise(
                out,
                ExceptionState(
                    f"scan_without_pod:{sc.fleet}:{sc.parcel}",
                    "scan_without_pod",
                    sc.fleet,
                    f"{sc.parcel} was scanned at stop {sc.stop} and the van left without a PoD",
                    _iso(sc.due),
                    _ref(parcel=sc.parcel, stop=sc.stop, route=sc.route, device=sc.device),
                    sc.event,
                ),
            )
        self.scans = keep


# ----------------------------------------------------------------------------------- helpers


def _one(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str):
        return v[0]
    return None


def _ref(**kw: Any) -> dict[str, str]:
    return {k: v for k, v in kw.items() if isinstance(v, str)}


def _event_ref(env: dict[str, Any]) -> dict[str, Any]:
    return {"id": env["id"], "type": env["type"], "device": env["device"], "seq": env["seq"]}


def _exc_key(exc: ExceptionState) -> str:
    r = exc.ref
    return r.get("parcel") or r.get("route") or r.get("device") or exc.id


def _fields(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__ if k not in exclude}
