"""A van's itinerary and its true path: drive along waypoints, park, sampled every ``TRUTH_DT``.

The kinematics are simple on purpose: straight legs, constant acceleration and braking, a cruise
speed and a cornering speed at each waypoint. The path is what the van really did, the one thing
the receiver model (``simulators.noise``) and the ground truth (``simulators.truth``) share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TRUTH_DT", "Action", "Drive", "Park", "Sample", "drive_path"]

# the step of the true path: zone crossings are interpolated between samples this far apart
TRUTH_DT = 0.25


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
