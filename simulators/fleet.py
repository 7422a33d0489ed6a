"""Fleet simulator: vans driving routes of stops, their noisy GNSS fixes, and the ground truth.

Each van leaves its depot (a polygon), drives Manhattan-style legs over waypoints to its stops,
parks at each for a while, takes a break parked 5 m outside a geofence, and comes back to wait
5 m outside the depot fence before driving in. The receiver's view of it has

- Gauss-Markov position noise (``noise_m`` per axis, correlation time ``tau_s``: real GNSS error
  wanders, it is not white), rare multipath outliers, Doppler-like speed noise;
- tunnels (no fix for 30-90 s on a straight stretch) and, per van, a fix interval (1 s, or
  sparse trackers at 15-30 s);

and the simulator writes, next to each van's NMEA log and manifest, the **ground truth**: every
time the true path entered and left every zone (interpolated on a 0.25 s path), how deep it went
and how long it stood still inside, so tests and tuning can score the engine's events
(``score``): precision, recall, flaps, time and position errors.

Command line::

    python -m simulators.fleet generate --out DIR [--vans 2] [--seed 1] [--stops 6]
    python -m simulators.fleet serve --out DIR [--vans 2] [--speed 10] [--base-port 0]
    python -m simulators.fleet score DIR/van-01.truth.json EVENTS.jsonl
    python -m simulators.fleet evaluate --seeds 1-10 [--vans 2] [--sparse 20] [--nmea]
    python -m simulators.fleet demo [--vans 2] [--stops 3] [--speed 100]

``generate`` writes ``van-NN.manifest.json``, ``van-NN.nmea``, ``van-NN.truth.json`` and
``van-NN.zones.json`` (the extra geofences, as ``trips.zones`` configuration) per van and a
``fleet.json`` index; ``serve`` also feeds each van's NMEA through the GNSS simulator (a TCP
socket per van, ``speed`` times real time) for agents to connect to; ``score`` prints the scores
of a van's events (JSON lines as ``edge-agent trips replay`` prints them) against its truth;
``evaluate`` simulates, runs the engine over and scores many vans and prints the pooled scores;
``demo`` runs the whole system (a private mosquitto, the hub, one agent per van fed by the GNSS
simulator, manifests sent on ``cmd/manifest``) and prints each van's timeline from the hub with
its score.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from edge_agent.gnss.fix import Fix
from edge_agent.trips.config import GeofenceConfig, TripsConfig
from edge_agent.trips.geo import LocalProjection
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.zones import ZoneSet
from edge_agent.wire.envelope import format_ts, parse_ts

__all__ = [
    "Drive",
    "Park",
    "Sample",
    "Score",
    "VanRun",
    "VanScenario",
    "drive_path",
    "evaluate",
    "events_of",
    "fleet_scenarios",
    "main",
    "nmea_lines",
    "run_van",
    "score",
    "zone_truth",
]

ORIGIN = (52.5200, 13.4050)
START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
TRUTH_DT = 0.25


# ---------------------------------------------------------------------------- the itinerary


@dataclass(frozen=True, slots=True)
class Drive:
    """Drive along ``points`` (metres on the plane) from wherever the van is, stopping at the end.

    Accelerates and brakes at ``accel`` m/s², cruises at ``cruise`` m/s and slows to ``corner``
    m/s through each waypoint.
    """

    points: tuple[tuple[float, float], ...]
    cruise: float = 12.0
    accel: float = 1.5
    corner: float = 5.0


@dataclass(frozen=True, slots=True)
class Park:
    """Stand still for ``seconds``."""

    seconds: float


Action = Drive | Park


@dataclass(frozen=True, slots=True)
class Sample:
    """The true state of a van at time ``t`` (seconds from the start)."""

    t: float
    x: float
    y: float
    speed: float
    heading: float


def _profile(
    length: float, v0: float, v1: float, vmax: float, a: float
) -> list[tuple[float, float, float]]:
    """Phases (duration, start speed, acceleration) covering ``length`` metres from v0 to v1."""
    if length <= 0:
        return []
    # the peak speed reachable when accelerating then braking over the whole length
    vpeak = math.sqrt(max(0.0, a * length + (v0 * v0 + v1 * v1) / 2))
    vtop = min(vmax, vpeak)
    v0 = min(v0, vtop)
    v1 = min(v1, vtop)
    d_up = (vtop * vtop - v0 * v0) / (2 * a)
    d_down = (vtop * vtop - v1 * v1) / (2 * a)
    d_flat = max(0.0, length - d_up - d_down)
    phases = []
    if vtop > v0:
        phases.append(((vtop - v0) / a, v0, a))
    if d_flat > 0 and vtop > 0:
        phases.append((d_flat / vtop, vtop, 0.0))
    if vtop > v1:
        phases.append(((vtop - v1) / a, vtop, -a))
    return phases


def drive_path(
    start: tuple[float, float], actions: Sequence[Action], dt: float = TRUTH_DT
) -> list[Sample]:
    """The true path of an itinerary, sampled every ``dt`` seconds from t = 0."""
    # kinematic pieces: (t0, duration, x0, y0, ux, uy, v0, accel)
    pieces: list[tuple[float, float, float, float, float, float, float, float]] = []
    t = 0.0
    x, y = start
    heading = 0.0
    for act in actions:
        if isinstance(act, Park):
            pieces.append((t, act.seconds, x, y, 0.0, 0.0, 0.0, 0.0))
            t += act.seconds
            continue
        pts = [(x, y), *act.points]
        legs = [(pts[k], pts[k + 1]) for k in range(len(pts) - 1)]
        legs = [(p, q) for p, q in legs if math.hypot(q[0] - p[0], q[1] - p[1]) > 1e-6]
        for k, (p, q) in enumerate(legs):
            length = math.hypot(q[0] - p[0], q[1] - p[1])
            ux, uy = (q[0] - p[0]) / length, (q[1] - p[1]) / length
            v_in = 0.0 if k == 0 else act.corner
            v_out = 0.0 if k == len(legs) - 1 else act.corner
            px, py = p
            for dur, v, acc in _profile(length, v_in, v_out, act.cruise, act.accel):
                pieces.append((t, dur, px, py, ux, uy, v, acc))
                d = v * dur + acc * dur * dur / 2
                px, py = px + ux * d, py + uy * d
                t += dur
            x, y = q
    out: list[Sample] = []
    n = int(t / dt) + 1
    k = 0
    for i in range(n):
        ts = i * dt
        while k + 1 < len(pieces) and ts >= pieces[k][0] + pieces[k][1]:
            k += 1
        if not pieces:
            out.append(Sample(ts, x, y, 0.0, heading))
            continue
        t0, dur, px, py, ux, uy, v, acc = pieces[k]
        tau = min(max(0.0, ts - t0), dur)
        d = v * tau + acc * tau * tau / 2
        speed = max(0.0, v + acc * tau)
        if ux or uy:
            heading = math.degrees(math.atan2(ux, uy)) % 360.0
        out.append(Sample(ts, px + ux * d, py + uy * d, speed if (ux or uy) else 0.0, heading))
    return out


# ---------------------------------------------------------------------------- scenarios


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
    notes: list[str] = field(default_factory=list)

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
) -> list[VanScenario]:
    """``n_vans`` vans from one depot, each with its own route of ``stops`` stops.

    Van ``k`` starts ``k`` minutes after ``start``. With ``sparse_every``, every second van
    reports a fix only that often (a tracker rather than a receiver at 1 Hz).
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
            actions.append(Drive(path, cruise=rng.uniform(9.0, 14.0)))
            actions.append(Park(rng.uniform(60.0, 420.0)))
            here = spot
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


