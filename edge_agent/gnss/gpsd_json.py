"""gpsd's JSON reports to fixes (sans-IO): what a ``gpsd://`` source means.

The driver (``edge_agent.drivers.gpsd``) watches gpsd and hands over each report decoded; its
``TPV`` reports with ``mode`` >= 2 and a ``time`` are fixes (the same rule the corpus test
applies to gpsd's ``.chk`` files).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from edge_agent.gnss.fix import Fix

__all__ = ["fix_from_tpv"]

# gpsd's fix status (gps.h STATUS_*) to the NMEA GGA quality the rest of the agent speaks.
_STATUS_TO_QUALITY = {1: 1, 2: 2, 3: 4, 4: 5, 5: 6, 6: 6, 7: 7, 8: 8}


def _num(obj: dict[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        return None
    return when.astimezone(UTC)


def fix_from_tpv(obj: dict[str, Any]) -> Fix | None:
    """A fix from a decoded TPV report, or None if it is not a 2D/3D fix with a time."""
    if obj.get("class") != "TPV":
        return None
    mode = obj.get("mode")
    when = _parse_time(obj.get("time"))
    lat, lon = _num(obj, "lat"), _num(obj, "lon")
    if mode not in (2, 3) or when is None or lat is None or lon is None:
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    speed = _num(obj, "speed")
    track = _num(obj, "track")
    status = obj.get("status", 1)
    alt = _num(obj, "altMSL")
    return Fix(
        time=when,
        lat=lat,
        lon=lon,
        alt_m=alt if alt is not None else _num(obj, "alt"),
        speed_mps=speed if speed is not None and speed >= 0 else None,
        track_deg=track % 360.0 if track is not None and 0 <= track <= 360 else None,
        mode=mode,
        quality=_STATUS_TO_QUALITY.get(status) if isinstance(status, int) else None,
    )
