"""Ground truth: every time a van's true path entered and left every zone.

Crossings are interpolated on the true path (``TRUTH_DT`` apart), with how deep the path went into
the zone, how long it stood still inside, and how far out it went between two stays, so scoring
(``simulators.scoring``) can tell required events from ones too shallow or too short to demand.
Geometry is shapely's, independent of the engine's own arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import shapely

from edge_agent.trips.geo import LocalProjection
from edge_agent.trips.zones import ZoneSet
from edge_agent.wire.envelope import format_ts
from simulators.itinerary import Sample
from simulators.world import VanScenario

__all__ = ["van_truth", "zone_truth"]


def van_truth(
    sc: VanScenario,
    zones: ZoneSet,
    samples: Sequence[Sample],
    tunnels: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    """A van's truth document (``van-NN.truth.json``): its day, its receiver, every zone stay.

    ``samples`` is the true path on the plane of ``zones`` (the engine's), ``tunnels`` the
    receiver's dropouts in seconds from the scenario's start.
    """
    return {
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
        "intervals": zone_truth(zones, samples, sc.start),
    }


def zone_truth(zones: ZoneSet, samples: Sequence[Sample], start: datetime) -> list[dict[str, Any]]:
    """Every interval the true path spent inside each zone, with depth and time stood still.

    Geometry is shapely's (independent of the engine's own arithmetic); crossings are
    interpolated linearly between path samples (``TRUTH_DT`` apart).
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