# ---------------------------------------------------------------------------- receiver model


@dataclass
class VanRun:
    """A simulated van: true path, the fixes its receiver reported, and the zone truth."""

    scenario: VanScenario
    zones: ZoneSet
    samples: list[Sample]
    fixes: list[Fix]
    truth: dict[str, Any]


def _tunnels(
    rng: random.Random, samples: Sequence[Sample], count: int
) -> list[tuple[float, float]]:
    """``count`` stretches of 30-90 s of straight cruising where the receiver sees no sky."""
    out: list[tuple[float, float]] = []
    cruising = [
        i
        for i in range(1, len(samples))
        if samples[i].speed >= 8.0 and samples[i].heading == samples[i - 1].heading
    ]
    tries = 0
    while len(out) < count and cruising and tries < 200:
        tries += 1
        i = rng.choice(cruising)
        length = rng.uniform(30.0, 90.0)
        t0 = samples[i].t
        j = i
        while j + 1 < len(samples) and samples[j + 1].t <= t0 + length:
            j += 1
            if samples[j].heading != samples[i].heading or samples[j].speed < 8.0:
                break
        else:
            if samples[j].t - t0 >= 30.0 and all(
                t1 < t0 - 60 or t0b > samples[j].t + 60 for t0b, t1 in out
            ):
                out.append((t0, samples[j].t))
    return sorted(out)


