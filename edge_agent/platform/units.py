"""Values with units in configuration: ``"20s"``, ``"5m"``, ``"500m"`` (metres), ``"64MiB"``.

Units live in values (ESPHome habit), so a config file says what it means. Plain numbers are
accepted in the base unit (seconds, metres, bytes).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["ByteSize", "Distance", "Duration", "parse_bytes", "parse_distance", "parse_duration"]

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_DISTANCE_UNITS = {"m": 1.0, "km": 1000.0, "mi": 1609.344, "ft": 0.3048}


def _parse(value: object, units: dict[str, float], what: str, default_unit: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number with a unit, not a boolean")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(_NUM + r"\s*([a-zA-Z]*)", value.strip())
        if m is None:
            raise ValueError(f"{value!r} is not a {what} (for example 10{default_unit})")
        unit = m.group(2).lower()
        if unit not in units:
            known = ", ".join(sorted(u for u in units if u))
            raise ValueError(f"{value!r}: unknown unit {m.group(2)!r} (one of {known})")
        result = float(m.group(1)) * units[unit]
    else:
        raise ValueError(f"{what} must be a number or a string with a unit")
    if result < 0:
        raise ValueError(f"{what} must not be negative")
    return result


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"20s"``, ``"5m"``, ``"2h"``, ``"1d"`` or a number of seconds."""
    return _parse(value, _DURATION_UNITS, "duration", "s")


def parse_bytes(value: object) -> int:
    """Bytes from ``"64MiB"``, ``"500kB"`` or a number of bytes."""
    return int(_parse(value, {k: float(v) for k, v in _BYTE_UNITS.items()}, "size", "MiB"))


def parse_distance(value: object) -> float:
    """Metres from ``"500m"``, ``"0.5mi"``, ``"2km"`` or a number of metres."""
    return _parse(value, _DISTANCE_UNITS, "distance", "m")


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
Distance = Annotated[float, BeforeValidator(parse_distance)]
