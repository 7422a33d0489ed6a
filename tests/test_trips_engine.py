"""The step engine: transitions, hysteresis, crossing times, passes, order, state, manifests."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge_agent.gnss.fix import Fix
from edge_agent.trips.config import GeofenceConfig, TripsConfig
from edge_agent.trips.engine import EngineParams, EngineState, TripEngine, TripEvent
from edge_agent.trips.geo import LocalProjection
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.reorder import FixOrder
from edge_agent.wire.envelope import parse_ts, validate_data

ORIGIN = (52.52, 13.405)
PROJ = LocalProjection(*ORIGIN)
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def ll(x: float, y: float) -> tuple[float, float]:
    return PROJ.inverse(x, y)


def manifest(stops: Sequence[tuple[str, float, float, float]], route: str = "r1") -> dict[str, Any]:
    """A manifest with a 100 m depot at (-3000, 0) and circle stops (id, x, y, radius)."""
    dlat, dlon = ll(-3000.0, 0.0)
    out = []
    for sid, x, y, r in stops:
        lat, lon = ll(x, y)
        out.append({"id": sid, "lat": lat, "lon": lon, "radius_m": r, "parcels": [f"p-{sid}"]})
    return {"route": route, "depot": {"lat": dlat, "lon": dlon, "radius_m": 100}, "stops": out}


def engine_for(m: dict[str, Any], cfg: TripsConfig | None = None) -> TripEngine:
    cfg = cfg or TripsConfig()
    man = parse_manifest(m)
    return TripEngine(
        build_zones(man, cfg, origin=ORIGIN), EngineParams.from_config(cfg), man.route
    )


def fix(t: float, x: float, y: float, speed: float | None) -> Fix:
    lat, lon = ll(x, y)
    return Fix(time=T0 + timedelta(seconds=t), lat=lat, lon=lon, speed_mps=speed, mode=3)


def path(
    legs: Iterable[tuple[float, float, float, float]], t: float = 0.0, dt: float = 1.0
) -> list[Fix]:
    """Fixes every dt along straight legs (x0, y0) -> (x1, y1) at speed v, or parked (v = 0
    for as many seconds as the leg's x1 says): legs are (x0, y0, x1|seconds, y1|speed)."""
    out = []
    for x0, y0, a, b in legs:
        if b == 0.0:  # parked at (x0, y0) for a seconds
            for _ in range(int(a / dt)):
                out.append(fix(t, x0, y0, 0.0))
                t += dt
            continue
        x1, y1, v = a, y0, b
        n = int(abs(x1 - x0) / (v * dt))
        for k in range(n + 1):
            out.append(fix(t, x0 + (x1 - x0) * k / n, y1, v))
            t += dt
    return out


def run(
    engine: TripEngine, fixes: Iterable[Fix], state: EngineState | None = None
) -> tuple[EngineState, list[TripEvent]]:
    st = state if state is not None else engine.new_state()
    events: list[TripEvent] = []
    for f in fixes:
        st, evs = engine.step(st, f)
        events += evs
    return st, events


def types(events: Iterable[TripEvent], *, motion: bool = False) -> list[str]:
    return [e.type for e in events if motion or e.type not in ("trip.stopped", "trip.moving")]


def noisy(fixes: Sequence[Fix], sigma: float, seed: int, tau: float = 20.0) -> list[Fix]:
    """Gauss-Markov position noise (sigma per axis, correlation time tau) on a list of fixes."""
    rng = random.Random(seed)
    ex, ey = rng.gauss(0, sigma), rng.gauss(0, sigma)
    out = []
    prev_t = None
    for f in fixes:
        t = f.time.timestamp()
        rho = math.exp(-(t - prev_t) / tau) if prev_t is not None else 0.0
        kick = sigma * math.sqrt(1 - rho * rho)
        ex, ey = rho * ex + kick * rng.gauss(0, 1), rho * ey + kick * rng.gauss(0, 1)
        prev_t = t
        x, y = PROJ.forward(f.lat, f.lon)
        lat, lon = PROJ.inverse(x + ex, y + ey)
        speed = None if f.speed_mps is None else max(0.0, f.speed_mps + rng.gauss(0, 0.1))
        out.append(dataclasses.replace(f, lat=lat, lon=lon, speed_mps=speed))
    return out


# ---------------------------------------------------------------------------- basic visits


def test_arrive_dwell_depart_with_exact_crossing_times() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    # from 1 km west at 10 m/s to the centre, 5 minutes there, on east at 10 m/s
    fixes = path([(-1000.0, 0.0, 0.0, 10.0), (0.0, 0.0, 300.0, 0.0)])
    fixes += path([(0.0, 0.0, 1000.0, 10.0)], t=fixes[-1].time.timestamp() - T0.timestamp() + 1)
    _, events = run(eng, fixes)
    assert types(events) == ["trip.approach", "trip.arrive", "trip.dwell", "trip.depart"]
    approach, arrive, dwell, depart = [
        e
        for e in events
        if e.type.startswith("trip.") and e.type not in ("trip.stopped", "trip.moving")
    ]
    # truth: 800 m ring crossed at x = -800 (t = 20 s), the 50 m rim at t = 95 s and left at
    # t = 101 + 300 + 5 = 406 s
    assert approach.t - T0.timestamp() == pytest.approx(20.0, abs=0.01)
    assert arrive.t - T0.timestamp() == pytest.approx(95.0, abs=0.01)
    assert depart.t - T0.timestamp() == pytest.approx(406.0, abs=0.01)
    assert dwell.data["dwell_s"] == pytest.approx(311.0, abs=0.01)
    assert arrive.ref == {"route": "r1", "stop": "s1", "parcel": ["p-s1"]}
    assert depart.ref == arrive.ref and "stop" in depart.ref
    assert arrive.data["zone"] == "s1"
    for e in events:
        validate_data(e.type, e.data)  # every event fits the registry's schema
        assert json.loads(json.dumps(e.to_json()))["ts"].endswith("Z")


def test_leaving_the_depot_is_a_depart_without_a_stop() -> None:
    eng = engine_for(manifest([("s1", 3000.0, 0.0, 50.0)]))
    # booted parked in the depot: no arrival for it (not seen); the departure is reported
    fixes = path([(-3000.0, 0.0, 120.0, 0.0), (-3000.0, 0.0, -2500.0, 10.0)])
    _, events = run(eng, fixes)
    assert types(events) == ["trip.depart"]
    (dep,) = [e for e in events if e.type == "trip.depart"]
    assert dep.ref == {"route": "r1"} and dep.data["zone"] == "depot"
    assert dep.data["partial"] is True  # the time in the depot counts from the first fix
    assert dep.t - T0.timestamp() == pytest.approx(130.0, abs=0.01)


def test_coming_back_to_the_depot_is_an_arrive_without_a_stop() -> None:
    eng = engine_for(manifest([("s1", 3000.0, 0.0, 50.0)]))
    fixes = path([(-2500.0, 0.0, -3000.0, 10.0), (-3000.0, 0.0, 120.0, 0.0)])
    _, events = run(eng, fixes)
    assert types(events) == ["trip.arrive"]
    assert events[0].ref == {"route": "r1"}


def test_a_van_parked_at_a_stop_for_an_hour_is_one_arrival_and_one_departure() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    clean = path([(-1000.0, 0.0, 10.0, 10.0), (10.0, 0.0, 3600.0, 0.0)])
    clean += path([(10.0, 0.0, 1000.0, 10.0)], t=clean[-1].time.timestamp() - T0.timestamp() + 1)
    for seed in range(3):
        _, events = run(eng, noisy(clean, 5.0, seed))
        assert types(events) == ["trip.approach", "trip.arrive", "trip.dwell", "trip.depart"]
        dwell = next(e for e in events if e.type == "trip.dwell")
        assert dwell.data["dwell_s"] == pytest.approx(3600 + 11, abs=5)
        moving = types(events, motion=True)
        assert moving.count("trip.stopped") == 1 and moving.count("trip.moving") == 1


# ---------------------------------------------------------------------------- no flaps


@pytest.mark.parametrize("seed", range(4))
def test_parked_5m_outside_a_boundary_under_5m_noise_for_an_hour_never_flaps(seed: int) -> None:
    # the stop's rim is 5 m north of where the van stands (its centre 55 m away)
    eng = engine_for(manifest([("s1", 0.0, 55.0, 50.0)]))
    clean = path([(-500.0, 0.0, 0.0, 10.0), (0.0, 0.0, 3600.0, 0.0)])
    _, events = run(eng, noisy(clean, 5.0, seed))
    assert [e for e in events if e.type not in ("trip.approach", "trip.stopped")] == []


@pytest.mark.parametrize("seed", range(4))
def test_without_reported_speed_the_margins_alone_keep_a_parked_van_still(seed: int) -> None:
    # a GGA-only receiver: no Doppler speed, so no "standing still" evidence; 5 m RMS noise
    eng = engine_for(manifest([("s1", 0.0, 55.0, 50.0)]))
    clean = path([(-500.0, 0.0, 0.0, 10.0), (0.0, 0.0, 3600.0, 0.0)])
    fixes = [dataclasses.replace(f, speed_mps=None) for f in noisy(clean, 5.0 / math.sqrt(2), seed)]
    _, events = run(eng, fixes)
    assert [
        e for e in events if e.type not in ("trip.approach", "trip.stopped", "trip.moving")
    ] == []


def test_driving_along_a_fence_with_noise_and_a_multipath_jump_gives_nothing() -> None:
    # a road 5 m outside the south side of a 400 m x 100 m yard (a geofence)
    ring = [ll(x, y) for x, y in ((0, 0), (400, 0), (400, 100), (0, 100))]
    zone = GeofenceConfig(name="yard", polygon=[(lon, lat) for lat, lon in ring])
    eng = engine_for(manifest([("s1", 5000.0, 5000.0, 50.0)]), TripsConfig(zones=[zone]))
    clean = path([(-300.0, -5.0, 700.0, 10.0)])
    fixes = noisy(clean, 5.0, 11)
    k = 50  # one fix jumps 40 m into the yard
    x, y = PROJ.forward(fixes[k].lat, fixes[k].lon)
    lat, lon = PROJ.inverse(x, y + 40.0)
    fixes[k] = dataclasses.replace(fixes[k], lat=lat, lon=lon)
    _, events = run(eng, fixes)
    assert [e for e in events if e.type.startswith("geofence")] == []


# ---------------------------------------------------------------------------- passes


def test_a_pass_between_two_sparse_fixes_is_an_enter_and_an_exit() -> None:
    zone = GeofenceConfig(name="school", lat=ll(0, 0)[0], lon=ll(0, 0)[1], radius=60.0)
    eng = engine_for(manifest([("s1", 5000.0, 5000.0, 50.0)]), TripsConfig(zones=[zone]))
    # a tracker reporting every 60 s: one fix 300 m before the zone, the next 300 m after
    fixes = [fix(0, -900, 0, 10.0), fix(60, -300, 10.0, 10.0), fix(120, 300, 10.0, 10.0)]
    _, events = run(eng, fixes)
    assert types(events) == ["geofence.enter", "geofence.exit"]
    enter, leave = events
    # the chord at y = 10 m: x = ±59.2 m, reached at 60 + 24.08 s and 60 + 35.92 s
    assert enter.t - T0.timestamp() == pytest.approx(84.08, abs=0.01)
    assert leave.t - T0.timestamp() == pytest.approx(95.92, abs=0.01)
    assert leave.data["dwell_s"] == pytest.approx(11.83, abs=0.01)
    assert enter.data["zone"] == "school"


def test_a_fast_pass_of_a_small_stop_zone_is_a_drive_by_not_an_arrival() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 30.0)]))
    # 25 m/s across a 30 m circle at 1 Hz: at most two fixes inside, too few to confirm
    _, events = run(eng, path([(-1000.0, 0.0, 1000.0, 25.0)]))
    assert types(events) == ["trip.approach", "geofence.enter", "geofence.exit"]
    enter, leave = events[1:]
    assert enter.ref["stop"] == "s1" and leave.ref["stop"] == "s1"
    assert enter.t - T0.timestamp() == pytest.approx(38.8, abs=0.01)
    assert leave.t - T0.timestamp() == pytest.approx(41.2, abs=0.01)


