"""The parcel status machine (hub_bridge.delivery.status, through DeliveryModel): event-time
order, late, duplicate and backwards events, the views and notices, and the simulators' truth."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub_bridge.delivery.model import DeliveryModel, Notice, PlanError
from hub_bridge.delivery.status import STATUSES, Entry, replay
from simulators.status_truth import StatusCheck, check, depot_case, messy, run_case
from tests.delivery_events import T0, Device, at, drive_day, manifest


def _model() -> DeliveryModel:
    m = DeliveryModel()
    m.define("acme", "van-1", "manifest", manifest(), at(-600))
    return m


def _apply(m: DeliveryModel, events: list[dict[str, Any]]) -> list[Notice]:
    out: list[Notice] = []
    for e in events:
        out += m.apply(e)
    return out


def _status(m: DeliveryModel, pid: str) -> str:
    p = m.parcel("acme", pid)
    assert p is not None
    return str(p["status"])


def _e(t: float, action: str, n: int) -> Entry:
    return Entry(t, at(t), action, f"e{n}", "x", "d", n, n)


def test_the_happy_path_through_every_status() -> None:
    hist = [
        _e(0, "verified", 1),
        _e(10, "depart_depot", 2),
        _e(20, "approach", 3),
        _e(30, "arrive", 4),
        _e(40, "pod", 5),
        _e(50, "depart_stop", 6),
        _e(60, "arrive_depot", 7),
    ]
    status, steps = replay(hist)
    assert status == "delivered"
    assert [s.status for s in steps] == [
        "loaded",
        "out_for_delivery",
        "approaching",
        "arrived",
        "delivered",
        None,
        None,
    ]
    assert [s.applied for s in steps] == [True] * 5 + [False] * 2


def test_a_failed_visit_ends_returned_and_a_late_pod_still_delivers() -> None:
    hist = [_e(10, "depart_depot", 1), _e(30, "arrive", 2), _e(50, "depart_stop", 3)]
    assert replay(hist)[0] == "failed_attempt"
    assert replay([*hist, _e(60, "arrive_depot", 4)])[0] == "returned"
    # the PoD was taken at 40 (before the van left) and reached the hub after everything
    late = sorted([*hist, _e(60, "arrive_depot", 4), _e(40, "pod", 5)], key=Entry.key)
    status, steps = replay(late)
    assert status == "delivered"
    assert not steps[-2].applied and steps[-2].status is None  # leaving after the PoD: nothing


def test_a_move_backwards_is_kept_flagged_and_not_applied() -> None:
    hist = [_e(10, "depart_depot", 1), _e(20, "arrive", 2), _e(30, "verified", 3)]
    status, steps = replay(hist)
    assert status == "arrived"
    assert steps[-1].flag == "backwards" and not steps[-1].applied
    assert steps[-1].status == "loaded"


def test_station_rules_corrected_misload_missing_and_superseded() -> None:
    # misloaded, then verified at its own dock: a correction, not backwards
    assert replay([_e(1, "misload", 1), _e(2, "verified", 2)])[0] == "loaded"
    # left on another van: its own route's gate-out lists it missing, it stays misloaded
    status, steps = replay([_e(1, "misload", 1), _e(2, "missing", 2)])
    assert status == "misloaded" and steps[1].flag == "superseded"
    # missing at gate-out: the van leaving the depot does not take it along
    status, steps = replay([_e(1, "missing", 1), _e(2, "depart_depot", 2)])
    assert status == "missing" and steps[1].flag == "not_on_board"


def test_ties_in_time_are_broken_by_what_the_event_does_not_by_arrival() -> None:
    # a scan and its PoD share a time with the departure: the PoD counts first
    a = [_e(5, "depart_stop", 1), _e(5, "pod", 2), _e(0, "arrive", 3)]
    b = list(reversed(a))
    assert replay(sorted(a, key=Entry.key))[0] == replay(sorted(b, key=Entry.key))[0]
    assert replay(sorted(a, key=Entry.key))[0] == "delivered"


def test_a_day_through_the_model_every_parcel_delivered_with_its_history() -> None:
    m = _model()
    notices = _apply(m, drive_day(Device()))
    for k in (1, 2, 3):
        for p in "ab":
            assert _status(m, f"p{k}{p}") == "delivered"
    view = m.parcel("acme", "p1a")
    assert view is not None
    assert view["route"] == "r-1" and view["stop"] == "s1"
    applied = [h["status"] for h in view["history"] if h["applied"]]
    assert applied == ["out_for_delivery", "arrived", "delivered"]
    assert {"id", "type", "device", "seq"} <= set(view["history"][0]["event"])
    route = m.route("acme", "r-1")
    assert route is not None and route["status"] == "done"
    assert [s["status"] for s in route["stops"]] == ["departed"] * 3
    kinds = {n.kind for n in notices}
    assert kinds == {"parcel.status", "stop.eta"}
    st = [n for n in notices if n.kind == "parcel.status" and n.key == "p1a"]
    assert [n.payload["status"] for n in st] == ["out_for_delivery", "arrived", "delivered"]
    assert all(n.to_json()["payload"] == n.payload for n in notices)
    json.dumps([n.to_json() for n in notices])  # JSON-able as a webhook body


def test_duplicates_change_nothing_and_notice_ids_repeat_on_a_replay() -> None:
    events = drive_day(Device())
    m1 = _model()
    first = _apply(m1, events)
    assert _apply(m1, events) == []  # every event a second time: nothing new
    m2 = _model()
    again = _apply(m2, events)
    assert [n.id for n in again] == [n.id for n in first]
    assert len({n.id for n in first}) == len(first)


def test_late_and_shuffled_events_end_where_event_time_puts_them() -> None:
    events = drive_day(Device())
    ordered = _model()
    _apply(ordered, events)
    for seed in range(5):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        m = _model()
        _apply(m, shuffled)
        for pid in ("p1a", "p2b", "p3a"):
            assert _status(m, pid) == _status(ordered, pid) == "delivered"
            got = m.parcel("acme", pid)
            want = ordered.parcel("acme", pid)
            assert got is not None and want is not None
            assert [h["event"]["id"] for h in got["history"]] == [
                h["event"]["id"] for h in want["history"]
            ]


def test_a_failed_pod_and_a_device_exception_make_failed_attempts() -> None:
    van = Device()
    m = _model()
    _apply(m, [van.trip("trip.depart", 0), van.trip("trip.arrive", 100, "s1")])
    _apply(m, [van.pod(150, "p1a", kind="none")])
    ev = van.ev("exception.refused", 160, {"reason": "recipient refused"}, {"parcel": "p1b"})
    notices = m.apply(ev)
    assert _status(m, "p1a") == "failed_attempt"
    assert _status(m, "p1b") == "failed_attempt"
    raised = [n for n in notices if n.kind == "exception.raised"]
    assert len(raised) == 1 and raised[0].payload["type"] == "exception.refused"
    assert raised[0].payload["reason"] == "recipient refused"


def test_dump_and_load_carry_on_as_if_nothing_happened() -> None:
    events = drive_day(Device())
    whole = _model()
    want = _apply(whole, events)
    half = _model()
    got = _apply(half, events[:40])
    data = json.loads(json.dumps(half.dump()))
    resumed = DeliveryModel.load(data)
    got += _apply(resumed, events[40:])
    assert [n.id for n in got] == [n.id for n in want]
    assert resumed.dump() == whole.dump()
    with pytest.raises(ValueError, match="version"):
        DeliveryModel.load({**data, "version": 99})


def test_bad_plans_name_the_field() -> None:
    m = DeliveryModel()
    bad = manifest()
    bad["stops"][1]["window"] = ["2026-03-02T08:00:00", "2026-03-02T09:00:00Z"]
    with pytest.raises(PlanError) as err:
        m.define("acme", "van-1", "manifest", bad, at(0))
    assert err.value.path == "stops[1].window[0]" and "zone offset" in err.value.reason
    with pytest.raises(PlanError, match=r"routes\[0\]\.route: missing"):
        m.define("acme", "st-1", "loadplan", {"routes": [{"vehicle": "v"}]}, at(0))
    with pytest.raises(ValueError, match="defines nothing"):
        m.define("acme", "van-1", "config", {}, at(0))


def test_events_of_unknown_parcels_and_routes_never_crash() -> None:
    m = DeliveryModel()
    van = Device()
    _apply(m, [van.trip("trip.depart", 0, route="nowhere"), van.fix(10, 0.1)])
    _apply(m, [van.pod(20, "stray"), van.scan(21, "stray-2")])
    assert _status(m, "stray") == "delivered"
    assert m.route("acme", "nowhere") is None


def test_station_shift_shuffled_and_twice_every_status_right() -> None:
    case = depot_case(3)
    res = StatusCheck()
    run_case(case, messy(case.events, random.Random(3)), res)
    assert res.parcels > 100
    assert res.right == res.parcels, res.summary()["examples"]
    assert {"loaded", "missing", "misloaded"} <= set(res.by_status)


def test_simulated_days_shuffled_and_twice_every_status_right() -> None:
    res = check([1, 2])
    assert res.right == res.parcels, res.summary()["examples"]
    assert {"delivered", "failed_attempt", "returned", "loaded"} <= set(res.by_status)


def test_forget_keeps_a_months_old_model_bounded() -> None:
    m = _model()
    _apply(m, drive_day(Device()))
    assert m.forget(T0.timestamp()) == 0  # the day is after: nothing goes
    assert m.forget(T0.timestamp() + 86400) == 1 + 6  # the route and its parcels
    assert m.route("acme", "r-1") is None and m.parcel("acme", "p1a") is None
    assert DeliveryModel.load(m.dump()).dump() == m.dump()


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ("not an object", ""),
        ({"stops": []}, "route"),
        ({"route": "r", "stops": [{"id": "s", "lat": 91, "lon": 0}]}, "stops[0].lat"),
        ({"route": "r", "stops": [{"id": "s", "polygon": [[0, 0]] * 2001}]}, "stops[0].polygon"),
        (
            {
                "route": "r",
                "stops": [{"id": "s", "lat": 1, "lon": 1}, {"id": "s", "lat": 1, "lon": 1}],
            },
            "stops[1].id",
        ),
        (
            {"route": "r", "stops": [{"id": "s", "lat": 1, "lon": 1, "parcels": [{}]}]},
            "stops[0].parcels[0].id",
        ),
        ({"route": "r", "stops": [{"id": "s", "lat": 1, "lon": 1, "type": ""}]}, "stops[0].type"),
    ],
)
def test_hostile_manifests_are_refused_with_the_field(payload: Any, path: str) -> None:
    with pytest.raises(PlanError) as err:
        DeliveryModel().define("acme", "van-1", "manifest", payload, at(0))
    assert err.value.path == path


_TYPES = [
    "gnss.fix",
    "trip.depart",
    "trip.arrive",
    "trip.approach",
    "scan",
    "pod",
    "load.verified",
    "load.misload",
    "load.missing",
    "exception.odd",
    "device.health",
]


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(st.sampled_from(_TYPES))
    t = draw(st.floats(-3600, 7200, allow_nan=False))
    pid = draw(st.sampled_from(["p1a", "p2b", "p3a", "zz"]))
    stop = draw(st.sampled_from([None, "s1", "s2", "s3", "nope"]))
    route = draw(st.sampled_from(["r-1", "r-x"]))
    data: dict[str, Any] = {}
    ref: dict[str, Any] = {"route": route, **({"stop": stop} if stop else {})}
    if type_ == "gnss.fix":
        data = {
            "lat": 52.52,
            "lon": draw(st.floats(13.3, 13.5)),
            "mode": 3,
            "speed_mps": draw(st.floats(0, 30)),
            "track_deg": draw(st.floats(0, 360)),
        }
    elif type_ == "scan":
        data, ref = {"text": pid, "symbology": "c", "source": "s"}, {"parcel": pid}
    elif type_ == "pod":
        data = {"parcel": pid, "kind": draw(st.sampled_from(["photo", "none"]))}
    elif type_ == "load.verified":
        data = {"parcel": pid, "route": route, "vehicle": "v", "dock": "d"}
    elif type_ == "load.misload":
        data = {
            "parcel": pid,
            "dock": "d",
            "vehicle": None,
            "expected_route": route,
            "expected_vehicle": "v",
            "expected_dock": "d2",
        }
    elif type_ == "load.missing":
        data = {"route": route, "vehicle": "v", "parcels": [pid]}
    device = draw(st.sampled_from(["van-1", "van-2", "station-1"]))
    return Device(device).ev(type_, t, data, ref)


@settings(max_examples=60, deadline=None)
@given(st.lists(_event(), max_size=40), st.lists(st.floats(-3600, 20000), max_size=5))
def test_any_valid_events_in_any_order_never_break_the_model(
    events: list[dict[str, Any]], ticks: list[float]
) -> None:
    m = _model()
    for i, e in enumerate(events):
        m.apply({**e, "id": f"h{i}"})
    for t in ticks:
        m.tick(T0.timestamp() + t)
    data = json.loads(json.dumps(m.dump()))
    assert DeliveryModel.load(data).dump() == data
    for pid in ("p1a", "p2b", "p3a", "zz"):
        view = m.parcel("acme", pid)
        assert view is None or view["status"] in STATUSES
