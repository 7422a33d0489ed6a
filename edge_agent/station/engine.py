"""The load-verification engine: ``step(state, observation) -> (state, StepResult)``.

Pure: no clock, no I/O. The service, ``load replay`` and the tests feed it the same
observations (a scan at a dock, a door or bay sensor change, a vehicle declared at a dock, a
gate-out) in time order; it answers with the events of DESIGN §8 and the cues for the dock's
signal (green, red, off). Every event carries the observation's time.

A dock has at most one open **session**: the vehicle being loaded there (declared, inferred
from the plan, or unknown), its route, the parcels already reported in it (with the colour they
got) and whether the bay was seen occupied. A session opens at a vehicle, at the bay becoming
occupied, or at the first parcel scan, and closes at a gate-out: a gate-out code scanned, a
``GateOutObs``, another declared vehicle, or the bay going free with the door closed after the
bay was seen occupied. Each closed session with a route gives one ``load.gateout`` (and
``load.missing`` when parcels are missing); later signals of the same departure find no session.

Scan classification, in order: a gate-out code (``GATEOUT``, or ``GATEOUT:<dock>`` for the dock
named), a vehicle (an id of the plan, or ``VEH:<id>``), else a parcel label named by
``plan.parcel_key``. Texts that name nothing (empty, or a name longer than the contract's 256
characters) are counted in ``LoadState.ignored``; an over-long parcel label also gets a red cue.

The state is mutated in place and returned; ``dump``/``load`` turn it into JSON data and back
exactly, so a service that writes the dump ahead of the events it derived resumes with the same
events. ``adopt`` carries a state over to the engine of a new plan mid-shift.

Errors::

    ValueError    an observation with a naive time or a bad dock/vehicle; a state ``load``
                  cannot read (``corrupt load engine state: <where>: <what>``)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from edge_agent.station.plan import MAX_ID, LoadPlan, PlanRoute, parcel_key
from edge_agent.wire.envelope import format_ts

__all__ = [
    "BayObs",
    "DockState",
    "DoorObs",
    "GateOutObs",
    "LoadEngine",
    "LoadParams",
    "LoadState",
    "Observation",
    "ScanObs",
    "Session",
    "SignalCue",
    "StationEvent",
    "StepResult",
    "VehicleObs",
]

STATE_VERSION = 1
_GREEN, _RED = "g", "r"  # the colour a parcel got in a session, as kept in the state

# ---------------------------------------------------------------- observations


def _check_obs(obs: Any) -> None:
    t = obs.t
    if not isinstance(t, datetime):
        raise ValueError(f"t must be a datetime, not {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("t is a naive datetime: observation times must be timezone-aware")
    if t.tzinfo is not UTC:
        object.__setattr__(obs, "t", t.astimezone(UTC))  # frozen: normalised once, here
    _check_name(obs.dock, "dock")


def _check_name(v: Any, what: str) -> None:
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a string, not {type(v).__name__}")
    if not v or len(v) > MAX_ID:
        raise ValueError(f"{what} must be 1 to {MAX_ID} characters, not {len(v)}")


@dataclass(frozen=True, slots=True)
class ScanObs:
    """A code read at ``dock`` (camera or handheld): a parcel label, a vehicle or a gate-out."""

    t: datetime
    dock: str
    text: str

    def __post_init__(self) -> None:
        _check_obs(self)
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a string, not {type(self.text).__name__}")


@dataclass(frozen=True, slots=True)
class DoorObs:
    """The dock door's sensor: open or closed."""

    t: datetime
    dock: str
    open: bool

    def __post_init__(self) -> None:
        _check_obs(self)
        if not isinstance(self.open, bool):
            raise ValueError(f"open must be a bool, not {type(self.open).__name__}")


@dataclass(frozen=True, slots=True)
class BayObs:
    """The bay's presence sensor: a vehicle in the bay or not."""

    t: datetime
    dock: str
    occupied: bool

    def __post_init__(self) -> None:
        _check_obs(self)
        if not isinstance(self.occupied, bool):
            raise ValueError(f"occupied must be a bool, not {type(self.occupied).__name__}")


@dataclass(frozen=True, slots=True)
class VehicleObs:
    """A vehicle declared at ``dock`` (a command, or the service's own vehicle detection)."""

    t: datetime
    dock: str
    vehicle: str

    def __post_init__(self) -> None:
        _check_obs(self)
        _check_name(self.vehicle, "vehicle")


