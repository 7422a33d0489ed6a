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

import functools
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


# The same time, date and position strings recur across the sentences of an epoch (and the
# date all day): the pure field parsers are memoised.
_memo = functools.lru_cache(maxsize=64)


@_memo
def parse_hms(text: str) -> int | None:
    """Microseconds since midnight from ``hhmmss`` or ``hhmmss.s...``; None if malformed."""
    head = text[:6]
    if len(head) < 6 or not head.isdigit():
        return None
    h, rest = divmod(int(head), 10000)
    m, s = divmod(rest, 100)
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


@_memo
def parse_latlon(value: str, hemisphere: str, *, is_lat: bool) -> float | None:
    """Degrees from NMEA ``(d)ddmm.mmmm`` and its hemisphere letter; None if malformed."""
    # Digits with at most one dot, and at least "dmm" before it.
    if not value.replace(".", "", 1).isdigit():
        return None
    dot = value.find(".")
    if (len(value) if dot < 0 else dot) < 3:
        return None
    v = float(value)
    deg = int(v // 100.0)
    minutes = v - deg * 100.0
    if minutes >= 60.0:
        return None
    degrees = deg + minutes / 60.0
    if is_lat:
        if degrees > 90.0:
            return None
        if hemisphere == "N":
            return degrees
        return -degrees if hemisphere == "S" else None
    if degrees > 180.0:
        return None
    if hemisphere == "E":
        return degrees
    return -degrees if hemisphere == "W" else None


def _valid_date(year: int, month: int, day: int) -> tuple[int, int, int] | None:
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if month == 2 and day == 29 and not leap:
        return None
    return year, month, day


@_memo
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


# Readers: each returns a function of the sentence's fields, bound to a field number. ``decode``
# pads the fields to the layout's width first, so a reader never indexes past the end.


def _field(i: int) -> Reader:
    def read(f: Sequence[str]) -> str | None:
        return f[i] or None

    read.width = i + 1  # type: ignore[attr-defined]
    return read


def _char(i: int) -> Reader:
    def read(f: Sequence[str]) -> str | None:
        t = f[i]
        return t[0].upper() if t else None

    read.width = i + 1  # type: ignore[attr-defined]
    return read


def _num(i: int) -> Reader:
    def read(f: Sequence[str]) -> float | None:
        t = f[i]
        if not t:
            return None
        try:
            v = float(t)
        except ValueError:
            return None
        return v if -1e15 < v < 1e15 else None  # refuses nan and inf too

    read.width = i + 1  # type: ignore[attr-defined]
    return read


def _int(i: int) -> Reader:
    def read(f: Sequence[str]) -> int | None:
        t = f[i]
        return int(t) if t.isdigit() else None

    read.width = i + 1  # type: ignore[attr-defined]
    return read


def _hms(i: int) -> Reader:
    def read(f: Sequence[str]) -> int | None:
        t = f[i]
        return parse_hms(t) if t else None

    read.width = i + 1  # type: ignore[attr-defined]
    return read


def _lat(i: int) -> Reader:
    def read(f: Sequence[str]) -> float | None:
        return parse_latlon(f[i], f[i + 1], is_lat=True)

    read.width = i + 2  # type: ignore[attr-defined]
    return read


def _lon(i: int) -> Reader:
    def read(f: Sequence[str]) -> float | None:
        return parse_latlon(f[i], f[i + 1], is_lat=False)

    read.width = i + 2  # type: ignore[attr-defined]
    return read


def _ddmmyy(i: int) -> Reader:
    def read(f: Sequence[str]) -> tuple[int, int, int] | None:
        return parse_ddmmyy(f[i])

    read.width = i + 1  # type: ignore[attr-defined]
    return read


def _zda_date(f: Sequence[str]) -> tuple[int, int, int] | None:
    if not (f[2].isdigit() and f[3].isdigit() and len(f[4]) == 4 and f[4].isdigit()):
        return None
    return _valid_date(int(f[4]), int(f[3]), int(f[2]))


_zda_date.width = 5  # type: ignore[attr-defined]


def _count_used(lo: int, hi: int) -> Reader:
    def read(f: Sequence[str]) -> int:
        used = f[lo : hi + 1]
        return len(used) - used.count("")

    read.width = lo + 1  # type: ignore[attr-defined]
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
    # Read only for its time, which marks the cycle like any other.
    "GBS": {"time": _hms(1)},
}


# Per layout: (name, reader) pairs and the number of fields the readers need.
_COMPILED: dict[str, tuple[tuple[tuple[str, Reader], ...], int]] = {
    name: (tuple(layout.items()), max(getattr(r, "width", 0) for r in layout.values()))
    for name, layout in LAYOUTS.items()
}
_PAD = ("",) * 32


def decode(sentence: Sentence) -> dict[str, Any] | None:
    """The named fields of a sentence by its layout; None for a sentence with no layout."""
    kind = sentence.kind
    f = sentence.fields
    if kind == "VTG" and (len(f) < 9 or f[2] not in ("T", "")):
        kind = "VTG/1.5"
    compiled = _COMPILED.get(kind)
    if compiled is None or sentence.talker == "P":
        return None
    readers, width = compiled
    if len(f) < width:
        f = f + _PAD[: width - len(f)]
    return {name: read(f) for name, read in readers}
