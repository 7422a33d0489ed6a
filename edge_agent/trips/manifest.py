"""The van's manifest (DESIGN §2): route, depot and stops, parsed and validated.

The payload of ``cmd/manifest`` and the file ``trips replay`` reads::

    {"route": ID, "depot": ZONE,
     "stops": [{"id": ID, **ZONE, "parcels": [...], "window": [FROM, TO]}]}

    ZONE is {"lat", "lon", "radius_m"} or {"polygon": [[lon, lat], ...]}

Readers ignore fields they do not know (later versions may add some). ``radius_m`` may be left
out (the configured default radius is used); ``parcels`` are ids, or objects with an ``id``;
``window`` is a pair of ISO 8601 times with a zone offset. Everything else is checked, and a bad
manifest raises ``ManifestError`` whose ``path`` names the field (``stops[3].lat``) and whose
``reason`` says what is wrong.

Errors::

    ManifestError (ValueError)    the manifest does not match the format; ``path``, ``reason``
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent.wire import jsonbounds

__all__ = [
    "MAX_MANIFEST_BYTES",
    "MAX_POLYGON_VERTICES",
    "MAX_STOPS",
    "Manifest",
    "ManifestError",
    "ManifestStop",
    "ZoneSpec",
    "load_manifest_file",
    "parse_manifest",
    "parse_zone",
]

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_STOPS = 20_000
MAX_POLYGON_VERTICES = 2_000
MAX_RADIUS_M = 50_000.0
MAX_ID = 256


class ManifestError(ValueError):
    """A manifest (or a zone in configuration) that does not match the format."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A zone in WGS 84: a circle (``lat``, ``lon``, ``radius_m`` or None for the default) or a
    polygon (``polygon`` as ``(lon, lat)`` pairs, not closed)."""

    lat: float
    lon: float
    radius_m: float | None = None
    polygon: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True, slots=True)
class ManifestStop:
    """One stop of a route."""

    id: str
    zone: ZoneSpec
    parcels: tuple[str, ...] = ()
    window: tuple[datetime, datetime] | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest."""

    route: str
    depot: ZoneSpec
    stops: tuple[ManifestStop, ...]
    depot_id: str = "depot"


