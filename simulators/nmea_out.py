"""NMEA 0183 output: the sentences a receiver would send for one fix.

Simulators (the GNSS simulator, the fleet simulator of the trips work) turn a ``Fix`` into the
complete sentences of one epoch, as a real receiver emits them: ``$``, fields, ``*`` and a
two-digit checksum, ``\\r\\n``. The layout is NMEA 2.3 (GGA, RMC and VTG with the mode indicator,
GSA without the 4.10 system id), which every parser reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, timedelta

from edge_agent.gnss.fix import Fix

__all__ = ["KNOTS_PER_MPS", "checksum", "fix_to_nmea", "gsv_sentences", "nmea_lines", "sentence"]

KNOTS_PER_MPS = 3600.0 / 1852.0
_KMH_PER_MPS = 3.6


def checksum(body: str) -> str:
    """The two-digit hex XOR of the characters between ``$`` and ``*``."""
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


def sentence(body: str) -> str:
    """A complete sentence from its body (``GPGGA,...``): ``$body*CS\\r\\n``."""
    return f"${body}*{checksum(body)}\r\n"


def _lat(lat: float) -> tuple[str, str]:
    hemi = "N" if lat >= 0 else "S"
    a = abs(lat)
    deg = int(a)
    minutes = (a - deg) * 60.0
    # Rounding 59.9999995 to 6 decimals yields 60.000000: carry into the degrees.
    if round(minutes, 6) >= 60.0:
        deg, minutes = deg + 1, 0.0
    return f"{deg:02d}{minutes:09.6f}", hemi


def _lon(lon: float) -> tuple[str, str]:
    hemi = "E" if lon >= 0 else "W"
    a = abs(lon)
    deg = int(a)
    minutes = (a - deg) * 60.0
    if round(minutes, 6) >= 60.0:
        deg, minutes = deg + 1, 0.0
    return f"{deg:03d}{minutes:09.6f}", hemi


def _opt(value: float | int | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def gsv_sentences(talker: str, sats_in_view: int, *, seed: int = 0) -> list[str]:
    """GSV sentences for ``sats_in_view`` plausible satellites (PRN, elevation, azimuth, SNR).

    The constellation is a deterministic function of ``seed`` so consecutive epochs look stable.
    """
    n = max(0, sats_in_view)
    total = max(1, (n + 3) // 4)
    out: list[str] = []
    for msg in range(1, total + 1):
        fields = [f"{talker}GSV", str(total), str(msg), f"{n:02d}"]
        for i in range((msg - 1) * 4, min(n, msg * 4)):
            prn = 1 + (i * 7 + seed) % 32
            elev = 10 + (i * 23 + seed) % 80
            azim = (i * 67 + seed * 3) % 360
            snr = 25 + (i * 11 + seed) % 25
            fields += [f"{prn:02d}", f"{elev:02d}", f"{azim:03d}", f"{snr:02d}"]
        out.append(sentence(",".join(fields)))
    return out


def fix_to_nmea(
    fix: Fix,
    *,
    talker: str = "GP",
    sats_in_view: int = 10,
    gsv: bool = False,
) -> list[str]:
    """The sentences of one epoch for ``fix``: GGA, GSA, (GSV if ``gsv``), RMC, VTG.

    Each item is a complete sentence with ``$``, checksum and ``\\r\\n``. Unknown values of the fix
    (None) are empty fields. The order is an MTK receiver's: what a reader that ends the epoch on
    its last timed sentence (RMC, as gpsd does) needs comes before it.
    """
    # Round to the centisecond NMEA carries (a 10 Hz epoch at .299999 s is .30, not .29).
    t = fix.time.astimezone(UTC) + timedelta(microseconds=5000)
    hhmmss = f"{t:%H%M%S}.{t.microsecond // 10000:02d}"
    ddmmyy = f"{t:%d%m%y}"
    lat, ns = _lat(fix.lat)
    lon, ew = _lon(fix.lon)
    quality = fix.quality if fix.quality is not None else 1
    sats_used = fix.sats if fix.sats is not None else min(sats_in_view, 12)
    used = max(0, min(sats_used, 12))
    # GGA's altitude is above mean sea level; with no geoid model here the separation is empty.
    gga = ",".join(
        [
            f"{talker}GGA",
            hhmmss,
            lat,
            ns,
            lon,
            ew,
            str(quality),
            f"{sats_used:02d}",
            _opt(fix.hdop, ".1f"),
            _opt(fix.alt_m, ".1f"),
            "M" if fix.alt_m is not None else "",
            "",
            "",
            "",
            "",
        ]
    )
    speed_kn = None if fix.speed_mps is None else fix.speed_mps * KNOTS_PER_MPS
    mode_ind = {2: "D", 4: "R", 5: "F", 6: "E", 8: "S"}.get(quality, "A")
    rmc = ",".join(
        [
            f"{talker}RMC",
            hhmmss,
            "A",
            lat,
            ns,
            lon,
            ew,
            _opt(speed_kn, ".3f"),
            _opt(fix.track_deg, ".2f"),
            ddmmyy,
            "",
            "",
            mode_ind,
        ]
    )
    prns: Sequence[str] = [f"{1 + (i * 7) % 32:02d}" for i in range(used)]
    gsa = ",".join(
        [
            f"{talker}GSA",
            "A",
            str(3 if fix.mode >= 3 else 2),
            *prns,
            *([""] * (12 - used)),
            _opt(fix.pdop, ".1f"),
            _opt(fix.hdop, ".1f"),
            "",
        ]
    )
    vtg = ",".join(
        [
            f"{talker}VTG",
            _opt(fix.track_deg, ".2f"),
            "T",
            "",
            "M",
            _opt(speed_kn, ".3f"),
            "N",
            _opt(None if fix.speed_mps is None else fix.speed_mps * _KMH_PER_MPS, ".3f"),
            "K",
            mode_ind,
        ]
    )
    out = [sentence(gga), sentence(gsa)]
    if gsv:
        out += gsv_sentences(talker, sats_in_view, seed=t.second // 10)
    return [*out, sentence(rmc), sentence(vtg)]


def nmea_lines(fixes: Iterable[Fix]) -> Iterator[str]:
    """The NMEA sentences of each fix in turn, as a receiver would send them (a log's lines)."""
    for fix in fixes:
        yield from fix_to_nmea(fix)