@dataclass(frozen=True, slots=True)
class GateOutObs:
    """The vehicle at ``dock`` leaves (a command or a button): closes the dock's session."""

    t: datetime
    dock: str

    def __post_init__(self) -> None:
        _check_obs(self)


Observation = ScanObs | DoorObs | BayObs | VehicleObs | GateOutObs

# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class LoadParams:
    """How scans are classified, and the bounds of the state.

    ``vehicle_prefix`` empty turns vehicle codes off (plan vehicle ids still count).
    ``reported_cap`` bounds the parcels of no route a session remembers (beyond it, repeated
    reads of them are reported again); ``max_docks`` bounds the docks the state tracks
    (observations of further docks are ignored and counted).
    """

    gateout_codes: frozenset[str] = frozenset({"GATEOUT"})
    vehicle_prefix: str = "VEH:"
    reported_cap: int = 10_000
    max_docks: int = 1024


@dataclass(frozen=True, slots=True)
class StationEvent:
    """A derived event: contract ``type``, time ``t`` (aware UTC), ``data`` and ``ref``."""

    type: str
    t: datetime
    data: dict[str, Any]
    ref: dict[str, Any]

    @property
    def ts(self) -> str:
        """The event time as the contract's ``ts`` (UTC, milliseconds, ``Z``)."""
        return format_ts(self.t)

    def to_json(self) -> dict[str, Any]:
        """``{"type", "ts", "data"}`` as ``load replay`` prints it (DESIGN §8)."""
        return {"type": self.type, "ts": format_ts(self.t), "data": self.data}


@dataclass(frozen=True, slots=True)
class SignalCue:
    """What the dock's signal should show after an observation, and why."""

    dock: str
    color: Literal["green", "red", "off"]
    reason: str  # verified, misload, unknown, duplicate, unreadable, gateout


@dataclass(slots=True)
class StepResult:
    """What one observation produced: events in order, and signal cues in order."""

    events: list[StationEvent] = field(default_factory=list)
    cues: list[SignalCue] = field(default_factory=list)


# ---------------------------------------------------------------- state


@dataclass(slots=True)
class Session:
    """The loading of one vehicle at one dock, from its arrival to its gate-out."""

    vehicle: str | None
    route: str | None
    opened_at: datetime
    explicit: bool = False  # the vehicle was declared (else inferred from the plan, or none)
    bay_seen_occupied: bool = False
    reported: dict[str, str] = field(default_factory=dict)  # parcel -> colour it got (g/r)
    # plan parcels of other routes put here -> whether theirs had already verified them then
    misloaded: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class DockState:
    """A dock's last sensor states (None: never observed) and its open session."""

    door_open: bool | None = None
    bay_occupied: bool | None = None
    session: Session | None = None


@dataclass(slots=True)
class LoadState:
    """Everything the engine carries from one observation to the next."""

    docks: dict[str, DockState] = field(default_factory=dict)
    verified: dict[str, set[str]] = field(default_factory=dict)  # route -> parcels verified
    gated: set[str] = field(default_factory=set)  # routes gated out
    observations: int = 0
    ignored: int = 0


# ---------------------------------------------------------------- the engine