def _number(obj: Mapping[str, Any], key: str, path: str, lo: float, hi: float) -> float:
    if key not in obj:
        raise ManifestError(f"{path}{key}", "missing")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ManifestError(f"{path}{key}", f"must be a number, not {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f) or not lo <= f <= hi:
        raise ManifestError(f"{path}{key}", f"{v!r} is out of range [{lo:g}, {hi:g}]")
    return f


def _ident(obj: Mapping[str, Any], key: str, path: str) -> str:
    if key not in obj:
        raise ManifestError(f"{path}{key}", "missing")
    return _ident_value(obj[key], f"{path}{key}")


def _ident_value(v: Any, path: str) -> str:
    # ids travel in event refs: the envelope allows 1-256 characters
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise ManifestError(path, f"must be a string, not {type(v).__name__}")
    s = str(v)
    if not s or len(s) > MAX_ID or not s.isprintable():
        raise ManifestError(path, f"must be 1 to {MAX_ID} printable characters")
    return s


def parse_zone(obj: Any, path: str) -> ZoneSpec:
    """Validate one ZONE object; ``path`` prefixes error paths (``"depot"``, ``"stops[2]"``)."""
    where = f"{path}." if path else ""
    if not isinstance(obj, Mapping):
        raise ManifestError(path, f"a zone must be an object, not {type(obj).__name__}")
    has_poly = obj.get("polygon") is not None
    has_circle = "lat" in obj or "lon" in obj
    if has_poly and has_circle:
        raise ManifestError(path, "a zone is either lat/lon/radius_m or polygon, not both")
    if not has_poly:
        if not has_circle:
            raise ManifestError(path, "a zone needs lat and lon (and radius_m), or polygon")
        lat = _number(obj, "lat", where, -90.0, 90.0)
        lon = _number(obj, "lon", where, -180.0, 180.0)
        radius = None
        if obj.get("radius_m") is not None:
            radius = _number(obj, "radius_m", where, 0.0, MAX_RADIUS_M)
            if radius <= 0:
                raise ManifestError(f"{where}radius_m", "must be positive")
        return ZoneSpec(lat, lon, radius)
    ring = obj["polygon"]
    if not isinstance(ring, list):
        raise ManifestError(f"{where}polygon", f"must be a list, not {type(ring).__name__}")
    pts: list[tuple[float, float]] = []
    for k, pt in enumerate(ring):
        ppath = f"{where}polygon[{k}]"
        if (
            not isinstance(pt, list | tuple)
            or len(pt) != 2
            or any(isinstance(c, bool) or not isinstance(c, int | float) for c in pt)
        ):
            raise ManifestError(ppath, "must be a pair of numbers [lon, lat]")
        lon, lat = float(pt[0]), float(pt[1])
        if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise ManifestError(ppath, f"longitude {pt[0]!r} is out of range [-180, 180]")
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
            raise ManifestError(ppath, f"latitude {pt[1]!r} is out of range [-90, 90]")
        pts.append((lon, lat))
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts.pop()  # a closed ring (GeoJSON habit) is fine
    if len(pts) < 3:
        raise ManifestError(f"{where}polygon", "needs at least 3 distinct vertices")
    if len(pts) > MAX_POLYGON_VERTICES:
        raise ManifestError(f"{where}polygon", f"more than {MAX_POLYGON_VERTICES} vertices")
    import shapely  # here, not at the top: loading a configuration should not load GEOS

    poly = shapely.Polygon(pts)
    if not poly.is_valid or poly.area == 0:
        reason = shapely.is_valid_reason(poly)
        raise ManifestError(f"{where}polygon", f"not a simple polygon ({reason})")
    span_lon = max(p[0] for p in pts) - min(p[0] for p in pts)
    if span_lon > 1.0 or max(p[1] for p in pts) - min(p[1] for p in pts) > 1.0:
        raise ManifestError(f"{where}polygon", "spans more than one degree")
    c = poly.centroid
    return ZoneSpec(float(c.y), float(c.x), None, tuple(pts))


def _time(v: Any, path: str) -> datetime:
    if not isinstance(v, str):
        raise ManifestError(path, f"must be an ISO 8601 time string, not {type(v).__name__}")
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise ManifestError(path, f"{v!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise ManifestError(path, f"{v!r} has no zone offset (add Z or +hh:mm)")
    return t


def _parcels(v: Any, path: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise ManifestError(path, f"must be a list, not {type(v).__name__}")
    out: list[str] = []
    for k, p in enumerate(v):
        if isinstance(p, Mapping):
            out.append(_ident(p, "id", f"{path}[{k}]."))
        else:
            out.append(_ident_value(p, f"{path}[{k}]"))
    return tuple(out)


MANIFEST_MAX_DEPTH = 16
"""A manifest nests a few levels (stops, polygons): deeper is refused."""


def parse_manifest(payload: bytes | str | Mapping[str, Any]) -> Manifest:
    """Parse and validate a manifest from JSON bytes/text or an already decoded object."""
    obj: Any
    if isinstance(payload, bytes | str):
        if len(payload) > MAX_MANIFEST_BYTES:
            raise ManifestError("", f"larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            # the contract's payloads are UTF-8 (json.loads would guess UTF-16 from a BOM);
            # the same bounds as events: depth, 64-bit integers, finite numbers, valid strings
            obj = jsonbounds.loads(payload)
            jsonbounds.check(obj, MANIFEST_MAX_DEPTH)
        except jsonbounds.JsonBoundsError as exc:
            raise ManifestError(exc.path, exc.reason) from None
    else:
        obj = payload
    if not isinstance(obj, Mapping):
        raise ManifestError("", f"a manifest must be an object, not {type(obj).__name__}")
    route = _ident(obj, "route", "")
    if "depot" not in obj:
        raise ManifestError("depot", "missing")
    depot = parse_zone(obj["depot"], "depot")
    depot_id = "depot"
    if isinstance(obj["depot"], Mapping) and "id" in obj["depot"]:
        depot_id = _ident(obj["depot"], "id", "depot.")
    stops_raw = obj.get("stops")
    if not isinstance(stops_raw, list):
        what = "missing" if stops_raw is None else f"must be a list, not {type(stops_raw).__name__}"
        raise ManifestError("stops", what)
    if len(stops_raw) > MAX_STOPS:
        raise ManifestError("stops", f"more than {MAX_STOPS} stops")
    stops: list[ManifestStop] = []
    seen: set[str] = set()
    for k, s in enumerate(stops_raw):
        path = f"stops[{k}]"
        if not isinstance(s, Mapping):
            raise ManifestError(path, f"a stop must be an object, not {type(s).__name__}")
        sid = _ident(s, "id", f"{path}.")
        if sid in seen:
            raise ManifestError(f"{path}.id", f"duplicate stop id {sid!r}")
        seen.add(sid)
        zone = parse_zone(s, path)
        parcels = _parcels(s.get("parcels"), f"{path}.parcels")
        window = None
        w = s.get("window")
        if w is not None:
            if not isinstance(w, list) or len(w) != 2:
                raise ManifestError(f"{path}.window", "must be a pair [FROM, TO]")
            lo = _time(w[0], f"{path}.window[0]")
            hi = _time(w[1], f"{path}.window[1]")
            if hi < lo:
                raise ManifestError(f"{path}.window", "ends before it starts")
            window = (lo, hi)
        stops.append(ManifestStop(sid, zone, parcels, window))
    return Manifest(route, depot, tuple(stops), depot_id)


def load_manifest_file(path: str | Path) -> Manifest:
    """Read and validate a manifest file; ManifestError's path is prefixed with the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        return parse_manifest(raw)
    except ManifestError as exc:
        where = f"{path}: {exc.path}" if exc.path else str(path)
        raise ManifestError(where, exc.reason) from None