def _receiver(
    sc: VanScenario, samples: Sequence[Sample], proj: LocalProjection
) -> tuple[list[Fix], list[tuple[float, float]]]:
    rng = random.Random(sc.seed)
    tunnels = _tunnels(rng, samples, sc.tunnels)
    step = max(1, round(sc.fix_every / TRUTH_DT))
    dt = step * TRUTH_DT
    rho = math.exp(-dt / sc.tau_s) if sc.tau_s > 0 else 0.0
    kick = sc.noise_m * math.sqrt(1 - rho * rho)
    ex, ey = rng.gauss(0, sc.noise_m), rng.gauss(0, sc.noise_m)
    fixes: list[Fix] = []
    phase = rng.randrange(step)
    for i in range(phase, len(samples), step):
        s = samples[i]
        ex = rho * ex + kick * rng.gauss(0, 1)
        ey = rho * ey + kick * rng.gauss(0, 1)
        if any(a <= s.t <= b for a, b in tunnels):
            continue
        nx, ny = ex, ey
        if rng.random() < sc.outlier_p:
            d, a = rng.uniform(30.0, 80.0), rng.uniform(0, 2 * math.pi)
            nx, ny = nx + d * math.cos(a), ny + d * math.sin(a)
        lat, lon = proj.inverse(s.x + nx, s.y + ny)
        speed = max(0.0, s.speed + rng.gauss(0, 0.15)) if s.speed > 0 else abs(rng.gauss(0, 0.08))
        fixes.append(
            Fix(
                time=sc.start + timedelta(seconds=s.t),
                lat=round(lat, 8),
                lon=round(lon, 8),
                alt_m=round(40.0 + rng.gauss(0, 2.0), 1),
                speed_mps=round(speed, 3),
                track_deg=round(s.heading, 2) if s.speed > 0.5 else None,
                mode=3,
                quality=1,
                hdop=round(rng.uniform(0.8, 1.6), 1),
                pdop=round(rng.uniform(1.2, 2.4), 1),
                sats=rng.randint(7, 12),
            )
        )
    return fixes, tunnels


# ---------------------------------------------------------------------------- truth


def zone_truth(zones: ZoneSet, samples: Sequence[Sample], start: datetime) -> list[dict[str, Any]]:
    """Every interval the true path spent inside each zone, with depth and time stood still.

    Geometry is shapely's (independent of the engine's own arithmetic); crossings are
    interpolated linearly between path samples ``TRUTH_DT`` apart.
    """
    xs = np.array([s.x for s in samples])
    ys = np.array([s.y for s in samples])
    ts = np.array([s.t for s in samples])
    sp = np.array([s.speed for s in samples])
    proj = zones.projection
    t_start = start.timestamp()
    out: list[dict[str, Any]] = []
    for z in zones.zones:
        x0, y0, x1, y1 = z.bbox
        pad = 200.0
        near = (xs >= x0 - pad) & (xs <= x1 + pad) & (ys >= y0 - pad) & (ys <= y1 + pad)
        if not near.any():
            continue
        shape = z.shape()
        idx = np.flatnonzero(near)
        # the runs of consecutive samples near the zone
        breaks = np.flatnonzero(np.diff(idx) > 1)
        for run in np.split(idx, breaks + 1):
            lo, hi = max(0, run[0] - 1), min(len(samples) - 1, run[-1] + 1)
            sl = slice(lo, hi + 1)
            pts = shapely.points(xs[sl], ys[sl])
            dist = shapely.distance(shape.boundary, pts)
            inside = shapely.contains(shape, pts)
            s = np.where(inside, -dist, dist)
            _intervals(z.key, s, ts[sl], xs[sl], ys[sl], sp[sl], proj, t_start, lo == 0, out)
    out.sort(key=lambda d: (d["enter"] if d["enter"] is not None else -1.0, d["zone"]))
    return out


