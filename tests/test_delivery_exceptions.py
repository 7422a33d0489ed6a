"""The exception rules of the delivery model: each fired on its own scenario, raised once and
resolved once with a reason, and silent on clean simulated days."""

from __future__ import annotations

from typing import Any

from hub_bridge.delivery.model import DeliveryModel, Notice
from hub_bridge.delivery.settings import DeliverySettings
from simulators.exception_check import clean_days
from tests.delivery_events import T0, Device, at, drive_day, lon, manifest

S = DeliverySettings()


def _model(**kw: Any) -> DeliveryModel:
    m = DeliveryModel()
    m.define("acme", "van-1", "manifest", manifest(**kw), at(-600))
    return m


def _run(m: DeliveryModel, events: list[dict[str, Any]]) -> list[Notice]:
    out: list[Notice] = []
    for e in events:
        out += m.apply(e)
    return out


def _exc(notices: list[Notice], kind: str = "exception.raised") -> list[dict[str, Any]]:
    return [n.payload for n in notices if n.kind == kind]


def _types(
    notices: list[Notice], kind: str = "exception.raised", but: str = "device_stale"
) -> list[str]:
    """The types raised (or resolved), without ``but``: a tick an hour on finds the van of a
    hand-made scenario silent, as it should."""
    return [p["type"] for p in _exc(notices, kind) if p["type"] != but]


def test_a_clean_hand_made_day_raises_nothing() -> None:
    m = _model()
    notices = _run(m, drive_day(Device()))
    for k in range(0, 3000, 60):
        notices += m.tick(T0.timestamp() + k)
    assert _types(notices) == []
    assert m.exceptions("acme") == []


def test_misload_raised_once_and_resolved_by_the_correction() -> None:
    st = Device("station-1")
    m = DeliveryModel()
    m.define(
        "acme",
        "station-1",
        "loadplan",
        {
            "routes": [
                {"route": "r-1", "vehicle": "van-1", "parcels": ["x1"]},
                {"route": "r-2", "vehicle": "van-2", "parcels": ["y1"]},
            ]
        },
        at(-600),
    )
    mis = {
        "parcel": "x1",
        "dock": "d2",
        "vehicle": "van-2",
        "expected_route": "r-1",
        "expected_vehicle": "van-1",
        "expected_dock": "d1",
    }
    notices = _run(m, [st.ev("load.misload", 10, mis, {"parcel": "x1"})])
    notices += _run(m, [st.ev("load.misload", 12, mis, {"parcel": "x1"})])  # read again
    assert _types(notices) == ["misload"]
    raised = _exc(notices)[0]
    assert raised["ref"]["parcel"] == "x1" and "loaded on van-2" in raised["reason"]
    assert raised["status"] == "open"
    ok = {"parcel": "x1", "route": "r-1", "vehicle": "van-1", "dock": "d1"}
    notices = _run(m, [st.ev("load.verified", 30, ok, {"parcel": "x1"})])
    assert _types(notices, "exception.resolved") == ["misload"]
    assert _exc(notices, "exception.resolved")[0]["resolved_at"] == at(30)
    p = m.parcel("acme", "x1")
    assert p is not None and p["status"] == "loaded"


def test_missing_at_gateout_one_per_parcel_not_for_a_misloaded_one() -> None:
    st = Device("station-1")
    m = DeliveryModel()
    mis = {
        "parcel": "x2",
        "dock": "d2",
        "vehicle": "van-2",
        "expected_route": "r-1",
        "expected_vehicle": "van-1",
        "expected_dock": "d1",
    }
    gone = {"route": "r-1", "vehicle": "van-1", "parcels": ["x1", "x2"]}
    notices = _run(m, [st.ev("load.misload", 5, mis), st.ev("load.missing", 60, gone)])
    assert sorted(_types(notices)) == ["misload", "missing"]
    missing = [p for p in _exc(notices) if p["type"] == "missing"]
    assert missing[0]["ref"]["parcel"] == "x1"


