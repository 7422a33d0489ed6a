"""Manifests and load plans as the delivery model reads them: routes, stops, parcels, windows.

A manifest (DESIGN §2, the payload of ``cmd/manifest``)::

    {"route": ID, "depot": ZONE,
     "stops": [{"id": ID, **ZONE, "parcels": [...], "window": [FROM, TO]}]}

and a load plan (DESIGN §8, the payload of ``cmd/loadplan``)::

    {"station": ID, "routes": [{"route": ID, "vehicle": ID, "dock": ID, "parcels": [TEXT, ...]}]}

The hub needs less of a zone than the van does: a stop's centre (a circle's centre, a polygon's
vertex mean) for distances. Parcels are ids or objects with an ``id``; a stop may carry a
``type`` (any short string: "residential", "business", ...) that the dwell times are learned by,
else its type is its parcel count ("1", "2", "3+"). Unknown fields are ignored (later versions
may add some); everything used is checked, and a bad payload raises ``PlanError`` whose ``path``
names the field (``stops[3].window``) and whose ``reason`` says what is wrong.

Errors::

    PlanError (ValueError)    a manifest or load plan that does not match the format
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["LoadRoute", "PlanError", "PlanStop", "RoutePlan", "parse_loadplan", "parse_manifest"]

MAX_ID = 256
MAX_STOPS = 20_000  # the agent's bounds (edge_agent.trips.manifest)
MAX_POLYGON_VERTICES = 2_000
MAX_PARCELS = 100_000  # per stop, per route of a load plan (the envelope's list bound)
MAX_ROUTES = 10_000


class PlanError(ValueError):
    """A manifest or load plan the delivery model cannot use; ``path`` names the field."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PlanStop:
    """One stop: where (its centre), what is delivered there, when, and its type."""

    id: str
    lat: float
    lon: float
    parcels: tuple[str, ...]
    window: tuple[float, float] | None
    kind: str


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """A manifest: the route, its depot's centre (None when unknown) and its stops in order."""

    route: str
    depot: tuple[float, float] | None
    stops: tuple[PlanStop, ...]


@dataclass(frozen=True, slots=True)
class LoadRoute:
    """One route of a load plan: which vehicle, which dock, which parcels."""

    route: str
    vehicle: str | None
    dock: str | None
    parcels: tuple[str, ...]


def _ident(v: Any, path: str) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise PlanError(path, f"must be a string, not {type(v).__name__}")
    s = str(v)
    if not s or len(s) > MAX_ID or not s.isprintable():
        raise PlanError(path, f"must be 1 to {MAX_ID} printable characters")
    return s


