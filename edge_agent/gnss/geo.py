"""The little spherical geometry filters and reporting need (no projection, no dependency)."""

from __future__ import annotations

import math

__all__ = ["EARTH_RADIUS_M", "angle_between", "distance_m"]

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine; within 0.5% of the ellipsoid)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def angle_between(a_deg: float, b_deg: float) -> float:
    """The smaller angle between two headings, 0 to 180 degrees."""
    d = abs(a_deg - b_deg) % 360.0
    return 360.0 - d if d > 180.0 else d
