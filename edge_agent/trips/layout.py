"""The zones of a route: a manifest and the configuration turned into a ZoneSet on the plane.

- the depot (manifest, else configuration): key ``depot``;
- each stop: key ``stop:{id}``, a circle of ``radius_m`` (default ``stop_radius``) or a polygon;
- each stop's approach ring: key ``approach:{id}``, a circle of ``approach`` metres around the
  stop's point (its centre, or a polygon's centroid), widened if the stop reaches further;
- each configured geofence: key ``zone:{name}``.

The projection is centred on the depot (or the first zone), so a route within 50 km of its depot
keeps its geometry to under a metre. The enter margin of a zone is capped at half its inscribed
radius: a zone smaller than twice the margin still has a core to be inside of.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import shapely

from edge_agent.trips.config import TripsConfig
from edge_agent.trips.geo import LocalProjection
from edge_agent.trips.manifest import Manifest, ZoneSpec
from edge_agent.trips.zones import CircleZone, PolygonZone, StopInfo, Zone, ZoneKind, ZoneSet

__all__ = ["build_zones", "make_zone"]

_BBOX_SLACK_M = 1.0


def _fingerprint(kind: str, spec: ZoneSpec, radius: float | None, m_in: float, m_out: float) -> str:
    raw = json.dumps([kind, spec.lat, spec.lon, radius, spec.polygon, m_in, m_out])
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def make_zone(
    key: str,
    kind: ZoneKind,
    name: str,
    spec: ZoneSpec,
    proj: LocalProjection,
    *,
    default_radius: float,
    enter_margin: float,
    exit_margin: float,
    stop: StopInfo | None = None,
) -> Zone:
    """One zone on the plane of ``proj`` from its WGS 84 ``spec``."""
    if spec.polygon is None:
        r = spec.radius_m if spec.radius_m is not None else default_radius
        cx, cy = proj.forward(spec.lat, spec.lon)
        m_in = min(enter_margin, 0.5 * r)
        s = _BBOX_SLACK_M
        return CircleZone(
            key=key,
            kind=kind,
            name=name,
            lat=spec.lat,
            lon=spec.lon,
            margin_in=m_in,
            margin_out=exit_margin,
            bbox=(cx - r - s, cy - r - s, cx + r + s, cy + r + s),
            fingerprint=_fingerprint(kind, spec, r, m_in, exit_margin),
            stop=stop,
            cx=cx,
            cy=cy,
            r=r,
        )
    ring = tuple(proj.forward(lat, lon) for lon, lat in spec.polygon)
    poly = shapely.Polygon(ring)
    inscribed = float(shapely.maximum_inscribed_circle(poly, 0.5).length)
    m_in = min(enter_margin, 0.5 * inscribed)
    x0, y0, x1, y1 = poly.bounds
    s = _BBOX_SLACK_M
    return PolygonZone(
        key=key,
        kind=kind,
        name=name,
        lat=spec.lat,
        lon=spec.lon,
        margin_in=m_in,
        margin_out=exit_margin,
        bbox=(x0 - s, y0 - s, x1 + s, y1 + s),
        fingerprint=_fingerprint(kind, spec, None, m_in, exit_margin),
        stop=stop,
        ring=ring,
    )


def _approach_spec(
    spec: ZoneSpec, proj: LocalProjection, approach: float, radius: float
) -> ZoneSpec:
    reach = radius
    if spec.polygon is not None:
        cx, cy = proj.forward(spec.lat, spec.lon)
        reach = max(
            math.hypot(x - cx, y - cy) for x, y in (proj.forward(la, lo) for lo, la in spec.polygon)
        )
    return ZoneSpec(spec.lat, spec.lon, max(approach, 2 * reach))


def build_zones(
    manifest: Manifest | None,
    config: TripsConfig,
    *,
    origin: tuple[float, float] | None = None,
) -> ZoneSet:
    """All zones of ``manifest`` (may be None) and ``config``, indexed on one local plane."""
    depot: ZoneSpec | None = manifest.depot if manifest is not None else None
    if depot is None and config.depot is not None:
        depot = config.depot.spec()
    geofences = [(g.name, g.spec()) for g in config.zones]
    if origin is None:
        if depot is not None:
            origin = (depot.lat, depot.lon)
        elif manifest is not None and manifest.stops:
            origin = (manifest.stops[0].zone.lat, manifest.stops[0].zone.lon)
        elif geofences:
            origin = (geofences[0][1].lat, geofences[0][1].lon)
        else:
            origin = (0.0, 0.0)
    proj = LocalProjection(max(-89.0, min(89.0, origin[0])), origin[1])
    common: dict[str, Any] = {
        "default_radius": config.stop_radius,
        "enter_margin": config.enter_margin,
        "exit_margin": config.exit_margin,
    }
    zones: list[Zone] = []
    if depot is not None:
        name = manifest.depot_id if manifest is not None else "depot"
        zones.append(make_zone("depot", "depot", name, depot, proj, **common))
    if manifest is not None:
        for st in manifest.stops:
            window = None
            if st.window is not None:
                window = (st.window[0].timestamp(), st.window[1].timestamp())
            info = StopInfo(st.id, st.parcels, window)
            zones.append(
                make_zone(f"stop:{st.id}", "stop", st.id, st.zone, proj, stop=info, **common)
            )
            r = st.zone.radius_m if st.zone.radius_m is not None else config.stop_radius
            ring = _approach_spec(st.zone, proj, config.approach, r)
            zones.append(
                make_zone(f"approach:{st.id}", "approach", st.id, ring, proj, stop=info, **common)
            )
    for name, spec in geofences:
        zones.append(make_zone(f"zone:{name}", "zone", name, spec, proj, **common))
    return ZoneSet(zones, proj, cell=config.index_cell)
