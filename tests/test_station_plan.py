"""The station's load plan: parsing, parcel names (GS1 SSCC or text), and errors by path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.scan.gs1 import check_digit
from edge_agent.station.plan import (
    MISSING_LIST_BUDGET,
    LoadPlan,
    PlanError,
    PlanRoute,
    load_plan_file,
    parcel_key,
    parse_load_plan,
)

GS = "\x1d"
SSCC = "123456789012345675"
SSCC2 = "987654321098765435"


def plan_obj(**extra: Any) -> dict[str, Any]:
    return {
        "station": "depot-1",
        "routes": [
            {"route": "r1", "vehicle": "van-1", "dock": "D1", "parcels": ["P1", f"(00){SSCC}"]},
            {"route": "r2", "vehicle": "van-2", "dock": "D2", "parcels": [SSCC2, "Q1"]},
            {"route": "r3", "vehicle": "van-1", "dock": "D1"},
        ],
        **extra,
    }


def errors(obj: Any) -> PlanError:
    with pytest.raises(PlanError) as info:
        parse_load_plan(obj)
    return info.value


# ---------------------------------------------------------------- parcel names


def test_the_sscc_names_its_parcel_in_every_gs1_form() -> None:
    assert check_digit(SSCC[:-1]) == int(SSCC[-1])  # the fixture is a valid SSCC
    forms = [
        f"(00){SSCC}",  # human-readable
        f"]C100{SSCC}",  # AIM prefix of GS1-128
        f"{GS}00{SSCC}",  # leading FNC1
        f"00{SSCC}",  # bare, as a camera decodes a GS1-128 label
        f"00{SSCC}420123456{GS}",  # more AIs after it
        f"(420)12345(00){SSCC}",  # the SSCC not first
        f"  ]d200{SSCC}\r\n",  # surrounding whitespace
    ]
    assert {f: parcel_key(f) for f in forms} == dict.fromkeys(forms, SSCC)


def test_other_text_is_its_own_name_stripped() -> None:
    assert parcel_key("  PKG-0001\n") == "PKG-0001"
    assert parcel_key("") == ""
    # a GS1 string without an SSCC, or with a wrong check digit, keeps its text
    gtin_serial = "(01)04012345678901(21)ABC"
    assert parcel_key(gtin_serial) == gtin_serial
    bad_check = f"(00){SSCC[:-1]}0"
    assert parcel_key(bad_check) == bad_check
    # 20 digits starting 00 but not a valid SSCC: not GS1, the text
    assert parcel_key("00123456789012345670") == "00123456789012345670"


# ---------------------------------------------------------------- parsing


def test_a_plan_parses_with_its_indexes() -> None:
    plan = parse_load_plan(json.dumps(plan_obj(id="cmd-7", extra_field=[1, 2])))
    assert plan.station == "depot-1"
    assert [r.route for r in plan.routes] == ["r1", "r2", "r3"]
    assert plan.routes[0] == PlanRoute("r1", "van-1", "D1", ("P1", SSCC))
    assert plan.routes[2].parcels == ()
    assert plan.route_of[SSCC].route == "r1" and plan.route_of["Q1"].route == "r2"
    assert [r.route for r in plan.by_vehicle["van-1"]] == ["r1", "r3"]
    assert [r.route for r in plan.by_dock["D1"]] == ["r1", "r3"]
    assert plan.parcel_sets["r2"] == frozenset({SSCC2, "Q1"})


def test_bytes_text_and_objects_parse_alike() -> None:
    obj = plan_obj()
    a = parse_load_plan(obj)
    b = parse_load_plan(json.dumps(obj))
    c = parse_load_plan(json.dumps(obj).encode())
    assert a == b == c


def test_station_may_be_left_out_and_parcels_may_be_objects() -> None:
    plan = parse_load_plan(
        {"routes": [{"route": 7, "vehicle": "v", "dock": "d", "parcels": [{"id": "X"}, 12]}]}
    )
    assert plan.station is None
    assert plan.routes[0] == PlanRoute("7", "v", "d", ("X", "12"))


def test_an_empty_plan_is_a_plan() -> None:
    assert parse_load_plan({"routes": []}).routes == ()


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (lambda o: o.pop("routes"), "routes", "missing"),
        (lambda o: o.update(routes={}), "routes", "must be a list, not dict"),
        (lambda o: o["routes"].__setitem__(1, "r2"), "routes[1]", "must be an object, not str"),
        (lambda o: o["routes"][0].pop("vehicle"), "routes[0].vehicle", "missing"),
        (lambda o: o["routes"][2].update(dock=""), "routes[2].dock", "printable"),
        (lambda o: o["routes"][2].update(dock="x" * 257), "routes[2].dock", "1 to 256"),
        (lambda o: o["routes"][2].update(dock=" D1"), "routes[2].dock", "surrounding spaces"),
        (lambda o: o["routes"][0].update(route=True), "routes[0].route", "not bool"),
        (lambda o: o.update(station=["x"]), "station", "must be a string, not list"),
        (lambda o: o["routes"][1].update(parcels="Q1"), "routes[1].parcels", "must be a list"),
        (lambda o: o["routes"][1]["parcels"].append(None), "routes[1].parcels[2]", "not NoneType"),
        (lambda o: o["routes"][1]["parcels"].append("  "), "routes[1].parcels[2]", "not 0"),
        (lambda o: o["routes"][1]["parcels"].append({}), "routes[1].parcels[2].id", "missing"),
        (lambda o: o["routes"][1]["parcels"].append("x" * 300), "routes[1].parcels[2]", "300"),
        (lambda o: o["routes"][2].update(route="r1"), "routes[2].route", "also routes[0]"),
    ],
)
def test_errors_name_the_place(mutate: Any, path: str, reason: str) -> None:
    obj = plan_obj()
    mutate(obj)
    err = errors(obj)
    assert err.path == path
    assert reason in err.reason
    assert str(err).startswith(f"{path}: ")


def test_a_parcel_is_on_one_route_once_whatever_form_names_it() -> None:
    obj = plan_obj()
    obj["routes"][1]["parcels"].append(f"]C100{SSCC}")  # r1 lists it as (00)SSCC
    err = errors(obj)
    assert (err.path, err.reason) == (
        "routes[1].parcels[2]",
        f"parcel {SSCC!r} is also routes[0].parcels[1]",
    )
    obj = plan_obj()
    obj["routes"][0]["parcels"].append("P1")
    assert errors(obj).path == "routes[0].parcels[2]"


def test_a_parcel_named_like_a_vehicle_is_refused() -> None:
    obj = plan_obj()
    obj["routes"][1]["parcels"].append("van-1")
    err = errors(obj)
    assert err.path == "routes[1].parcels[2]"
    assert "routes[0].vehicle" in err.reason


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        (b"{not json", "", "not JSON"),
        (b"\xff\xfe{}", "", "not UTF-8"),
        (b"[]", "", "must be an object, not list"),
        (b'{"routes": [], "station": NaN}', "station", "NaN is not allowed"),
        (b'{"routes": [{"route": "r", "vehicle": "v", "dock": "d", "parcels": [[[[[[[[1]]]]]]]]}]}',
         "routes[0].parcels[0][0][0][0][0]", "nesting deeper than 8"),
    ],
)  # fmt: skip
def test_bad_json_is_refused_with_where(raw: bytes, path: str, reason: str) -> None:
    err = errors(raw)
    assert err.path == path
    assert reason in err.reason


def test_a_route_whose_missing_list_would_not_fit_one_event_is_refused() -> None:
    name_len = 40
    per = name_len + 3  # its quotes and a comma
    fits = (MISSING_LIST_BUDGET - 1) // per  # brackets: 1 byte more than the commas take
    parcels = [f"P{i:0{name_len - 1}d}" for i in range(fits)]
    ok = parse_load_plan(
        {"routes": [{"route": "r", "vehicle": "v", "dock": "d", "parcels": parcels}]}
    )
    assert len(ok.routes[0].parcels) == fits
    parcels += [f"P{i:0{name_len - 1}d}" for i in range(fits, fits + 2)]
    err = errors({"routes": [{"route": "r", "vehicle": "v", "dock": "d", "parcels": parcels}]})
    assert err.path == "routes[0].parcels"
    assert "split the route" in err.reason


def test_a_plan_built_directly_checks_across_routes() -> None:
    with pytest.raises(PlanError, match=r"routes\[1\]\.parcels\[0\]: parcel 'a' is also"):
        LoadPlan((PlanRoute("r1", "v", "d", ("a",)), PlanRoute("r2", "v", "d", ("a",))))
    assert LoadPlan().routes == ()


def test_a_plan_file_error_names_the_file_and_the_place(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    obj = plan_obj()
    obj["routes"][1]["parcels"].append(3.5)
    path.write_text(json.dumps(obj))
    with pytest.raises(PlanError) as info:
        load_plan_file(path)
    assert str(info.value) == f"{path}: routes[1].parcels[2]: must be a string, not float"
    with pytest.raises(PlanError, match="cannot read"):
        load_plan_file(tmp_path / "absent.json")
    path.write_text(json.dumps(plan_obj()))
    assert load_plan_file(path) == parse_load_plan(plan_obj())
