"""Configuration of the agent's ``trips:`` section: zones, hysteresis, motion and persistence.

Example (every key optional; the defaults are shown)::

    trips:
      manifest: null            # a manifest file to use until one arrives on cmd/manifest
      depot: null               # {lat, lon, radius} or {polygon: [[lon, lat], ...]}, used when
                                # there is no manifest (a manifest's depot wins)
      zones: []                 # other geofences: [{name, lat, lon, radius} | {name, polygon}]
      stop_radius: 50m          # stops given as a point without radius_m
      approach: 800m            # the approach ring around each stop
      enter_margin: 15m         # inside by this much ...
      enter_after: 2s           # ... for this long ...
      enter_fixes: 2            # ... and this many fixes, to enter a zone
      exit_margin: 15m          # outside by this much ...
      exit_after: 10s           # ... for this long ...
      exit_fixes: 3             # ... and this many fixes, to leave it
      arrive_after: 60s         # a stop zone entry is an arrival once the van stopped in it or
                                # stayed this long; shorter, it is a drive-by (geofence.*). A van
                                # stopped near a zone's edge (never enter_margin deep) is inside
                                # if most of its fixes are, over a stay this long (or twice this
                                # while it still stands: see tracker.py)
      stop_speed_mps: 1.0       # at or below: slow
      move_speed_mps: 2.5       # at or above: fast
      stopped_after: 10s        # slow this long: trip.stopped
      moving_after: 5s          # fast this long: trip.moving
      reorder_window: 2s        # late fixes are reordered within this window of fix time
      max_time_jump: 10m        # a fix this far ahead of the last waits for a second to agree
      state_dir: null           # where the manifest and the engine state are kept (default:
                                # the outbox's folder)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.platform.units import Distance, Duration
from edge_agent.trips.manifest import ManifestError, ZoneSpec, parse_zone

__all__ = ["GeofenceConfig", "TripsConfig", "ZoneConfig"]


class ZoneConfig(BaseModel):
    """A zone in configuration: a circle (``lat``, ``lon``, ``radius``) or a ``polygon``."""

    model_config = ConfigDict(extra="forbid")

    lat: float | None = None
    lon: float | None = None
    radius: Distance | None = None
    polygon: list[tuple[float, float]] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ZoneConfig:
        self.spec()
        return self

    def spec(self) -> ZoneSpec:
        """The zone as a ZoneSpec (raises ValueError naming what is wrong)."""
        obj: dict[str, Any] = {}
        if self.polygon is not None:
            obj["polygon"] = [list(p) for p in self.polygon]
        if self.lat is not None:
            obj["lat"] = self.lat
        if self.lon is not None:
            obj["lon"] = self.lon
        if self.radius is not None:
            obj["radius_m"] = self.radius
        try:
            return parse_zone(obj, "")
        except ManifestError as exc:
            raise ValueError(str(exc)) from None


class GeofenceConfig(ZoneConfig):
    """A named geofence: ``geofence.enter`` / ``geofence.exit`` with ``data.zone`` = name."""

    name: str = Field(min_length=1, max_length=256)


class TripsConfig(BaseModel):
    """The ``trips:`` section; absent means the agent runs without trips."""

    model_config = ConfigDict(extra="forbid")

    manifest: Path | None = None
    depot: ZoneConfig | None = None
    zones: list[GeofenceConfig] = Field(default_factory=list)
    stop_radius: Distance = 50.0
    approach: Distance = 800.0
    enter_margin: Distance = 15.0
    enter_after: Duration = 2.0
    enter_fixes: int = Field(default=2, ge=1, le=100)
    exit_margin: Distance = 15.0
    exit_after: Duration = 10.0
    exit_fixes: int = Field(default=3, ge=1, le=100)
    arrive_after: Duration = 60.0
    stop_speed_mps: float = Field(default=1.0, ge=0.0, le=50.0)
    move_speed_mps: float = Field(default=2.5, gt=0.0, le=100.0)
    stopped_after: Duration = 10.0
    moving_after: Duration = 5.0
    reorder_window: Duration = 2.0
    max_time_jump: Duration = 600.0
    state_dir: Path | None = None
    index_cell: Distance = Field(default=250.0, gt=0)

    @model_validator(mode="after")
    def _cross(self) -> TripsConfig:
        if self.stop_speed_mps >= self.move_speed_mps:
            raise ValueError("stop_speed_mps must be below move_speed_mps")
        if self.stop_radius <= 0 or self.approach <= 0:
            raise ValueError("stop_radius and approach must be positive")
        names = [z.name for z in self.zones]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"zones: duplicate name {dup[0]!r}")
        return self
