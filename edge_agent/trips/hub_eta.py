"""The hub's ETAs on the van (``cmd/eta``) and the van's trip as the driver app reads it.

One ETA in every channel: the van does not compute ETAs, it shows the hub's (DESIGN §9). The hub
sends ``cmd/eta`` with ``{"route", "at", "stops": [{"id", "eta", "status"}]}`` whenever a route's
ETAs or stop statuses change (at most every 30 s for ETAs alone); ``parse_eta`` checks it,
``HubEtas`` keeps the latest per route in memory (a restart forgets them: the next command
brings them back) and ``trip_view`` puts them next to what the trip engine knows (the stop the
van is at or approaching, else the next stop not visited): the body of ``GET /v1/trip``.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from edge_agent.trips.engine import EngineState, TripEngine
from edge_agent.trips.manifest import MAX_ID, MAX_STOPS, Manifest
from edge_agent.wire import jsonbounds
from edge_agent.wire.envelope import parse_ts

__all__ = ["STATUS_MAX", "EtaError", "HubEta", "HubEtas", "parse_eta", "trip_view"]

STATUS_MAX = 32
"""Longest stop status taken (the hub's are words like ``out_for_delivery``)."""

_KEYS = {"id", "route", "at", "stops"}
_STOP_KEYS = {"id", "eta", "status"}


class EtaError(ValueError):
    """A ``cmd/eta`` payload that is not what the hub sends; the message names where."""


@dataclass(frozen=True, slots=True)
class HubEta:
    """The hub's latest ETAs for one route: ``at`` (when it computed them) and per stop
    ``{"id", "eta": ISO|None, "status"}`` in the route's order."""

    route: str
    at: str
    stops: tuple[dict[str, Any], ...]


def _ident(v: Any, path: str) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_ID or not v.isprintable():
        raise EtaError(f"{path}: must be a string of 1 to {MAX_ID} printable characters")
    return v


def _ts(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise EtaError(f"{path}: must be a time like 2026-11-21T08:15:02.123Z")
    try:
        parse_ts(v)
    except ValueError as exc:
        raise EtaError(f"{path}: {exc}") from None
    return v


def parse_eta(payload: bytes | str) -> HubEta:
    """Check a ``cmd/eta`` payload (bounded JSON, the fields above, nothing else); raise
    EtaError naming the field that is wrong."""
    try:
        doc = jsonbounds.loads(payload)
        jsonbounds.check(doc, max_depth=4)
    except jsonbounds.JsonBoundsError as exc:
        raise EtaError(f"eta: {exc}") from None
    if not isinstance(doc, dict):
        raise EtaError("eta: must be a JSON object")
    extra = sorted(set(doc) - _KEYS)
    if extra:
        raise EtaError(f"eta.{extra[0][:64]}: unknown field")
    route = _ident(doc.get("route"), "eta.route")
    at = _ts(doc.get("at"), "eta.at")
    raw = doc.get("stops")
    if not isinstance(raw, list):
        raise EtaError("eta.stops: must be an array")
    if len(raw) > MAX_STOPS:
        raise EtaError(f"eta.stops: more than {MAX_STOPS} stops")
    stops: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"eta.stops[{i}]"
        if not isinstance(item, dict):
            raise EtaError(f"{path}: must be an object")
        extra = sorted(set(item) - _STOP_KEYS)
        if extra:
            raise EtaError(f"{path}.{extra[0][:64]}: unknown field")
        sid = _ident(item.get("id"), f"{path}.id")
        if sid in seen:
            raise EtaError(f"{path}.id: {sid[:64]!r} appears twice")
        seen.add(sid)
        eta = item.get("eta")
        if eta is not None:
            _ts(eta, f"{path}.eta")
        status = item.get("status")
        if not (
            isinstance(status, str)
            and 0 < len(status) <= STATUS_MAX
            and status.replace("_", "").isalpha()
            and status.isascii()
        ):
            raise EtaError(f"{path}.status: must be a word of 1 to {STATUS_MAX} letters")
        stops.append({"id": sid, "eta": eta, "status": status})
    return HubEta(route, at, tuple(stops))


class HubEtas:
    """The latest ``HubEta`` per route, for a bounded number of routes (oldest forgotten)."""

    def __init__(self, max_routes: int = 8) -> None:
        self.max_routes = max_routes
        self._by_route: OrderedDict[str, HubEta] = OrderedDict()

    def put(self, eta: HubEta) -> bool:
        """Keep ``eta`` unless an ETA computed later is kept for its route already (commands
        may come again or out of order); return whether it was kept."""
        old = self._by_route.get(eta.route)
        if old is not None and parse_ts(old.at) > parse_ts(eta.at):
            return False
        self._by_route[eta.route] = eta
        self._by_route.move_to_end(eta.route)
        while len(self._by_route) > self.max_routes:
            self._by_route.popitem(last=False)
        return True

    def get(self, route: str) -> HubEta | None:
        """The latest ETAs of ``route``, if the hub sent any."""
        return self._by_route.get(route)


def _current_stop(
    manifest: Manifest, engine: TripEngine, state: EngineState
) -> dict[str, Any] | None:
    """The stop the van is at, else the one it is approaching, else the manifest's first stop
    not visited yet."""
    at: str | None = None
    approaching: str | None = None
    for i, tr in state.tracks.items():
        z = engine.zones.zones[i]
        if z.stop is None or not tr.inside:
            continue
        if z.kind == "stop" and at is None:
            at = z.stop.id
        elif z.kind == "approach" and approaching is None and z.stop.id not in state.completed:
            approaching = z.stop.id
    if at is not None:
        return {"id": at, "state": "at"}
    if approaching is not None:
        return {"id": approaching, "state": "approaching"}
    for stop in manifest.stops:
        if stop.id not in state.completed:
            return {"id": stop.id, "state": "next"}
    return None


def trip_view(
    manifest: Manifest | None,
    engine: TripEngine | None,
    state: EngineState | None,
    etas: HubEtas,
) -> dict[str, Any]:
    """``GET /v1/trip``: ``{"route", "stop", "stops", "eta_at"}`` (see the module docstring).

    ``stops`` lists the manifest's stops with the hub's ETA and status for each (null and
    ``planned`` before the hub's first ``cmd/eta``); ``eta_at`` is when the hub computed them.
    """
    if manifest is None or engine is None or state is None:
        return {"route": None, "stop": None, "stops": [], "eta_at": None}
    hub = etas.get(manifest.route)
    known = {} if hub is None else {s["id"]: s for s in hub.stops}
    stops = []
    for stop in manifest.stops:
        h = known.get(stop.id)
        stops.append(
            {
                "id": stop.id,
                "eta": None if h is None else h["eta"],
                "status": "planned" if h is None else h["status"],
            }
        )
    return {
        "route": manifest.route,
        "stop": _current_stop(manifest, engine, state),
        "stops": stops,
        "eta_at": None if hub is None else hub.at,
    }
