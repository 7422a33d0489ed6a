"""The hub's fast path through a well-formed batch: pure, no I/O, never the last word.

Three helpers for ``hub_bridge.ingest.check_events``, each of which may only say "plainly fine"
or "don't know" (then the general path runs, the shared validator decides and words the reason):

- ``split_batch(payload)``: a payload in the agents' own layout (``encode_batch``:
  ``{"events":[E,E,...]}``, no whitespace) is cut into its envelopes, each parsed by the C
  scanner, each with its exact text. Anything else (whitespace, other keys, ``NaN``, a huge
  integer, not UTF-8) returns None and the payload is parsed as before.
- ``plainly_valid(env, fleet, device)``: True only for a ``gnss.fix`` or ``scan`` envelope of
  the topic's device whose every field is inside the contract by plain type and range tests
  (no unknown field, no field the registry would need a schema for). Whatever it accepts the
  shared validator accepts too (``tests/test_hub_fastpath.py`` holds them together on valid,
  mutated and random envelopes); it rejects nothing.
- ``canonical_head(env)``: the start of the envelope's canonical encoding (up to ``"data":``),
  so that a device's own canonical text can be stored as it came instead of encoded again.
"""

from __future__ import annotations

import json
import re
from datetime import date
from functools import lru_cache
from typing import Any

from edge_agent.wire.envelope import CLOCKS, SEQ_MAX, TS_RE
from edge_agent.wire.jsonbounds import INT_MAX, INT_MIN

__all__ = ["canonical_head", "plainly_valid", "split_batch"]

_OPEN = '{"events":['
_CLOSE = "]}"


def _refuse_constant(text: str) -> Any:
    raise ValueError(text)  # NaN, Infinity: the general path words it


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_scan = _DECODER.raw_decode


def split_batch(payload: bytes) -> tuple[list[str], list[Any]] | None:
    """The texts and values of a batch's envelopes, or None when the payload is not plainly in
    the agents' layout (``{"events":[...]}`` compact, at least one element)."""
    if not (payload.startswith(b'{"events":[{') and payload.endswith(b"}]}")):
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    texts: list[str] = []
    values: list[Any] = []
    end = len(text) - len(_CLOSE)
    pos = len(_OPEN)
    try:
        while True:
            value, stop = _scan(text, pos)
            texts.append(text[pos:stop])
            values.append(value)
            if stop == end:
                return texts, values
            if text[stop] != ",":
                return None
            pos = stop + 1
    except (ValueError, RecursionError, IndexError):
        # not JSON, a constant, an integer past Python's digit limit, too deep: the general
        # path parses it again and says what it is
        return None


_ID = re.compile(r"[\x21-\x7e]{1,128}")
_TS = re.compile(TS_RE)
_PLAIN_ID = re.compile(r"[!#-\[\]-~]{1,128}")  # as it is in JSON: no quote, no backslash
_ENVELOPE_KEYS = frozenset(("id", "seq", "fleet", "device", "type", "ts", "clock", "data", "ref"))
_REF_KEYS = frozenset(("parcel", "shipment", "stop", "route", "vehicle", "dock"))
_FIX_KEYS = frozenset(
    ("lat", "lon", "alt_m", "speed_mps", "track_deg", "mode", "quality", "hdop", "pdop", "sats")
)
_SCAN_KEYS = frozenset(("text", "symbology", "source", "gs1"))
_CLOCKS = frozenset(CLOCKS)


@lru_cache(maxsize=4096)
def _real_day(day: str) -> bool:
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


def _number(v: Any, lo: float, hi: float) -> bool:
    """A finite float or a 64-bit int within [lo, hi] (a strict float field takes both)."""
    t = type(v)
    if t is float or t is int:
        x: float = v
        return lo <= x <= hi  # False for NaN; infinities are outside every range used here
    return False


_ANY = float(INT_MAX)


def _opt_number(v: Any, lo: float, hi: float = _ANY) -> bool:
    if v is None:
        return True
    t = type(v)
    if t is float:
        x: float = v
        return lo <= x <= hi and x - x == 0.0  # finite
    if t is int:
        n: int = v
        return max(lo, INT_MIN) <= n <= min(hi, INT_MAX)
    return False


def _opt_count(v: Any) -> bool:
    return v is None or (type(v) is int and 0 <= v <= INT_MAX)


def _text(v: Any, most: int) -> bool:
    # ASCII only here: a non-ASCII string may hold a lone surrogate, the general path looks
    return type(v) is str and 0 < len(v) <= most and v.isascii()


def _fix(data: dict[str, Any]) -> bool:
    if not data.keys() <= _FIX_KEYS:
        return False
    g = data.get
    return (
        _number(g("lat"), -90.0, 90.0)
        and _number(g("lon"), -180.0, 180.0)
        and type(g("mode")) is int
        and g("mode") in (2, 3)
        and _opt_number(g("alt_m"), -_ANY)
        and _opt_number(g("speed_mps"), 0.0)
        and _opt_number(g("track_deg"), 0.0, 360.0)
        and _opt_count(g("quality"))
        and _opt_number(g("hdop"), 0.0)
        and _opt_number(g("pdop"), 0.0)
        and _opt_count(g("sats"))
    )


def _scan_data(data: dict[str, Any]) -> bool:
    return (
        data.keys() <= _SCAN_KEYS
        and _text(data.get("text"), 8192)
        and _text(data.get("symbology"), 64)
        and _text(data.get("source"), 128)
        and data.get("gs1") is None
    )


def _ref(ref: Any) -> bool:
    if type(ref) is not dict or not ref or not ref.keys() <= _REF_KEYS:
        return False
    for key, value in ref.items():
        if type(value) is list and key == "parcel":
            if not value or not all(_text(v, 256) for v in value):
                return False
        elif not _text(value, 256):
            return False
    return True


def plainly_valid(env: Any, fleet: str, device: str) -> bool:
    """Whether ``env`` is a ``gnss.fix`` or ``scan`` of ``fleet``/``device`` that the shared
    validator accepts, as far as plain tests can tell; False means "ask the validator"."""
    if type(env) is not dict or not env.keys() <= _ENVELOPE_KEYS:
        return False
    eid, seq, ts, data = env.get("id"), env.get("seq"), env.get("ts"), env.get("data")
    if not (
        type(eid) is str
        and _ID.fullmatch(eid)
        and type(seq) is int
        and 1 <= seq <= SEQ_MAX
        and env.get("fleet") == fleet
        and env.get("device") == device
        and type(env.get("clock")) is str
        and env["clock"] in _CLOCKS
        and type(ts) is str
        and _TS.fullmatch(ts)
        and _real_day(ts[:10])
        and type(data) is dict
        and ("ref" not in env or _ref(env["ref"]))
    ):
        return False
    type_ = env.get("type")
    if type_ == "gnss.fix":
        return _fix(data)
    if type_ == "scan":
        return _scan_data(data)
    return False


def canonical_head(env: dict[str, Any]) -> str:
    """``encode_checked``'s output up to and including ``"data":`` for a valid envelope (or a
    string no text starts with, when its id needs escaping)."""
    eid = env["id"]
    if not _PLAIN_ID.fullmatch(eid):
        return "\x00"  # never a prefix of JSON text: the caller encodes the envelope
    return (
        f'{{"id":"{eid}","seq":{env["seq"]},"fleet":"{env["fleet"]}","device":"{env["device"]}",'
        f'"type":"{env["type"]}","ts":"{env["ts"]}","clock":"{env["clock"]}","data":'
    )
