"""The hub's ETAs to the van: which ``cmd/eta`` commands to queue, and when (pure, no I/O).

One ETA in every channel (DESIGN §9): the driver app reads the van's ``GET /v1/trip``, and the
van shows the hub's ETAs, not its own. The projector offers every route view it rewrites
(``offer``); ``due(now)`` says which routes' ETAs go to their vehicle now, as the payload of a
``cmd/eta`` command (``{"route", "at", "stops": [{"id", "eta", "status"}]}``):

- a change of a stop's status, or the route's first view, goes at once;
- a change of ETAs alone goes at most once per ``interval`` per route (ETAs change on every fix);
  the last one waits and goes when the interval has passed, so the van ends with the latest;
- a route with no vehicle (its manifest was not sent to a device) or still ``planned`` (no
  ETAs yet) sends nothing.

The hub's command queue keeps one unanswered ``eta`` per device (a newer one supersedes it), so
a van offline for hours gets only the latest when it comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent.wire.envelope import format_ts

__all__ = ["DEFAULT_INTERVAL_S", "EtaCommand", "VanEtaPlanner"]

DEFAULT_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class EtaCommand:
    """A ``cmd/eta`` to queue for ``device`` of ``fleet``."""

    fleet: str
    device: str
    route: str
    payload: dict[str, Any]


@dataclass(slots=True)
class _Route:
    sent_statuses: tuple[str, ...] | None = None
    sent_etas: tuple[str | None, ...] | None = None
    sent_at: float = float("-inf")
    pending: dict[str, Any] | None = None  # the newest view not sent yet
    urgent: bool = False
    vehicle: str | None = None
    stamped: float = 0.0  # when the pending view was offered (the payload's "at")


@dataclass(slots=True)
class VanEtaPlanner:
    """Decides the ``cmd/eta`` commands (see the module docstring); ``max_routes`` bounds what
    it remembers (the least recently offered routes are forgotten first)."""

    interval: float = DEFAULT_INTERVAL_S
    max_routes: int = 100_000
    _routes: dict[tuple[str, str], _Route] = field(default_factory=dict)

    def offer(self, fleet: str, view: Mapping[str, Any], now: float) -> None:
        """A route's view as the API shows it (``model.route``), rewritten at ``now``."""
        route = view.get("route")
        vehicle = view.get("vehicle")
        stops = view.get("stops")
        if not isinstance(route, str) or not isinstance(stops, list):
            return
        if not isinstance(vehicle, str) or not vehicle or view.get("status") == "planned":
            return
        key = (fleet, route)
        st = self._routes.pop(key, None) or _Route()
        self._routes[key] = st  # most recently offered last
        while len(self._routes) > self.max_routes:
            del self._routes[next(iter(self._routes))]
        statuses = tuple(str(s.get("status")) for s in stops if isinstance(s, Mapping))
        etas = tuple(s.get("eta") for s in stops if isinstance(s, Mapping))
        if (
            st.vehicle == vehicle
            and statuses == st.sent_statuses
            and etas == st.sent_etas
            and st.pending is None
        ):
            return  # nothing new for the van
        st.urgent = st.urgent or statuses != st.sent_statuses or vehicle != st.vehicle
        st.vehicle = vehicle
        st.pending = dict(view)
        st.stamped = now

    def due(self, now: float) -> list[EtaCommand]:
        """The commands to queue now; each route's pending view is then taken as sent."""
        out: list[EtaCommand] = []
        for (fleet, route), st in self._routes.items():
            view = st.pending
            if view is None or st.vehicle is None:
                continue
            if not st.urgent and now - st.sent_at < self.interval:
                continue
            stops = [
                {"id": s.get("id"), "eta": s.get("eta"), "status": s.get("status")}
                for s in view.get("stops") or []
                if isinstance(s, Mapping)
            ]
            at = format_ts(datetime.fromtimestamp(st.stamped, UTC))
            out.append(
                EtaCommand(fleet, st.vehicle, route, {"route": route, "at": at, "stops": stops})
            )
            st.sent_statuses = tuple(str(s["status"]) for s in stops)
            st.sent_etas = tuple(s["eta"] for s in stops)
            st.sent_at, st.pending, st.urgent = now, None, False
        return out

    def failed(self, cmd: EtaCommand) -> None:
        """``cmd`` could not be queued: send it again at the next ``due`` unless a newer view
        came meanwhile."""
        st = self._routes.get((cmd.fleet, cmd.route))
        if st is None:
            return
        st.sent_statuses = st.sent_etas = None
        if st.pending is None:
            st.pending = {"route": cmd.route, "vehicle": cmd.device, "stops": cmd.payload["stops"]}
        st.urgent = True

    def waiting(self) -> int:
        """How many routes have ETAs held back by the interval."""
        return sum(1 for st in self._routes.values() if st.pending is not None)