def _intervals(
    key: str,
    s: np.ndarray,
    ts: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    sp: np.ndarray,
    proj: LocalProjection,
    t_start: float,
    at_start: bool,
    out: list[dict[str, Any]],
) -> None:
    def cross(k: int) -> tuple[float, float, float]:
        u = s[k - 1] / (s[k - 1] - s[k]) if s[k - 1] != s[k] else 0.0
        t = ts[k - 1] + u * (ts[k] - ts[k - 1])
        lat, lon = proj.inverse(
            xs[k - 1] + u * (xs[k] - xs[k - 1]), ys[k - 1] + u * (ys[k] - ys[k - 1])
        )
        return t_start + float(t), lat, lon

    inside = s <= 0
    cur: dict[str, Any] | None = None
    gap_depth = 0.0
    for k in range(len(s)):
        if inside[k] and cur is None:
            if k == 0:
                cur = {"zone": key, "enter": None, "enter_lat": None, "enter_lon": None,
                       "initial": at_start}  # fmt: skip
            else:
                t, lat, lon = cross(k)
                cur = {"zone": key, "enter": t, "enter_lat": lat, "enter_lon": lon,
                       "initial": False}  # fmt: skip
            cur.update(depth_m=0.0, still_s=0.0, gap_depth_m=round(gap_depth, 2))
            gap_depth = 0.0
        if cur is not None and inside[k]:
            cur["depth_m"] = max(cur["depth_m"], float(-s[k]))
            if sp[k] < 0.3 and k > 0:
                cur["still_s"] += float(ts[k] - ts[k - 1])
        if cur is not None and not inside[k]:
            t, lat, lon = cross(k)
            cur.update(exit=t, exit_lat=lat, exit_lon=lon)
            cur["depth_m"] = round(cur["depth_m"], 2)
            cur["still_s"] = round(cur["still_s"], 2)
            out.append(cur)
            cur = None
        if not inside[k]:
            gap_depth = max(gap_depth, float(s[k]))
    if cur is not None:
        cur.update(exit=None, exit_lat=None, exit_lon=None)
        cur["depth_m"] = round(cur["depth_m"], 2)
        cur["still_s"] = round(cur["still_s"], 2)
        out.append(cur)


def run_van(sc: VanScenario, config: TripsConfig | None = None) -> VanRun:
    """Simulate one van: path, fixes and truth (the zones built as the agent would build them)."""
    cfg = config if config is not None else sc.config()
    zones = build_zones(parse_manifest(sc.manifest), cfg)
    proj = LocalProjection(*sc.origin)
    samples = drive_path(sc.start_xy, sc.actions)
    # the scenario's plane and the engine's may differ (origins): move samples onto the engine's
    moved = []
    for smp in samples:
        lat, lon = proj.inverse(smp.x, smp.y)
        x, y = zones.projection.forward(lat, lon)
        moved.append(Sample(smp.t, x, y, smp.speed, smp.heading))
    fixes, tunnels = _receiver(sc, samples, proj)
    truth = {
        "van": sc.van,
        "route": sc.manifest["route"],
        "start": format_ts(sc.start),
        "end": format_ts(sc.start + timedelta(seconds=samples[-1].t)),
        "noise_m": sc.noise_m,
        "tau_s": sc.tau_s,
        "fix_every_s": sc.fix_every,
        "tunnels": [
            [format_ts(sc.start + timedelta(seconds=a)), format_ts(sc.start + timedelta(seconds=b))]
            for a, b in tunnels
        ],
        "zones": {z.key: {"kind": z.kind, "name": z.name} for z in zones.zones},
        "intervals": zone_truth(zones, moved, sc.start),
    }
    return VanRun(sc, zones, moved, fixes, truth)


def nmea_lines(fixes: Iterable[Fix]) -> Iterable[str]:
    """The NMEA sentences of each fix, as a receiver would send them."""
    from simulators.nmea_out import fix_to_nmea

    for fix in fixes:
        yield from fix_to_nmea(fix)


# ---------------------------------------------------------------------------- scoring


@dataclass
class Score:
    """How well a van's events match its truth."""

    required: int = 0
    matched: int = 0
    optional_matched: int = 0
    events: int = 0
    false_events: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    time_errors: list[float] = field(default_factory=list)
    dist_errors: list[float] = field(default_factory=list)
    dwell_errors: list[float] = field(default_factory=list)
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)

    def _tally(self, type_: str, what: str) -> None:
        counts = self.by_type.setdefault(type_, {"required": 0, "matched": 0, "false": 0})
        counts[what] += 1

    @property
    def precision(self) -> float:
        """Matched events over scored events (optional truths absorb their events)."""
        scored = self.events - self.optional_matched
        return 1.0 if scored == 0 else self.matched / scored

    @property
    def recall(self) -> float:
        """Required truths matched exactly once, over required truths."""
        return 1.0 if self.required == 0 else self.matched / self.required

    @property
    def flaps(self) -> int:
        """Events that match no truth: extra enters/exits, duplicates, jitter."""
        return len(self.false_events)

    def summary(self) -> dict[str, Any]:
        """The scores as JSON data."""
        te, de = self.time_errors, self.dist_errors
        return {
            "required": self.required,
            "matched": self.matched,
            "events": self.events,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "flaps": self.flaps,
            "time_error_s": {"mean": _mean(te), "max": _max(te)},
            "dist_error_m": {"mean": _mean(de), "max": _max(de)},
            "dwell_error_s": {"max": _max(self.dwell_errors)},
            "by_type": {k: self.by_type[k] for k in sorted(self.by_type)},
        }