def _number(obj: Mapping[str, Any], key: str, path: str, lo: float, hi: float) -> float:
    if key not in obj:
        raise PlanError(f"{path}.{key}", "missing")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PlanError(f"{path}.{key}", f"must be a number, not {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f) or not lo <= f <= hi:
        raise PlanError(f"{path}.{key}", f"{v!r} is out of range [{lo:g}, {hi:g}]")
    return f


def _centre(obj: Any, path: str) -> tuple[float, float]:
    """The centre of a ZONE: a circle's centre, or the mean of a polygon's vertices."""
    if not isinstance(obj, Mapping):
        raise PlanError(path, f"must be an object, not {type(obj).__name__}")
    if "polygon" in obj:
        ring = obj["polygon"]
        if not isinstance(ring, list) or len(ring) < 3:
            raise PlanError(f"{path}.polygon", "must be a list of at least 3 [lon, lat] points")
        if len(ring) > MAX_POLYGON_VERTICES:
            raise PlanError(f"{path}.polygon", f"more than {MAX_POLYGON_VERTICES} points")
        lats, lons = [], []
        for i, pt in enumerate(ring):
            if (
                not isinstance(pt, list | tuple)
                or len(pt) != 2
                or any(isinstance(c, bool) or not isinstance(c, int | float) for c in pt)
            ):
                raise PlanError(f"{path}.polygon[{i}]", "must be a [lon, lat] pair of numbers")
            lon, lat = float(pt[0]), float(pt[1])
            if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
                raise PlanError(f"{path}.polygon[{i}]", f"{list(pt)!r} is not a WGS 84 point")
            lats.append(lat)
            lons.append(lon)
        if ring[0] == ring[-1]:  # a closed ring repeats its first point: count it once
            lats.pop()
            lons.pop()
        return sum(lats) / len(lats), sum(lons) / len(lons)
    return _number(obj, "lat", path, -90, 90), _number(obj, "lon", path, -180, 180)


def _time(v: Any, path: str) -> float:
    if not isinstance(v, str):
        raise PlanError(path, f"must be an ISO 8601 time, not {type(v).__name__}")
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise PlanError(path, f"{v[:64]!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise PlanError(path, f"{v[:64]!r} has no zone offset (Z or +hh:mm)")
    return t.timestamp()


def _parcels(v: Any, path: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise PlanError(path, f"must be a list, not {type(v).__name__}")
    if len(v) > MAX_PARCELS:
        raise PlanError(path, f"more than {MAX_PARCELS} parcels")
    out = []
    for i, p in enumerate(v):
        if isinstance(p, Mapping):
            if "id" not in p:
                raise PlanError(f"{path}[{i}].id", "missing")
            out.append(_ident(p["id"], f"{path}[{i}].id"))
        else:
            out.append(_ident(p, f"{path}[{i}]"))
    return tuple(out)


def _kind(stop: Mapping[str, Any], parcels: tuple[str, ...], path: str) -> str:
    kind = stop.get("type")
    if kind is None:
        n = len(parcels)
        return str(n) if n < 3 else "3+"
    if not isinstance(kind, str) or not 0 < len(kind) <= 64 or not kind.isprintable():
        raise PlanError(f"{path}.type", "must be 1 to 64 printable characters")
    return kind


def parse_manifest(payload: Any) -> RoutePlan:
    """A manifest's route, depot and stops; ``PlanError`` names the first thing wrong."""
    if not isinstance(payload, Mapping):
        raise PlanError("", f"a manifest must be an object, not {type(payload).__name__}")
    if "route" not in payload:
        raise PlanError("route", "missing")
    route = _ident(payload["route"], "route")
    depot = _centre(payload["depot"], "depot") if payload.get("depot") is not None else None
    raw = payload.get("stops")
    if not isinstance(raw, list):
        raise PlanError("stops", "missing" if raw is None else "must be a list")
    if len(raw) > MAX_STOPS:
        raise PlanError("stops", f"more than {MAX_STOPS} stops")
    stops: list[PlanStop] = []
    seen: set[str] = set()
    for i, s in enumerate(raw):
        path = f"stops[{i}]"
        if not isinstance(s, Mapping):
            raise PlanError(path, f"must be an object, not {type(s).__name__}")
        if "id" not in s:
            raise PlanError(f"{path}.id", "missing")
        sid = _ident(s["id"], f"{path}.id")
        if sid in seen:
            raise PlanError(f"{path}.id", f"{sid!r} is used by an earlier stop")
        seen.add(sid)
        lat, lon = _centre(s, path)
        parcels = _parcels(s.get("parcels"), f"{path}.parcels")
        window = None
        w = s.get("window")
        if w is not None:
            if not isinstance(w, list) or len(w) != 2:
                raise PlanError(f"{path}.window", "must be a pair [FROM, TO] of ISO times")
            lo, hi = _time(w[0], f"{path}.window[0]"), _time(w[1], f"{path}.window[1]")
            if hi < lo:
                raise PlanError(f"{path}.window", "ends before it starts")
            window = (lo, hi)
        stops.append(PlanStop(sid, lat, lon, parcels, window, _kind(s, parcels, path)))
    return RoutePlan(route, depot, tuple(stops))


def parse_loadplan(payload: Any) -> list[LoadRoute]:
    """A load plan's routes; ``PlanError`` names the first thing wrong."""
    if not isinstance(payload, Mapping):
        raise PlanError("", f"a load plan must be an object, not {type(payload).__name__}")
    raw = payload.get("routes")
    if not isinstance(raw, list):
        raise PlanError("routes", "missing" if raw is None else "must be a list")
    if len(raw) > MAX_ROUTES:
        raise PlanError("routes", f"more than {MAX_ROUTES} routes")
    out = []
    for i, r in enumerate(raw):
        path = f"routes[{i}]"
        if not isinstance(r, Mapping):
            raise PlanError(path, f"must be an object, not {type(r).__name__}")
        if "route" not in r:
            raise PlanError(f"{path}.route", "missing")
        route = _ident(r["route"], f"{path}.route")
        vehicle = _ident(r["vehicle"], f"{path}.vehicle") if r.get("vehicle") is not None else None
        dock = _ident(r["dock"], f"{path}.dock") if r.get("dock") is not None else None
        out.append(LoadRoute(route, vehicle, dock, _parcels(r.get("parcels"), f"{path}.parcels")))
    return out