def test_pod_far_from_the_stop_by_its_own_position_and_by_the_van() -> None:
    van = Device()
    m = _model()
    base = [
        van.trip("trip.depart", 0),
        van.trip("trip.arrive", 130, "s1"),
        van.fix(140, 1.2, speed=0.0),
    ]
    notices = _run(m, base)
    # the phone says it was 1 km away
    notices += m.apply(van.pod(150, "p1a", lat=52.52, lon=lon(2.2)))
    # no position on the PoD: the van stood at the stop, so that is where
    notices += m.apply(van.pod(160, "p1b"))
    assert _types(notices) == ["pod_far"]
    assert "998 m from stop s1" in _exc(notices)[0]["reason"]
    # a PoD for a stop-2 parcel while the van stands at stop 1 (1.2 km away)
    notices = _run(m, [van.fix(200, 1.2, speed=0.0), van.pod(210, "p2a")])
    assert _types(notices) == ["pod_far"]


def test_scan_without_pod_after_the_grace_and_resolved_by_a_late_pod() -> None:
    van = Device()
    m = _model()
    _run(
        m,
        [
            van.trip("trip.depart", 0),
            van.trip("trip.arrive", 130, "s1"),
            van.scan(150, "p1a", "s1"),
            van.pod(151, "p1b"),
            van.trip("trip.depart", 400, "s1"),
        ],
    )
    t0 = T0.timestamp()
    assert _types(m.tick(t0 + 400 + S.scan_no_pod_grace_s - 10)) == []
    notices = m.tick(t0 + 400 + S.scan_no_pod_grace_s + 10)
    assert _types(notices) == ["scan_without_pod"]
    assert _exc(notices)[0]["ref"]["parcel"] == "p1a"
    assert _types(m.tick(t0 + 400 + S.scan_no_pod_grace_s + 70)) == []  # once
    notices = _run(m, [van.pod(151, "p1a")])  # the phone's backlog, out of a dead zone
    assert _types(notices, "exception.resolved") == ["scan_without_pod"]
    p = m.parcel("acme", "p1a")
    assert p is not None and p["status"] == "delivered"


def test_a_pod_in_time_means_no_scan_exception() -> None:
    van = Device()
    m = _model()
    _run(
        m,
        [
            van.trip("trip.depart", 0),
            van.trip("trip.arrive", 130, "s1"),
            van.scan(150, "p1a", "s1"),
            van.trip("trip.depart", 400, "s1"),
            van.pod(151, "p1a"),
        ],
    )
    assert _types(m.tick(T0.timestamp() + 400 + S.scan_no_pod_grace_s + 10)) == []


def test_device_stale_on_an_active_route_resolved_when_it_speaks() -> None:
    van = Device()
    m = _model()
    t0 = T0.timestamp()
    assert m.tick(t0) == []  # the hub's clock, as the projector's ticks give it
    _run(m, [van.trip("trip.depart", 0), van.fix(10, 0.1)])
    assert _types(m.tick(t0 + 10 + S.stale_after_s - 5)) == []
    notices = m.tick(t0 + 10 + S.stale_after_s + 5)
    notices += m.tick(t0 + 10 + S.stale_after_s + 65)
    assert _types(notices, but="") == ["device_stale"]
    assert _exc(notices)[0]["ref"] == {"device": "van-1", "route": "r-1"}
    notices = m.apply(van.fix(1000, 0.2))
    assert _types(notices, "exception.resolved", but="") == ["device_stale"]


def test_a_backlog_of_old_events_after_an_outage_is_a_device_speaking_not_a_silent_one() -> None:
    """Silence is judged on when the hub hears a device, not on its events' times: a van that
    uploads an hour of backlog (or a day replayed in the past) is not stale for it."""
    van = Device()
    m = _model()
    hub_now = T0.timestamp() + 3 * S.stale_after_s  # the events are an outage's backlog
    assert m.tick(hub_now) == []
    _run(m, [van.trip("trip.depart", 0), van.fix(10, 0.1), van.fix(20, 0.2)])
    assert _types(m.tick(hub_now + 5), but="") == []
    assert _types(m.tick(hub_now + S.stale_after_s - 5), but="") == []
    # and a hub (re)started from its timeline counts what it replays as heard at its first tick
    m2 = _model()
    _run(m2, [Device().trip("trip.depart", 0), Device().fix(10, 0.1)])
    assert _types(m2.tick(hub_now), but="") == []
    assert _types(m2.tick(hub_now + S.stale_after_s + 5), but="") == ["device_stale"]


def test_a_device_idle_before_its_route_starts_is_not_stale() -> None:
    van = Device()
    m = _model()
    _run(m, [van.fix(0, 0.0, speed=0.0)])
    assert _types(m.tick(T0.timestamp() + 10 * S.stale_after_s), but="") == []


