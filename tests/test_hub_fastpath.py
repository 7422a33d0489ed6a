"""The hub's fast path (hub_bridge/fastpath.py) never decides differently from the validator.

Whatever ``plainly_valid`` accepts, ``validate_envelope`` accepts; ``split_batch`` yields what
``json.loads`` yields; ``check_events`` gives the same events, rejects, reasons and stored
texts with the fast path as without it; and agents' batches do take the fast path.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.wire.envelope import (
    EnvelopeError,
    encode_batch,
    encode_checked,
    new_event_id,
    validate_envelope,
)
from edge_agent.wire.topics import TopicName
from hub_bridge.fastpath import _split_by_orjson, _split_by_scan, plainly_valid, split_batch
from hub_bridge.ingest import check_events

TOPIC = TopicName("acme", "van-1", "events")


def fix(seq: int, **data: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"lat": 52.37, "lon": 4.89, "mode": 3, "speed_mps": 8.5, "hdop": 0.9}
    d.update(data)
    return {
        "id": new_event_id(),
        "seq": seq,
        "fleet": "acme",
        "device": "van-1",
        "type": "gnss.fix",
        "ts": "2026-11-21T08:00:00.250Z",
        "clock": "gnss",
        "data": d,
    }


def scan(seq: int) -> dict[str, Any]:
    return {
        "id": new_event_id(),
        "seq": seq,
        "fleet": "acme",
        "device": "van-1",
        "type": "scan",
        "ts": "2026-11-21T08:00:01.000Z",
        "clock": "ntp",
        "data": {"text": f"JJD{seq:012d}", "symbology": "code128", "source": "handheld-1"},
        "ref": {"parcel": f"JJD{seq:012d}", "route": "r-1"},
    }


def canonical(env: dict[str, Any]) -> bytes:
    """The envelope as the agent's outbox encodes it."""
    return encode_checked(
        env["id"], env["seq"], env["fleet"], env["device"], env["type"], env["ts"],
        env["clock"], env["data"], env.get("ref"),
    )  # fmt: skip


def verdict(env: Any) -> str | None:
    try:
        validate_envelope(env)
    except EnvelopeError as exc:
        return str(exc)
    return None


def test_an_agents_batch_takes_the_fast_path_and_is_stored_as_sent() -> None:
    events = [fix(1), scan(2), fix(3, alt_m=-12, sats=11, quality=1, track_deg=359.9), fix(4)]
    payload = encode_batch([canonical(e) for e in events])
    split = split_batch(payload)
    assert split is not None
    texts, values = split
    assert values == events
    assert all(plainly_valid(e, "acme", "van-1") for e in values)
    out = check_events(TOPIC, payload, time.time())
    assert (out.dead_letter, out.rejects) == (None, [])
    assert out.events == events
    # the bodies are the device's own bytes, which are the canonical encoding
    assert (
        [b.encode() for b in out.bodies]
        == [canonical(e) for e in events]
        == [t.encode() for t in texts]
    )


@pytest.mark.parametrize(
    "payload",
    [
        b'{"events": [{"a":1}]}',  # whitespace: not the agents' layout
        b'{"events":[{"a":1}],"x":1}',
        b'{"events":[{"a":1}] }',
        b'{"events":[{"a":NaN}]}',
        b'{"events":[{"a":1} ,{"b":2}]}',
        b'{"events":[{"a":1}],"events":[{"b":2}]}',
        b'{"events":[{"a":1},]}',
        b'{"events":[{"a":"\xff"}]}',
        b'{"events":[{"a":1' + b"0" * 5000 + b"}]}",
        b'{"events":[{"a":' + b"[" * 5000 + b"]" * 5000 + b"}]}",
        b'{"events":[]}',
    ],
)
def test_split_batch_leaves_anything_unusual_to_the_general_parser(payload: bytes) -> None:
    assert split_batch(payload) is None


@pytest.mark.parametrize(
    "envelope_text",
    [
        b'{"a":1e-05}',  # Python writes 1e-05, orjson 1e-5: only the scan may say
        b'{"a":1e+16}',
        b'{"a":1E400}',  # out of range for a float
        b'{"a":-0.0,"b":0}',
        b'{"a":"\\u00e9"}',  # an escape orjson would not write
        b'{"a":"\xc3\xa9"}',  # the same character written as UTF-8
        b'{"a":"\\ud800"}',  # a lone surrogate
        b'{"a":18446744073709551616}',  # past 64 bits
        b'{"a":1,"a":2}',  # a duplicate key
        b'{"a":[1,2,{"b":null}],"c":true}',
    ],
)
def test_both_ways_of_splitting_give_the_same_texts_and_values(envelope_text: bytes) -> None:
    payload = b'{"events":[' + envelope_text + b"," + envelope_text + b"]}"
    scanned = _split_by_scan(payload)
    by_orjson = _split_by_orjson(payload)
    if by_orjson is not None:  # when orjson answers, it is exactly what the scan says
        assert by_orjson == scanned
    assert split_batch(payload) == scanned


@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            max_size=5,
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_splitting_random_batches_is_the_scans_answer(envelopes: list[dict[str, Any]]) -> None:
    texts = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in envelopes]
    payload = ('{"events":[' + ",".join(texts) + "]}").encode("utf-8", "surrogatepass")
    scanned = _split_by_scan(payload)
    by_orjson = _split_by_orjson(payload)
    if by_orjson is not None:
        assert by_orjson == scanned
    assert split_batch(payload) == scanned