class LoadEngine:
    """Verifies loading against one load plan (or none): observations in, events and cues out."""

    def __init__(self, plan: LoadPlan | None, params: LoadParams | None = None) -> None:
        self.plan = plan if plan is not None else LoadPlan()
        self.params = params if params is not None else LoadParams()
        self._gateout_prefixes = tuple(f"{c}:" for c in sorted(self.params.gateout_codes))

    def new_state(self) -> LoadState:
        """The state before the first observation."""
        return LoadState()

    def step(self, state: LoadState, obs: Observation) -> tuple[LoadState, StepResult]:
        """Advance ``state`` by one observation; return it with what the observation produced."""
        res = StepResult()
        state.observations += 1
        if isinstance(obs, ScanObs):
            self._scan(state, obs, res)
        elif isinstance(obs, DoorObs):
            self._door(state, obs, res)
        elif isinstance(obs, BayObs):
            self._bay(state, obs, res)
        elif isinstance(obs, VehicleObs):
            self._vehicle(state, obs.dock, obs.vehicle, obs.t, res)
        elif isinstance(obs, GateOutObs):
            self._gateout_signal(state, obs.dock, obs.t, res)
        else:
            raise TypeError(f"not an observation: {type(obs).__name__}")
        return state, res

    # ------------------------------------------------------------ helpers

    def _dock(self, state: LoadState, dock: str) -> DockState | None:
        ds = state.docks.get(dock)
        if ds is None:
            if len(state.docks) >= self.params.max_docks:
                state.ignored += 1
                return None
            ds = state.docks[dock] = DockState()
        return ds

    def _route_for_vehicle(self, state: LoadState, vehicle: str, dock: str) -> str | None:
        """The first route of ``vehicle`` at ``dock`` not gated out, else its first anywhere."""
        first = None
        for r in self.plan.by_vehicle.get(vehicle, ()):
            if r.route in state.gated:
                continue
            if r.dock == dock:
                return r.route
            if first is None:
                first = r.route
        return first

    def _infer(self, state: LoadState, dock: str) -> PlanRoute | None:
        """The dock's next route: the first in plan order at ``dock`` not gated out."""
        for r in self.plan.by_dock.get(dock, ()):
            if r.route not in state.gated:
                return r
        return None

    def _open(
        self, state: LoadState, ds: DockState, dock: str, t: datetime, vehicle: str | None = None
    ) -> Session:
        if vehicle is None:
            r = self._infer(state, dock)
            s = Session(None if r is None else r.vehicle, None if r is None else r.route, t)
        else:
            s = Session(vehicle, self._route_for_vehicle(state, vehicle, dock), t, explicit=True)
            # a declared vehicle at an occupied bay is the vehicle in the bay: its departure
            # (bay free, door closed) is a gate-out even if the bay never went free before it
            s.bay_seen_occupied = ds.bay_occupied is True
        ds.session = s
        return s

    def _verified_anywhere(self, state: LoadState, parcel: str) -> bool:
        owner = self.plan.route_of.get(parcel)
        return owner is not None and parcel in state.verified.get(owner.route, ())

    @staticmethod
    def _event(
        res: StepResult, type_: str, t: datetime, data: dict[str, Any], **ref: str | None
    ) -> None:
        res.events.append(
            StationEvent(type_, t, data, {k: v for k, v in ref.items() if v is not None})
        )

    # ------------------------------------------------------------ scans

    def _gateout_target(self, text: str, dock: str) -> str | None:
        if text in self.params.gateout_codes:
            return dock
        for prefix in self._gateout_prefixes:
            if text.startswith(prefix):
                return text[len(prefix) :].strip() or dock
        return None

    def _vehicle_code(self, text: str) -> str | None:
        if text in self.plan.by_vehicle:
            return text
        prefix = self.params.vehicle_prefix
        if prefix and text.startswith(prefix):
            return text[len(prefix) :].strip()
        return None

    def _scan(self, state: LoadState, obs: ScanObs, res: StepResult) -> None:
        text = obs.text.strip()
        target = self._gateout_target(text, obs.dock)
        if target is not None:
            self._gateout_signal(state, target, obs.t, res)
            return
        vehicle = self._vehicle_code(text)
        if vehicle is not None:
            if not vehicle or len(vehicle) > MAX_ID:
                state.ignored += 1  # "VEH:" alone, or a name the contract cannot carry
                return
            self._vehicle(state, obs.dock, vehicle, obs.t, res)
            return
        key = parcel_key(text)
        if not key:
            state.ignored += 1
            return
        if len(key) > MAX_ID:
            state.ignored += 1  # no parcel can be named so: unknown, but not reportable
            res.cues.append(SignalCue(obs.dock, "red", "unreadable"))
            return
        self._parcel(state, obs.dock, key, obs.t, res)

    def _parcel(self, state: LoadState, dock: str, key: str, t: datetime, res: StepResult) -> None:
        ds = self._dock(state, dock)
        if ds is None:
            return
        s = ds.session if ds.session is not None else self._open(state, ds, dock, t)
        got = s.reported.get(key)
        if got is not None:  # a repeated read while the same vehicle is there
            res.cues.append(SignalCue(dock, "green" if got == _GREEN else "red", "duplicate"))
            return
        owner = self.plan.route_of.get(key)
        data: dict[str, Any]
        if s.route is not None and owner is not None and owner.route == s.route:
            done = state.verified.setdefault(s.route, set())
            if key not in done:  # once per (route, parcel) over the shift
                done.add(key)
                vehicle = s.vehicle if s.vehicle is not None else owner.vehicle
                data = {"parcel": key, "route": s.route, "vehicle": vehicle, "dock": dock}
                self._event(
                    res, "load.verified", t, data,
                    route=s.route, vehicle=vehicle, dock=dock, parcel=key,
                )  # fmt: skip
            s.reported[key] = _GREEN
            res.cues.append(SignalCue(dock, "green", "verified"))
        elif owner is not None:
            data = {
                "parcel": key,
                "dock": dock,
                "vehicle": s.vehicle,
                "expected_route": owner.route,
                "expected_vehicle": owner.vehicle,
                "expected_dock": owner.dock,
            }
            # ref.route is the parcel's own route: the misload is an exception of that route
            self._event(
                res, "load.misload", t, data,
                route=owner.route, vehicle=s.vehicle, dock=dock, parcel=key,
            )  # fmt: skip
            if key not in s.misloaded:
                s.misloaded[key] = self._verified_anywhere(state, key)
            s.reported[key] = _RED
            res.cues.append(SignalCue(dock, "red", "misload"))
        else:
            data = {"parcel": key, "dock": dock, "vehicle": s.vehicle}
            self._event(
                res, "load.unknown", t, data,
                route=s.route, vehicle=s.vehicle, dock=dock, parcel=key,
            )  # fmt: skip
            # parcels of no route are not bounded by the plan: a session remembers only so many
            if len(s.reported) < self.params.reported_cap:
                s.reported[key] = _RED
            res.cues.append(SignalCue(dock, "red", "unknown"))

    # ------------------------------------------------------------ vehicles

    def _vehicle(
        self, state: LoadState, dock: str, vehicle: str, t: datetime, res: StepResult
    ) -> None:
        ds = self._dock(state, dock)
        if ds is None:
            return
        s = ds.session
        if s is not None and s.explicit:
            if s.vehicle == vehicle:
                return  # one dock.vehicle per session
            self._close(state, dock, ds, t, res)  # another vehicle: the first one has left
            s = None
        if s is None:
            s = self._open(state, ds, dock, t, vehicle)
        else:
            # the session only had an inferred vehicle (or none): bind it to the declared one;
            # what was emitted stands
            s.explicit = True
            s.bay_seen_occupied = s.bay_seen_occupied or ds.bay_occupied is True
            if s.vehicle != vehicle:
                s.vehicle = vehicle
                self._rebind(s, self._route_for_vehicle(state, vehicle, dock))
        data = {"dock": dock, "vehicle": vehicle}
        self._event(res, "dock.vehicle", t, data, route=s.route, vehicle=vehicle, dock=dock)

    def _rebind(self, s: Session, route: str | None) -> None:
        """Give ``s`` another route: its parcels are judged again for it when read again."""
        if route == s.route:
            return
        s.route = route
        s.reported.clear()
        s.misloaded = {
            p: before
            for p, before in s.misloaded.items()
            if self._owner_route(p) not in (None, route)
        }

    def _owner_route(self, parcel: str) -> str | None:
        owner = self.plan.route_of.get(parcel)
        return None if owner is None else owner.route

    # ------------------------------------------------------------ sensors and gate-outs

    def _door(self, state: LoadState, obs: DoorObs, res: StepResult) -> None:
        ds = self._dock(state, obs.dock)
        if ds is None or ds.door_open == obs.open:
            return
        ds.door_open = obs.open
        data = {"dock": obs.dock, "state": "open" if obs.open else "closed"}
        self._event(res, "dock.door", obs.t, data, dock=obs.dock)
        self._sensor_gateout(state, obs.dock, ds, obs.t, res)

    def _bay(self, state: LoadState, obs: BayObs, res: StepResult) -> None:
        ds = self._dock(state, obs.dock)
        if ds is None or ds.bay_occupied == obs.occupied:
            return
        ds.bay_occupied = obs.occupied
        data = {"dock": obs.dock, "state": "occupied" if obs.occupied else "free"}
        self._event(res, "dock.bay", obs.t, data, dock=obs.dock)
        if obs.occupied:
            s = ds.session if ds.session is not None else self._open(state, ds, obs.dock, obs.t)
            s.bay_seen_occupied = True
        else:
            self._sensor_gateout(state, obs.dock, ds, obs.t, res)

    def _sensor_gateout(
        self, state: LoadState, dock: str, ds: DockState, t: datetime, res: StepResult
    ) -> None:
        s = ds.session
        # a door never observed counts as closed (docks without a door sensor)
        if s is not None and s.bay_seen_occupied and ds.bay_occupied is False and not ds.door_open:
            self._close(state, dock, ds, t, res)

    def _gateout_signal(self, state: LoadState, dock: str, t: datetime, res: StepResult) -> None:
        ds = state.docks.get(dock)
        if ds is not None and ds.session is not None:
            self._close(state, dock, ds, t, res)
        else:
            res.cues.append(SignalCue(dock, "off", "gateout"))

    def _close(
        self, state: LoadState, dock: str, ds: DockState, t: datetime, res: StepResult
    ) -> None:
        """Close the dock's session; a session with a route reports its departure."""
        s = ds.session
        assert s is not None
        ds.session = None
        route = None if s.route is None else self.plan.by_route.get(s.route)
        if route is not None:
            done = state.verified.get(route.route, set())
            missing = sorted(p for p in route.parcels if p not in done)
            # a misload counts unless its parcel was verified on its own route since: verified
            # before (then taken to the wrong vehicle) it counts whatever follows
            misloaded = sum(
                1
                for p, before in s.misloaded.items()
                if before or not self._verified_anywhere(state, p)
            )
            vehicle = s.vehicle if s.vehicle is not None else route.vehicle
            data = {
                "route": route.route,
                "vehicle": vehicle,
                "dock": dock,
                "expected": len(route.parcels),
                "verified": len(route.parcels) - len(missing),
                "misloaded": misloaded,
                "missing": missing,
            }
            ref = {"route": route.route, "vehicle": vehicle, "dock": dock}
            self._event(res, "load.gateout", t, data, **ref)
            if missing:
                data = {"route": route.route, "vehicle": vehicle, "parcels": list(missing)}
                self._event(res, "load.missing", t, data, **ref)
            state.gated.add(route.route)
        res.cues.append(SignalCue(dock, "off", "gateout"))

    # ------------------------------------------------------------ persistence

    def dump(self, state: LoadState) -> dict[str, Any]:
        """The state as JSON data (``load`` reads it back exactly)."""
        docks: dict[str, Any] = {}
        for name, ds in state.docks.items():
            s = ds.session
            docks[name] = {
                "door": ds.door_open,
                "bay": ds.bay_occupied,
                "session": None
                if s is None
                else {
                    "vehicle": s.vehicle,
                    "route": s.route,
                    "opened_at": s.opened_at.isoformat(),
                    "explicit": s.explicit,
                    "bay_seen": s.bay_seen_occupied,
                    "reported": dict(s.reported),
                    "misloaded": dict(sorted(s.misloaded.items())),
                },
            }
        return {
            "v": STATE_VERSION,
            "docks": docks,
            "verified": {r: sorted(ps) for r, ps in sorted(state.verified.items())},
            "gated": sorted(state.gated),
            "counters": {"observations": state.observations, "ignored": state.ignored},
        }

    def load(self, data: Mapping[str, Any]) -> LoadState:
        """Rebuild a state from ``dump`` output, for this engine's plan.

        What the plan does not know is dropped (verified parcels and gated routes of other
        routes, misloads of parcels it does not list); an open session whose route this plan
        does not have, or gives another vehicle or dock, gets its route again as at its opening.
        Raises ValueError on data that is not a dumped state.
        """
        if not isinstance(data, Mapping) or data.get("v") != STATE_VERSION:
            raise ValueError(f"not a load engine state of version {STATE_VERSION}")
        try:
            state = LoadState()
            docks = _mapping(data.get("docks", {}), "docks")
            if len(docks) > self.params.max_docks:
                raise _Corrupt("docks", f"more than {self.params.max_docks}")
            for name, d in docks.items():
                state.docks[name] = self._load_dock(name, d)
            for route, parcels in _mapping(data.get("verified", {}), "verified").items():
                known = self.plan.parcel_sets.get(route)
                got = {p for p in _strings(parcels, f"verified[{route!r}]") if p in (known or ())}
                if got:
                    state.verified[route] = got
            gated = _strings(data.get("gated", []), "gated")
            state.gated = {r for r in gated if r in self.plan.by_route}
            counters = _mapping(data.get("counters", {}), "counters")
            state.observations = _int(counters.get("observations", 0), "counters.observations")
            state.ignored = _int(counters.get("ignored", 0), "counters.ignored")
        except _Corrupt as exc:
            raise ValueError(f"corrupt load engine state: {exc}") from None
        for name, ds in state.docks.items():
            if ds.session is not None:
                self._reconcile(state, name, ds.session)
        return state

    def _load_dock(self, name: str, d: Any) -> DockState:
        where = f"docks[{name!r}]"
        if not name or len(name) > MAX_ID:
            raise _Corrupt(where, "not a dock name")
        d = _mapping(d, where)
        ds = DockState(_opt_bool(d.get("door"), f"{where}.door"))
        ds.bay_occupied = _opt_bool(d.get("bay"), f"{where}.bay")
        raw = d.get("session")
        if raw is None:
            return ds
        where += ".session"
        raw = _mapping(raw, where)
        opened = raw.get("opened_at")
        try:
            when = datetime.fromisoformat(opened) if isinstance(opened, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise _Corrupt(f"{where}.opened_at", "not an ISO time with an offset")
        reported = _mapping(raw.get("reported", {}), f"{where}.reported")
        for p, c in reported.items():
            if c not in (_GREEN, _RED):
                raise _Corrupt(f"{where}.reported[{p!r}]", f"not a colour: {c!r}")
        s = Session(
            vehicle=_opt_str(raw.get("vehicle"), f"{where}.vehicle"),
            route=_opt_str(raw.get("route"), f"{where}.route"),
            opened_at=when.astimezone(UTC),
            explicit=_bool(raw.get("explicit", False), f"{where}.explicit"),
            bay_seen_occupied=_bool(raw.get("bay_seen", False), f"{where}.bay_seen"),
            reported=dict(reported),
        )
        misloaded = _mapping(raw.get("misloaded", {}), f"{where}.misloaded")
        s.misloaded = {
            p: _bool(before, f"{where}.misloaded[{p!r}]")
            for p, before in misloaded.items()
            if self._owner_route(p) not in (None, s.route)
        }
        ds.session = s
        return ds

    def _reconcile(self, state: LoadState, dock: str, s: Session) -> None:
        """Keep the session's route if this plan has it for the same vehicle (declared) or
        dock (inferred); else choose it again as at the session's opening."""
        r = None if s.route is None else self.plan.by_route.get(s.route)
        if s.explicit:
            if s.vehicle is None:
                s.explicit = False  # cannot be: a declared vehicle has a name
            elif r is not None and r.vehicle == s.vehicle:
                return
            else:
                self._rebind(s, self._route_for_vehicle(state, s.vehicle, dock))
                return
        if r is not None and r.dock == dock:
            s.vehicle = r.vehicle
            return
        inferred = self._infer(state, dock)
        s.vehicle = None if inferred is None else inferred.vehicle
        self._rebind(s, None if inferred is None else inferred.route)

    def adopt(self, other: LoadEngine, state: LoadState) -> LoadState:
        """Carry ``state`` of ``other`` (the engine of the previous plan) over to this plan.

        Open sessions, sensor states and what was verified of routes this plan still has are
        kept; a session whose route is gone (or moved to another vehicle or dock) gets its
        route again from this plan, and the parcels it had seen are judged again when read.
        """
        return self.load(other.dump(state))


# ---------------------------------------------------------------- reading dumps


class _Corrupt(Exception):
    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")


def _mapping(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise _Corrupt(where, f"not an object, but {type(v).__name__}")
    return v


def _strings(v: Any, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Corrupt(where, "not a list of strings")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _Corrupt(where, f"not a bool: {v!r}")
    return v


def _opt_bool(v: Any, where: str) -> bool | None:
    return None if v is None else _bool(v, where)


def _opt_str(v: Any, where: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > MAX_ID:
        raise _Corrupt(where, f"not a name: {v!r}")
    return v


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _Corrupt(where, f"not a count: {v!r}")
    return v
