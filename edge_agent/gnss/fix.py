"""One position fix, as fix assembly produces it and filters, trips and events consume it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Fix"]


@dataclass(frozen=True, slots=True)
class Fix:
    """A valid GNSS fix of one epoch. ``time`` is timezone-aware UTC; unknowns are None."""

    time: datetime
    lat: float
    lon: float
    alt_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None
    mode: int = 2
    quality: int | None = None
    hdop: float | None = None
    pdop: float | None = None
    sats: int | None = None

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of a ``gnss.fix`` event (DESIGN §2 registry)."""
        return {
            "lat": self.lat,
            "lon": self.lon,
            "alt_m": self.alt_m,
            "speed_mps": self.speed_mps,
            "track_deg": self.track_deg,
            "mode": self.mode,
            "quality": self.quality,
            "hdop": self.hdop,
            "pdop": self.pdop,
            "sats": self.sats,
        }
