"""The fleet simulator itself: kinematics, receiver model, truth, NMEA output, scoring, CLI."""

from __future__ import annotations

import io
import itertools
import json
import math
import statistics
from contextlib import redirect_stdout
from datetime import timedelta
from pathlib import Path

import pytest
import shapely

from edge_agent.gnss.replay import fixes_from_lines
from edge_agent.wire.envelope import format_ts, parse_ts
from simulators.fleet import main
from simulators.itinerary import Drive, Park, drive_path
from simulators.nmea_out import nmea_lines
from simulators.scoring import score
from simulators.van import run_van
from simulators.world import ORIGIN, VanScenario, fleet_scenarios


def test_the_path_respects_speed_acceleration_and_continuity() -> None:
    actions = [Drive(((500.0, 0.0), (500.0, 300.0)), cruise=12.0, accel=1.5), Park(30.0)]
    samples = drive_path((0.0, 0.0), actions, dt=0.25)
    assert samples[0].speed == 0.0 and (samples[0].x, samples[0].y) == (0.0, 0.0)
    for a, b in itertools.pairwise(samples):
        step = math.hypot(b.x - a.x, b.y - a.y)
        assert step <= 12.0 * 0.25 + 1e-6  # never faster than cruising
        assert abs(b.speed - a.speed) <= 1.5 * 0.25 + 1e-6  # never harder than accel
    end = samples[-1]
    assert math.hypot(end.x - 500.0, end.y - 300.0) < 1e-6 and end.speed == 0.0
    corner = min(samples, key=lambda s: math.hypot(s.x - 500.0, s.y))
    assert corner.speed <= 5.0 + 0.5  # slowed for the turn
    assert max(s.speed for s in samples) == pytest.approx(12.0)
    assert samples[-1].t == pytest.approx(samples[-121].t + 30.0)  # parked 30 s


def _parked(seconds: float, noise: float, tau: float, seed: int) -> VanScenario:
    m = {"route": "r", "depot": {"lat": ORIGIN[0], "lon": ORIGIN[1], "radius_m": 50}, "stops": []}
    return VanScenario(
        van="v",
        manifest=m,
        geofences=[],
        start_xy=(1000.0, 1000.0),
        actions=[Park(seconds)],
        noise_m=noise,
        tau_s=tau,
        outlier_p=0.0,
        tunnels=0,
        seed=seed,
    )


def test_receiver_noise_has_the_configured_size_and_correlation() -> None:
    sc = _parked(20_000.0, 5.0, 20.0, seed=3)
    run = run_van(sc)
    proj = run.zones.projection
    tx, ty = run.samples[0].x, run.samples[0].y
    ex = [proj.forward(f.lat, f.lon)[0] - tx for f in run.fixes]
    ey = [proj.forward(f.lat, f.lon)[1] - ty for f in run.fixes]
    for e in (ex, ey):
        assert statistics.pstdev(e) == pytest.approx(5.0, rel=0.25)
        m = statistics.fmean(e)
        lag1 = sum((a - m) * (b - m) for a, b in itertools.pairwise(e)) / sum(
            (a - m) ** 2 for a in e
        )
        assert lag1 == pytest.approx(math.exp(-1.0 / 20.0), abs=0.03)
    # standing still: Doppler speed of a few cm/s
    assert max(f.speed_mps or 0.0 for f in run.fixes) < 0.5


def test_tunnels_are_gaps_in_the_fixes() -> None:
    sc = fleet_scenarios(1, seed=9, tunnels=3)[0]
    run = run_van(sc)
    assert len(run.truth["tunnels"]) == 3
    times = [f.time.timestamp() for f in run.fixes]
    for a, b in run.truth["tunnels"]:
        t0, t1 = parse_ts(a).timestamp(), parse_ts(b).timestamp()
        assert t1 - t0 >= 30.0
        assert not [t for t in times if t0 + 0.5 < t < t1 - 0.5]


def test_truth_crossings_are_on_the_zone_boundaries() -> None:
    sc = fleet_scenarios(1, seed=3)[0]
    run = run_van(sc)
    proj = run.zones.projection
    kinds = {iv["zone"] for iv in run.truth["intervals"]}
    assert {"depot"} <= kinds and any(k.startswith("stop:") for k in kinds)
    for iv in run.truth["intervals"]:
        shape = run.zones.by_key[iv["zone"]].shape()
        for key in ("enter", "exit"):
            if iv[key] is None:
                continue
            x, y = proj.forward(iv[f"{key}_lat"], iv[f"{key}_lon"])
            assert shape.boundary.distance(shapely.Point(x, y)) < 0.5
        # the van really is inside halfway through
        if iv["enter"] is not None and iv["exit"] is not None:
            mid = (iv["enter"] + iv["exit"]) / 2 - sc.start.timestamp()
            s = min(run.samples, key=lambda s: abs(s.t - mid))
            assert shape.buffer(0.5).contains(shapely.Point(s.x, s.y))
    # every stop is visited, parked for a minute or more, deep inside; the second (a circle)
    # only 2 to 10 m inside its edge
    for k, stop in enumerate(sc.manifest["stops"]):
        (visit,) = [
            iv
            for iv in run.truth["intervals"]
            if iv["zone"] == f"stop:{stop['id']}" and iv["still_s"] >= 60.0
        ]
        if k == 1:
            assert "radius_m" in stop
            assert 2.0 - 0.05 <= visit["depth_m"] <= 10.0 + 0.05
        else:
            assert visit["depth_m"] >= 25.0