def _mean(v: list[float]) -> float | None:
    return round(sum(v) / len(v), 2) if v else None


def _max(v: list[float]) -> float | None:
    return round(max(v), 2) if v else None


SCORED = (
    "trip.arrive",
    "trip.depart",
    "trip.approach",
    "trip.dwell",
    "geofence.enter",
    "geofence.exit",
)


def _event_zone(ev: dict[str, Any]) -> str:
    ref = ev.get("ref") or {}
    data = ev.get("data") or {}
    stop = ref.get("stop")
    type_ = ev["type"]
    if type_ == "trip.approach":
        return f"approach:{stop}"
    if stop is not None:
        return f"stop:{stop}"
    if type_ in ("trip.arrive", "trip.depart"):
        return "depot"
    return f"zone:{data.get('zone')}"


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(a))


def _merge(intervals: list[dict[str, Any]], out_depth: float) -> list[dict[str, Any]]:
    """Join intervals of a zone separated by an excursion too shallow to count as leaving."""
    merged: list[dict[str, Any]] = []
    for iv in intervals:
        prev = merged[-1] if merged else None
        if prev is not None and prev["zone"] == iv["zone"] and iv["gap_depth_m"] < out_depth:
            prev = dict(prev)
            prev.update(
                exit=iv["exit"],
                exit_lat=iv["exit_lat"],
                exit_lon=iv["exit_lon"],
                depth_m=max(prev["depth_m"], iv["depth_m"]),
                still_s=prev["still_s"] + iv["still_s"],
            )
            merged[-1] = prev
        else:
            merged.append(dict(iv))
    return merged


def _expected(truth: dict[str, Any], cfg: TripsConfig) -> list[dict[str, Any]]:
    """The events the truth calls for: ``(type, zone, t, lat, lon, required)``."""
    need_in = cfg.enter_margin + 10.0
    need_out = cfg.exit_margin + 10.0
    kinds = {k: v["kind"] for k, v in truth["zones"].items()}
    configured = {f"zone:{z.name}" for z in cfg.zones}
    by_zone: dict[str, list[dict[str, Any]]] = {}
    for iv in truth["intervals"]:
        if kinds[iv["zone"]] == "zone" and iv["zone"] not in configured:
            continue  # a geofence the agent was not configured with
        by_zone.setdefault(iv["zone"], []).append(iv)
    exp: list[dict[str, Any]] = []
    for key, ivs in by_zone.items():
        for iv in _merge(sorted(ivs, key=lambda d: d["enter"] or 0.0), need_out):
            kind = kinds[key]
            required = iv["depth_m"] >= need_in
            dur = (iv["exit"] or math.inf) - (iv["enter"] or -math.inf)
            visit: bool | None
            if iv["still_s"] >= 20.0 or dur >= cfg.arrive_after + 30.0:
                visit = True
            elif iv["still_s"] < 5.0 and dur < cfg.arrive_after - 15.0:
                visit = False
            else:
                visit = None  # either reading is right
            if kind == "depot":
                types_in, types_out = ["trip.arrive"], ["trip.depart"]
            elif kind == "stop":
                if visit is None:
                    required = False
                types_in = ["trip.arrive"] if visit else ["geofence.enter"]
                types_out = ["trip.dwell", "trip.depart"] if visit else ["geofence.exit"]
                if visit is None:
                    types_in = ["trip.arrive", "geofence.enter"]
                    types_out = ["trip.dwell", "trip.depart", "geofence.exit"]
            elif kind == "approach":
                types_in, types_out = ["trip.approach"], []
            else:
                types_in, types_out = ["geofence.enter"], ["geofence.exit"]
            common = {"zone": key, "required": required, "visit": visit if kind == "stop" else True}
            if iv["enter"] is not None:
                for ty in types_in:
                    exp.append(
                        {
                            "type": ty,
                            "t": iv["enter"],
                            "lat": iv["enter_lat"],
                            "lon": iv["enter_lon"],
                            **common,
                        }
                    )
            if iv["exit"] is not None:
                for ty in types_out:
                    e = {
                        "type": ty,
                        "t": iv["exit"],
                        "lat": iv["exit_lat"],
                        "lon": iv["exit_lon"],
                        **common,
                    }
                    if ty == "trip.dwell":
                        e["dwell_s"] = iv["exit"] - (
                            iv["enter"] if iv["enter"] is not None else iv["exit"]
                        )
                        e["lat"] = None  # dwell's position is where the van stood, not the exit
                    exp.append(e)
    exp.sort(key=lambda e: e["t"])
    # approach rings of stops already done say nothing: drop their truths
    done: dict[str, float] = {}
    for e in exp:
        if e["type"] == "trip.depart" and e["zone"].startswith("stop:") and e["visit"]:
            done.setdefault(e["zone"][5:], e["t"])
    kept = []
    for e in exp:
        if e["type"] == "trip.approach":
            sid = e["zone"][len("approach:") :]
            if sid in done and done[sid] < e["t"]:
                continue
        kept.append(e)
    # an ambiguous stop visit expects one of two readings: neither is required
    for e in kept:
        if e["visit"] is None:
            e["required"] = False
    return kept


