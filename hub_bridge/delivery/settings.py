"""Thresholds and priors of the delivery model, with defaults (``DeliverySettings``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["DeliverySettings"]


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Every threshold of the exception rules and every prior of the ETA, in seconds, metres
    and metres per second. The defaults are the ones the scores in the README were measured
    with."""

    # ETA priors, used until the fleet has taught better
    prior_speed_mps: float = 7.0
    """Straight-line speed between stops (road distance over time, detours included)."""
    prior_dwell_s: float = 240.0
    """Time parked at a stop, arrival to departure."""
    prior_weight: float = 3.0
    """How many observations the priors count for against what is learned."""
    learn_keep: int = 400
    """Observations kept per bucket (speed per hour of the day, dwell per stop type and hour)."""
    eta_notice_delta_s: float = 60.0
    """A ``stop.eta`` notice when a stop's ETA moved at least this much since the last one."""

    # exception rules
    stale_after_s: float = 900.0
    """A device on an active route silent this long is stale (a stopped van pings every 5 min)."""
    gnss_lost_after_s: float = 600.0
    """No fix this long while on an active route (and the device still talking): GNSS lost."""
    pod_far_m: float = 300.0
    """A PoD captured further than this from its stop's centre."""
    scan_no_pod_grace_s: float = 1800.0
    """After leaving a stop, how long a scanned parcel may wait for its PoD (a phone in a dead
    zone posts its backlog at a later stop) before ``scan_without_pod`` is raised."""
    dwell_factor: float = 3.0
    dwell_extra_s: float = 600.0
    """Dwell far above normal: longer than both ``factor`` x the normal and normal + extra."""
    late_margin_s: float = 300.0
    """Late risk: the ETA passes the window's end by more than this, before the window ends."""
    late_clear_s: float = 60.0
    """... and is cleared once the ETA is back this far inside the window's end."""

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeliverySettings:
        """Settings from JSON data; unknown keys are ignored, missing ones take the default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
