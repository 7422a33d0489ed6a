"""The load-verification engine (DESIGN §8): one named test per rule, then properties.

Every event any test produces goes through ``make_draft``, the validation the agent's outbox
applies (registry schema of the type, ref, ts), so nothing here passes that the wire refuses.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.clock import Clock
from edge_agent.recorder import MemorySink, make_draft
from edge_agent.station.engine import (
    BayObs,
    DoorObs,
    GateOutObs,
    LoadEngine,
    LoadParams,
    LoadState,
    Observation,
    ScanObs,
    SignalCue,
    StationEvent,
    VehicleObs,
)
from edge_agent.station.plan import MISSING_LIST_BUDGET, LoadPlan, PlanRoute, parse_load_plan

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
CLOCK = Clock("system")
SSCC = "123456789012345675"

PLAN = parse_load_plan(
    {
        "station": "depot-1",
        "routes": [
            {"route": "r1", "vehicle": "van-1", "dock": "D1", "parcels": ["A1", "A2", "A3"]},
            {"route": "r2", "vehicle": "van-2", "dock": "D2", "parcels": ["B1", "B2"]},
            {"route": "r3", "vehicle": "van-3", "dock": "D1", "parcels": ["C1", "C2"]},
            {"route": "r4", "vehicle": "van-1", "dock": "D1", "parcels": ["E1"]},
        ],
    }
)


def validate(ev: StationEvent) -> None:
    """The outbox's checks: the type's data schema, the ref, the ts."""
    draft = make_draft(CLOCK, ev.type, ev.data, ts=ev.t, ref=ev.ref or None, clock_source="ntp")
    assert draft.ts == ev.to_json()["ts"]


class Dock:
    """Feeds one engine observations a second apart; keeps the events and cues."""

    def __init__(self, plan: LoadPlan | None = PLAN, params: LoadParams | None = None) -> None:
        self.engine = LoadEngine(plan, params)
        self.state = self.engine.new_state()
        self.t = T0
        self.events: list[StationEvent] = []
        self.cues: list[SignalCue] = []

    def feed(self, *obs: Observation) -> list[StationEvent]:
        out: list[StationEvent] = []
        for o in obs:
            self.state, res = self.engine.step(self.state, o)
            for ev in res.events:
                validate(ev)
            out += res.events
            self.cues += res.cues
        self.events += out
        return out

    def _t(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t

    def scan(self, dock: str, *texts: str) -> list[StationEvent]:
        return self.feed(*(ScanObs(self._t(), dock, x) for x in texts))

    def door(self, dock: str, state: str) -> list[StationEvent]:
        return self.feed(DoorObs(self._t(), dock, state == "open"))

    def bay(self, dock: str, state: str) -> list[StationEvent]:
        return self.feed(BayObs(self._t(), dock, state == "occupied"))

    def vehicle(self, dock: str, vehicle: str) -> list[StationEvent]:
        return self.feed(VehicleObs(self._t(), dock, vehicle))

    def gateout(self, dock: str) -> list[StationEvent]:
        return self.feed(GateOutObs(self._t(), dock))


def types(events: list[StationEvent]) -> list[str]:
    return [e.type for e in events]


def only(events: list[StationEvent], type_: str) -> StationEvent:
    found = [e for e in events if e.type == type_]
    assert len(found) == 1, types(events)
    return found[0]


# ---------------------------------------------------------------- parcels


def test_a_parcel_is_verified_once_per_vehicle_and_repeats_give_the_same_cue() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    first = d.scan("D1", "A1")
    assert types(first) == ["load.verified"]
    assert first[0].data == {"parcel": "A1", "route": "r1", "vehicle": "van-1", "dock": "D1"}
    assert first[0].ref == {"route": "r1", "vehicle": "van-1", "dock": "D1", "parcel": "A1"}
    assert d.scan("D1", "A1", " A1 ", "A1\n") == []
    assert [(c.color, c.reason) for c in d.cues] == [("green", "verified")] + [
        ("green", "duplicate")
    ] * 3


def test_a_repeat_in_another_session_of_the_same_route_is_silent_and_green() -> None:
    d = Dock()
    d.bay("D1", "occupied")  # infers r1 (van-1) at D1
    assert types(d.scan("D1", "A1")) == ["load.verified"]
    # van-1 declared at D2, where it has no route: its first route not gated out, r1
    assert types(d.vehicle("D2", "van-1")) == ["dock.vehicle"]
    assert d.scan("D2", "A1") == []
    assert d.cues[-1] == SignalCue("D2", "green", "verified")
    assert types(d.scan("D2", "A2")) == ["load.verified"]


def test_a_misload_is_reported_with_where_the_parcel_belongs() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    ev = only(d.scan("D1", "B1"), "load.misload")
    assert ev.data == {
        "parcel": "B1",
        "dock": "D1",
        "vehicle": "van-1",
        "expected_route": "r2",
        "expected_vehicle": "van-2",
        "expected_dock": "D2",
    }
    assert ev.ref == {"route": "r2", "vehicle": "van-1", "dock": "D1", "parcel": "B1"}
    assert d.cues[-1] == SignalCue("D1", "red", "misload")
    assert d.scan("D1", "B1") == []
    assert d.cues[-1] == SignalCue("D1", "red", "duplicate")


def test_a_misload_corrected_at_its_right_dock_is_verified_there_and_not_counted() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    d.scan("D1", "A1", "A2", "A3", "B1", "B2")
    d.vehicle("D2", "van-2")
    assert types(d.scan("D2", "B1")) == ["load.verified"]
    gate = only(d.gateout("D1"), "load.gateout")
    # B2 is still on the wrong van; B1 was taken off and loaded on its own
    assert gate.data["misloaded"] == 1
    assert gate.data["missing"] == [] and gate.data["verified"] == 3
    assert types(d.events).count("load.misload") == 2  # the misloads stay in the timeline


def test_a_parcel_verified_and_then_taken_to_the_wrong_vehicle_counts_as_misloaded() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    d.scan("D1", "A1")
    d.vehicle("D2", "van-2")
    assert only(d.scan("D2", "A1"), "load.misload").data["expected_vehicle"] == "van-1"
    assert only(d.gateout("D2"), "load.gateout").data["misloaded"] == 1


def test_a_parcel_on_no_route_is_unknown() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    ev = only(d.scan("D1", "ZZ-9"), "load.unknown")
    assert ev.data == {"parcel": "ZZ-9", "dock": "D1", "vehicle": "van-1"}
    assert ev.ref == {"route": "r1", "vehicle": "van-1", "dock": "D1", "parcel": "ZZ-9"}
    assert d.cues[-1] == SignalCue("D1", "red", "unknown")
    assert d.scan("D1", "ZZ-9") == []
    assert d.cues[-1] == SignalCue("D1", "red", "duplicate")


def test_the_first_parcel_scan_opens_a_session_for_the_docks_next_route() -> None:
    d = Dock()
    ev = only(d.scan("D1", "A2"), "load.verified")
    assert ev.data["vehicle"] == "van-1" and ev.data["route"] == "r1"
    assert "dock.vehicle" not in types(d.events)  # an inference is not a declaration


def test_gs1_element_strings_match_the_sscc_in_the_plan_and_the_other_way() -> None:
    plan = parse_load_plan(
        {
            "routes": [
                {"route": "r1", "vehicle": "v1", "dock": "D1", "parcels": [SSCC]},
                {
                    "route": "r2",
                    "vehicle": "v2",
                    "dock": "D2",
                    "parcels": ["(00)987654321098765435"],
                },
            ]
        }
    )
    d = Dock(plan)
    assert only(d.scan("D1", f"]C100{SSCC}"), "load.verified").data["parcel"] == SSCC
    assert d.scan("D1", f"(00){SSCC}") == []  # the same parcel read in another form
    ev = only(d.scan("D2", "00987654321098765435\x1d42012345"), "load.verified")
    assert ev.data["parcel"] == "987654321098765435"


# ---------------------------------------------------------------- gate-outs


def test_gate_out_by_scan_reports_the_departure() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    d.scan("D1", "A3", "A1")
    out = d.scan("D1", "GATEOUT")
    assert types(out) == ["load.gateout", "load.missing"]
    assert out[0].data == {
        "route": "r1",
        "vehicle": "van-1",
        "dock": "D1",
        "expected": 3,
        "verified": 2,
        "misloaded": 0,
        "missing": ["A2"],
    }
    assert out[0].ref == {"route": "r1", "vehicle": "van-1", "dock": "D1"}
    assert out[1].data == {"route": "r1", "vehicle": "van-1", "parcels": ["A2"]}
    assert d.cues[-1] == SignalCue("D1", "off", "gateout")


def test_a_gate_out_code_naming_a_dock_gates_that_dock_out() -> None:
    d = Dock()
    d.vehicle("D2", "van-2")
    out = d.scan("D1", "GATEOUT:D2")
    assert only(out, "load.gateout").data["dock"] == "D2"
    assert d.cues[-1] == SignalCue("D2", "off", "gateout")


@pytest.mark.parametrize("order", ["door-then-bay", "bay-then-door"])
def test_gate_out_by_door_and_bay_in_either_order(order: str) -> None:
    d = Dock()
    assert types(d.door("D1", "open")) == ["dock.door"]
    assert types(d.bay("D1", "occupied")) == ["dock.bay"]
    d.scan("D1", "A1", "A2", "A3")
    if order == "door-then-bay":
        assert types(d.door("D1", "closed")) == ["dock.door"]
        out = d.bay("D1", "free")
        assert types(out) == ["dock.bay", "load.gateout"]
    else:
        assert types(d.bay("D1", "free")) == ["dock.bay"]  # door still open: loading goes on
        out = d.door("D1", "closed")
        assert types(out) == ["dock.door", "load.gateout"]
    gate = out[-1]
    assert gate.data["route"] == "r1" and gate.data["missing"] == []
    assert gate.t == d.t  # the time of the signal that completed the departure


def test_a_dock_without_a_door_sensor_gates_out_on_the_bay_alone() -> None:
    d = Dock()
    d.bay("D2", "occupied")
    assert types(d.bay("D2", "free")) == ["dock.bay", "load.gateout", "load.missing"]


def test_a_new_vehicle_gates_the_previous_one_out() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    d.scan("D1", "A1")
    out = d.vehicle("D1", "van-3")
    assert types(out) == ["load.gateout", "load.missing", "dock.vehicle"]
    assert out[0].data["vehicle"] == "van-1" and out[0].data["route"] == "r1"
    assert out[2].data == {"dock": "D1", "vehicle": "van-3"}
    assert out[2].ref == {"route": "r3", "vehicle": "van-3", "dock": "D1"}
    assert only(d.scan("D1", "C1"), "load.verified").data["route"] == "r3"


def test_one_gate_out_per_departure_however_many_signals() -> None:
    d = Dock()
    d.door("D1", "open")
    d.bay("D1", "occupied")
    d.vehicle("D1", "van-1")
    d.scan("D1", "A1")
    d.scan("D1", "GATEOUT")
    d.scan("D1", "GATEOUT")
    d.gateout("D1")
    d.bay("D1", "occupied")  # the sensor repeating itself: no change, no new session
    d.door("D1", "closed")
    d.bay("D1", "free")
    d.gateout("D1")
    assert types(d.events).count("load.gateout") == 1
    assert [c.reason for c in d.cues].count("gateout") == 4  # every gate-out signal: off


def test_a_gate_out_without_a_session_or_a_route_emits_nothing() -> None:
    d = Dock()
    assert d.gateout("D1") == []
    assert d.cues[-1] == SignalCue("D1", "off", "gateout")
    d.vehicle("D9", "van-9")  # no route for van-9: a session without a route
    assert d.scan("D9", "GATEOUT") == []
    assert d.cues[-1] == SignalCue("D9", "off", "gateout")
    assert "D9" in d.state.docks and d.state.docks["D9"].session is None


def test_load_missing_only_when_parcels_are_missing() -> None:
    d = Dock()
    d.vehicle("D2", "van-2")
    d.scan("D2", "B2", "B1")
    out = d.gateout("D2")
    assert types(out) == ["load.gateout"]
    assert out[0].data["missing"] == [] and out[0].data["verified"] == 2


def test_missing_parcels_are_sorted_and_late_parcels_of_a_gated_route_are_misloads() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    out = d.gateout("D1")
    assert out[0].data["missing"] == ["A1", "A2", "A3"] == out[1].data["parcels"]
    d.vehicle("D1", "van-3")
    ev = only(d.scan("D1", "A2"), "load.misload")
    assert (ev.data["expected_route"], ev.data["vehicle"]) == ("r1", "van-3")


# ---------------------------------------------------------------- sessions over a shift


def test_a_dock_shared_by_routes_serves_them_in_plan_order() -> None:
    d = Dock()
    served = []
    for parcels in (["A1", "A2", "A3"], ["C1", "C2"], ["E1"]):
        d.bay("D1", "occupied")
        verified = d.scan("D1", *parcels)
        assert types(verified) == ["load.verified"] * len(parcels)
        out = d.bay("D1", "free")
        gate = only(out, "load.gateout")
        assert gate.data["missing"] == []
        served.append((gate.data["route"], gate.data["vehicle"]))
    assert served == [("r1", "van-1"), ("r3", "van-3"), ("r4", "van-1")]
    assert "dock.vehicle" not in types(d.events)
    d.bay("D1", "occupied")  # every route of D1 is gone: a session without a route
    assert types(d.scan("D1", "A1")) == ["load.misload"]
    assert types(d.bay("D1", "free")) == ["dock.bay"]


def test_a_vehicle_doing_two_routes_loads_them_one_after_the_other() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    d.scan("D1", "A1", "A2", "A3")
    assert only(d.scan("D1", "GATEOUT"), "load.gateout").data["route"] == "r1"
    assert types(d.vehicle("D1", "van-1")) == ["dock.vehicle"]  # a new session: its wave 2
    assert only(d.scan("D1", "E1"), "load.verified").data["route"] == "r4"
    ev = only(d.scan("D1", "A1"), "load.misload")  # wave 1's parcel: r1 has left
    assert ev.data["expected_route"] == "r1" and ev.data["expected_vehicle"] == "van-1"


def test_a_vehicle_declared_at_an_occupied_bay_leaves_by_the_sensors() -> None:
    d = Dock()
    d.bay("D1", "occupied")
    d.vehicle("D1", "van-1")
    d.scan("D1", "GATEOUT")  # wave 1 closed by hand, the van still in the bay
    d.vehicle("D1", "van-1")  # wave 2 declared: the van in the bay is this session's
    gate = only(d.bay("D1", "free"), "load.gateout")
    assert gate.data["route"] == "r4"


def test_a_stray_read_after_a_gate_out_is_no_second_departure() -> None:
    d = Dock()
    d.bay("D1", "occupied")
    d.scan("D1", "A1", "GATEOUT")
    d.scan("D1", "A2")  # a camera reads a label as the van pulls out: a new session (r3)
    assert types(d.bay("D1", "free")) == ["dock.bay"]  # that session never saw the bay occupied
    s = d.state.docks["D1"].session
    assert s is not None and s.route == "r3"
    d.bay("D1", "occupied")  # the next vehicle arrives: the same session goes on
    assert types(d.bay("D1", "free"))[-1] == "load.missing"


def test_one_dock_vehicle_per_session() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    d.scan("D1", "VEH:van-1", "van-1", " VEH: van-1 ")
    d.vehicle("D1", "van-1")
    assert types(d.events) == ["dock.vehicle"]


def test_a_plan_vehicle_id_scanned_is_a_vehicle_and_a_bare_prefix_is_ignored() -> None:
    d = Dock()
    assert types(d.scan("D2", "van-2")) == ["dock.vehicle"]
    assert d.scan("D2", "VEH:", "VEH:" + "x" * 300) == []
    assert d.state.ignored == 2


def test_a_declared_vehicle_rebinds_an_inferred_session() -> None:
    d = Dock()
    d.bay("D1", "occupied")  # inferred: r1, van-1
    assert types(d.scan("D1", "A1", "C1")) == ["load.verified", "load.misload"]
    out = d.vehicle("D1", "van-3")
    assert types(out) == ["dock.vehicle"]  # no gate-out: the inference was wrong, not a departure
    assert out[0].ref["route"] == "r3"
    # judged again for van-3: C1 is its own, A1 now a misload; what was emitted stands
    assert types(d.scan("D1", "C1", "A1")) == ["load.verified", "load.misload"]
    gate = only(d.bay("D1", "free"), "load.gateout")
    assert (gate.data["route"], gate.data["vehicle"], gate.data["misloaded"]) == ("r3", "van-3", 1)
    assert "r1" not in d.state.gated


def test_the_inferred_vehicle_declared_keeps_what_it_read() -> None:
    d = Dock()
    d.scan("D1", "A1")
    assert types(d.vehicle("D1", "van-1")) == ["dock.vehicle"]
    assert d.scan("D1", "A1") == []
    assert types(d.vehicle("D1", "van-1") + d.scan("D1", "VEH:van-1")) == []


def test_door_and_bay_events_on_changes_only() -> None:
    d = Dock()
    seq = ["open", "open", "closed", "closed", "open"]
    assert [e.data["state"] for s in seq for e in d.door("D3", s)] == ["open", "closed", "open"]
    assert [e.data["state"] for e in d.bay("D3", "free")] == ["free"]  # first sight is a change
    assert d.bay("D3", "free") == []


def test_no_plan_reports_unknowns_and_no_departures() -> None:
    d = Dock(None)
    assert types(d.vehicle("D1", "van-1")) == ["dock.vehicle"]
    ev = only(d.scan("D1", "A1"), "load.unknown")
    assert ev.data == {"parcel": "A1", "dock": "D1", "vehicle": "van-1"}
    assert only(d.scan("D2", "X"), "load.unknown").data["vehicle"] is None
    d.bay("D2", "occupied")
    assert types(d.bay("D2", "free")) == ["dock.bay"]
    assert d.scan("D1", "GATEOUT") == []
    assert d.cues[-1].color == "off"


def test_with_no_route_at_the_dock_a_plan_parcel_is_a_misload_onto_whoever_is_there() -> None:
    d = Dock()
    ev = only(d.scan("D9", "A1"), "load.misload")
    assert ev.data["vehicle"] is None and ev.data["expected_dock"] == "D1"
    assert "vehicle" not in ev.ref
    d.vehicle("D8", "truck-7")
    assert only(d.scan("D8", "B1"), "load.misload").data["vehicle"] == "truck-7"
    assert only(d.scan("D8", "Q"), "load.unknown").data["vehicle"] == "truck-7"


# ---------------------------------------------------------------- params and bounds


def test_gate_out_codes_and_the_vehicle_prefix_are_parameters() -> None:
    d = Dock(params=LoadParams(gateout_codes=frozenset({"DEPART"}), vehicle_prefix=""))
    d.vehicle("D1", "van-1")
    assert only(d.scan("D1", "GATEOUT"), "load.unknown").data["parcel"] == "GATEOUT"
    assert only(d.scan("D1", "VEH:van-3"), "load.unknown").data["parcel"] == "VEH:van-3"
    assert types(d.scan("D1", "DEPART")) == ["load.gateout", "load.missing"]


def test_unknown_junk_does_not_grow_a_session_without_bound() -> None:
    d = Dock(params=LoadParams(reported_cap=3))
    d.vehicle("D1", "van-1")
    d.scan("D1", *(f"junk-{i}" for i in range(10)))
    session = d.state.docks["D1"].session
    assert session is not None and len(session.reported) == 3
    assert len(d.scan("D1", "junk-0", "junk-9")) == 1  # remembered: silent; beyond: again
    d.scan("D1", "A1", "B1")  # plan parcels are always remembered (bounded by the plan)
    assert d.scan("D1", "A1", "B1") == [] and len(session.reported) == 5


def test_a_label_too_long_to_name_a_parcel_is_red_but_reports_nothing() -> None:
    d = Dock()
    assert d.scan("D1", "x" * 257) == []
    assert d.cues[-1] == SignalCue("D1", "red", "unreadable")
    assert d.scan("D1", "   ") == []
    assert d.state.ignored == 2


def test_docks_beyond_the_bound_are_ignored_and_counted() -> None:
    d = Dock(params=LoadParams(max_docks=2))
    d.door("D1", "open")
    d.door("D2", "open")
    assert d.door("D3", "open") == [] and d.scan("D3", "A1") == []
    assert sorted(d.state.docks) == ["D1", "D2"] and d.state.ignored == 2


async def test_the_largest_gate_out_a_plan_allows_fits_the_outbox() -> None:
    n = MISSING_LIST_BUDGET // 259
    parcels = tuple(f"{i:06d}" + "p" * 250 for i in range(n))  # 256 characters each
    long_id = "r" * 256
    plan = LoadPlan((PlanRoute(long_id, "v" * 256, "d" * 256, parcels),))
    d = Dock(plan)
    d.vehicle("d" * 256, "v" * 256)
    out = d.gateout("d" * 256)
    assert types(out) == ["load.gateout", "load.missing"]
    sink = MemorySink(CLOCK)
    for ev in out:
        await sink.emit(ev.type, ev.data, ts=ev.t, ref=ev.ref)
    assert len(sink.events) == 2


# ---------------------------------------------------------------- observations and events


def test_observations_need_aware_times_and_dock_names() -> None:
    with pytest.raises(ValueError, match="naive"):
        ScanObs(datetime(2026, 3, 2, 8, 0), "D1", "A1")
    with pytest.raises(ValueError, match="dock must be 1 to 256"):
        DoorObs(T0, "", True)
    with pytest.raises(ValueError, match="vehicle must be a string"):
        VehicleObs(T0, "D1", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="occupied must be a bool"):
        BayObs(T0, "D1", 1)  # type: ignore[arg-type]
    paris = timezone(timedelta(hours=1))
    obs = GateOutObs(datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=paris), "D1")
    assert obs.t == datetime(2026, 3, 2, 8, 0, 0, 123456, tzinfo=UTC) and obs.t.tzinfo is UTC


def test_events_print_type_ts_with_milliseconds_and_data() -> None:
    d = Dock()
    ev = d.feed(ScanObs(datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC), "D1", "A1"))[0]
    assert ev.to_json() == {
        "type": "load.verified",
        "ts": "2026-03-02T09:00:00.123Z",
        "data": {"parcel": "A1", "route": "r1", "vehicle": "van-1", "dock": "D1"},
    }
    assert ev.ts == "2026-03-02T09:00:00.123Z"


# ---------------------------------------------------------------- state


def test_a_state_round_trips_through_json_exactly() -> None:
    d = Dock()
    d.door("D1", "open")
    d.bay("D1", "occupied")
    d.scan("D1", "A1", "B1", "junk")
    d.vehicle("D2", "van-2")
    d.gateout("D2")
    dumped = d.engine.dump(d.state)
    again = d.engine.load(json.loads(json.dumps(dumped)))
    assert d.engine.dump(again) == dumped
    assert again == d.state


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "not a load engine state"),
        ({"v": 2}, "not a load engine state"),
        ({"v": 1, "docks": []}, "docks: not an object"),
        ({"v": 1, "docks": {"D1": {"door": "open"}}}, r"docks\['D1'\]\.door: not a bool"),
        ({"v": 1, "docks": {"D1": {"session": {"opened_at": "noon"}}}}, "opened_at"),
        (
            {"v": 1, "docks": {"D1": {"session": {"opened_at": "2026-03-02T06:00:00+00:00",
                                                  "reported": {"A1": 3}}}}},
            r"reported\['A1'\]: not a colour",
        ),
        ({"v": 1, "verified": {"r1": "A1"}}, "verified"),
        ({"v": 1, "gated": [1]}, "gated: not a list of strings"),
        ({"v": 1, "counters": {"observations": -1}}, "counters.observations"),
    ],
)  # fmt: skip
def test_load_refuses_garbage_saying_where(data: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoadEngine(PLAN).load(data)


def test_adopt_keeps_sessions_and_what_was_verified_under_a_new_plan() -> None:
    d = Dock()
    d.vehicle("D1", "van-1")
    d.scan("D1", "A1", "B1")
    d.bay("D2", "occupied")  # inferred r2 at D2
    d.scan("D2", "B2")
    new_plan = parse_load_plan(
        {
            "routes": [  # A4 added to r1; r2 now van-5's, at D2; B1 moved to r1
                {"route": "r1", "vehicle": "van-1", "dock": "D1",
                 "parcels": ["A1", "A2", "A4", "B1"]},
                {"route": "r2", "vehicle": "van-5", "dock": "D2", "parcels": ["B2"]},
            ]
        }
    )  # fmt: skip
    engine = LoadEngine(new_plan)
    state = engine.adopt(d.engine, d.state)
    s1, s2 = state.docks["D1"].session, state.docks["D2"].session
    assert s1 is not None and (s1.vehicle, s1.route, s1.explicit) == ("van-1", "r1", True)
    assert s1.misloaded == {}  # B1 is r1's now
    assert s2 is not None and (s2.vehicle, s2.route) == ("van-5", "r2")
    assert state.verified == {"r1": {"A1"}, "r2": {"B2"}}
    state, res = engine.step(state, ScanObs(d._t(), "D1", "A4"))
    assert types(res.events) == ["load.verified"]
    state, res = engine.step(state, GateOutObs(d._t(), "D1"))
    gate = only(res.events, "load.gateout")
    assert gate.data["expected"] == 4 and gate.data["missing"] == ["A2", "B1"]


def test_adopt_gives_a_session_whose_route_is_gone_the_docks_next_route() -> None:
    d = Dock()
    d.bay("D1", "occupied")  # inferred r1
    d.scan("D1", "A1")
    plan = LoadPlan((PlanRoute("r9", "van-9", "D1", ("A1", "Z1")),))
    engine = LoadEngine(plan)
    state = engine.adopt(d.engine, d.state)
    s = state.docks["D1"].session
    assert s is not None and (s.vehicle, s.route, s.reported) == ("van-9", "r9", {})
    assert state.verified == {}
    state, res = engine.step(state, ScanObs(d._t(), "D1", "A1"))
    assert only(res.events, "load.verified").data["route"] == "r9"


# ---------------------------------------------------------------- properties

DOCKS = ["D0", "D1", "D2", "D3"]
VEHICLES = ["v0", "v1", "v2"]
PARCELS = [f"p{i}" for i in range(8)]
MAX_DOCKS = 3
CAP = 2


@st.composite
def plans(draw: st.DrawFn) -> LoadPlan:
    n = draw(st.integers(0, 4))
    owners = draw(st.lists(st.integers(-1, max(n - 1, 0)), min_size=8, max_size=8))
    routes = []
    for i in range(n):
        parcels = tuple(p for p, o in zip(PARCELS, owners, strict=True) if o == i)
        vehicle = draw(st.sampled_from(VEHICLES))
        routes.append(PlanRoute(f"r{i}", vehicle, draw(st.sampled_from(DOCKS[:3])), parcels))
    return LoadPlan(tuple(routes))


TEXTS = st.sampled_from(
    [*PARCELS, "junk-a", "junk-b", "junk-c", "GATEOUT", "GATEOUT:D1", "VEH:", "x" * 300]
    + [f"VEH:{v}" for v in [*VEHICLES, "v9"]]
    + VEHICLES
)


@st.composite
def observations(draw: st.DrawFn) -> list[Observation]:
    out: list[Observation] = []
    t = T0
    for _ in range(draw(st.integers(0, 60))):
        t += timedelta(milliseconds=draw(st.integers(0, 5000)))
        dock = draw(st.sampled_from(DOCKS))
        kind = draw(st.sampled_from(["scan", "scan", "scan", "door", "bay", "vehicle", "gateout"]))
        if kind == "scan":
            out.append(ScanObs(t, dock, draw(TEXTS)))
        elif kind == "door":
            out.append(DoorObs(t, dock, draw(st.booleans())))
        elif kind == "bay":
            out.append(BayObs(t, dock, draw(st.booleans())))
        elif kind == "vehicle":
            out.append(VehicleObs(t, dock, draw(st.sampled_from([*VEHICLES, "v9"]))))
        else:
            out.append(GateOutObs(t, dock))
    return out


def check_bounded(engine: LoadEngine, state: LoadState) -> None:
    plan = engine.plan
    assert len(state.docks) <= MAX_DOCKS
    for ds in state.docks.values():
        s = ds.session
        if s is not None:
            assert len(s.reported) <= CAP + len(plan.route_of)
            assert set(s.misloaded) <= set(plan.route_of)
    for route, parcels in state.verified.items():
        assert parcels <= plan.parcel_sets[route]
    assert state.gated <= set(plan.by_route)


@given(plan=plans(), obs=observations())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_recovery_from_any_dump_gives_the_same_events_and_bounded_valid_state(
    plan: LoadPlan, obs: list[Observation]
) -> None:
    params = LoadParams(reported_cap=CAP, max_docks=MAX_DOCKS)
    straight = LoadEngine(plan, params)
    a = straight.new_state()
    resumed = LoadEngine(plan, params)  # a new engine each time: the service after a restart
    b = resumed.new_state()
    for o in obs:
        had_session = {name for name, ds in a.docks.items() if ds.session is not None}
        a, res_a = straight.step(a, o)
        # (a) the state written ahead, read back by a restarted service, goes on identically
        b = LoadEngine(plan, params).load(json.loads(json.dumps(resumed.dump(b))))
        b, res_b = resumed.step(b, o)
        assert res_a == res_b
        # (b) one gate-out per session: at most one per dock per step, of a session open before
        gate_docks = [e.data["dock"] for e in res_a.events if e.type == "load.gateout"]
        assert len(gate_docks) == len(set(gate_docks))
        assert set(gate_docks) <= had_session
        # (c) the wire accepts every event
        for ev in res_a.events:
            validate(ev)
        # (d) bounded
        check_bounded(straight, a)
    assert straight.dump(a) == resumed.dump(b)
    assert a.observations == len(obs)