def test_gnss_lost_while_the_device_still_talks() -> None:
    van = Device()
    m = _model()
    notices = _run(m, [van.trip("trip.depart", 0), van.fix(10, 0.1)])
    notices += _run(m, [van.ev("device.health", 10 + S.gnss_lost_after_s - 5, {"ok": True})])
    assert _types(notices) == []
    notices = _run(
        m,
        [
            van.ev("device.health", 10 + S.gnss_lost_after_s + 5, {"ok": True}),
            van.ev("device.health", 10 + S.gnss_lost_after_s + 65, {"ok": True}),
        ],
    )
    assert _types(notices) == ["gnss_lost"]
    notices = m.apply(van.fix(10 + S.gnss_lost_after_s + 70, 0.2))
    assert _types(notices, "exception.resolved") == ["gnss_lost"]


def test_dwell_far_above_normal() -> None:
    van = Device()
    m = _model()
    _run(m, [van.trip("trip.depart", 0), van.trip("trip.arrive", 130, "s1")])
    limit = max(S.prior_dwell_s * S.dwell_factor, S.prior_dwell_s + S.dwell_extra_s)
    notices = _run(m, [van.fix(130 + limit - 10, 1.2, speed=0.0)])
    assert _types(notices) == []
    notices = _run(m, [van.fix(130 + limit + 10, 1.2, speed=0.0)])
    assert _types(notices) == ["dwell_long"]
    assert _exc(notices)[0]["ref"]["stop"] == "s1"
    notices = m.apply(van.trip("trip.depart", 130 + limit + 30, "s1"))
    assert _types(notices, "exception.resolved") == ["dwell_long"]


def test_late_risk_raised_while_there_is_time_and_resolved_at_the_stop() -> None:
    van = Device()
    # every window ends 200 s after T0: stop 1 (1.2 km) is due at about 130 s, stop 2 about
    # 4 min of dwell and 3 min of driving later: late by more than the margin, as stop 3
    m = _model(window_end_s=200.0)
    notices = _run(m, [van.trip("trip.depart", 0), van.fix(10, 0.1)])
    late = [p for p in _exc(notices) if p["type"] == "late_risk"]
    assert {p["ref"]["stop"] for p in late} == {"s2", "s3"}
    assert "after its window ends" in late[0]["reason"]
    notices = _run(m, [van.fix(20, 0.2), van.fix(30, 0.3)])
    assert _types(notices) == []  # raised once
    notices = _run(
        m,
        [
            van.trip("trip.arrive", 130, "s1"),
            van.trip("trip.depart", 200, "s1"),
            van.trip("trip.arrive", 330, "s2"),
        ],
    )
    assert [p["ref"]["stop"] for p in _exc(notices, "exception.resolved")] == ["s2"]
    # past the window's end nothing new is raised: there is no time left to act
    m2 = _model(window_end_s=5.0)
    assert _types(_run(m2, [Device().trip("trip.depart", 0), Device().fix(10, 0.1)])) == []


def test_device_sent_exceptions_are_raised_as_they_are() -> None:
    van = Device()
    m = _model()
    ev = van.ev("exception.vehicle_breakdown", 50, {"reason": "flat tyre"}, {"route": "r-1"})
    notices = m.apply(ev)
    assert _types(notices) == ["exception.vehicle_breakdown"]
    assert _exc(notices)[0]["event"]["id"] == ev["id"]
    assert m.apply(ev) == []  # the same event again
    assert [e["type"] for e in m.exceptions("acme", open_only=True)] == [
        "exception.vehicle_breakdown"
    ]


def test_the_route_coming_home_resolves_what_is_still_open() -> None:
    van = Device()
    m = _model()
    _run(m, [van.trip("trip.depart", 0), van.ev("exception.x", 50, {}, {"route": "r-1"})])
    notices = m.apply(van.trip("trip.arrive", 900))
    assert _types(notices, "exception.resolved") == ["exception.x"]
    assert m.exceptions("acme", open_only=True) == []


def test_clean_simulated_days_raise_no_false_exception() -> None:
    out = clean_days([1, 2], vans=2, stops=8)
    assert out["false"] == 0, out["false_examples"]


def test_late_risk_on_days_with_tight_windows_only_where_the_van_was_late() -> None:
    out = clean_days([1, 2], vans=2, stops=8, windows=(6.0, 20.0))
    assert out["stops_truly_late"] >= 5
    assert out["late_risk_true"] >= out["stops_truly_late"] // 2
    assert out["false"] == 0, out["false_examples"]
