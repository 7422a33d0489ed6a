"""The trip engine: ``step(state, fix) -> (state, events)``, geofences with hysteresis.

Each fix becomes a ``segment.Move`` from the last one; each zone near it (or along it, or with a
track) goes through its ``tracker.ZoneTracker``, which keeps a small track only while the van is
inside the zone or about to be, and says what the move did: ``Entered``, ``Stays``, ``Left`` or
``Crossed`` (a zone crossed between fixes, or by a run too short to confirm: an enter and an
exit). Jitter at a boundary needs both depth and persistence to do anything, so a van parked near
a boundary never flaps. The engine turns those transitions into events by zone kind.

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

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent.gnss.fix import Fix
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.motion import MotionChange, MotionParams, MotionState, motion_step
from edge_agent.trips.segment import STILL_GAP_S, FixPoint, Mark, Move
from edge_agent.trips.tracker import (
    ENTERED,
    STAYS,
    Crossed,
    Hysteresis,
    Left,
    Transition,
    ZoneTrack,
    ZoneTracker,
)
from edge_agent.trips.zones import Zone, ZoneSet
from edge_agent.wire.envelope import format_ts

__all__ = ["EngineParams", "EngineState", "TripEngine", "TripEvent"]

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class EngineParams:
    """The timing side of the hysteresis (the distances live in each zone's margins)."""

    enter_after: float = 2.0
    enter_fixes: int = 2
    exit_after: float = 10.0
    exit_fixes: int = 3
    arrive_after: float = 60.0
    dwell_fixes: int = 3
    still_speed: float = 0.5
    still_move: float = 30.0
    motion: MotionParams = field(default_factory=MotionParams)

    @property
    def hysteresis(self) -> Hysteresis:
        """The enter and exit timing a zone's tracker applies."""
        return Hysteresis(
            self.enter_after,
            self.enter_fixes,
            self.exit_after,
            self.exit_fixes,
            dwell_after=self.arrive_after,
            dwell_fixes=self.dwell_fixes,
        )

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
class EngineState:
    """Everything the engine carries from one fix to the next."""

    last: FixPoint | None = None
    tracks: dict[int, ZoneTrack] = field(default_factory=dict)
    motion: MotionState = field(default_factory=MotionState)
    completed: set[str] = field(default_factory=set)
    fixes: int = 0
    dropped_old: int = 0
    dropped_duplicate: int = 0


@dataclass(slots=True)
class _Step:
    """What the event side of one step works on: the state, the fix's time, the events."""

    state: EngineState
    t: float
    events: list[TripEvent]


class TripEngine:
    """Turns fixes into trip and geofence events for one ZoneSet (one manifest)."""

    def __init__(
        self, zones: ZoneSet, params: EngineParams | None = None, route: str | None = None
    ) -> None:
        self.zones = zones
        self.params = params if params is not None else EngineParams()
        self.route = route
        self._fwd = zones.projection.forward
        hysteresis = self.params.hysteresis
        self._trackers = [ZoneTracker(z, hysteresis) for z in zones.zones]

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
        x, y = self._fwd(fix.lat, fix.lon)
        now = FixPoint(t, x, y, fix.lat, fix.lon, fix.speed_mps)
        state.fixes += 1
        step = _Step(state, t, [])
        mev = motion_step(state.motion, self.params.motion, now)
        if last is None:
            self._first_sight(state, self.zones.near(x, y), now)
        else:
            self._zones_step(step, self._move(last, now))
        if mev is not None:
            step.events.append(self._motion_event(state, mev))
        state.last = now
        if len(step.events) > 1:
            step.events.sort(key=lambda e: e.t)
        return state, step.events

    def _move(self, last: FixPoint, now: FixPoint) -> Move:
        p = self.params
        dx, dy = now.x - last.x, now.y - last.y
        seg2 = dx * dx + dy * dy
        m = self.zones.min_margin_in
        speed = now.speed
        slow = speed is not None and speed <= p.motion.stop_speed
        # Standing still at this fix and the last (Doppler speed, which multipath does not move)
        # and either seconds apart or not displaced (sparse fixes: it may have driven between
        # them): the van cannot have crossed a boundary, whatever the positions say.
        still = (
            slow
            and speed is not None
            and speed <= p.still_speed
            and last.speed is not None
            and last.speed <= p.still_speed
            and (now.t - last.t <= STILL_GAP_S or seg2 < p.still_move * p.still_move)
        )
        long = seg2 > 0.0 and seg2 >= 4.0 * m * m
        rest_start = slow and last.speed is not None and last.speed > p.motion.stop_speed
        return Move(last, now, seg2, long, slow, still, p.still_speed, rest_start)

    def _first_sight(self, state: EngineState, candidates: Iterable[int], now: FixPoint) -> None:
        # Inside a zone from the first fix (a boot in the depot), or inside a zone that a new
        # manifest just added: its entry was not seen.
        for i in candidates:
            if i not in state.tracks:
                tr = self._trackers[i].first_sight(now)
                if tr is not None:
                    state.tracks[i] = tr

    def _candidates(self, move: Move, tracks: dict[int, ZoneTrack]) -> Iterable[int]:
        """The zones near the fix, along a segment long enough to cross one, and with a track."""
        a, b = move.last, move.now
        cands: Any = self.zones.near(b.x, b.y)
        if move.long:
            cands = set(cands)
            cands.update(self.zones.along(a.x, a.y, b.x, b.y))
        if tracks:
            cands = set(cands)
            cands.update(tracks)
        return cands  # type: ignore[no-any-return]

    def _zones_step(self, step: _Step, move: Move) -> None:
        tracks = step.state.tracks
        zones = self.zones.zones
        for i in self._candidates(move, tracks):
            tr, change = self._trackers[i].step(tracks.get(i), move)
            if tr is None:
                tracks.pop(i, None)
            else:
                tracks[i] = tr
            if change is not None:
                self._report(step, zones[i], tr, change)

    # ---------------------------------------------------------------- transitions to events

    def _report(self, step: _Step, z: Zone, tr: ZoneTrack | None, change: Transition) -> None:
        """The events of what the van did at zone ``z``; ``tr`` is the track kept, if any."""
        if change is STAYS:
            assert tr is not None
            if z.kind == "stop" and not tr.qualified:
                self._maybe_arrive(step, z, tr)
        elif change is ENTERED:
            assert tr is not None
            if tr.initial:
                tr.qualified = True  # already there: its departure is still worth reporting
            else:
                self._enter(step, z, tr)
        elif isinstance(change, Left):
            self._exit(step, z, change.track, change.at)
        elif isinstance(change, Crossed):
            self._cross(step, z, change.enter, change.leave)

    def _enter(self, step: _Step, z: Zone, tr: ZoneTrack) -> None:
        kind = z.kind
        if kind == "depot":
            step.events.append(self._event("trip.arrive", tr.since_mark, z))
        elif kind == "stop":
            self._maybe_arrive(step, z, tr)
        elif kind == "approach":
            if not self._stop_done_or_reached(step.state, z):
                r = getattr(z, "r", None)
                extra = {} if r is None else {"distance_m": round(r, 1)}
                step.events.append(self._event("trip.approach", tr.since_mark, z, extra))
        else:
            step.events.append(self._event("geofence.enter", tr.since_mark, z))

    def _stop_done_or_reached(self, state: EngineState, approach: Zone) -> bool:
        """Whether the stop of an approach zone is done, or the van already inside it."""
        assert approach.stop is not None
        stop = approach.stop.id
        if stop in state.completed:
            return True
        zone = self.zones.by_key.get(f"stop:{stop}")
        track = None if zone is None else state.tracks.get(zone.index)
        return track is not None and track.inside

    def _maybe_arrive(self, step: _Step, z: Zone, tr: ZoneTrack) -> None:
        ms = step.state.motion
        # stopped since before the entry is no evidence: a van pulling away is still "stopped"
        # for a few seconds, and it may be pulling away from a spot just inside the edge
        if (
            ms.state == "stopped" and ms.since >= tr.since
        ) or step.t - tr.since >= self.params.arrive_after:
            tr.qualified = True
            extra: dict[str, Any] = {}
            if z.stop is not None and z.stop.window is not None:
                lo, hi = z.stop.window
                extra["window"] = (
                    "early" if tr.since < lo else "late" if tr.since > hi else "on_time"
                )
            step.events.append(self._event("trip.arrive", tr.since_mark, z, extra))

    def _exit(self, step: _Step, z: Zone, tr: ZoneTrack, at: Mark) -> None:
        dwell = round(max(0.0, at.t - tr.since), 3)
        kind = z.kind
        partial = {"partial": True} if tr.initial else {}
        events = step.events
        if kind == "depot":
            events.append(self._event("trip.depart", at, z, {"dwell_s": dwell, **partial}))
        elif kind == "stop":
            assert z.stop is not None
            if tr.qualified:
                if tr.pos_n:
                    stood = Mark(at.t, tr.pos_lat / tr.pos_n, tr.pos_lon / tr.pos_n)
                else:
                    stood = Mark(at.t, tr.since_lat, tr.since_lon)
                arrived = format_ts(datetime.fromtimestamp(tr.since, UTC))
                extra = {"dwell_s": dwell, "arrived": arrived, **partial}
                events.append(self._event("trip.dwell", stood, z, extra))
                events.append(self._event("trip.depart", at, z, {"dwell_s": dwell}))
                step.state.completed.add(z.stop.id)
            else:
                events.append(self._event("geofence.enter", tr.since_mark, z))
                events.append(self._event("geofence.exit", at, z, {"dwell_s": dwell}))
        elif kind == "zone":
            events.append(self._event("geofence.exit", at, z, {"dwell_s": dwell, **partial}))

    def _cross(self, step: _Step, z: Zone, enter: Mark, leave: Mark) -> None:
        """A zone crossed between fixes, or by a run too short to confirm: enter and exit."""
        tr = ZoneTrack(inside=True, since=enter.t, since_lat=enter.lat, since_lon=enter.lon)
        if z.kind != "stop":  # at a stop, a crossing is a drive-by whatever the motion said
            self._enter(step, z, tr)
        self._exit(step, z, tr, leave)

    # ---------------------------------------------------------------- events

    def _event(
        self, type_: str, at: Mark, z: Zone | None, extra: dict[str, Any] | None = None
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
        data["lat"] = round(at.lat, 7)
        data["lon"] = round(at.lon, 7)
        if extra:
            data.update(extra)
        return TripEvent(type_, at.t, ref, data)

    def _motion_event(self, state: EngineState, mev: MotionChange) -> TripEvent:
        where: Zone | None = None
        for i, tr in state.tracks.items():
            z = self.zones.zones[i]
            if tr.inside and z.kind in ("stop", "depot"):
                where = z
                if z.kind == "stop":
                    break
        extra = {"stopped_s": round(mev.stopped_s, 3)} if mev.type == "trip.moving" else None
        return self._event(mev.type, mev.at, where, extra)

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
                state.last = FixPoint(float(t), x, y, float(lat), float(lon), speed)
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
            self._first_sight(new, [i for i in fresh if i in near], last)
        return new
