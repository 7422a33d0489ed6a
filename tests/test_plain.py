"""The plain tests of hot event data (``edge_agent.wire.plain``) never accept what the registry's
schema or the JSON bounds refuse, and they do take the usual events (else they save nothing)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.wire.envelope import EnvelopeError, Ref, _schema_for, validate_data
from edge_agent.wire.jsonbounds import MAX_DEPTH, JsonBoundsError, check
from edge_agent.wire.plain import plain_data, plain_ref

FIX_KEYS = ["lat", "lon", "alt_m", "speed_mps", "track_deg", "mode", "quality", "hdop", "pdop"]
SCAN_KEYS = ["text", "symbology", "source", "gs1"]
REF_KEYS = ["parcel", "shipment", "stop", "route", "vehicle", "dock"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, 2, 3, 4, -1, 90, -90, 180, 360, 361]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 2.0, 3.0, 89.9, -90.0, 90.0000001, 95.0, -95.0, 180.0, 180.5, -180.5]),
    st.sampled_from([360.0, 360.5, -0.0, -1.0, 1e300]),
    st.text(max_size=10),
    st.sampled_from(["", "a", "\ud800", "é", "x" * 65, "x" * 129, "x" * 257]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(), scalars))


def schema_accepts(type_: str, data: dict[str, Any]) -> bool:
    """The full path's answer, without the plain tests."""
    try:
        check(data, MAX_DEPTH, "data")
        schema = _schema_for(type_)
        assert schema is not None
        schema.model_validate(data)
    except (JsonBoundsError, ValueError):
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["scan", "gnss.fix"]),
    st.dictionaries(st.sampled_from(FIX_KEYS + SCAN_KEYS + ["sats", "extra"]), values),
)
def test_plain_data_never_accepts_what_the_schema_refuses(type_: str, data: dict[str, Any]) -> None:
    if plain_data(type_, data):
        assert schema_accepts(type_, data), (type_, data)


BASE: dict[str, dict[str, Any]] = {
    "scan": {"text": "JJD0001", "symbology": "code128", "source": "b"},
    "gnss.fix": {"lat": 52.1, "lon": 4.3, "mode": 3, "speed_mps": 1.0, "sats": 7},
}


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(["scan", "gnss.fix"]),
    st.sampled_from(FIX_KEYS + SCAN_KEYS + ["sats", "extra"]),
    values,
    st.booleans(),
)
def test_one_field_changed_in_a_valid_event_is_judged_as_the_schema_does(
    type_: str, key: str, value: Any, drop: bool
) -> None:
    data: dict[str, Any] = dict(BASE[type_])
    if drop:
        data.pop(key, None)
    else:
        data[key] = value
    if plain_data(type_, data):
        assert schema_accepts(type_, data), (type_, data)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*REF_KEYS, "other"]), values))
def test_plain_ref_never_accepts_what_ref_refuses(ref: dict[str, Any]) -> None:
    if plain_ref(ref):
        Ref.model_validate(ref)


def test_the_usual_events_take_the_plain_path() -> None:
    scan = {"text": "JJD000123456789", "symbology": "code128", "source": "b"}
    fix = {"lat": 52.1, "lon": 4.3, "alt_m": -2.5, "speed_mps": 8.3, "track_deg": 90.0, "mode": 3,
           "quality": 1, "hdop": 0.9, "pdop": 1.5, "sats": 9}  # fmt: skip
    assert plain_data("scan", scan) and plain_data("gnss.fix", fix)
    assert plain_data("gnss.fix", {"lat": 1, "lon": 2, "mode": 2})
    assert plain_ref({"parcel": ["JJD1", "JJD2"], "stop": "s-12"})
    # and what they leave to the validator still gets its named error
    assert not plain_data("gnss.fix", {"lat": 91.0, "lon": 0.0, "mode": 3})
    with pytest.raises(EnvelopeError, match=r"^data\.lat: "):
        validate_data("gnss.fix", {"lat": 91.0, "lon": 0.0, "mode": 3})
    assert validate_data("scan", scan) == scan and validate_data("scan", scan) is not scan


EDGES: list[Any] = [
    None, True, False, 0, 1, 2, 3, 4, -1, 2**63 - 1, 2**63, -(2**63) - 1, 0.0, -0.0, 2.0, 3.0,
    89.9, 90.0, 90.5, 95.0, -90.0, -90.5, 179.9, 180.0, 180.5, -180.5, 359.9, 360.0, 360.5,
    1e300, float("nan"), float("inf"), float("-inf"), "", "a", "é", "\ud800", "x" * 64,
    "x" * 65, "x" * 128, "x" * 129, "x" * 8192, "x" * 8193, [], ["a"], {}, {"a": 1},
]  # fmt: skip


def test_every_edge_value_in_every_field_is_judged_as_the_schema_does() -> None:
    for type_, base in BASE.items():
        for key in FIX_KEYS + SCAN_KEYS + ["sats", "extra"]:
            for value in EDGES:
                data: dict[str, Any] = {**base, key: value}
                if plain_data(type_, data):
                    assert schema_accepts(type_, data), (type_, key, value)
