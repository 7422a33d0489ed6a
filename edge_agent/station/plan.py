"""The station's load plan (DESIGN §8): routes, their vehicle, dock and parcels, validated.

The payload of ``cmd/loadplan`` and the file ``load replay`` reads::

    {"station": ID, "routes": [{"route": ID, "vehicle": ID, "dock": ID, "parcels": [TEXT, ...]}]}

Readers ignore fields they do not know (a ``cmd/loadplan`` payload also carries the command's
``id``). ``station`` may be left out. A parcel is named by ``parcel_key`` of its text: the GS1
SSCC when the text is a GS1 element string holding one, else the text without surrounding
whitespace, so a plan may list the SSCC or the whole element string, and a label read either way
finds it. Parcels may also be objects with an ``id`` (as in a van's manifest).

What is checked, each error naming its place (``routes[2].parcels[5]``): ids are 1 to 256
printable characters; route ids are unique; a parcel is on one route only, once; no parcel is
named like a vehicle of the plan (a scan of it would be taken for the vehicle); and a route's
parcels all fit in one gate-out event listing them as missing (the wire's event size limit).

Errors::

    PlanError (ValueError)    the plan does not match the format; ``path``, ``reason``
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.scan.gs1 import Gs1Error, bare_gs1, is_gs1_text, parse_element_string
from edge_agent.wire import jsonbounds
from edge_agent.wire.limits import batch_body_limit

__all__ = [
    "MAX_ID",
    "MAX_PLAN_BYTES",
    "MAX_ROUTES",
    "MISSING_LIST_BUDGET",
    "LoadPlan",
    "PlanError",
    "PlanRoute",
    "load_plan_file",
    "parcel_key",
    "parse_load_plan",
]

MAX_PLAN_BYTES = 16 * 1024 * 1024
MAX_ROUTES = 10_000
MAX_ID = 256
"""Ids and parcel names travel in event data and refs, where the contract allows 1-256."""

PLAN_MAX_DEPTH = 8
"""A plan nests four levels (plan, routes, route, parcels; a parcel object): deeper is refused."""

MISSING_LIST_BUDGET = batch_body_limit() - 8192
"""Bytes a gate-out's ``missing`` list may take: the event limit less room for the envelope,
the route, vehicle and dock (in data and ref, each up to 256 characters of 4 UTF-8 bytes)."""


class PlanError(ValueError):
    """A load plan that does not match the format: ``path`` names the field, ``reason`` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


def parcel_key(text: str) -> str:
    """The name a label's text gives its parcel: the GS1 SSCC (AI 00) when the text is a GS1
    element string holding a valid one, else the text stripped of surrounding whitespace.

    GS1 is recognised by its marks (AIM prefix, leading GS, ``(00)``) and also as the bare
    transmitted form starting with AI 00 (what a camera reads off a GS1-128 label).
    """
    s = text.strip()
    if not s:
        return s
    if is_gs1_text(s):
        try:
            elements: dict[str, str] | None = parse_element_string(s)
        except Gs1Error:
            return s  # claims to be GS1 but is not: the text is its name
    else:
        elements = bare_gs1(s)
    sscc = elements.get("00") if elements is not None else None
    return sscc if sscc is not None else s


@dataclass(frozen=True, slots=True)
class PlanRoute:
    """One route loaded at the station: its vehicle, its dock and its parcels (parcel keys)."""

    route: str
    vehicle: str
    dock: str
    parcels: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadPlan:
    """A validated load plan with the indexes the engine looks things up by.

    Built directly, it checks what concerns more than one route (unique route ids, a parcel on
    one route once, no parcel named like a vehicle) and raises PlanError naming the place.
    """

    routes: tuple[PlanRoute, ...] = ()
    station: str | None = None
    by_route: dict[str, PlanRoute] = field(init=False, repr=False, compare=False)
    route_of: dict[str, PlanRoute] = field(init=False, repr=False, compare=False)
    by_vehicle: dict[str, tuple[PlanRoute, ...]] = field(init=False, repr=False, compare=False)
    by_dock: dict[str, tuple[PlanRoute, ...]] = field(init=False, repr=False, compare=False)
    parcel_sets: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_route: dict[str, PlanRoute] = {}
        where: dict[str, str] = {}
        route_of: dict[str, PlanRoute] = {}
        by_vehicle: dict[str, list[PlanRoute]] = {}
        by_dock: dict[str, list[PlanRoute]] = {}
        for i, r in enumerate(self.routes):
            if r.route in by_route:
                first = next(k for k, o in enumerate(self.routes) if o.route == r.route)
                raise PlanError(f"routes[{i}].route", f"{r.route!r} is also routes[{first}]")
            by_route[r.route] = r
            by_vehicle.setdefault(r.vehicle, []).append(r)
            by_dock.setdefault(r.dock, []).append(r)
        vehicles = {r.vehicle: i for i, r in reversed(list(enumerate(self.routes)))}
        for i, r in enumerate(self.routes):
            for k, p in enumerate(r.parcels):
                path = f"routes[{i}].parcels[{k}]"
                if p in where:
                    raise PlanError(path, f"parcel {p!r} is also {where[p]}")
                if p in vehicles:
                    raise PlanError(
                        path, f"parcel {p!r} is named like routes[{vehicles[p]}].vehicle"
                    )
                where[p] = path
                route_of[p] = r
        set_ = object.__setattr__  # frozen: the indexes are derived once, here
        set_(self, "by_route", by_route)
        set_(self, "route_of", route_of)
        set_(self, "by_vehicle", {v: tuple(rs) for v, rs in by_vehicle.items()})
        set_(self, "by_dock", {d: tuple(rs) for d, rs in by_dock.items()})
        set_(self, "parcel_sets", {r.route: frozenset(r.parcels) for r in self.routes})


