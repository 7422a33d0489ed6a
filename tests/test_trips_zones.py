"""Zone geometry (circle and polygon arithmetic against shapely) and the zone index."""

from __future__ import annotations

import math
import random

import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.trips.config import GeofenceConfig, TripsConfig
from edge_agent.trips.geo import LocalProjection
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.zones import CircleZone, PolygonZone, ZoneSet

PROJ = LocalProjection(52.52, 13.405)


def _circle(r: float = 50.0, margin: float = 15.0) -> CircleZone:
    return CircleZone(
        key="zone:c",
        kind="zone",
        name="c",
        lat=52.52,
        lon=13.405,
        margin_in=margin,
        margin_out=margin,
        bbox=(-r, -r, r, r),
        fingerprint="x",
        r=r,
    )


def _polygon(ring: list[tuple[float, float]], margin: float = 15.0) -> PolygonZone:
    xs, ys = zip(*ring, strict=True)
    return PolygonZone(
        key="zone:p",
        kind="zone",
        name="p",
        lat=0.0,
        lon=0.0,
        margin_in=margin,
        margin_out=margin,
        bbox=(min(xs), min(ys), max(xs), max(ys)),
        fingerprint="y",
        ring=tuple(ring),
    )


# an L-shaped (concave) yard
L_RING = [(0.0, 0.0), (200.0, 0.0), (200.0, 60.0), (80.0, 60.0), (80.0, 150.0), (0.0, 150.0)]
coords = st.floats(-300, 300, allow_nan=False)


@given(coords, coords)
def test_polygon_signed_distance_matches_shapely(x: float, y: float) -> None:
    z = _polygon(L_RING)
    poly = shapely.Polygon(L_RING)
    d = poly.exterior.distance(shapely.Point(x, y))
    expected = -d if poly.contains(shapely.Point(x, y)) else d
    assert math.isclose(z.signed(x, y), expected, abs_tol=1e-6)


@given(coords, coords)
def test_circle_signed_distance_is_distance_to_the_rim(x: float, y: float) -> None:
    z = _circle(50.0)
    assert math.isclose(z.signed(x, y), math.hypot(x, y) - 50.0, abs_tol=1e-9)


@given(coords, coords, coords, coords)
@settings(max_examples=300)
def test_crossings_lie_on_the_boundary(x1: float, y1: float, x2: float, y2: float) -> None:
    for z in (_circle(50.0), _polygon(L_RING)):
        for u in z.crossings(x1, y1, x2, y2):
            assert 0.0 <= u <= 1.0
            px, py = x1 + u * (x2 - x1), y1 + u * (y2 - y1)
            assert abs(z.signed(px, py)) < 1e-6
        s1, s2 = z.signed(x1, y1), z.signed(x2, y2)
        if min(abs(s1), abs(s2)) > 1e-6 and (s1 < 0) != (s2 < 0):
            # from one side to the other (neither end on the boundary): it is crossed
            assert z.crossings(x1, y1, x2, y2)


def test_passes_deep_needs_the_segment_to_reach_the_margin() -> None:
    c = _circle(50.0, margin=15.0)
    assert c.passes_deep(-100.0, 30.0, 100.0, 30.0)  # 30 m from the centre: 20 m deep
    assert not c.passes_deep(-100.0, 40.0, 100.0, 40.0)  # 10 m deep: not enough
    p = _polygon(L_RING)
    assert p.passes_deep(-50.0, 30.0, 250.0, 30.0)  # across the 60 m arm, 30 m deep
    # the concave corner: a segment outside the L, along its inner edges, is not inside at all
    assert not p.passes_deep(100.0, 80.0, 200.0, 80.0)


@given(
    st.lists(st.tuples(coords, coords, st.floats(5, 120)), min_size=1, max_size=40), coords, coords
)
@settings(max_examples=100)
def test_the_index_never_misses_a_zone_containing_the_point(
    circles: list[tuple[float, float, float]], x: float, y: float
) -> None:
    zones = []
    for k, (cx, cy, r) in enumerate(circles):
        z = _circle(r)
        z.key, z.cx, z.cy, z.bbox = (
            f"zone:{k}",
            cx,
            cy,
            (cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1),
        )
        zones.append(z)
    zs = ZoneSet(zones, PROJ, cell=37.0)
    near = set(zs.near(x, y))
    assert {z.index for z in zones if z.signed(x, y) <= 0} <= near
    # and the segment query covers every zone the segment meets
    along = set(zs.along(x, y, -x / 2, y / 3))
    line = shapely.LineString([(x, y), (-x / 2, y / 3)])
    for z in zones:
        if line.intersects(shapely.Point(z.cx, z.cy).buffer(z.r)):
            assert z.index in along


def test_a_long_segment_uses_the_tree_and_finds_far_zones() -> None:
    zones = []
    for k in range(50):
        z = _circle(30.0)
        z.key, z.cx, z.cy, z.bbox = (
            f"zone:{k}",
            1000.0 * k,
            0.0,
            (1000.0 * k - 31, -31, 1000.0 * k + 31, 31),
        )
        zones.append(z)
    zs = ZoneSet(zones, PROJ, cell=250.0)
    found = set(zs.along(-100.0, 0.0, 49_100.0, 0.0))  # 200 cells: not cell by cell
    assert found == set(range(50))


def test_layout_builds_every_zone_kind_with_capped_margins() -> None:
    manifest = parse_manifest(
        {
            "route": "r1",
            "depot": {
                "polygon": [[13.40, 52.52], [13.402, 52.52], [13.402, 52.521], [13.40, 52.521]]
            },
            "stops": [
                {"id": "a", "lat": 52.53, "lon": 13.41, "radius_m": 20},
                {"id": "b", "lat": 52.54, "lon": 13.42},
            ],
        }
    )
    cfg = TripsConfig(zones=[GeofenceConfig(name="fuel", lat=52.5, lon=13.3, radius=60.0)])
    zs = build_zones(manifest, cfg)
    assert [z.key for z in zs.zones] == [
        "depot",
        "stop:a",
        "approach:a",
        "stop:b",
        "approach:b",
        "zone:fuel",
    ]
    a = zs.by_key["stop:a"]
    assert isinstance(a, CircleZone) and a.r == 20 and a.margin_in == 10.0  # half the radius
    b = zs.by_key["stop:b"]
    assert isinstance(b, CircleZone) and b.r == cfg.stop_radius and b.margin_in == cfg.enter_margin
    ring = zs.by_key["approach:b"]
    assert isinstance(ring, CircleZone) and ring.r == cfg.approach
    assert isinstance(zs.by_key["depot"], PolygonZone)
    # the depot is the origin of the plane
    assert math.hypot(*zs.projection.forward(52.5205, 13.401)) < 100


def test_index_cell_cache_stays_bounded() -> None:
    zs = ZoneSet([_circle(10.0)], PROJ, cell=1.0)
    zs.MAX_CACHED_CELLS = 100
    rng = random.Random(1)
    for _ in range(1000):
        zs.near(rng.uniform(-1e4, 1e4), rng.uniform(-1e4, 1e4))
    assert len(zs._cells) <= 100
