"""Fixes per second through the trip engine: one route (50 zones) and 10,000 zones.

A plain script (``python benchmarks/bench_trips.py``) that prints one JSON object. The fixes are
a van's day from the fleet simulator (1 Hz, 5 m noise, ~5,000 fixes). Zone sets:

- ``route_50``: its manifest (depot, 24 stops, their approach rings) and one geofence: 50 zones;
- ``geofences_10k``: the same plus 9,950 configured geofences (circles of 30-150 m and
  rectangles) spread over 40 km x 40 km around the depot;
- ``stops_10k``: a manifest of 5,000 stops over the same area, each with its 800 m approach
  ring: 10,000 zones, about 20 rings over every point (the worst case for the engine).

The machine is shared and noisy, so each figure comes with peers measured in the same run:
``brute_10k`` (every zone tested on every fix, no index) and ``strtree_query`` (one shapely
STRtree point query per fix, the obvious index, without any engine work). Compare ratios.
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import shapely

from edge_agent.gnss.fix import Fix
from edge_agent.trips.config import GeofenceConfig, TripsConfig
from edge_agent.trips.engine import EngineParams, TripEngine
from edge_agent.trips.geo import LocalProjection
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from simulators.van import run_van
from simulators.world import fleet_scenarios

TARGET_FIXES_PER_S = 50_000


def _manifest(
    proj: LocalProjection, rng: random.Random, stops: int, half_span_m: float
) -> dict[str, Any]:
    out = []
    for k in range(stops):
        x, y = rng.uniform(-half_span_m, half_span_m), rng.uniform(-half_span_m, half_span_m)
        lat, lon = proj.inverse(x, y)
        out.append({"id": f"s{k}", "lat": lat, "lon": lon, "radius_m": 50})
    depot = {"lat": proj.lat0, "lon": proj.lon0, "radius_m": 120}
    return {"route": "bench", "depot": depot, "stops": out}


def _geofences(proj: LocalProjection, rng: random.Random, n: int) -> list[GeofenceConfig]:
    out = []
    for k in range(n):
        x, y = rng.uniform(-20000, 20000), rng.uniform(-20000, 20000)
        if k % 5 == 4:
            w, h = rng.uniform(40, 200), rng.uniform(40, 200)
            ring = [proj.inverse(x + dx, y + dy) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
            out.append(GeofenceConfig(name=f"g{k}", polygon=[(lo, la) for la, lo in ring]))
        else:
            lat, lon = proj.inverse(x, y)
            out.append(GeofenceConfig(name=f"g{k}", lat=lat, lon=lon, radius=rng.uniform(30, 150)))
    return out


def _run(engine: TripEngine, fixes: Sequence[Fix]) -> tuple[float, int]:
    state = engine.new_state()
    events = 0
    step = engine.step
    t0 = time.perf_counter()
    for fix in fixes:
        state, evs = step(state, fix)
        events += len(evs)
    return time.perf_counter() - t0, events


def _best(fn: Callable[[], float], repeat: int = 3) -> float:
    return min(fn() for _ in range(repeat))


def main() -> None:
    sc = fleet_scenarios(1, seed=7, stops=6)[0]
    fixes = run_van(sc).fixes
    proj = LocalProjection(*sc.origin)
    rng = random.Random(42)
    manifest = parse_manifest(_manifest(proj, rng, 24, 6_000))
    one = [GeofenceConfig(name="yard-2", lat=proj.lat0 + 0.01, lon=proj.lon0, radius=80.0)]
    params = EngineParams.from_config(TripsConfig())
    results: dict[str, Any] = {}
    engines: dict[str, TripEngine] = {}
    cases = {
        "route_50": (manifest, TripsConfig(zones=one)),
        "geofences_10k": (manifest, TripsConfig(zones=one + _geofences(proj, rng, 9_950))),
        "stops_10k": (parse_manifest(_manifest(proj, rng, 5_000, 20_000)), TripsConfig()),
    }
    for name, (m, cfg) in cases.items():
        t0 = time.perf_counter()
        zs = build_zones(m, cfg, origin=sc.origin)
        build_s = time.perf_counter() - t0
        engine = TripEngine(zs, params, m.route)
        engines[name] = engine
        _run(engine, fixes)  # warm the cell cache, as a van's first minutes would
        elapsed = min(_run(engine, fixes)[0] for _ in range(3))
        results[name] = {
            "zones": len(zs),
            "build_s": round(build_s, 3),
            "fixes_per_s": round(len(fixes) / elapsed),
            "events": _run(engine, fixes)[1],
        }
    # peers, same fixes, same run
    zs = engines["geofences_10k"].zones
    fwd = zs.projection.forward
    pts = [fwd(f.lat, f.lon) for f in fixes]
    sub = pts[:300]

    def brute() -> float:
        zones = zs.zones
        t0 = time.perf_counter()
        for x, y in sub:
            for z in zones:
                z.signed(x, y)
        return time.perf_counter() - t0

    tree = shapely.STRtree([shapely.box(*z.bbox) for z in zs.zones])

    def strtree() -> float:
        t0 = time.perf_counter()
        for x, y in pts:
            tree.query(shapely.Point(x, y))
        return time.perf_counter() - t0

    def project() -> float:
        t0 = time.perf_counter()
        for f in fixes:
            fwd(f.lat, f.lon)
        return time.perf_counter() - t0

    results["brute_10k"] = {"fixes_per_s": round(len(sub) / _best(brute, 1))}
    results["strtree_query"] = {"fixes_per_s": round(len(pts) / _best(strtree))}
    results["projection_only"] = {"fixes_per_s": round(len(fixes) / _best(project))}
    geo = results["geofences_10k"]["fixes_per_s"]
    print(
        json.dumps(
            {
                "benchmark": "trips",
                "fixes": len(fixes),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": results,
                "ratios": {
                    "geofences_10k_vs_route_50": round(geo / results["route_50"]["fixes_per_s"], 3),
                    "geofences_10k_vs_brute": round(geo / results["brute_10k"]["fixes_per_s"], 1),
                    "geofences_10k_vs_strtree_query": round(
                        geo / results["strtree_query"]["fixes_per_s"], 2
                    ),
                },
                "target_fixes_per_s_10k": TARGET_FIXES_PER_S,
                "meets_target": geo >= TARGET_FIXES_PER_S,
            }
        )
    )


if __name__ == "__main__":
    main()