def _ident(obj: Mapping[str, Any], key: str, path: str) -> str:
    if key not in obj:
        raise PlanError(f"{path}{key}", "missing")
    return _ident_value(obj[key], f"{path}{key}")


def _ident_value(v: Any, path: str) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise PlanError(path, f"must be a string, not {type(v).__name__}")
    s = str(v)
    if not s or len(s) > MAX_ID or not s.isprintable() or s != s.strip():
        raise PlanError(
            path, f"must be 1 to {MAX_ID} printable characters without surrounding spaces"
        )
    return s


def _parcel(v: Any, path: str) -> str:
    if isinstance(v, Mapping):
        if "id" not in v:
            raise PlanError(f"{path}.id", "missing")
        v, path = v["id"], f"{path}.id"
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise PlanError(path, f"must be a string, not {type(v).__name__}")
    key = parcel_key(str(v))
    if not key or len(key) > MAX_ID:
        raise PlanError(path, f"a parcel is named by 1 to {MAX_ID} characters, not {len(key)}")
    return key


def _route(obj: Any, i: int) -> PlanRoute:
    path = f"routes[{i}]"
    if not isinstance(obj, Mapping):
        raise PlanError(path, f"a route must be an object, not {type(obj).__name__}")
    route = _ident(obj, "route", f"{path}.")
    vehicle = _ident(obj, "vehicle", f"{path}.")
    dock = _ident(obj, "dock", f"{path}.")
    raw = obj.get("parcels")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise PlanError(f"{path}.parcels", f"must be a list, not {type(raw).__name__}")
    parcels = tuple(_parcel(p, f"{path}.parcels[{k}]") for k, p in enumerate(raw))
    # every parcel may end up in one load.gateout's missing list: that event must fit the wire
    size = len(json.dumps(list(parcels), ensure_ascii=False, separators=(",", ":")).encode())
    if size > MISSING_LIST_BUDGET:
        raise PlanError(
            f"{path}.parcels",
            f"{len(parcels)} parcels take {size} bytes as a gate-out's missing list, "
            f"more than the {MISSING_LIST_BUDGET} an event may hold: split the route",
        )
    return PlanRoute(route, vehicle, dock, parcels)


def parse_load_plan(raw: bytes | str | Mapping[str, Any]) -> LoadPlan:
    """Parse and validate a load plan from JSON bytes/text or an already decoded object."""
    obj: Any
    if isinstance(raw, bytes | str):
        if len(raw) > MAX_PLAN_BYTES:
            raise PlanError("", f"larger than {MAX_PLAN_BYTES} bytes")
        try:
            obj = jsonbounds.loads(raw)
            jsonbounds.check(obj, PLAN_MAX_DEPTH)
        except jsonbounds.JsonBoundsError as exc:
            raise PlanError(exc.path, exc.reason) from None
    else:
        obj = raw
        try:
            jsonbounds.check(obj, PLAN_MAX_DEPTH)
        except jsonbounds.JsonBoundsError as exc:
            raise PlanError(exc.path, exc.reason) from None
    if not isinstance(obj, Mapping):
        raise PlanError("", f"a load plan must be an object, not {type(obj).__name__}")
    station = None
    if obj.get("station") is not None:
        station = _ident(obj, "station", "")
    routes_raw = obj.get("routes")
    if not isinstance(routes_raw, list):
        kind = type(routes_raw).__name__
        what = "missing" if routes_raw is None else f"must be a list, not {kind}"
        raise PlanError("routes", what)
    if len(routes_raw) > MAX_ROUTES:
        raise PlanError("routes", f"more than {MAX_ROUTES} routes")
    return LoadPlan(tuple(_route(r, i) for i, r in enumerate(routes_raw)), station)


def load_plan_file(path: str | Path) -> LoadPlan:
    """Read and validate a load plan file; PlanError's path is prefixed with the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PlanError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        return parse_load_plan(raw)
    except PlanError as exc:
        where = f"{path}: {exc.path}" if exc.path else str(path)
        raise PlanError(where, exc.reason) from None
