"""Zones on the local plane and the index that finds the few near a fix.

A zone is a circle or a simple polygon in metres (``geo.LocalProjection``), with the margins of
its hysteresis. Everything the step engine asks a zone is arithmetic on floats:

- ``signed(x, y)``: signed distance to the boundary, negative inside;
- ``crossings(x1, y1, x2, y2)``: where along a segment the boundary is crossed (0..1);
- ``passes_deep(x1, y1, x2, y2)``: whether a segment reaches ``margin_in`` inside the zone.

Pure Python for circles and small polygons: a scalar shapely call costs 5-15 µs here, ten times a
circle test, and the engine's budget is 20 µs a fix. Shapely does what it is good at: the
STRtree over thousands of zones (queried once per grid cell a van visits, then cached), the
validity check of polygons, and the rare segment-against-shrunken-polygon test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import shapely
from shapely import STRtree

from edge_agent.trips.geo import LocalProjection

__all__ = ["CircleZone", "PolygonZone", "StopInfo", "Zone", "ZoneKind", "ZoneSet"]

ZoneKind = Literal["depot", "stop", "approach", "zone"]


@dataclass(frozen=True, slots=True)
class StopInfo:
    """What trip events say about a stop: its id, parcels and delivery window (epoch seconds)."""

    id: str
    parcels: tuple[str, ...] = ()
    window: tuple[float, float] | None = None


@dataclass(eq=False, slots=True)
class Zone:
    """A zone on the plane. ``key`` is unique in a ZoneSet (``stop:S1``, ``approach:S1``...)."""

    key: str
    kind: ZoneKind
    name: str
    lat: float
    lon: float
    margin_in: float
    margin_out: float
    bbox: tuple[float, float, float, float]
    fingerprint: str
    stop: StopInfo | None = None
    index: int = -1

    def signed(self, x: float, y: float) -> float:
        """Signed distance in metres from ``(x, y)`` to the boundary: negative inside."""
        raise NotImplementedError

    def crossings(self, x1: float, y1: float, x2: float, y2: float) -> list[float]:
        """Sorted fractions along the segment where it crosses the boundary."""
        raise NotImplementedError

    def passes_deep(self, x1: float, y1: float, x2: float, y2: float) -> bool:
        """Whether some point of the segment is at least ``margin_in`` inside the zone."""
        raise NotImplementedError

    def shape(self) -> Any:
        """The zone as a shapely geometry on the plane (for indexing and tests)."""
        raise NotImplementedError


@dataclass(eq=False, slots=True)
class CircleZone(Zone):
    """A circle of radius ``r`` metres around ``(cx, cy)``."""

    cx: float = 0.0
    cy: float = 0.0
    r: float = 0.0

    def signed(self, x: float, y: float) -> float:
        """Signed distance in metres from ``(x, y)`` to the circle: negative inside."""
        return math.hypot(x - self.cx, y - self.cy) - self.r

    def crossings(self, x1: float, y1: float, x2: float, y2: float) -> list[float]:
        """Fractions along the segment where it meets the circle (0, 1 or 2 of them)."""
        dx, dy = x2 - x1, y2 - y1
        fx, fy = x1 - self.cx, y1 - self.cy
        a = dx * dx + dy * dy
        if a == 0.0:
            return []
        b = 2 * (fx * dx + fy * dy)
        c = fx * fx + fy * fy - self.r * self.r
        disc = b * b - 4 * a * c
        if disc < 0:
            return []
        root = math.sqrt(disc)
        return [u for u in ((-b - root) / (2 * a), (-b + root) / (2 * a)) if 0.0 <= u <= 1.0]

    def passes_deep(self, x1: float, y1: float, x2: float, y2: float) -> bool:
        """Whether the segment comes within ``r - margin_in`` of the centre."""
        return _segment_point_distance(x1, y1, x2, y2, self.cx, self.cy) <= self.r - self.margin_in

    def shape(self) -> Any:
        """The circle as a shapely polygon (64 segments a quarter)."""
        return shapely.Point(self.cx, self.cy).buffer(self.r, quad_segs=64)


@dataclass(eq=False, slots=True)
class PolygonZone(Zone):
    """A simple polygon; ``ring`` is its vertices on the plane, not closed."""

    ring: tuple[tuple[float, float], ...] = ()
    _edges: tuple[tuple[float, float, float, float, float], ...] = field(default=(), repr=False)
    _deep: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        edges = []
        n = len(self.ring)
        for k in range(n):
            ax, ay = self.ring[k]
            bx, by = self.ring[(k + 1) % n]
            dx, dy = bx - ax, by - ay
            edges.append((ax, ay, dx, dy, dx * dx + dy * dy))
        self._edges = tuple(edges)

    def signed(self, x: float, y: float) -> float:
        """Signed distance in metres from ``(x, y)`` to the polygon's boundary: negative inside."""
        best = math.inf
        inside = False
        for ax, ay, dx, dy, l2 in self._edges:
            px, py = x - ax, y - ay
            # crossing-number test on the same pass (ray towards +x)
            if (ay > y) != (ay + dy > y) and px < dx * (y - ay) / dy:
                inside = not inside
            u = (px * dx + py * dy) / l2 if l2 > 0 else 0.0
            if u < 0.0:
                u = 0.0
            elif u > 1.0:
                u = 1.0
            ex, ey = px - u * dx, py - u * dy
            d2 = ex * ex + ey * ey
            best = min(best, d2)
        d = math.sqrt(best)
        return -d if inside else d

    def crossings(self, x1: float, y1: float, x2: float, y2: float) -> list[float]:
        """Fractions along the segment where it crosses an edge of the polygon."""
        sx, sy = x2 - x1, y2 - y1
        out = []
        for ax, ay, dx, dy, _ in self._edges:
            den = sx * dy - sy * dx
            if den == 0.0:
                continue
            qx, qy = ax - x1, ay - y1
            u = (qx * dy - qy * dx) / den
            v = (qx * sy - qy * sx) / den
            if 0.0 <= u <= 1.0 and 0.0 <= v <= 1.0:
                out.append(u)
        out.sort()
        return out

    def passes_deep(self, x1: float, y1: float, x2: float, y2: float) -> bool:
        """Whether the segment meets the polygon shrunk by ``margin_in`` (rare: shapely)."""
        if self._deep is None:
            deep = shapely.Polygon(self.ring).buffer(-self.margin_in)
            shapely.prepare(deep)
            self._deep = deep
        if self._deep.is_empty:
            return False
        if x1 == x2 and y1 == y2:
            return bool(shapely.contains_xy(self._deep, x1, y1))
        return bool(self._deep.intersects(shapely.LineString([(x1, y1), (x2, y2)])))

    def shape(self) -> Any:
        """The polygon as a shapely geometry."""
        return shapely.Polygon(self.ring)