def test_a_slow_drive_through_a_stop_is_a_drive_by_too() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    _, events = run(eng, path([(-1000.0, 0.0, 1000.0, 8.0)]))
    assert types(events) == ["trip.approach", "geofence.enter", "geofence.exit"]


def test_crawling_through_a_stop_after_waiting_outside_is_not_an_arrival() -> None:
    # stopped 5 m outside for 5 minutes, then through the zone at 2 m/s: too slow to confirm
    # "moving", so the motion detector still says "stopped" inside, but that stop began
    # before the entry and is no evidence of a delivery
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    fixes = path([(-55.0, 0.0, 300.0, 0.0), (-55.0, 0.0, 100.0, 2.0)])
    _, events = run(eng, fixes)
    assert types(events) == ["geofence.enter", "geofence.exit"]


def test_a_long_multipath_jump_while_parked_is_not_a_pass() -> None:
    zone = GeofenceConfig(name="z", lat=ll(0, 60)[0], lon=ll(0, 60)[1], radius=40.0)
    eng = engine_for(manifest([("s1", 5000.0, 5000.0, 50.0)]), TripsConfig(zones=[zone]))
    fixes = path([(0.0, 0.0, 30.0, 0.0)])
    fixes[10] = fix(10, 0.0, 130.0, 0.0)  # 130 m north: the segments cross the zone, twice
    _, events = run(eng, fixes)
    assert events == []


