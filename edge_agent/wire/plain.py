"""Plain tests for the data of the hot event types: a quick "certainly valid" before pydantic.

Nearly every event a van records is a ``gnss.fix`` or a ``scan`` whose data holds only the
registry's fields, as ASCII strings and finite numbers. For those, a few type and range tests
decide what the registry's schema and the bounds of ``edge_agent.wire.jsonbounds`` would decide,
at a fraction of the cost of building a pydantic model per event. The tests only ever answer
"valid" or "ask the validator": anything unusual (another type, an unknown or extra field, a
non-ASCII string, which may hold a lone surrogate, a bool where a number goes, ``gs1``) falls
back to the full validation, which names what is wrong. ``tests/test_plain.py`` holds every
"valid" here to the schema's answer.
"""

from __future__ import annotations

from typing import Any

from edge_agent.wire.jsonbounds import INT_MAX, INT_MIN

__all__ = ["plain_data", "plain_ref"]

_FIX_KEYS = frozenset(
    ("lat", "lon", "alt_m", "speed_mps", "track_deg", "mode", "quality", "hdop", "pdop", "sats")
)
_SCAN_KEYS = frozenset(("text", "symbology", "source"))
_REF_KEYS = frozenset(("parcel", "shipment", "stop", "route", "vehicle", "dock"))
_BIG = float(INT_MAX)


def _number(v: Any, lo: float, hi: float) -> bool:
    """A float or a 64-bit int within [lo, hi] (a strict float field takes both); NaN fails
    every comparison, and the ranges used here hold no infinity."""
    t = type(v)
    if t is float:
        x: float = v
        return lo <= x <= hi and x - x == 0.0
    if t is int:
        n: int = v
        return max(lo, INT_MIN) <= n <= min(hi, INT_MAX)
    return False


def _opt_number(v: Any, lo: float, hi: float = _BIG) -> bool:
    return v is None or _number(v, lo, hi)


def _opt_count(v: Any) -> bool:
    return v is None or (type(v) is int and 0 <= v <= INT_MAX)


def _text(v: Any, most: int) -> bool:
    # ASCII only: a non-ASCII string may hold a lone surrogate, the full path looks at those
    return type(v) is str and 0 < len(v) <= most and v.isascii()


def _fix(data: dict[str, Any]) -> bool:
    if not data.keys() <= _FIX_KEYS:
        return False
    g = data.get
    mode = g("mode")
    return (
        _number(g("lat"), -90.0, 90.0)
        and _number(g("lon"), -180.0, 180.0)
        and type(mode) is int
        and mode in (2, 3)
        and _opt_number(g("alt_m"), -_BIG)
        and _opt_number(g("speed_mps"), 0.0)
        and _opt_number(g("track_deg"), 0.0, 360.0)
        and _opt_count(g("quality"))
        and _opt_number(g("hdop"), 0.0)
        and _opt_number(g("pdop"), 0.0)
        and _opt_count(g("sats"))
    )


def _scan(data: dict[str, Any]) -> bool:
    return (
        data.keys() <= _SCAN_KEYS
        and _text(data.get("text"), 8192)
        and _text(data.get("symbology"), 64)
        and _text(data.get("source"), 128)
    )


def plain_data(type_: str, data: Any) -> bool:
    """Whether ``data`` of ``type_`` is certainly valid (schema and bounds); False: ask
    ``validate_data``."""
    if type(data) is not dict:
        return False
    if type_ == "scan":
        return _scan(data)
    if type_ == "gnss.fix":
        return _fix(data)
    return False


def plain_ref(ref: Any) -> bool:
    """Whether ``ref`` is certainly a valid, non-empty reference object; False: ask ``Ref``."""
    if type(ref) is not dict or not ref or not ref.keys() <= _REF_KEYS:
        return False
    for key, value in ref.items():
        if type(value) is list and key == "parcel":
            if not value or not all(_text(v, 256) for v in value):
                return False
        elif not _text(value, 256):
            return False
    return True
