"""The simulated world: a depot, vans, their routes of stops, geofences and itineraries.

Each van leaves its depot (a polygon), drives Manhattan-style legs over waypoints to its stops,
parks at each for a while (at its second stop, a circle, only 2 to 10 m inside the edge, as a van
that pulls up at the first space past the rim does), takes a break parked 5 m outside a geofence
(a cafe), drives home past a school zone across its longest street, and waits 5 m outside the
depot fence before driving in.
``fleet_scenarios`` draws all of it from one seed; the receiver each van carries is described by
its scenario's receiver fields (``noise_m``, ``tau_s``, ``fix_every``, ``tunnels``, ...) and
simulated by ``simulators.noise``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import shapely

from edge_agent.trips.config import GeofenceConfig, TripsConfig
from edge_agent.trips.geo import LocalProjection
from edge_agent.wire.envelope import format_ts
from simulators.itinerary import Action, Drive, Park

__all__ = ["ORIGIN", "START", "VanScenario", "fleet_scenarios"]

ORIGIN = (52.5200, 13.4050)
START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


@dataclass
class VanScenario:
    """One van: its manifest, extra geofences, itinerary and receiver."""

    van: str
    manifest: dict[str, Any]
    geofences: list[dict[str, Any]]
    start_xy: tuple[float, float]
    actions: list[Action]
    origin: tuple[float, float] = ORIGIN
    start: datetime = START
    noise_m: float = 5.0
    tau_s: float = 20.0
    outlier_p: float = 0.002
    fix_every: float = 1.0
    tunnels: int = 2
    seed: int = 1

    def config(self, **overrides: Any) -> TripsConfig:
        """The ``trips`` configuration the van's agent would run with."""
        return TripsConfig(zones=[GeofenceConfig(**g) for g in self.geofences], **overrides)


def _ll(proj: LocalProjection, x: float, y: float) -> tuple[float, float]:
    lat, lon = proj.inverse(x, y)
    return round(lat, 7), round(lon, 7)


def _rect(
    proj: LocalProjection, cx: float, cy: float, w: float, h: float, rot_deg: float
) -> list[list[float]]:
    c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    ring = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        lat, lon = _ll(proj, cx + dx * c - dy * s, cy + dx * s + dy * c)
        ring.append([lon, lat])
    return ring


def _manhattan(
    rng: random.Random,
    p: tuple[float, float],
    q: tuple[float, float],
    avoid: Any = None,
    first: str | None = None,
) -> tuple[tuple[float, float], ...]:
    """An L-shaped street path from p to q (its corner and q), not through ``avoid``."""
    h, v = (q[0], p[1]), (p[0], q[1])
    options = [h, v] if first == "h" else [v, h] if first == "v" else rng.sample([h, v], 2)
    for corner in options:
        if avoid is None or not avoid.intersects(shapely.LineString([p, corner, q])):
            return (corner, q)
    # both Ls cross the yard: go round it, 600 m out on the far side of p
    out = (p[0], p[1] + (600.0 if p[1] >= 0 else -600.0))
    return (out, *_manhattan(rng, out, q, avoid, first))