# ---------------------------------------------------------------------------- order


def test_old_and_duplicate_fixes_are_dropped_and_counted() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    fixes = path([(-1000.0, 0.0, 0.0, 10.0)])
    st, _ = run(eng, fixes[:60])
    last = st.last
    st, evs = eng.step(st, fixes[30])
    st, evs2 = eng.step(st, fixes[59])
    assert evs == evs2 == []
    assert st.dropped_old == 1 and st.dropped_duplicate == 1
    assert st.last == last  # an old fix never moves the state backwards


def test_reordered_fixes_give_the_same_events_as_in_order() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    clean = path([(-1000.0, 0.0, 0.0, 10.0), (0.0, 0.0, 120.0, 0.0)])
    clean += path([(0.0, 0.0, 1000.0, 10.0)], t=clean[-1].time.timestamp() - T0.timestamp() + 1)
    fixes = noisy(clean, 5.0, 3)
    _, expected = run(eng, fixes)
    shuffled = list(fixes)
    rng = random.Random(5)
    for i in range(0, len(shuffled) - 3, 3):  # swap within 2 s windows
        chunk = shuffled[i : i + 3]
        rng.shuffle(chunk)
        shuffled[i : i + 3] = chunk
    order = FixOrder(window=2.0)
    got: list[TripEvent] = []
    st = eng.new_state()
    for f in shuffled:
        for due in order.push(f):
            st, evs = eng.step(st, due)
            got += evs
    for due in order.flush():
        st, evs = eng.step(st, due)
        got += evs
    assert got == expected
    assert order.counters["late"] == 0 and st.dropped_old == 0


