"""Manifest parsing (DESIGN §2) and the ``trips:`` configuration section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import AgentConfig
from edge_agent.platform.yamlconf import ConfigError, load_model
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.manifest import ManifestError, parse_manifest

GOOD: dict[str, Any] = {
    "route": "r-17",
    "depot": {"id": "north", "polygon": [[13.40, 52.52], [13.402, 52.52], [13.402, 52.521]]},
    "stops": [
        {
            "id": "s1",
            "lat": 52.53,
            "lon": 13.41,
            "radius_m": 40,
            "parcels": ["P1", {"id": "P2", "weight_kg": 3}],
            "window": ["2026-03-02T09:00:00Z", "2026-03-02T10:00:00+01:00"],
        },
        {"id": 7, "lat": 52.54, "lon": 13.42},
    ],
}


def test_a_good_manifest_parses_and_ignores_unknown_fields() -> None:
    obj = json.loads(json.dumps(GOOD))
    obj["version"] = 3
    obj["stops"][0]["access_code"] = "1234"
    m = parse_manifest(json.dumps(obj).encode())
    assert m.route == "r-17" and m.depot_id == "north"
    assert m.depot.polygon is not None and len(m.depot.polygon) == 3
    s1, s2 = m.stops
    assert s1.parcels == ("P1", "P2") and s1.zone.radius_m == 40
    assert s1.window is not None and s1.window[0].hour == 9
    assert s2.id == "7" and s2.zone.radius_m is None and s2.parcels == ()


def test_a_closed_ring_is_accepted() -> None:
    obj = json.loads(json.dumps(GOOD))
    obj["depot"]["polygon"].append(obj["depot"]["polygon"][0])
    depot = parse_manifest(obj).depot
    assert depot.polygon is not None and len(depot.polygon) == 3


def _bad(path: list[Any], value: Any) -> dict[str, Any]:
    obj = json.loads(json.dumps(GOOD))
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "path", "reason"),
    [
        (_bad(["route"], KeyError), "route", "missing"),
        (_bad(["route"], ""), "route", "1 to 256"),
        (_bad(["route"], ["x"]), "route", "must be a string"),
        (_bad(["depot"], KeyError), "depot", "missing"),
        (_bad(["depot"], 5), "depot", "must be an object"),
        (_bad(["depot"], {"id": "d"}), "depot", "needs lat and lon"),
        (_bad(["stops"], KeyError), "stops", "missing"),
        (_bad(["stops"], {}), "stops", "must be a list"),
        (_bad(["stops", 0], "s1"), "stops[0]", "must be an object"),
        (_bad(["stops", 0, "lat"], 91), "stops[0].lat", "out of range"),
        (_bad(["stops", 0, "lat"], "52.5"), "stops[0].lat", "must be a number"),
        (_bad(["stops", 0, "lat"], True), "stops[0].lat", "must be a number"),
        (_bad(["stops", 0, "lon"], KeyError), "stops[0].lon", "missing"),
        (_bad(["stops", 0, "radius_m"], -3), "stops[0].radius_m", "out of range"),
        (_bad(["stops", 0, "radius_m"], 0), "stops[0].radius_m", "must be positive"),
        (_bad(["stops", 1, "id"], "s1"), "stops[1].id", "duplicate"),
        (_bad(["stops", 0, "parcels"], "P1"), "stops[0].parcels", "must be a list"),
        (_bad(["stops", 0, "parcels", 1], {"weight": 3}), "stops[0].parcels[1].id", "missing"),
        (_bad(["stops", 0, "window"], ["2026-03-02T09:00:00Z"]), "stops[0].window", "pair"),
        (_bad(["stops", 0, "window", 1], "soon"), "stops[0].window[1]", "not an ISO 8601"),
        (_bad(["stops", 0, "window", 0], "2026-03-02T09:00:00"), "stops[0].window[0]", "zone"),
        (
            _bad(["stops", 0, "window"], ["2026-03-02T10:00:00Z", "2026-03-02T09:00:00Z"]),
            "stops[0].window",
            "ends before",
        ),
        (_bad(["depot", "polygon"], [[13.4, 52.5], [13.5, 52.5]]), "depot.polygon", "at least 3"),
        (_bad(["depot", "polygon", 1], [13.4]), "depot.polygon[1]", "pair of numbers"),
        (_bad(["depot", "polygon", 1], [190, 52.5]), "depot.polygon[1]", "longitude"),
        (
            _bad(["depot", "polygon"], [[0, 0], [0.01, 0.01], [0.01, 0], [0, 0.01]]),
            "depot.polygon",
            "not a simple polygon",
        ),
        (_bad(["depot", "polygon"], [[0, 0], [2, 0], [2, 2]]), "depot.polygon", "more than one"),
        (_bad(["stops", 0, "polygon"], [[0, 0], [0.01, 0], [0, 0.01]]), "stops[0]", "not both"),
    ],
)
def test_bad_manifests_name_the_field_and_the_reason(obj: Any, path: str, reason: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(obj)
    assert info.value.path == path
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not JSON"),
        (b'{"route": "r", "depot":', "not JSON"),  # truncated
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be an object"),
        (b"null", "must be an object"),
        (b"x" * (5 * 1024 * 1024), "larger than"),
    ],
)
def test_garbage_and_truncation_are_errors_not_crashes(payload: bytes, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        parse_manifest(payload)


def _outcome(payload: Any) -> str | None:
    """None for a manifest, the reason for a ManifestError; anything else propagates."""
    try:
        parse_manifest(payload)
    except ManifestError as exc:
        return exc.reason
    return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"route": json_values, "depot": json_values, "stops": st.lists(json_values, max_size=3)}
        ),
    )
)
@settings(max_examples=300)
def test_any_json_is_a_manifest_or_a_manifest_error(obj: Any) -> None:
    reason = _outcome(obj)
    assert reason is None or reason


@given(st.binary(max_size=200))
def test_any_bytes_are_a_manifest_or_a_manifest_error(raw: bytes) -> None:
    reason = _outcome(raw)
    assert reason is None or reason


def test_trips_config_in_yaml_with_units_and_errors_with_lines(tmp_path: Path) -> None:
    good = tmp_path / "agent.yaml"
    good.write_text(
        "device: {id: van-042, fleet: acme}\n"
        "outbox: {path: /tmp/o.db}\n"
        "trips:\n"
        "  approach: 0.5mi\n"
        "  enter_after: 3s\n"
        "  zones:\n"
        "    - {name: fuel, lat: 52.5, lon: 13.4, radius: 60m}\n"
        "    - {name: yard, polygon: [[13.4, 52.5], [13.41, 52.5], [13.41, 52.51]]}\n"
    )
    cfg = load_model(AgentConfig, good)
    assert cfg.trips is not None
    assert cfg.trips.approach == pytest.approx(804.672)
    assert cfg.trips.enter_after == 3.0
    assert [z.name for z in cfg.trips.zones] == ["fuel", "yard"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "device: {id: van-042, fleet: acme}\n"
        "outbox: {path: /tmp/o.db}\n"
        "trips:\n"
        "  zones:\n"
        "    - {name: fuel, lat: 95, lon: 13.4}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_model(AgentConfig, bad)
    assert info.value.line == 5 and "trips.zones.0" in info.value.key
    assert "lat" in info.value.message and "out of range" in info.value.message


def test_trips_config_cross_checks() -> None:
    with pytest.raises(ValueError, match="stop_speed_mps must be below"):
        TripsConfig(stop_speed_mps=3.0, move_speed_mps=2.0)
    with pytest.raises(ValueError, match="duplicate name 'a'"):
        TripsConfig(zones=[{"name": "a", "lat": 1, "lon": 1}, {"name": "a", "lat": 2, "lon": 2}])
    with pytest.raises(ValueError, match="approch"):
        TripsConfig.model_validate({"approch": "800m"})