def test_plainly_valid_is_never_looser_than_the_validator_on_known_edges() -> None:
    base = fix(7)
    edges: list[tuple[str, Any]] = [
        ("lat", 90), ("lat", 90.0000001), ("lat", -90.0), ("lat", True), ("lat", math.nan),
        ("lat", math.inf), ("lon", 180), ("lon", -180.5), ("mode", 2), ("mode", 4),
        ("mode", 3.0), ("mode", True), ("speed_mps", -0.0), ("speed_mps", -1e-9),
        ("speed_mps", None), ("track_deg", 360), ("track_deg", 360.5), ("sats", -1),
        ("sats", 2**63), ("sats", 2**63 - 1), ("quality", False), ("alt_m", 1e300),
        ("alt_m", -(2**63)), ("alt_m", -(2**63) - 1), ("hdop", "1"), ("extra", 1),
    ]  # fmt: skip
    for key, value in edges:
        env = {**base, "data": {**base["data"], key: value}}
        if plainly_valid(env, "acme", "van-1"):
            assert verdict(env) is None, (key, value)
    tops: list[tuple[str, Any]] = [
        ("seq", 0), ("seq", 2**53), ("seq", 2**53 - 1), ("seq", "1"), ("id", ""),
        ("id", "a b"), ("id", "x" * 129), ("id", "x" * 128), ("id", 'a"b'),
        ("ts", "2026-02-30T08:00:00.000Z"), ("ts", "2026-02-28T08:00:00.000Z\n"),
        ("ts", "2026-02-29T08:00:00.000Z"), ("clock", "gps"), ("clock", ["gnss"]),
        ("fleet", "other"), ("device", None), ("ref", None), ("ref", {}), ("ref", {"x": "y"}),
        ("ref", {"parcel": []}), ("ref", {"parcel": ["a", ""]}), ("ref", {"stop": "s" * 257}),
        ("ref", {"stop": "\ud800"}), ("type", "scan"), ("type", "trip.arrive"), ("extra", 1),
    ]  # fmt: skip
    for key, value in tops:
        env = {**base, key: value}
        if plainly_valid(env, "acme", "van-1"):
            assert verdict(env) is None, (key, value)
    assert not plainly_valid({k: v for k, v in base.items() if k != "clock"}, "acme", "van-1")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, 2, 3, -1, 90, 180, 360, 2**53, 2**63, "", "\ud800", "scan"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
FIX_KEYS = ["lat", "lon", "alt_m", "speed_mps", "track_deg", "mode", "quality", "hdop", "sats"]
SCAN_KEYS = ["text", "symbology", "source", "gs1"]
TOP_KEYS = ["id", "seq", "fleet", "device", "type", "ts", "clock", "data", "ref"]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    env = fix(draw(st.integers(1, 10**6))) if draw(st.booleans()) else scan(5)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "data", "drop-top", "drop-data"]))
        if where == "top":
            env[draw(st.sampled_from([*TOP_KEYS, "extra"]))] = draw(json_values)
        elif where == "drop-top":
            env.pop(draw(st.sampled_from(TOP_KEYS)), None)
        elif isinstance(env.get("data"), dict):
            keys = FIX_KEYS if env.get("type") == "gnss.fix" else SCAN_KEYS
            key = draw(st.sampled_from([*keys, "extra"]))
            if where == "data":
                env["data"] = {**env["data"], key: draw(json_values)}
            else:
                env["data"] = {k: v for k, v in env["data"].items() if k != key}
    return env


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_whatever_the_fast_path_accepts_the_validator_accepts(env: dict[str, Any]) -> None:
    if plainly_valid(env, "acme", "van-1"):
        assert verdict(env) is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=6))
def test_check_events_decides_the_same_with_and_without_the_fast_path(
    envs: list[dict[str, Any]],
) -> None:
    texts = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in envs]
    try:
        payload = ("{" + '"events":[' + ",".join(texts) + "]}").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a key: sent escaped, as JSON allows
        payload = json.dumps({"events": envs}, separators=(",", ":")).encode()
    now = 1_800_000_000.0
    fast = check_events(TOPIC, payload, now)
    slow = check_events(TOPIC, payload, now, fast=False)  # what the contract says
    again = check_events(TOPIC, payload.replace(b'{"events":[', b'{"events": [', 1), now)
    for other in (slow, again):
        assert fast.dead_letter == other.dead_letter
        assert fast.events == other.events
        assert fast.flags == other.flags
        assert [(r.reason, r.seq) for r in fast.rejects] == [
            (r.reason, r.seq) for r in other.rejects
        ]
        assert [json.loads(b) for b in fast.bodies] == [json.loads(b) for b in other.bodies]


@pytest.mark.parametrize("fast", [True, False])
def test_the_hubs_own_device_id_is_refused_from_any_device(fast: bool) -> None:
    """`hub` is the device of the hub's own exception events (issue 12): no device may use it."""
    from hub_bridge.ingest import HUB_DEVICE

    batch = json.dumps({"events": []}).encode()
    check = check_events(TopicName("acme", HUB_DEVICE, "events"), batch, time.time(), fast=fast)
    assert check.dead_letter is not None and "reserved" in check.dead_letter
    assert check.events == []


def test_a_stored_body_orjson_refuses_is_read_by_the_standard_parser() -> None:
    from hub_bridge.timeline import parse_stored

    assert parse_stored('{"a":1,"b":[1.5,"x"]}') == {"a": 1, "b": [1.5, "x"]}
    assert parse_stored(b'{"big":18446744073709551616}') == {"big": 2**64}  # past orjson's ints
    with pytest.raises(json.JSONDecodeError):
        parse_stored("{not json")