def test_the_reorder_buffer_drops_what_comes_too_late() -> None:
    order = FixOrder(window=2.0)
    out = []
    for t in (0, 1, 2, 3, 4, 5, 1.5, 6):
        out += order.push(fix(t, 0, 0, 0.0))
    out += order.flush()
    assert [f.time.timestamp() - T0.timestamp() for f in out] == [0, 1, 2, 3, 4, 5, 6]
    assert order.counters["late"] == 1


def test_a_single_future_fix_is_held_then_dropped() -> None:
    order = FixOrder(window=0.0, max_jump=600.0)
    out = []
    for t in (0, 1, 2, 86_400 * 365, 3, 4, 5, 6):
        out += order.push(fix(t, 0, 0, 0.0))
    out += order.flush()
    assert [f.time.timestamp() - T0.timestamp() for f in out] == [0, 1, 2, 3, 4, 5, 6]
    assert order.counters["future"] == 1


def test_a_real_jump_overnight_is_accepted_when_the_next_fix_agrees() -> None:
    order = FixOrder(window=0.0, max_jump=600.0)
    out = []
    for t in (0, 1, 2, 50_000, 50_001, 50_002):
        out += order.push(fix(t, 0, 0, 0.0))
    assert [f.time.timestamp() - T0.timestamp() for f in out] == [0, 1, 2, 50_000, 50_001, 50_002]
    assert order.counters["future"] == 0