def score(
    events: Iterable[dict[str, Any]],
    truth: dict[str, Any],
    config: TripsConfig | None = None,
    *,
    time_tol: float = 10.0,
    dist_tol: float = 30.0,
) -> Score:
    """Score events (``trips replay`` JSON objects) against a van's truth.

    Every required true transition must be matched by exactly one event of the right type and
    zone within ``time_tol`` seconds and ``dist_tol`` metres; an event matching nothing is a
    false event (a flap, a duplicate). Truths too shallow to be told from noise (depth under the
    margin + 10 m), and stop visits too short to tell a stop from a drive-by, are optional: an
    event may match them, none is required. Geofences (``zone:*``) count only if ``config``
    has them (``trips replay`` runs with the manifest alone).
    """
    cfg = config if config is not None else TripsConfig()
    evs = [
        {**e, "_t": parse_ts(e["ts"]).timestamp(), "_zone": _event_zone(e)}
        for e in events
        if e.get("type") in SCORED
    ]
    sc = Score(events=len(evs))
    used = [False] * len(evs)
    expected = _expected(truth, cfg)
    # required truths first, so an optional one cannot steal their event
    for e in sorted(expected, key=lambda d: not d["required"]):
        if e["required"]:
            sc.required += 1
            sc._tally(e["type"], "required")
        best, best_dt = None, math.inf
        for k, ev in enumerate(evs):
            if used[k] or ev["type"] != e["type"] or ev["_zone"] != e["zone"]:
                continue
            dt = abs(ev["_t"] - e["t"])
            if dt > time_tol or dt >= best_dt:
                continue
            if e["lat"] is not None:
                d = _haversine(ev["data"]["lat"], ev["data"]["lon"], e["lat"], e["lon"])
                if d > dist_tol:
                    continue
            best, best_dt = k, dt
        if best is None:
            if e["required"]:
                sc.missed.append(dict(e))
            continue
        used[best] = True
        ev = evs[best]
        if e["required"]:
            sc.matched += 1
            sc._tally(e["type"], "matched")
            sc.time_errors.append(best_dt)
            if e["lat"] is not None:
                sc.dist_errors.append(
                    _haversine(ev["data"]["lat"], ev["data"]["lon"], e["lat"], e["lon"])
                )
            if e["type"] == "trip.dwell":
                sc.dwell_errors.append(abs(float(ev["data"]["dwell_s"]) - e["dwell_s"]))
        else:
            sc.optional_matched += 1
    for k, ev in enumerate(evs):
        if not used[k]:
            sc._tally(ev["type"], "false")
            sc.false_events.append({kk: v for kk, v in ev.items() if not kk.startswith("_")})
    return sc


# ---------------------------------------------------------------------------- command line


def _write_van(out: Path, run: VanRun) -> dict[str, Any]:
    sc = run.scenario
    base = out / sc.van
    paths = {
        "manifest": base.with_suffix(".manifest.json"),
        "nmea": base.with_suffix(".nmea"),
        "truth": base.with_suffix(".truth.json"),
        "zones": base.with_suffix(".zones.json"),
    }
    paths["manifest"].write_text(json.dumps(sc.manifest, indent=1) + "\n")
    with paths["nmea"].open("w", newline="") as f:
        f.writelines(nmea_lines(run.fixes))
    paths["truth"].write_text(json.dumps(run.truth, indent=1) + "\n")
    paths["zones"].write_text(json.dumps({"zones": sc.geofences}, indent=1) + "\n")
    return {"van": sc.van, "fixes": len(run.fixes), **{k: str(v) for k, v in paths.items()}}


