"""Field layouts of the NMEA sentences fix assembly reads, as data, and one codec for them.

Each layout maps a field name to a reader bound to the field's position, so a receiver quirk
or a new NMEA version is a table edit, not new code. Readers never raise: an empty or malformed
field reads as None, and ``decode`` returns None for a sentence it has no layout for.

Layouts cover NMEA 2.x to 4.11: RMC with the 2.3 mode indicator (field 12) and the 4.1
navigational status (field 13), GSA with the 4.11 system id (field 18), GNS with one mode
character per constellation, GLL with and without the 2.x status fields, and VTG in both the
NMEA 2.x layout (``track,T,mtrack,M,kn,N,kmh,K[,mode]``) and the older four-field one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edge_agent.gnss.nmea import Sentence

__all__ = [
    "LAYOUTS",
    "decode",
    "parse_ddmmyy",
    "parse_hms",
    "parse_latlon",
]

Reader = Callable[[Sequence[str]], Any]
Layout = Mapping[str, Reader]

_US_PER_S = 1_000_000
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_hms(text: str) -> int | None:
    """Microseconds since midnight from ``hhmmss`` or ``hhmmss.s...``; None if malformed."""
    if len(text) < 6 or not text[:6].isdigit():
        return None
    h, m, s = int(text[0:2]), int(text[2:4]), int(text[4:6])
    # A leap second (ss = 60) has no place in a datetime; that one epoch is dropped.
    if h > 23 or m > 59 or s > 59:
        return None
    us = 0
    if len(text) > 6:
        frac = text[7:]
        if text[6] != "." or (frac and not frac.isdigit()):
            return None
        # Integer arithmetic: "20.60" must be exactly 600 ms, not 599.999...
        us = int((frac + "000000")[:6]) if frac else 0
    return ((h * 60 + m) * 60 + s) * _US_PER_S + us


def parse_latlon(value: str, hemisphere: str, *, is_lat: bool) -> float | None:
    """Degrees from NMEA ``(d)ddmm.mmmm`` and its hemisphere letter; None if malformed."""
    if not value or not hemisphere:
        return None
    dot = value.find(".")
    cut = (len(value) if dot < 0 else dot) - 2
    if cut < 1:
        return None
    deg_text = value[:cut]
    if not deg_text.isdigit():
        return None
    try:
        minutes = float(value[cut:])
    except ValueError:
        return None
    if not 0.0 <= minutes < 60.0:
        return None
    degrees = int(deg_text) + minutes / 60.0
    limit, positive, negative = (90.0, "N", "S") if is_lat else (180.0, "E", "W")
    if degrees > limit:
        return None
    if hemisphere == positive:
        return degrees
    if hemisphere == negative:
        return -degrees
    return None


def _valid_date(year: int, month: int, day: int) -> tuple[int, int, int] | None:
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if month == 2 and day == 29 and not leap:
        return None
    return year, month, day


def parse_ddmmyy(text: str) -> tuple[int, int, int] | None:
    """(year, month, day) from ``ddmmyy``; two-digit years 80-99 are 1980-1999.

    GPS time starts in 1980, so ``yy`` >= 80 cannot be this century's (a Telit module that
    lost the week rollover sends ``99`` for 2019, corrected later from the reference date).
    """
    if len(text) != 6 or not text.isdigit():
        return None
    yy = int(text[4:6])
    year = 1900 + yy if yy >= 80 else 2000 + yy
    return _valid_date(year, int(text[2:4]), int(text[0:2]))


# Readers: each returns a function of the sentence's fields, bound to a field number.


def _field(i: int) -> Reader:
    def read(f: Sequence[str]) -> str | None:
        return f[i] if len(f) > i and f[i] else None

    return read


def _char(i: int) -> Reader:
    def read(f: Sequence[str]) -> str | None:
        return f[i][0].upper() if len(f) > i and f[i] else None

    return read


def _num(i: int) -> Reader:
    def read(f: Sequence[str]) -> float | None:
        if len(f) <= i or not f[i]:
            return None
        try:
            v = float(f[i])
        except ValueError:
            return None
        return v if math.isfinite(v) else None

    return read


def _int(i: int) -> Reader:
    def read(f: Sequence[str]) -> int | None:
        if len(f) <= i:
            return None
        t = f[i]
        return int(t) if t.isdigit() else None

    return read


def _hms(i: int) -> Reader:
    def read(f: Sequence[str]) -> int | None:
        return parse_hms(f[i]) if len(f) > i and f[i] else None

    return read


def _lat(i: int) -> Reader:
    def read(f: Sequence[str]) -> float | None:
        return parse_latlon(f[i], f[i + 1], is_lat=True) if len(f) > i + 1 else None

    return read


def _lon(i: int) -> Reader:
    def read(f: Sequence[str]) -> float | None:
        return parse_latlon(f[i], f[i + 1], is_lat=False) if len(f) > i + 1 else None

    return read


def _ddmmyy(i: int) -> Reader:
    def read(f: Sequence[str]) -> tuple[int, int, int] | None:
        return parse_ddmmyy(f[i]) if len(f) > i else None

    return read


def _zda_date(f: Sequence[str]) -> tuple[int, int, int] | None:
    if len(f) < 5 or not (f[2].isdigit() and f[3].isdigit() and len(f[4]) == 4):
        return None
    if not f[4].isdigit():
        return None
    return _valid_date(int(f[4]), int(f[3]), int(f[2]))


def _count_used(lo: int, hi: int) -> Reader:
    def read(f: Sequence[str]) -> int:
        return sum(1 for x in f[lo : hi + 1] if x)

    return read


# Field numbers as the NMEA standard gives them (fields[0] is the address).
LAYOUTS: dict[str, Layout] = {
    "GGA": {
        "time": _hms(1),
        "lat": _lat(2),
        "lon": _lon(4),
        "quality": _int(6),
        "sats": _int(7),
        "hdop": _num(8),
        "alt": _num(9),
    },
    "RMC": {
        "time": _hms(1),
        "status": _char(2),
        "lat": _lat(3),
        "lon": _lon(5),
        "speed_kn": _num(7),
        "track": _num(8),
        "date": _ddmmyy(9),
        "faa": _char(12),  # NMEA 2.3+: A D E F M N P R S
    },
    "GNS": {
        "time": _hms(1),
        "lat": _lat(2),
        "lon": _lon(4),
        "modes": _field(6),  # NMEA 4: one character per constellation
        "sats": _int(7),
        "hdop": _num(8),
        "alt": _num(9),
    },
    "GLL": {
        "lat": _lat(1),
        "lon": _lon(3),
        "time": _hms(5),
        "status": _char(6),
        "faa": _char(7),
    },
    "VTG": {  # NMEA 2.x and later
        "track": _num(1),
        "speed_kn": _num(5),
        "speed_kmh": _num(7),
        "faa": _char(9),
    },
    "VTG/1.5": {  # NMEA 1.5 / 2.0: track true, track magnetic, knots, km/h
        "track": _num(1),
        "speed_kn": _num(3),
        "speed_kmh": _num(4),
    },
    "GSA": {
        "fix_mode": _int(2),
        "used": _count_used(3, 14),
        "pdop": _num(15),
        "hdop": _num(16),
        "system": _int(18),  # NMEA 4.11
    },
    "ZDA": {
        "time": _hms(1),
        "date": _zda_date,
    },
    # Sentences read only for their time, which marks the cycle like any other.
    "GST": {"time": _hms(1)},
    "GBS": {"time": _hms(1)},
    "GRS": {"time": _hms(1)},
}


def _layout_name(sentence: Sentence) -> str:
    kind = sentence.kind
    if kind == "VTG" and (len(sentence.fields) < 9 or sentence.fields[2] not in ("T", "")):
        return "VTG/1.5"
    return kind


def decode(sentence: Sentence) -> dict[str, Any] | None:
    """The named fields of a sentence by its layout; None for a sentence with no layout."""
    if sentence.talker == "P":
        return None
    layout = LAYOUTS.get(_layout_name(sentence))
    if layout is None:
        return None
    f = sentence.fields
    return {name: read(f) for name, read in layout.items()}
