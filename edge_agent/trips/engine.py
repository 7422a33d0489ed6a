"""The trip engine: ``step(state, fix) -> (state, events)``, geofences with hysteresis.

Per zone, the engine keeps a small track only while the van is inside it or about to be::

    outside ──(a run inside: enter_fixes fixes, enter_after s, margin_in deep)──▶ inside
    inside  ──(a run outside: exit_fixes fixes, exit_after s, margin_out out)──▶ outside

A *run* starts at the first fix across the boundary and ends (unconfirmed) at the first fix back
on the other side; fixes between the boundary and the margin keep a run going without counting
towards it. Jitter at a boundary therefore needs both depth and persistence to do anything, and a
van parked near a boundary never flaps.

A van can also cross a zone between two fixes (sparse fixes, a fast pass, a tunnel): when the
straight line from the last fix before a run (or before a gap) to the first fix after it passes
``margin_in`` deep into the zone, the crossing is reported as an enter and an exit. Noise cannot
fake this: both ends are outside, so the segment is at least ``2 * margin_in`` long and runs
across the zone, not along its edge.

Event times are the estimated crossing times: the boundary crossing interpolated on the segment
between the two fixes either side of it, not the time the hysteresis confirmed it.

Events by zone kind (``ref`` has ``route``, and ``stop`` and ``parcel`` for stop zones):

=========  ==============================================  =====================================
zone       enter                                           exit
=========  ==============================================  =====================================
depot      ``trip.arrive`` (no ``ref.stop``: back home)    ``trip.depart`` (no ``ref.stop``)
stop       ``trip.arrive`` once the van stopped inside or  ``trip.dwell`` + ``trip.depart``; a
           stayed ``arrive_after``                         drive-by: ``geofence.enter`` + ``exit``
approach   ``trip.approach`` unless the stop is done       nothing
zone       ``geofence.enter``                              ``geofence.exit`` (with ``dwell_s``)
=========  ==============================================  =====================================

plus ``trip.stopped`` / ``trip.moving`` from ``motion``. Fixes must come in time order (see
``reorder``); one not newer than the state is dropped and counted, so it can never move the
state backwards. The state is mutated in place and returned (copying it per fix would cost more
than the step); ``dump``/``load`` turn it into JSON data and back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent.gnss.fix import Fix
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.motion import MotionParams, MotionState, motion_step
from edge_agent.trips.zones import Zone, ZoneSet
from edge_agent.wire.envelope import format_ts

__all__ = ["EngineParams", "EngineState", "LastFix", "TripEngine", "TripEvent", "ZoneTrack"]

STATE_VERSION = 1
STILL_GAP_S = 5.0
PASS_SPEED_SLACK = 10.0  # m/s a pass's implied speed may exceed the speeds the receiver reported
ASSUMED_ACCEL = 1.5  # m/s², a delivery van pulling away or braking for a stop


@dataclass(frozen=True, slots=True)
class EngineParams:
    """The timing side of the hysteresis (the distances live in each zone's margins)."""

    enter_after: float = 2.0
    enter_fixes: int = 2
    exit_after: float = 10.0
    exit_fixes: int = 3
    arrive_after: float = 60.0
    still_speed: float = 0.5
    still_move: float = 30.0
    motion: MotionParams = field(default_factory=MotionParams)

    @classmethod
    def from_config(cls, c: TripsConfig) -> EngineParams:
        """The parameters of a ``trips:`` configuration section."""
        return cls(
            enter_after=c.enter_after,
            enter_fixes=c.enter_fixes,
            exit_after=c.exit_after,
            exit_fixes=c.exit_fixes,
            arrive_after=c.arrive_after,
            still_speed=c.stop_speed_mps / 2,
            still_move=2 * c.enter_margin,
            motion=MotionParams(
                stop_speed=c.stop_speed_mps,
                move_speed=c.move_speed_mps,
                stopped_after=c.stopped_after,
                moving_after=c.moving_after,
            ),
        )


@dataclass(frozen=True, slots=True)
class TripEvent:
    """A derived event: contract ``type``, time ``t`` (epoch seconds), ``ref`` and ``data``."""

    type: str
    t: float
    ref: dict[str, Any]
    data: dict[str, Any]

    @property
    def ts(self) -> datetime:
        """The event time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.t, UTC)

    def to_json(self) -> dict[str, Any]:
        """``{"type", "ts", "ref", "data"}`` as ``trips replay`` prints it (DESIGN §4)."""
        ref = {k: self.ref[k] for k in ("route", "stop") if k in self.ref}
        return {"type": self.type, "ts": format_ts(self.ts), "ref": ref, "data": self.data}


@dataclass(slots=True)
class ZoneTrack:
    """What the engine remembers of one zone the van is in or at the edge of."""

    inside: bool = False
    since: float = 0.0  # confirmed crossing: time and place
    since_lat: float = 0.0
    since_lon: float = 0.0
    initial: bool = False  # inside from the first fix: its arrival was not seen
    qualified: bool = False  # a stop visit that counts as an arrival
    run: bool = False  # a run across the boundary is pending
    run_t: float = 0.0  # its estimated crossing
    run_lat: float = 0.0
    run_lon: float = 0.0
    anc_lat: float = 0.0  # the last fix before an enter run (outside)
    anc_lon: float = 0.0
    anc_x: float = 0.0
    anc_y: float = 0.0
    deep_t: float | None = None  # first fix of the run beyond the margin
    deep_n: int = 0
    pos_n: int = 0  # where the van stood while slow inside (sums)
    pos_lat: float = 0.0
    pos_lon: float = 0.0


@dataclass(slots=True)
class LastFix:
    """The last fix the engine accepted, on the plane and in WGS 84."""

    t: float
    x: float
    y: float
    lat: float
    lon: float
    speed: float | None = None


@dataclass(slots=True)
class EngineState:
    """Everything the engine carries from one fix to the next."""

    last: LastFix | None = None
    tracks: dict[int, ZoneTrack] = field(default_factory=dict)
    motion: MotionState = field(default_factory=MotionState)
    completed: set[str] = field(default_factory=set)
    fixes: int = 0
    dropped_old: int = 0
    dropped_duplicate: int = 0


def _lerp(a: float, b: float, u: float) -> float:
    return a + (b - a) * u


def _brake_time(e: float, v: float) -> float:
    """Seconds to cover ``e`` metres braking from ``v`` at ASSUMED_ACCEL."""
    a = ASSUMED_ACCEL
    return (v - math.sqrt(max(0.0, v * v - 2 * a * e))) / a


def _stopping_time(u: float, d: float, v: float) -> tuple[float, float]:
    """(time to fraction u, total time) of a van covering d metres at v then braking to 0."""
    brake = min(d, v * v / (2 * ASSUMED_ACCEL))
    cruise = d - brake
    total = cruise / v + _brake_time(brake, v)
    e = u * d
    at = e / v if e <= cruise else cruise / v + _brake_time(e - cruise, v)
    return at, total


def _segment_time(
    t1: float, t2: float, u: float, d: float, v1: float | None, v2: float | None, still: float
) -> float:
    """When the van was at fraction ``u`` of a segment between fixes at t1 and t2.

    Linear in time, unless the fixes are seconds apart and the van stood still at one end:
    then it drove only part of the gap, pulling away or braking at ASSUMED_ACCEL, and standing
    the rest of the time (a sparse tracker's fix before a stop, and the next one at it).
    """
    dt = t2 - t1
    if dt > STILL_GAP_S and v1 is not None and v2 is not None and d > 0:
        if v2 <= still < v1:
            at, total = _stopping_time(u, d, v1)
            if total < dt:
                return t1 + at
        elif v1 <= still < v2:
            at, total = _stopping_time(1.0 - u, d, v2)
            if total < dt:
                return t2 - at
    return t1 + u * dt


def _plausible(dist: float, dt: float, v1: float | None, v2: float | None) -> bool:
    """Whether a van reporting speeds v1 and v2 can have covered ``dist`` in ``dt``: a
    multipath jump of 50 m in one second is not a drive across a zone."""
    if v1 is None or v2 is None or dt <= 0:
        return True
    return dist <= (max(v1, v2) + PASS_SPEED_SLACK) * dt


class TripEngine:
    """Turns fixes into trip and geofence events for one ZoneSet (one manifest)."""

    def __init__(
        self, zones: ZoneSet, params: EngineParams | None = None, route: str | None = None
    ) -> None:
        self.zones = zones
        self.params = params if params is not None else EngineParams()
        self.route = route
        self._fwd = zones.projection.forward

    def new_state(self) -> EngineState:
        """The state before the first fix."""
        return EngineState()

    # ---------------------------------------------------------------- the step

    def step(self, state: EngineState, fix: Fix) -> tuple[EngineState, list[TripEvent]]:
        """Advance ``state`` by one fix; return it with the events this fix confirmed."""
        t = fix.time.timestamp()
        last = state.last
        if last is not None and t <= last.t:
            if t == last.t:
                state.dropped_duplicate += 1
            else:
                state.dropped_old += 1
            return state, []
        lat, lon = fix.lat, fix.lon
        x, y = self._fwd(lat, lon)
        state.fixes += 1
        events: list[TripEvent] = []
        speed = fix.speed_mps
        mev = motion_step(state.motion, self.params.motion, t, x, y, lat, lon, speed)
        if last is None:
            self._init_silent(state, self.zones.near(x, y), t, x, y, lat, lon)
        else:
            self._zones_step(state, last, t, x, y, lat, lon, speed, events)
        if mev is not None:
            events.append(self._motion_event(state, mev))
        state.last = LastFix(t, x, y, lat, lon, speed)
        if len(events) > 1:
            events.sort(key=lambda e: e.t)
        return state, events

    def _init_silent(
        self,
        state: EngineState,
        candidates: Any,
        t: float,
        x: float,
        y: float,
        lat: float,
        lon: float,
    ) -> None:
        # Inside a zone from the first fix (a boot in the depot), or inside a zone that a new
        # manifest just added: its entry was not seen. Such a run confirms like any other, but
        # silently (and cannot be a pass: there is no fix before it).
        zones = self.zones.zones
        for i in candidates:
            z = zones[i]
            s = z.signed(x, y)
            if i not in state.tracks and s <= 0.0:
                tr = ZoneTrack(run=True, initial=True, run_t=t, run_lat=lat, run_lon=lon)
                if s <= -z.margin_in:
                    tr.deep_t, tr.deep_n = t, 1
                state.tracks[i] = tr

    def _zones_step(
        self,
        state: EngineState,
        last: LastFix,
        t: float,
        x: float,
        y: float,
        lat: float,
        lon: float,
        speed: float | None,
        events: list[TripEvent],
    ) -> None:
        zs = self.zones
        zones = zs.zones
        tracks = state.tracks
        p = self.params
        cands: Any = zs.near(x, y)
        lx, ly = last.x, last.y
        dx, dy = x - lx, y - ly
        seg2 = dx * dx + dy * dy
        long_seg = seg2 > 0.0 and seg2 >= 4.0 * zs.min_margin_in * zs.min_margin_in
        slow = speed is not None and speed <= p.motion.stop_speed
        # Standing still at this fix and the last (Doppler speed, which multipath does not move)
        # and either seconds apart or not displaced (sparse fixes: it may have driven between
        # them): the van cannot have crossed a boundary, whatever the positions say. No run
        # starts then.
        still = (
            slow
            and speed is not None
            and speed <= p.still_speed
            and last.speed is not None
            and last.speed <= p.still_speed
            and (t - last.t <= STILL_GAP_S or seg2 < p.still_move * p.still_move)
        )
        if long_seg:
            cands = set(cands)
            cands.update(zs.along(lx, ly, x, y))
        if tracks:
            cands = set(cands)
            cands.update(tracks)
        for i in cands:
            z = zones[i]
            s = z.signed(x, y)
            tr = tracks.get(i)
            if tr is None:
                if s <= 0.0:
                    if still:
                        continue
                    tr = ZoneTrack()
                    self._start_enter_run(tr, z, last, t, x, y, lat, lon, speed)
                    tracks[i] = tr
                    if s <= -z.margin_in:
                        tr.deep_t, tr.deep_n = t, 1
                        if p.enter_fixes <= 1 and p.enter_after <= 0.0:
                            self._confirm_enter(state, z, tr, t, events)
                elif (
                    long_seg
                    and not still
                    and seg2 >= 4.0 * z.margin_in * z.margin_in
                    and _plausible(math.sqrt(seg2), t - last.t, last.speed, speed)
                    and z.passes_deep(lx, ly, x, y)
                ):
                    self._pass_segment(state, z, last, t, x, y, lat, lon, speed, events)
                continue
            if not tr.inside:
                if s <= 0.0:
                    if not tr.run:
                        if still:
                            continue
                        self._start_enter_run(tr, z, last, t, x, y, lat, lon, speed)
                    if s <= -z.margin_in:
                        if tr.deep_t is None:
                            tr.deep_t = t
                        tr.deep_n += 1
                    if (
                        tr.deep_t is not None
                        and tr.deep_n >= p.enter_fixes
                        and t - tr.deep_t >= p.enter_after
                    ):
                        self._confirm_enter(state, z, tr, t, events)
                else:
                    # the run ends unconfirmed: a crossing if the van went across, else jitter
                    if tr.run and not tr.initial and z.passes_deep(tr.anc_x, tr.anc_y, x, y):
                        u = self._exit_fraction(z, last, x, y)
                        self._pass(
                            state,
                            z,
                            (tr.run_t, tr.run_lat, tr.run_lon),
                            (
                                self._when(last, t, u, x, y, speed),
                                _lerp(last.lat, lat, u),
                                _lerp(last.lon, lon, u),
                            ),
                            events,
                        )
                    del tracks[i]
                continue
            # inside
            if s > 0.0:
                if not tr.run and not still:
                    tr.run = True
                    u = self._exit_fraction(z, last, x, y)
                    tr.run_t = self._when(last, t, u, x, y, speed)
                    tr.run_lat = _lerp(last.lat, lat, u)
                    tr.run_lon = _lerp(last.lon, lon, u)
                    tr.deep_t, tr.deep_n = None, 0
                if tr.run and s >= z.margin_out:
                    if tr.deep_t is None:
                        tr.deep_t = t
                    tr.deep_n += 1
                    if tr.deep_n >= p.exit_fixes and t - tr.deep_t >= p.exit_after:
                        self._exit(state, z, tr, tr.run_t, tr.run_lat, tr.run_lon, events)
                        del tracks[i]
                        continue
            else:
                if tr.run:
                    tr.run, tr.deep_t, tr.deep_n = False, None, 0
                if slow:
                    tr.pos_n += 1
                    tr.pos_lat += lat
                    tr.pos_lon += lon
            if z.kind == "stop" and not tr.qualified and not tr.run:
                self._maybe_arrive(state, z, tr, t, events)

    # ---------------------------------------------------------------- transitions

    @staticmethod
    def _exit_fraction(z: Zone, last: LastFix, x: float, y: float) -> float:
        """Where on last→current the van left (the crossing nearest the inside end)."""
        us = z.crossings(last.x, last.y, x, y)
        return us[0] if us else 0.0

    def _start_enter_run(
        self,
        tr: ZoneTrack,
        z: Zone,
        last: LastFix,
        t: float,
        x: float,
        y: float,
        lat: float,
        lon: float,
        speed: float | None,
    ) -> None:
        us = z.crossings(last.x, last.y, x, y)
        u = us[-1] if us else 1.0
        tr.run = True
        tr.run_t = self._when(last, t, u, x, y, speed)
        tr.run_lat = _lerp(last.lat, lat, u)
        tr.run_lon = _lerp(last.lon, lon, u)
        tr.anc_x, tr.anc_y, tr.anc_lat, tr.anc_lon = last.x, last.y, last.lat, last.lon
        tr.deep_t, tr.deep_n = None, 0

    def _confirm_enter(
        self, state: EngineState, z: Zone, tr: ZoneTrack, t: float, events: list[TripEvent]
    ) -> None:
        tr.inside = True
        tr.since, tr.since_lat, tr.since_lon = tr.run_t, tr.run_lat, tr.run_lon
        tr.run, tr.deep_t, tr.deep_n = False, None, 0
        if tr.initial:
            tr.qualified = True  # already there: its departure is still worth reporting
            return
        self._enter(state, z, tr, t, events)

    def _enter(
        self, state: EngineState, z: Zone, tr: ZoneTrack, t: float, events: list[TripEvent]
    ) -> None:
        kind = z.kind
        if kind == "depot":
            events.append(self._event("trip.arrive", tr.since, tr.since_lat, tr.since_lon, z))
        elif kind == "stop":
            self._maybe_arrive(state, z, tr, t, events)
        elif kind == "approach":
            assert z.stop is not None
            inside_stop = self.zones.by_key.get(f"stop:{z.stop.id}")
            if z.stop.id not in state.completed and not (
                inside_stop is not None
                and (st := state.tracks.get(inside_stop.index)) is not None
                and st.inside
            ):
                r = getattr(z, "r", None)
                extra = {} if r is None else {"distance_m": round(r, 1)}
                events.append(
                    self._event("trip.approach", tr.since, tr.since_lat, tr.since_lon, z, extra)
                )
        else:
            events.append(self._event("geofence.enter", tr.since, tr.since_lat, tr.since_lon, z))

    def _maybe_arrive(
        self, state: EngineState, z: Zone, tr: ZoneTrack, t: float, events: list[TripEvent]
    ) -> None:
        ms = state.motion
        # stopped since before the entry is no evidence: a van pulling away is still "stopped"
        # for a few seconds, and it may be pulling away from a spot just inside the edge
        if (
            ms.state == "stopped" and ms.since >= tr.since
        ) or t - tr.since >= self.params.arrive_after:
            tr.qualified = True
            extra: dict[str, Any] = {}
            if z.stop is not None and z.stop.window is not None:
                lo, hi = z.stop.window
                extra["window"] = (
                    "early" if tr.since < lo else "late" if tr.since > hi else "on_time"
                )
            events.append(
                self._event("trip.arrive", tr.since, tr.since_lat, tr.since_lon, z, extra)
            )

    def _exit(
        self,
        state: EngineState,
        z: Zone,
        tr: ZoneTrack,
        t: float,
        lat: float,
        lon: float,
        events: list[TripEvent],
    ) -> None:
        dwell = round(max(0.0, t - tr.since), 3)
        kind = z.kind
        partial = {"partial": True} if tr.initial else {}
        if kind == "depot":
            events.append(self._event("trip.depart", t, lat, lon, z, {"dwell_s": dwell, **partial}))
        elif kind == "stop":
            assert z.stop is not None
            if tr.qualified:
                if tr.pos_n:
                    plat, plon = tr.pos_lat / tr.pos_n, tr.pos_lon / tr.pos_n
                else:
                    plat, plon = tr.since_lat, tr.since_lon
                arrived = format_ts(datetime.fromtimestamp(tr.since, UTC))
                extra = {"dwell_s": dwell, "arrived": arrived, **partial}
                events.append(self._event("trip.dwell", t, plat, plon, z, extra))
                events.append(self._event("trip.depart", t, lat, lon, z, {"dwell_s": dwell}))
                state.completed.add(z.stop.id)
            else:
                events.append(
                    self._event("geofence.enter", tr.since, tr.since_lat, tr.since_lon, z)
                )
                events.append(self._event("geofence.exit", t, lat, lon, z, {"dwell_s": dwell}))
        elif kind == "zone":
            events.append(
                self._event("geofence.exit", t, lat, lon, z, {"dwell_s": dwell, **partial})
            )

    def _pass(
        self,
        state: EngineState,
        z: Zone,
        enter: tuple[float, float, float],
        leave: tuple[float, float, float],
        events: list[TripEvent],
    ) -> None:
        """A zone crossed between fixes, or by a run too short to confirm: enter and exit."""
        tr = ZoneTrack(inside=True, since=enter[0], since_lat=enter[1], since_lon=enter[2])
        if z.kind == "stop":
            # a pass is a drive-by, whatever the motion detector last said
            self._exit(state, z, tr, *leave, events)
            return
        self._enter(state, z, tr, enter[0], events)
        self._exit(state, z, tr, *leave, events)

    def _pass_segment(
        self,
        state: EngineState,
        z: Zone,
        last: LastFix,
        t: float,
        x: float,
        y: float,
        lat: float,
        lon: float,
        speed: float | None,
        events: list[TripEvent],
    ) -> None:
        us = z.crossings(last.x, last.y, x, y)
        u0, u1 = (us[0], us[-1]) if us else (0.5, 0.5)
        self._pass(
            state,
            z,
            (
                self._when(last, t, u0, x, y, speed),
                _lerp(last.lat, lat, u0),
                _lerp(last.lon, lon, u0),
            ),
            (
                self._when(last, t, u1, x, y, speed),
                _lerp(last.lat, lat, u1),
                _lerp(last.lon, lon, u1),
            ),
            events,
        )

    def _when(
        self, last: LastFix, t: float, u: float, x: float, y: float, speed: float | None
    ) -> float:
        d = math.hypot(x - last.x, y - last.y)
        return _segment_time(last.t, t, u, d, last.speed, speed, self.params.still_speed)

    # ---------------------------------------------------------------- events

    def _event(
        self,
        type_: str,
        t: float,
        lat: float,
        lon: float,
        z: Zone | None,
        extra: dict[str, Any] | None = None,
    ) -> TripEvent:
        ref: dict[str, Any] = {}
        if self.route is not None:
            ref["route"] = self.route
        data: dict[str, Any] = {}
        if z is not None:
            data["zone"] = z.name
            if z.stop is not None:
                ref["stop"] = z.stop.id
                if z.stop.parcels:
                    ref["parcel"] = list(z.stop.parcels)
        data["lat"] = round(lat, 7)
        data["lon"] = round(lon, 7)
        if extra:
            data.update(extra)
        return TripEvent(type_, t, ref, data)

    def _motion_event(
        self, state: EngineState, mev: tuple[str, float, float, float, float]
    ) -> TripEvent:
        type_, t, lat, lon, stopped_s = mev
        where: Zone | None = None
        for i, tr in state.tracks.items():
            z = self.zones.zones[i]
            if tr.inside and z.kind in ("stop", "depot"):
                where = z
                if z.kind == "stop":
                    break
        extra = {"stopped_s": round(stopped_s, 3)} if type_ == "trip.moving" else None
        return self._event(type_, t, lat, lon, where, extra)

    # ---------------------------------------------------------------- persistence

    def dump(self, state: EngineState) -> dict[str, Any]:
        """The state as JSON data, independent of zone order and projection."""
        tracks = {}
        for i, tr in state.tracks.items():
            d = asdict(tr)
            del d["anc_x"], d["anc_y"]
            tracks[self.zones.zones[i].key] = {"fp": self.zones.zones[i].fingerprint, **d}
        last = state.last
        return {
            "v": STATE_VERSION,
            "route": self.route,
            "last": None if last is None else [last.t, last.lat, last.lon, last.speed],
            "tracks": tracks,
            "motion": state.motion.to_dict(),
            "completed": sorted(state.completed),
            "counters": {
                "fixes": state.fixes,
                "dropped_old": state.dropped_old,
                "dropped_duplicate": state.dropped_duplicate,
            },
        }

    def load(self, data: dict[str, Any]) -> EngineState:
        """Rebuild a state from ``dump`` output, for this engine's zones.

        Tracks of zones this engine does not have (or whose geometry changed) are dropped;
        raises ValueError on data that is not a dumped state.
        """
        if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
            raise ValueError("not a trip engine state of version 1")
        try:
            state = EngineState()
            if data.get("last") is not None:
                t, lat, lon, speed = data["last"]
                x, y = self._fwd(float(lat), float(lon))
                speed = None if speed is None else float(speed)
                state.last = LastFix(float(t), x, y, float(lat), float(lon), speed)
            known = set(ZoneTrack.__dataclass_fields__)
            for key, d in dict(data.get("tracks") or {}).items():
                z = self.zones.by_key.get(key)
                if z is None or d.get("fp") != z.fingerprint:
                    continue
                tr = ZoneTrack(**{k: v for k, v in d.items() if k in known})
                tr.anc_x, tr.anc_y = self._fwd(tr.anc_lat, tr.anc_lon)
                state.tracks[z.index] = tr
            state.motion = MotionState.from_dict(dict(data.get("motion") or {}))
            if state.motion.ref_t is not None:
                state.motion.ref_t = None  # the derived-speed anchor was on the old plane
            state.completed = {str(s) for s in data.get("completed") or ()}
            c = dict(data.get("counters") or {})
            state.fixes = int(c.get("fixes", 0))
            state.dropped_old = int(c.get("dropped_old", 0))
            state.dropped_duplicate = int(c.get("dropped_duplicate", 0))
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"corrupt trip engine state: {exc}") from None
        return state

    def adopt(self, other: TripEngine, state: EngineState) -> EngineState:
        """Carry ``state`` of ``other`` (the previous manifest) over to this engine's zones.

        Zones present in both with the same geometry keep their track; new zones the van is
        already deep inside are entered silently (their entry was not seen).
        """
        new = self.load(other.dump(state))
        last = new.last
        if last is not None:
            fresh = [
                z.index
                for z in self.zones.zones
                if z.key not in other.zones.by_key
                or other.zones.by_key[z.key].fingerprint != z.fingerprint
            ]
            near = set(self.zones.near(last.x, last.y))
            self._init_silent(
                new, [i for i in fresh if i in near], last.t, last.x, last.y, last.lat, last.lon
            )
        return new
