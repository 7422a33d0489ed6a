"""The ETA (hub_bridge.delivery.eta through DeliveryModel): learned from the fleet, computed from
event times only, and scored against the naive peer on seeded simulator days."""

from __future__ import annotations

from typing import Any

from hub_bridge.delivery.eta import Learning, Leg, VanLeg, predict, sequence_place
from hub_bridge.delivery.model import DeliveryModel, Notice
from hub_bridge.delivery.settings import DeliverySettings
from simulators.eta_score import score_days
from tests.delivery_events import Device, at, drive_day, lon, manifest

S = DeliverySettings()


def _apply(m: DeliveryModel, events: list[dict[str, Any]]) -> list[Notice]:
    out: list[Notice] = []
    for e in events:
        out += m.apply(e)
    return out


def _etas(m: DeliveryModel) -> dict[str, str | None]:
    r = m.route("acme", "r-1")
    assert r is not None
    return {s["id"]: s["eta"] for s in r["stops"]}


def test_priors_before_anything_is_learned() -> None:
    lr = Learning()
    legs = [Leg("a", 52.52, lon(1.2), "1"), Leg("b", 52.52, lon(2.4), "1")]
    (_, ta), (_, tb) = predict(VanLeg(1000.0, 52.52, lon(0.0)), legs, lr, S)
    # 1.2 km at the prior straight-line speed, then the prior dwell and another 1.2 km
    assert abs((ta - 1000.0) - 1200.0 / S.prior_speed_mps) < 5.0
    assert abs((tb - ta) - (S.prior_dwell_s + 1200.0 / S.prior_speed_mps)) < 5.0


def test_what_the_fleet_teaches_moves_the_eta_and_medians_ignore_a_break() -> None:
    lr = Learning()
    for k in range(30):
        # 2 km of road for 1.5 km straight at 5 m/s; one leg with a 20-minute break in it
        lr.learn_leg(3600.0 * 9, 400.0 if k else 1600.0, 2000.0, 1500.0, S)
        lr.learn_dwell("1", 3600.0 * 9, 600.0, S)
    assert abs(lr.road_speed(3600.0 * 9 + 60, S) - 5.0) < 0.3
    assert abs(lr.detour_factor(S) - 2000.0 / 1500.0) < 0.05
    assert abs(lr.dwell_s("1", 3600.0 * 9, S) - 600.0) < 50.0
    # a van at a stop for 500 s of a 600 s normal: about 100 s more
    assert 60.0 < lr.dwell_left("1", 3600.0 * 9, 500.0, S) < 140.0
    # dump and load keep it
    again = Learning.from_json(lr.to_json())
    assert again.road_speed(3600.0 * 9, S) == lr.road_speed(3600.0 * 9, S)


def test_pauses_are_learned_per_place_in_the_sequence() -> None:
    lr = Learning()
    for _ in range(5):
        lr.learn_pause(sequence_place(5, 10), 1200.0, S)
        lr.learn_pause(sequence_place(2, 10), 0.0, S)
    legs = [Leg("s5", 52.52, lon(1.2), "1", sequence_place(5, 10))]
    ((_, plain),) = predict(VanLeg(0.0, 52.52, lon(0.0)), legs, Learning(), S)
    ((_, pause),) = predict(VanLeg(0.0, 52.52, lon(0.0)), legs, lr, S)
    assert abs(pause - plain - 1200.0) < 1.0
    # a van that already stood 900 s of it on this leg has 300 s left
    stood = VanLeg(0.0, 52.52, lon(0.0), leg_t0=-1000.0, leg_stood_s=900.0)
    ((_, rest),) = predict(stood, legs, lr, S)
    assert abs(rest - plain - 300.0) < 1.0


def test_heading_straight_at_the_stop_means_no_detour() -> None:
    legs = [Leg("a", 52.52, lon(1.2), "1")]
    east = VanLeg(0.0, 52.52, lon(0.0), track_deg=90.0, speed_mps=10.0)
    # at 45° to it, the road is likely the two sides of a corner: 1.41 x the straight line
    north = VanLeg(0.0, 52.52, lon(0.0), track_deg=45.0, speed_mps=10.0)
    ((_, straight),) = predict(east, legs, Learning(), S)
    ((_, turned),) = predict(north, legs, Learning(), S)
    assert abs((turned - straight) / straight - (2**0.5 - 1)) < 0.01


def test_the_model_refreshes_etas_on_fixes_and_stops_ahead_only() -> None:
    m = DeliveryModel()
    m.define("acme", "van-1", "manifest", manifest(), at(-600))
    van = Device()
    assert _etas(m) == {"s1": None, "s2": None, "s3": None}  # not on its way yet
    _apply(m, [van.trip("trip.depart", 0.0), van.fix(10.0, 0.1)])
    first = _etas(m)
    assert all(first.values())
    assert first["s1"] < first["s2"] < first["s3"]  # type: ignore[operator]
    _apply(m, [van.fix(60.0, 0.6)])
    assert _etas(m)["s1"] != first["s1"]
    _apply(m, [van.trip("trip.arrive", 130.0, "s1"), van.fix(140.0, 1.2, speed=0.0)])
    now = _etas(m)
    assert now["s1"] is None and now["s2"] and now["s3"]
    p = m.parcel("acme", "p2a")
    assert p is not None and p["eta"] == now["s2"]  # one ETA for every view


def test_eta_notices_only_when_an_eta_moved_a_minute() -> None:
    m = DeliveryModel()
    m.define("acme", "van-1", "manifest", manifest(), at(-600))
    van = Device()
    notices = _apply(m, [van.trip("trip.depart", 0.0), van.fix(10.0, 0.1)])
    assert sum(n.kind == "stop.eta" for n in notices) == 3
    # the next fix just where the prediction had it: no stop moved by a minute
    notices = _apply(m, [van.fix(20.0, 0.2)])
    assert [n for n in notices if n.kind == "stop.eta"] == []
    # the van stood still for five minutes: every ETA moved
    notices = _apply(m, [van.fix(320.0, 0.2, speed=0.0)])
    assert {n.payload["id"] for n in notices if n.kind == "stop.eta"} == {"s1", "s2", "s3"}
    pay = next(n.payload for n in notices if n.kind == "stop.eta")
    assert {"route", "fleet", "vehicle", "id", "status", "eta", "window"} <= set(pay)
    s1 = next(n.payload for n in notices if n.kind == "stop.eta" and n.payload["id"] == "s1")
    # the stop's parcels named, so a projector rewrites their views (they show the ETA too)
    assert s1["ref"] == {"route": "r-1", "stop": "s1", "parcel": ["p1a", "p1b"]}


def test_no_clock_read_the_same_events_give_the_same_etas() -> None:
    def run() -> dict[str, Any]:
        m = DeliveryModel()
        m.define("acme", "van-1", "manifest", manifest(), at(-600))
        events = drive_day(Device())
        _apply(m, events[:20])
        return m.route("acme", "r-1") or {}

    assert run() == run()


def test_seeded_days_ours_within_six_tenths_of_the_naive_peer_in_every_bucket() -> None:
    score = score_days(range(1, 5), vans=2, stops=10, warmup=2)
    out = score.summary()
    assert out["days"] == 2 and out["vans"] == 4
    assert out["coverage"] >= 0.95
    for bucket, b in out["buckets"].items():
        assert b["pairs"] >= 50, bucket
        assert b["ratio"] <= 0.6, (bucket, b)