# ---------------------------------------------------------------------------- state and manifests


def test_a_restart_mid_route_through_dump_and_load_changes_nothing() -> None:
    m = manifest([("s1", 0.0, 0.0, 50.0), ("s2", 2000.0, 0.0, 50.0)])
    clean = path([(-1000.0, 0.0, 0.0, 10.0), (0.0, 0.0, 200.0, 0.0)])
    t = clean[-1].time.timestamp() - T0.timestamp() + 1
    clean += path([(0.0, 0.0, 2000.0, 10.0), (2000.0, 0.0, 200.0, 0.0)], t=t)
    t = clean[-1].time.timestamp() - T0.timestamp() + 1
    clean += path([(2000.0, 0.0, 3000.0, 10.0)], t=t)
    fixes = noisy(clean, 5.0, 8)
    _, expected = run(engine_for(m), fixes)
    for cut in (150, 260, 330):  # parked at s1, driving between, approaching s2
        first = engine_for(m)
        st, before = run(first, fixes[:cut])
        saved = json.dumps(first.dump(st))
        second = engine_for(m)  # a new process: zones rebuilt, state read back
        _, after = run(second, fixes[cut:], second.load(json.loads(saved)))
        assert before + after == expected


def test_a_state_from_another_manifest_keeps_only_matching_zones() -> None:
    a = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    st, _ = run(a, path([(-1000.0, 0.0, 0.0, 10.0), (0.0, 0.0, 100.0, 0.0)]))
    assert {a.zones.zones[i].key for i in st.tracks} == {"stop:s1", "approach:s1"}
    b = engine_for(manifest([("s1", 0.0, 0.0, 60.0)]))  # s1 grew: a different zone; same ring
    assert {b.zones.zones[i].key for i in b.load(a.dump(st)).tracks} == {"approach:s1"}
    with pytest.raises(ValueError, match="not a trip engine state"):
        b.load({"v": 99})
    with pytest.raises(ValueError, match="corrupt"):
        b.load({"v": 1, "last": ["x", 1, 2, None]})


def test_a_manifest_update_mid_route_keeps_the_visit_and_adds_stops() -> None:
    old = engine_for(manifest([("s1", 0.0, 0.0, 50.0), ("s2", 3000.0, 0.0, 50.0)]))
    fixes = path([(-1000.0, 0.0, 0.0, 10.0), (0.0, 0.0, 120.0, 0.0)])
    st, events = run(old, fixes)
    assert types(events) == ["trip.approach", "trip.arrive"]
    # while the van is at s1, dispatch drops s2 and adds s3 on the way
    new = engine_for(manifest([("s1", 0.0, 0.0, 50.0), ("s3", 1500.0, 0.0, 50.0)]))
    st = new.adopt(old, st)
    t = fixes[-1].time.timestamp() - T0.timestamp() + 1
    rest = path([(0.0, 0.0, 1500.0, 10.0), (1500.0, 0.0, 120.0, 0.0)], t=t)
    t = rest[-1].time.timestamp() - T0.timestamp() + 1
    rest += path([(1500.0, 0.0, 4000.0, 10.0)], t=t)
    _, events = run(new, rest, st)
    got = [
        (e.type, e.ref.get("stop")) for e in events if e.type in types(events) and "stop" in e.ref
    ]
    assert got == [
        ("trip.dwell", "s1"),
        ("trip.depart", "s1"),
        ("trip.approach", "s3"),
        ("trip.arrive", "s3"),
        ("trip.dwell", "s3"),
        ("trip.depart", "s3"),
    ]
    dwell = next(e for e in events if e.type == "trip.dwell")
    assert dwell.data["dwell_s"] == pytest.approx(131.0, abs=0.01)  # from the arrival at 95 s