def _generate(args: argparse.Namespace) -> list[tuple[VanRun, dict[str, Any]]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.start:
        start = datetime.fromisoformat(args.start).astimezone(UTC)
    elif args.func is _cmd_serve:
        # served live: the agents' clocks must agree with the fixes' times
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    else:
        start = START
    scs = fleet_scenarios(
        args.vans,
        seed=args.seed,
        stops=args.stops,
        noise_m=args.noise,
        sparse_every=args.sparse,
        tunnels=args.tunnels,
        start=start,
    )
    runs = []
    for sc in scs:
        run = run_van(sc)
        runs.append((run, _write_van(out, run)))
    (out / "fleet.json").write_text(json.dumps([info for _, info in runs], indent=1) + "\n")
    return runs


def _cmd_generate(args: argparse.Namespace) -> int:
    for _, info in _generate(args):
        print(json.dumps(info))
    return 0


def events_of(
    run: VanRun, config: TripsConfig | None = None, *, nmea: bool = False
) -> list[dict[str, Any]]:
    """The van's events as ``trips replay`` derives them (``ref`` in full), for scoring.

    With ``nmea`` the fixes go through NMEA sentences and the GNSS fix assembly first, as a
    recorded log would; otherwise straight to the reorder buffer and the engine.
    """
    from edge_agent.trips.engine import EngineParams, TripEngine
    from edge_agent.trips.reorder import FixOrder
    from edge_agent.trips.replay import replay_events

    cfg = config if config is not None else run.scenario.config()
    m = parse_manifest(run.scenario.manifest)
    if nmea:
        events = list(replay_events(m, ["".join(nmea_lines(run.fixes)).encode("ascii")], cfg))
    else:
        eng = TripEngine(build_zones(m, cfg), EngineParams.from_config(cfg), m.route)
        order = FixOrder(cfg.reorder_window, cfg.max_time_jump)
        st = eng.new_state()
        events = []
        for due in [f for fix in run.fixes for f in order.push(fix)] + order.flush():
            st, evs = eng.step(st, due)
            events += evs
    return [{**e.to_json(), "ref": e.ref} for e in events]


def evaluate(scenarios: Iterable[VanScenario], *, nmea: bool = False) -> dict[str, Any]:
    """Score many vans and pool the results (the figures quoted in the README)."""
    total = Score()
    vans = 0
    for sc in scenarios:
        run = run_van(sc)
        one = score(events_of(run, nmea=nmea), run.truth, sc.config())
        vans += 1
        total.required += one.required
        total.matched += one.matched
        total.optional_matched += one.optional_matched
        total.events += one.events
        total.false_events += one.false_events
        total.missed += one.missed
        total.time_errors += one.time_errors
        total.dist_errors += one.dist_errors
        total.dwell_errors += one.dwell_errors
        for type_, counts in one.by_type.items():
            for what, n in counts.items():
                for _ in range(n):
                    total._tally(type_, what)
    out = total.summary()
    te = sorted(total.time_errors)
    de = sorted(total.dist_errors)
    out["vans"] = vans
    out["time_error_s"]["p95"] = round(te[int(0.95 * (len(te) - 1))], 2) if te else None
    out["dist_error_m"]["p95"] = round(de[int(0.95 * (len(de) - 1))], 2) if de else None
    visits = [out["by_type"].get(t, {}) for t in ("trip.arrive", "trip.depart", "trip.dwell")]
    out["visits"] = {k: sum(v.get(k, 0) for v in visits) for k in ("required", "matched", "false")}
    out["missed"] = [{k: m[k] for k in ("type", "zone", "t")} for m in total.missed]
    return out


def _cmd_evaluate(args: argparse.Namespace) -> int:
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    scenarios = [
        sc
        for seed in seeds
        for sc in fleet_scenarios(
            args.vans,
            seed=seed,
            stops=args.stops,
            noise_m=args.noise,
            sparse_every=args.sparse,
            tunnels=args.tunnels,
        )
    ]
    print(json.dumps(evaluate(scenarios, nmea=args.nmea)))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    truth = json.loads(Path(args.truth).read_text())
    text = sys.stdin.read() if args.events == "-" else Path(args.events).read_text()
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    cfg = (
        TripsConfig(zones=json.loads(Path(args.zones).read_text())["zones"]) if args.zones else None
    )
    print(json.dumps(score(events, truth, cfg).summary()))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    runs = _generate(args)
    return asyncio.run(_serve(runs, args.speed, args.base_port, args.host))


async def _serve(
    runs: list[tuple[VanRun, dict[str, Any]]], speed: float, base_port: int, host: str
) -> int:
    """Feed each van's fixes through the GNSS simulator, one TCP socket per van.

    Prints one JSON line per van once its socket listens (``gnss`` is the source URL for its
    agent's ``gnss.source``). Fixes are sent on time whether an agent listens or not, like a
    receiver; each van first stands 2-5 minutes in the depot, time for its agent to connect.
    """
    import asyncio

    from simulators.gnss import serve_fixes  # the GNSS simulator (issue 3)

    def announce(info: dict[str, Any]) -> Callable[[int], None]:
        def on_listen(port: int) -> None:
            print(json.dumps({**info, "gnss": f"socket://{host}:{port}"}), flush=True)

        return on_listen

    tasks = []
    for k, (run, info) in enumerate(runs):
        port = 0 if base_port == 0 else base_port + k
        tasks.append(
            serve_fixes(
                run.fixes,
                host=host,
                port=port,
                speed=speed,
                name=run.scenario.van,
                wait_for_client=False,
                on_listen=announce(info),
            )
        )
    await asyncio.gather(*tasks)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The system demo (``python -m simulators.demo``) with this fleet."""
    from simulators.demo import main as demo_main

    argv = ["--vans", str(args.vans), "--seed", str(args.seed), "--stops", str(args.stops)]
    argv += ["--speed", str(args.speed)]
    if args.workdir:
        argv += ["--workdir", args.workdir]
    return demo_main(argv)


async def drive_fleet(runs: list[VanRun], ports: list[int], broker_url: str, speed: float) -> None:
    """Give each agent its manifest over MQTT, then play each van's day on its socket."""
    import asyncio
    from urllib.parse import urlsplit

    import aiomqtt

    from edge_agent.wire import topics
    from simulators.gnss import serve_fixes

    where = urlsplit(broker_url)
    async with aiomqtt.Client(where.hostname or "127.0.0.1", where.port or 1883) as client:
        for run in runs:
            van = run.scenario.van
            await client.subscribe(topics.state("acme", van), qos=1)
        online: set[str] = set()
        async with asyncio.timeout(60):
            async for msg in client.messages:
                state = json.loads(bytes(msg.payload))
                if state.get("state") == "online":
                    online.add(topics.parse(str(msg.topic)).device)
                if len(online) == len(runs):
                    break
        for run in runs:
            topic = topics.cmd("acme", run.scenario.van, "manifest")
            await client.publish(topic, json.dumps(run.scenario.manifest), qos=1)
    await asyncio.gather(
        *(
            serve_fixes(
                run.fixes, port=port, speed=speed, name=run.scenario.van, wait_for_client=True
            )
            for run, port in zip(runs, ports, strict=True)
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators.fleet``."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.fleet", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("generate", "serve"):
        g = sub.add_parser(name, help=f"{name} a fleet's logs, manifests and truth")
        g.add_argument("--out", required=True, help="output folder")
        g.add_argument("--vans", type=int, default=2)
        g.add_argument("--seed", type=int, default=1)
        g.add_argument("--stops", type=int, default=6)
        g.add_argument("--noise", type=float, default=5.0, help="position noise per axis, metres")
        g.add_argument(
            "--sparse", type=float, default=None, help="every second van: a fix every N s"
        )
        g.add_argument("--tunnels", type=int, default=2)
        g.add_argument(
            "--start", help="ISO time of the first van's first fix (default: now for serve)"
        )
        g.set_defaults(func=_cmd_generate)
        if name == "serve":
            g.add_argument("--speed", type=float, default=1.0, help="times real time")
            g.add_argument("--base-port", type=int, default=0, help="van k listens on base+k")
            g.add_argument("--host", default="127.0.0.1")
            g.set_defaults(func=_cmd_serve)
    e = sub.add_parser("evaluate", help="simulate, run the engine and score many vans")
    e.add_argument("--seeds", default="1-10", help="a seed or a range: 1-10")
    e.add_argument("--vans", type=int, default=2)
    e.add_argument("--stops", type=int, default=6)
    e.add_argument("--noise", type=float, default=5.0, help="position noise per axis, metres")
    e.add_argument("--sparse", type=float, default=None, help="every second van: a fix every N s")
    e.add_argument("--tunnels", type=int, default=2)
    e.add_argument("--nmea", action="store_true", help="through NMEA and fix assembly")
    e.set_defaults(func=_cmd_evaluate)
    d = sub.add_parser("demo", help="the vans on a broker, a hub and agents; print the timeline")
    d.add_argument("--vans", type=int, default=2)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--stops", type=int, default=3)
    d.add_argument("--speed", type=float, default=100.0, help="times real time")
    d.add_argument("--workdir", help="keep configs, databases and logs here")
    d.set_defaults(func=_cmd_demo)
    s = sub.add_parser("score", help="score a van's events against its truth")
    s.add_argument("truth")
    s.add_argument("events", help="JSON lines (trips replay output), or -")
    s.add_argument("--zones", help="the van's zones.json (its extra geofences)")
    s.set_defaults(func=_cmd_score)
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
