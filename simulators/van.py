"""One simulated van: its scenario driven, seen by its receiver, and its ground truth.

``run_van`` ties the pieces together: the itinerary's true path (``simulators.itinerary``), the
receiver's fixes (``simulators.noise``) and the zone truth (``simulators.truth``), with the zones
built from the van's manifest and geofences exactly as its agent would build them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.gnss.fix import Fix
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.geo import LocalProjection
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.zones import ZoneSet
from simulators.itinerary import Sample, drive_path
from simulators.noise import receiver
from simulators.truth import van_truth
from simulators.world import VanScenario

__all__ = ["VanRun", "run_van"]


@dataclass
class VanRun:
    """A simulated van: true path, the fixes its receiver reported, and the zone truth."""

    scenario: VanScenario
    zones: ZoneSet
    samples: list[Sample]
    fixes: list[Fix]
    truth: dict[str, Any]


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
    fixes, tunnels = receiver(sc, samples, proj)
    return VanRun(sc, zones, moved, fixes, van_truth(sc, zones, moved, tunnels))
