"""The local projection against an independent ellipsoidal distance (Vincenty's inverse)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.trips.geo import LocalProjection


def vincenty_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance on WGS 84 (Vincenty 1975, inverse problem), to well under a millimetre."""
    a, f = 6378137.0, 1 / 298.257223563
    b = a * (1 - f)
    lam_l = math.radians(lon2 - lon1)
    u1 = math.atan((1 - f) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - f) * math.tan(math.radians(lat2)))
    su1, cu1, su2, cu2 = math.sin(u1), math.cos(u1), math.sin(u2), math.cos(u2)
    lam = lam_l
    for _ in range(200):
        sl, cl = math.sin(lam), math.cos(lam)
        ss = math.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        if ss == 0:
            return 0.0
        cs = su1 * su2 + cu1 * cu2 * cl
        sig = math.atan2(ss, cs)
        sa = cu1 * cu2 * sl / ss
        c2a = 1 - sa * sa
        c2sm = cs - 2 * su1 * su2 / c2a if c2a else 0.0
        c = f / 16 * c2a * (4 + f * (4 - 3 * c2a))
        prev = lam
        lam = lam_l + (1 - c) * f * sa * (sig + c * ss * (c2sm + c * cs * (-1 + 2 * c2sm**2)))
        if abs(lam - prev) < 1e-13:
            break
    u_2 = c2a * (a * a - b * b) / (b * b)
    big_a = 1 + u_2 / 16384 * (4096 + u_2 * (-768 + u_2 * (320 - 175 * u_2)))
    big_b = u_2 / 1024 * (256 + u_2 * (-128 + u_2 * (74 - 47 * u_2)))
    ds = (
        big_b
        * ss
        * (
            c2sm
            + big_b
            / 4
            * (cs * (-1 + 2 * c2sm**2) - big_b / 6 * c2sm * (-3 + 4 * ss**2) * (-3 + 4 * c2sm**2))
        )
    )
    return b * big_a * (sig - ds)


@pytest.mark.parametrize("lat0", [0.3, 37.8, 52.52, 64.1, -33.9])
def test_distances_within_50km_are_within_a_metre(lat0: float) -> None:
    proj = LocalProjection(lat0, 13.4)
    rng = random.Random(lat0)
    worst = 0.0
    for _ in range(400):
        pts = []
        for _ in range(2):
            d, th = 50_000 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            pts.append(proj.inverse(d * math.cos(th), d * math.sin(th)))
        (a1, b1), (a2, b2) = pts
        x1, y1 = proj.forward(a1, b1)
        x2, y2 = proj.forward(a2, b2)
        worst = max(worst, abs(math.hypot(x2 - x1, y2 - y1) - vincenty_m(a1, b1, a2, b2)))
    assert worst < 1.0


def test_a_zone_sized_distance_is_exact_to_centimetres() -> None:
    proj = LocalProjection(52.52, 13.405)
    rng = random.Random(3)
    for _ in range(200):
        # a point anywhere within 50 km, and one up to 1 km from it
        d, th = 50_000 * rng.random(), rng.uniform(0, 2 * math.pi)
        x, y = d * math.cos(th), d * math.sin(th)
        r, ph = 1_000 * rng.random(), rng.uniform(0, 2 * math.pi)
        lat1, lon1 = proj.inverse(x, y)
        lat2, lon2 = proj.inverse(x + r * math.cos(ph), y + r * math.sin(ph))
        x1, y1 = proj.forward(lat1, lon1)
        x2, y2 = proj.forward(lat2, lon2)
        assert abs(math.hypot(x2 - x1, y2 - y1) - vincenty_m(lat1, lon1, lat2, lon2)) < 0.02


def test_the_origin_is_zero_and_axes_point_east_and_north() -> None:
    proj = LocalProjection(48.137, 11.575)
    assert proj.forward(48.137, 11.575) == pytest.approx((0.0, 0.0), abs=1e-6)
    x, y = proj.forward(48.137, 11.585)
    assert x > 700 and abs(y) < 1.0
    x, y = proj.forward(48.147, 11.575)
    assert y > 1100 and abs(x) < 1e-6


@given(
    st.floats(-80, 80),
    st.floats(-179, 179),
    st.floats(-60_000, 60_000),
    st.floats(-60_000, 60_000),
)
def test_inverse_undoes_forward(lat0: float, lon0: float, x: float, y: float) -> None:
    proj = LocalProjection(lat0, lon0)
    lat, lon = proj.inverse(x, y)
    x2, y2 = proj.forward(lat, lon)
    assert math.hypot(x2 - x, y2 - y) < 1e-3


def test_an_origin_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        LocalProjection(91.0, 0.0)
