"""Distances on the Earth for the delivery model: haversine, metres, no geometry library.

The hub loads no geometry library (tests/test_layers.py): distances of a few kilometres between a
van and its stops need nothing more than the great-circle formula.
"""

from __future__ import annotations

import math

__all__ = ["EARTH_RADIUS_M", "distance_m"]

EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS 84 points (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