def fleet_scenarios(
    n_vans: int = 2,
    *,
    seed: int = 1,
    stops: int = 6,
    noise_m: float = 5.0,
    tau_s: float = 20.0,
    sparse_every: float | None = None,
    tunnels: int = 2,
    start: datetime = START,
    edge_parking: bool = True,
) -> list[VanScenario]:
    """``n_vans`` vans from one depot, each with its own route of ``stops`` stops.

    Van ``k`` starts ``k`` minutes after ``start``. With ``sparse_every``, every second van
    reports a fix only that often (a tracker rather than a receiver at 1 Hz). With
    ``edge_parking`` each van parks 2 to 10 m inside the edge of its second stop (a circle), on
    the street it came in by, and leaves the way it came.
    """
    proj = LocalProjection(*ORIGIN)
    master = random.Random(seed)
    # the depot: a 200 m x 120 m yard turned by 20°, its gate on the east side
    depot_ring = _rect(proj, 0.0, 0.0, 200.0, 120.0, 20.0)
    gate_dir = (math.cos(math.radians(20)), math.sin(math.radians(20)))

    def yard(u: float, w: float) -> tuple[float, float]:
        # a point of the yard's own frame (u along the axis towards the gate, w across)
        return (u * gate_dir[0] - w * gate_dir[1], u * gate_dir[1] + w * gate_dir[0])

    # the yard with a 30 m berth: streets do not run through it
    avoid = shapely.Polygon(
        [yard(u, w) for u, w in ((-130, -90), (130, -90), (130, 90), (-130, 90))]
    )
    out: list[VanScenario] = []
    out_angle = 0.0
    for v in range(n_vans):
        rng = random.Random(master.getrandbits(32))
        van = f"van-{v + 1:02d}"
        route = f"r-{seed}-{v + 1:02d}"
        # parked in the yard (at least 20 m from its fence), out through the gate on its east
        # end (the fence is at u = 100) and up the depot's road to u = 400
        park0 = yard(-80.0 + 18.0 * (v % 8), -35.0 + 20.0 * ((v // 8) % 4))
        gate_in = yard(60.0, 0.0)
        gate_out = yard(170.0, 0.0)
        road = yard(400.0, 0.0)
        # stops in a sector of their own so the two routes do not share streets
        base_angle = rng.uniform(0, 2 * math.pi) if v == 0 else out_angle + math.pi * 0.8
        out_angle = base_angle
        pts: list[tuple[float, float]] = []
        while len(pts) < stops:
            ang = base_angle + rng.uniform(-0.6, 0.6)
            dist = rng.uniform(1200.0, 6000.0)
            cand = (dist * math.cos(ang), dist * math.sin(ang))
            if all(math.hypot(cand[0] - q[0], cand[1] - q[1]) > 500.0 for q in pts):
                pts.append(cand)
        # nearest-neighbour tour from the end of the depot road
        order: list[tuple[float, float]] = []
        cur = road
        left = list(pts)
        while left:
            nxt = min(left, key=lambda q: math.hypot(q[0] - cur[0], q[1] - cur[1]))
            left.remove(nxt)
            order.append(nxt)
            cur = nxt
        stops_json: list[dict[str, Any]] = []
        actions: list[Action] = [
            Park(rng.uniform(120, 300)),
            Drive((gate_in, gate_out, road), cruise=8.0),
        ]
        here = road
        geofences: list[dict[str, Any]] = []
        after_break = False
        # its own stream, so the rest of the day is drawn as it was without edge parking
        edge_rng = random.Random(f"edge-{seed}-{v}")
        window_start = start + timedelta(minutes=v)
        for k, (sx, sy) in enumerate(order):
            sid = f"{van}-s{k + 1:02d}"
            lat, lon = _ll(proj, sx, sy)
            if k % 4 == 3:
                zone: dict[str, Any] = {
                    "polygon": _rect(proj, sx, sy, 90.0, 70.0, rng.uniform(0, 90))
                }
                # parked within the polygon's core: near its middle
                spot = (sx + rng.uniform(-8, 8), sy + rng.uniform(-8, 8))
            else:
                r = rng.choice((40.0, 50.0, 60.0))
                zone = {"lat": lat, "lon": lon, "radius_m": r}
                off = rng.uniform(0, r / 2 - 5)
                ang = rng.uniform(0, 2 * math.pi)
                spot = (sx + off * math.cos(ang), sy + off * math.sin(ang))
            parcels = [f"P{v + 1}{k + 1:02d}{j}" for j in range(rng.randint(1, 3))]
            w0 = window_start + timedelta(minutes=20 * k)
            stops_json.append(
                {
                    "id": sid,
                    **zone,
                    "parcels": parcels,
                    "window": [format_ts(w0), format_ts(w0 + timedelta(hours=1))],
                    "note": "unknown fields are ignored",
                }
            )
            path = _manhattan(rng, here, spot, avoid, "h" if after_break else None)
            after_break = False
            back_to: tuple[float, float] | None = None
            if edge_parking and k == 1 and "radius_m" in zone:
                # pull up 2-10 m past the rim on the street in, and leave the way it came
                corner = here if len(path) == 1 else path[-2]
                ux, uy = sx - corner[0], sy - corner[1]
                run = math.hypot(ux, uy)
                if run > zone["radius_m"] + 100.0:
                    depth = edge_rng.uniform(2.0, 10.0)
                    spot = (sx - ux / run * (zone["radius_m"] - depth),
                            sy - uy / run * (zone["radius_m"] - depth))  # fmt: skip
                    path = (*path[:-1], spot)
                    # turn and leave the way it came, to 100 m outside the rim
                    back = zone["radius_m"] + 100.0
                    back_to = (sx - ux / run * back, sy - uy / run * back)
            actions.append(Drive(path, cruise=rng.uniform(9.0, 14.0)))
            actions.append(Park(rng.uniform(60.0, 420.0)))
            here = spot
            if back_to is not None:
                actions.append(Drive((back_to,), cruise=8.0))
                here = back_to
            if k == len(order) // 2:
                # a break parked 5 m outside a geofence (a cafe's car park), for 20 minutes
                bx, by = here[0] + 350.0, here[1] + 150.0
                actions.append(Drive(_manhattan(rng, here, (bx, by), avoid), cruise=10.0))
                actions.append(Park(1200.0))
                clat, clon = _ll(proj, bx, by + 45.0)  # the fence is 5 m north of the van
                geofences.append(
                    {"name": f"cafe-{v + 1}", "lat": clat, "lon": clon, "radius": 40.0}
                )
                here = (bx, by)
                after_break = True  # leave along the street, not through the cafe
        # home, with a school zone across the longest street of the way (a drive-by)
        home = _manhattan(rng, here, road, avoid, "h" if after_break else None)
        legs = list(zip((here, *home[:-1]), home, strict=True))
        (ax, ay), (bx2, by2) = max(
            legs, key=lambda leg: math.hypot(leg[1][0] - leg[0][0], leg[1][1] - leg[0][1])
        )
        mx, my = (ax + bx2) / 2, (ay + by2) / 2
        slat, slon = _ll(proj, mx + (10.0 if ax == bx2 else 0.0), my + (10.0 if ay == by2 else 0.0))
        geofences.append({"name": f"school-{v + 1}", "lat": slat, "lon": slon, "radius": 70.0})
        # wait 5 m outside the fence for 10 minutes, then drive in and park
        wait = yard(105.0, 0.0)
        actions.append(Drive((*home, gate_out, wait), cruise=11.0))
        actions.append(Park(600.0))
        actions.append(Drive((gate_in, park0), cruise=4.0))
        actions.append(Park(300.0))
        manifest = {
            "route": route,
            "depot": {"id": "depot-berlin-1", "polygon": depot_ring},
            "stops": stops_json,
            "version": 2,
        }
        out.append(
            VanScenario(
                van=van,
                manifest=manifest,
                geofences=geofences,
                start_xy=park0,
                actions=actions,
                start=start + timedelta(minutes=v),
                noise_m=noise_m,
                tau_s=tau_s,
                fix_every=sparse_every if (sparse_every and v % 2 == 1) else 1.0,
                tunnels=tunnels,
                seed=rng.getrandbits(32),
            )
        )
    return out