def _segment_point_distance(
    x1: float, y1: float, x2: float, y2: float, px: float, py: float
) -> float:
    dx, dy = x2 - x1, y2 - y1
    l2 = dx * dx + dy * dy
    u = 0.0 if l2 == 0 else max(0.0, min(1.0, ((px - x1) * dx + (py - y1) * dy) / l2))
    return math.hypot(x1 + u * dx - px, y1 + u * dy - py)


class ZoneSet:
    """The zones of one manifest (and configuration), indexed for ``near`` and ``along``.

    The plane is cut into square cells of ``cell`` metres; the zones whose bounding box meets a
    cell are found with an STRtree the first time a fix lands in it and cached, so the per-fix
    cost is one dict lookup whatever the number of zones.
    """

    MAX_CACHED_CELLS = 100_000
    MAX_CELLS_PER_SEGMENT = 16

    def __init__(
        self, zones: Sequence[Zone], projection: LocalProjection, cell: float = 250.0
    ) -> None:
        if cell <= 0:
            raise ValueError("cell size must be positive")
        self.zones: tuple[Zone, ...] = tuple(zones)
        self.by_key: dict[str, Zone] = {}
        for i, z in enumerate(self.zones):
            if z.key in self.by_key:
                raise ValueError(f"duplicate zone {z.key!r}")
            z.index = i
            self.by_key[z.key] = z
        self.projection = projection
        self.cell = cell
        self._boxes = [shapely.box(*z.bbox) for z in self.zones]
        self._tree = STRtree(self._boxes) if self._boxes else None
        self._cells: dict[tuple[int, int], tuple[int, ...]] = {}
        self.min_margin_in = min((z.margin_in for z in self.zones), default=0.0)

    def __len__(self) -> int:
        return len(self.zones)

    def _cell(self, i: int, j: int) -> tuple[int, ...]:
        got = self._cells.get((i, j))
        if got is not None:
            return got
        if self._tree is None:
            found: tuple[int, ...] = ()
        else:
            c = self.cell
            box = shapely.box(i * c, j * c, (i + 1) * c, (j + 1) * c)
            found = tuple(sorted(int(k) for k in self._tree.query(box)))
        if len(self._cells) >= self.MAX_CACHED_CELLS:
            self._cells.clear()
        self._cells[(i, j)] = found
        return found

    def near(self, x: float, y: float) -> tuple[int, ...]:
        """Indexes of the zones whose bounding box may contain ``(x, y)`` (a superset)."""
        c = self.cell
        return self._cell(math.floor(x / c), math.floor(y / c))

    def along(self, x1: float, y1: float, x2: float, y2: float) -> Iterable[int]:
        """Indexes of the zones whose bounding box may meet the segment (a superset)."""
        c = self.cell
        i1, i2 = sorted((math.floor(x1 / c), math.floor(x2 / c)))
        j1, j2 = sorted((math.floor(y1 / c), math.floor(y2 / c)))
        if (i2 - i1 + 1) * (j2 - j1 + 1) <= self.MAX_CELLS_PER_SEGMENT:
            if i1 == i2 and j1 == j2:
                return self._cell(i1, j1)
            found: set[int] = set()
            for i in range(i1, i2 + 1):
                for j in range(j1, j2 + 1):
                    found.update(self._cell(i, j))
            return found
        if self._tree is None:
            return ()
        line = shapely.LineString([(x1, y1), (x2, y2)])
        return {int(k) for k in self._tree.query(line)}