def test_a_new_zone_the_van_is_already_in_is_entered_silently() -> None:
    old = engine_for(manifest([("s1", 5000.0, 0.0, 50.0)]))
    st, _ = run(old, path([(-500.0, 0.0, 0.0, 10.0), (0.0, 0.0, 60.0, 0.0)]))
    new = engine_for(manifest([("s1", 5000.0, 0.0, 50.0), ("here", 0.0, 0.0, 50.0)]))
    st = new.adopt(old, st)
    _, events = run(new, path([(0.0, 0.0, 30.0, 0.0), (0.0, 0.0, 500.0, 10.0)], t=61))
    assert [
        (e.type, e.ref.get("stop")) for e in events if e.type in ("trip.arrive", "trip.depart")
    ] == [("trip.depart", "here")]


def test_approach_is_not_repeated_for_a_stop_already_done() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    there = path([(-1000.0, 0.0, 0.0, 10.0), (0.0, 0.0, 120.0, 0.0)])
    t = there[-1].time.timestamp() - T0.timestamp() + 1
    back = path([(0.0, 0.0, -1000.0, 10.0), (-1000.0, 0.0, 60.0, 0.0)], t=t)
    t = back[-1].time.timestamp() - T0.timestamp() + 1
    again = path([(-1000.0, 0.0, -300.0, 10.0)], t=t)
    _, events = run(eng, there + back + again)
    assert types(events).count("trip.approach") == 1


def test_the_delivery_window_says_early_on_time_or_late() -> None:
    m = manifest([("s1", 0.0, 0.0, 50.0)])
    results = []
    # the van arrives at 08:01:35
    for lo, hi in (("08:30", "09:30"), ("07:00", "08:00"), ("07:30", "08:30")):
        m["stops"][0]["window"] = [f"2026-03-02T{lo}:00Z", f"2026-03-02T{hi}:00Z"]
        _, events = run(engine_for(m), path([(-1000.0, 0.0, 0.0, 10.0), (0.0, 0.0, 60.0, 0.0)]))
        results.append(next(e for e in events if e.type == "trip.arrive").data["window"])
    assert results == ["early", "late", "on_time"]


# ---------------------------------------------------------------------------- motion


def test_stopped_and_moving_are_debounced() -> None:
    eng = engine_for(manifest([("s1", 9000.0, 0.0, 50.0)]))
    fixes = path([(0.0, 0.0, 500.0, 10.0)])
    t = 51.0
    # a traffic light: 40 s standing; then a crawl whose speed wanders between the thresholds
    fixes += path([(500.0, 0.0, 40.0, 0.0)], t=t)
    t += 40
    rng = random.Random(2)
    for k in range(120):
        fixes.append(fix(t + k, 500.0 + 1.8 * k, 0.0, rng.uniform(1.2, 2.3)))
    fixes += path([(716.0, 0.0, 1500.0, 10.0)], t=t + 120)
    _, events = run(eng, fixes)
    assert types(events, motion=True) == ["trip.stopped", "trip.moving"]
    stopped, moving = events
    assert stopped.t - T0.timestamp() == pytest.approx(51.0)
    assert moving.t - T0.timestamp() == pytest.approx(211.0)
    assert moving.data["stopped_s"] == pytest.approx(160.0)


def test_without_speed_the_motion_detector_derives_one() -> None:
    eng = engine_for(manifest([("s1", 9000.0, 0.0, 50.0)]))
    fixes = path([(0.0, 0.0, 600.0, 10.0), (600.0, 0.0, 120.0, 0.0)])
    fixes += path([(600.0, 0.0, 1200.0, 10.0)], t=fixes[-1].time.timestamp() - T0.timestamp() + 1)
    fixes = [dataclasses.replace(f, speed_mps=None) for f in fixes]
    _, events = run(eng, fixes)
    assert types(events, motion=True) == ["trip.stopped", "trip.moving"]


def test_event_times_are_iso_with_milliseconds() -> None:
    eng = engine_for(manifest([("s1", 0.0, 0.0, 50.0)]))
    _, events = run(eng, path([(-1000.0, 0.0, 0.0, 7.0), (0.0, 0.0, 90.0, 0.0)]))
    for e in events:
        out = e.to_json()
        assert set(out) == {"type", "ts", "ref", "data"}
        assert abs(parse_ts(out["ts"]).timestamp() - e.t) < 0.001
        assert set(out["ref"]) <= {"route", "stop"}
