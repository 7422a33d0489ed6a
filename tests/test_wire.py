"""The envelope, topics and the hub's batch check: pure code, fed good, bad and hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.platform.backoff import backoff_delay
from edge_agent.uplink import Ack, parse_ack
from edge_agent.wire import topics
from edge_agent.wire.envelope import (
    EnvelopeError,
    encode_batch,
    encode_envelope,
    format_ts,
    new_event_id,
    parse_ts,
    validate_envelope,
)
from edge_agent.wire.limits import ACK_MAX_BYTES, ACK_MAX_GOT
from hub_bridge.ingest import check_events

NOW = parse_ts("2026-11-21T08:00:00.000Z").timestamp()
TOPIC = topics.parse("lm/v1/acme/van-042/events")


def env(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": new_event_id(),
        "seq": 1,
        "fleet": "acme",
        "device": "van-042",
        "type": "pod",
        "ts": "2026-11-21T07:59:00.123Z",
        "clock": "gnss",
        "data": {"parcel": "P1", "kind": "signature", "sha256": "a" * 64},
        "ref": {"parcel": "P1", "stop": "s-3"},
    }
    base.update(over)
    return base


def test_a_valid_envelope_round_trips() -> None:
    e = env()
    assert validate_envelope(json.loads(encode_envelope(e))) == e


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"seq": 0}, "seq"),
        ({"seq": "1"}, "seq"),
        ({"seq": True}, "seq"),
        ({"fleet": "ACME"}, "fleet"),
        ({"device": ""}, "device"),
        ({"type": "teleport"}, "type"),
        ({"ts": "2026-11-21T07:59:00Z"}, "ts"),
        ({"ts": "2026-02-30T07:59:00.000Z"}, "ts"),
        ({"clock": "sundial"}, "clock"),
        ({"data": {"parcel": "P1", "kind": "hologram"}}, "data.kind"),
        ({"data": {"parcel": "P1", "kind": "photo", "sha256": "xyz"}}, "data.sha256"),
        ({"data": []}, "data"),
        ({"ref": {"planet": "mars"}}, "ref.planet"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_envelopes_name_the_field(change: dict[str, Any], path: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        validate_envelope(env(**change))
    assert info.value.path == path


def test_data_types_allow_new_fields_but_check_known_ones() -> None:
    fix = {"lat": 52.0, "lon": 4.0, "mode": 3, "hdop": 0.9, "vendor_extra": "ok"}
    validate_envelope(env(type="gnss.fix", data=fix))
    with pytest.raises(EnvelopeError, match=r"data\.lat"):
        validate_envelope(env(type="gnss.fix", data={**fix, "lat": 91}))
    validate_envelope(env(type="exception.damaged", data={"why": "wet"}))
    with pytest.raises(EnvelopeError, match="unknown event type"):
        validate_envelope(env(type="exception.", data={}))


def test_ts_format_and_parse() -> None:
    t = parse_ts("2026-11-21T08:15:02.123Z")
    assert format_ts(t) == "2026-11-21T08:15:02.123Z"
    with pytest.raises(ValueError, match="milliseconds"):
        parse_ts("2026-11-21 08:15:02")


def test_topics() -> None:
    assert topics.events("acme", "van-1") == "lm/v1/acme/van-1/events"
    assert topics.parse("lm/v1/acme/van-1/cmd/manifest") == ("acme", "van-1", "cmd", "manifest")
    for bad in ("lm/v1/acme/van-1", "lm/v2/acme/van-1/events", "lm/v1/Acme/v/events", "x/y"):
        with pytest.raises(EnvelopeError):
            topics.parse(bad)


def test_check_events_sorts_valid_rejected_and_flagged() -> None:
    payload = encode_batch(
        [
            encode_envelope(env(seq=1)),
            encode_envelope(env(seq=2, data={"parcel": "P2"})),
            encode_envelope(env(seq=3, ts="2027-01-01T00:00:00.000Z")),
        ]
    )
    out = check_events(TOPIC, payload, NOW)
    assert out.dead_letter is None
    assert [e["seq"] for e in out.events] == [1, 3]
    assert out.flags == [[], ["future-ts"]]
    assert out.rejects[0].seq == 2
    assert "events[1]: data.kind: missing" in out.rejects[0].reason


def test_check_events_dead_letters_forgery_and_oversize() -> None:
    forged = encode_batch([encode_envelope(env(seq=1)), encode_envelope(env(device="van-9"))])
    assert "forged" in (check_events(TOPIC, forged, NOW).dead_letter or "")
    big = encode_batch([encode_envelope(env(seq=i)) for i in range(1, 2000)])
    assert "oversize" in (check_events(TOPIC, big, NOW).dead_letter or "")
    assert "UTF-8" in (check_events(TOPIC, '{"events":[]}'.encode("utf-16"), NOW).dead_letter or "")


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_check_events_never_raises_on_bytes(payload: bytes) -> None:
    out = check_events(TOPIC, payload, NOW)
    assert out.dead_letter is not None or out.events or out.rejects


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)


@given(st.lists(st.dictionaries(st.sampled_from(list(env())), json_values), max_size=4))
@settings(max_examples=300, deadline=None)
def test_check_events_never_raises_on_mutated_envelopes(items: list[dict[str, Any]]) -> None:
    merged = [{**env(seq=i + 1), **item} for i, item in enumerate(items)]
    payload = json.dumps({"events": merged}).encode()
    out = check_events(TOPIC, payload, NOW)
    assert len(out.events) + len(out.rejects) == len(merged) or out.dead_letter is not None


def test_parse_ack() -> None:
    assert parse_ack(b'{"seq": 42}') == Ack(42)
    both = parse_ack(b'{"seq": 42, "top": 50, "check": [42, "abc"]}')
    assert both == Ack(42, 50, (42, "abc"))
    # a malformed optional part is ignored, the watermark still read
    assert parse_ack(b'{"seq": 42, "top": -3, "check": [1]}') == Ack(42)
    deep = b'{"seq": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    bad_acks = (b"", b"{", b'{"seq": -1}', b'{"seq": true}', b'{"seq": "4"}', b"[1]", b"\xff")
    for bad in (*bad_acks, deep, b'{"seq": 1' + b" " * ACK_MAX_BYTES + b"}"):
        assert parse_ack(bad) is None


def test_parse_ack_reads_the_names_of_what_was_stored_and_drops_malformed_ones() -> None:
    named = parse_ack(b'{"seq": 9, "got": [[1, 4, "0a1b"], [5, 9, "ff"]]}')
    assert named is not None and named.got == ((1, 4, "0a1b"), (5, 9, "ff"))
    assert parse_ack(b'{"seq": 9, "got": []}') == Ack(9, got=())  # names nothing, but names
    junk = [[4, 1, "x"], [1, 2], [1, 2, 3], [-1, 2, "x"], [1, True, "x"], [1, 2, "x" * 65], "x", 7]
    mixed = json.dumps({"seq": 9, "got": [*junk, [2, 3, "ok"]]}).encode()
    assert parse_ack(mixed) == Ack(9, got=((2, 3, "ok"),))
    assert parse_ack(b'{"seq": 9, "got": "x"}') == Ack(9, got=())
    many = json.dumps({"seq": 9, "got": [[i, i, "d"] for i in range(1, 500)]}).encode()
    parsed = parse_ack(many)
    assert parsed is not None and parsed.got is not None and len(parsed.got) == ACK_MAX_GOT


def test_backoff_is_capped_full_jitter() -> None:
    assert backoff_delay(0, base=1, cap=60, rand=lambda: 1.0) == 1.0
    assert backoff_delay(3, base=1, cap=60, rand=lambda: 1.0) == 8.0
    assert backoff_delay(100, base=1, cap=60, rand=lambda: 1.0) == 60.0
    assert backoff_delay(5, base=1, cap=60, rand=lambda: 0.0) == 0.0