def test_nmea_output_reads_back_as_the_same_fixes() -> None:
    sc = fleet_scenarios(1, seed=2)[0]
    run = run_van(sc)
    fixes = run.fixes[:600]
    back = list(fixes_from_lines(nmea_lines(fixes)))
    assert len(back) == len(fixes)
    for a, b in zip(fixes, back, strict=True):
        assert abs((a.time - b.time).total_seconds()) < 0.006
        assert a.lat == pytest.approx(b.lat, abs=1e-7) and a.lon == pytest.approx(b.lon, abs=1e-7)
        assert (a.speed_mps or 0.0) == pytest.approx(b.speed_mps or 0.0, abs=0.01)


def test_the_scorer_can_fail() -> None:
    sc = fleet_scenarios(1, seed=1)[0]
    run = run_van(sc)
    cfg = sc.config()
    # perfect events, made from the truth itself
    events = []
    kinds = run.truth["zones"]
    for iv in run.truth["intervals"]:
        kind, name = kinds[iv["zone"]]["kind"], kinds[iv["zone"]]["name"]
        ref = {"route": run.truth["route"]}
        if kind in ("stop", "approach"):
            ref["stop"] = name
        for key, type_ in (("enter", "in"), ("exit", "out")):
            if iv[key] is None or iv["depth_m"] < 25.0:
                continue
            t = {
                ("depot", "in"): "trip.arrive",
                ("depot", "out"): "trip.depart",
                ("stop", "in"): "trip.arrive" if iv["still_s"] >= 20 else "geofence.enter",
                ("stop", "out"): "trip.depart" if iv["still_s"] >= 20 else "geofence.exit",
                ("approach", "in"): "trip.approach",
                ("zone", "in"): "geofence.enter",
                ("zone", "out"): "geofence.exit",
            }.get((kind, type_))
            if t is None:
                continue
            ts = format_ts(sc.start + timedelta(seconds=iv[key] - sc.start.timestamp()))
            data = {"zone": name, "lat": iv[f"{key}_lat"], "lon": iv[f"{key}_lon"]}
            events.append({"type": t, "ts": ts, "ref": ref, "data": data})
            if t == "trip.depart" and kind == "stop":
                dwell = {**data, "dwell_s": iv["exit"] - iv["enter"]}
                events.append({"type": "trip.dwell", "ts": ts, "ref": ref, "data": dwell})
    perfect = score(events, run.truth, cfg)
    # approach rings entered after their stop was done expect nothing: those events are false
    extra = [e for e in perfect.false_events if e["type"] != "trip.approach"]
    assert extra == []
    assert perfect.recall == 1.0
    # a duplicate is a flap, a missing arrival lowers the recall, a late one is no match
    arrive = next(e for e in events if e["type"] == "trip.arrive" and "stop" in e["ref"])
    assert score([*events, arrive], run.truth, cfg).flaps == perfect.flaps + 1
    fewer = [e for e in events if e is not arrive]
    assert score(fewer, run.truth, cfg).recall < 1.0
    late = dict(arrive, ts=format_ts(sc.start + timedelta(hours=10)))
    moved = [late if e is arrive else e for e in events]
    assert score(moved, run.truth, cfg).matched == perfect.matched - 1


def test_the_command_line_generates_and_scores(tmp_path: Path) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert (
            main(["generate", "--out", str(tmp_path), "--vans", "2", "--seed", "3", "--stops", "3"])
            == 0
        )
    infos = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [i["van"] for i in infos] == ["van-01", "van-02"]
    for name in ("manifest.json", "nmea", "truth.json", "zones.json"):
        assert (tmp_path / f"van-01.{name}").stat().st_size > 0
    assert json.loads((tmp_path / "fleet.json").read_text())[1]["van"] == "van-02"
    # score the truth's own (empty) event list: nothing matched, nothing false
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["score", str(tmp_path / "van-01.truth.json"), str(empty)]) == 0
    summary = json.loads(out.getvalue())
    assert summary["matched"] == 0 and summary["recall"] == 0.0 and summary["flaps"] == 0


def test_the_edge_parked_stop_is_counted_apart_and_its_visit_found() -> None:
    from simulators.evaluation import edge_visits, events_of

    sc = fleet_scenarios(1, seed=3)[0]
    run = run_van(sc)
    events = events_of(run)
    assert edge_visits(events, run.truth, sc.config()) == {"visits": 1, "arrive": 1, "depart": 1}
    fewer = [e for e in events if e["type"] != "trip.arrive"]
    assert edge_visits(fewer, run.truth, sc.config()) == {"visits": 1, "arrive": 0, "depart": 1}
