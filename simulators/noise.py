"""The receiver model: what a van's GNSS receiver reports of its true path.

- Gauss-Markov position noise (``noise_m`` per axis, correlation time ``tau_s``: real GNSS error
  wanders, it is not white), rare multipath outliers (30-80 m, probability ``outlier_p`` per
  fix), Doppler-like speed noise;
- dropouts: tunnels, no fix for 30-90 s on a straight stretch of cruising;
- a fix interval per van (1 s, or a sparse tracker at 15-30 s).

One random stream per van (its scenario's ``seed``) draws the tunnels, then the noise, so a
scenario always gives the same fixes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import timedelta

from edge_agent.gnss.fix import Fix
from edge_agent.trips.geo import LocalProjection
from simulators.itinerary import TRUTH_DT, Sample
from simulators.world import VanScenario

__all__ = ["receiver", "tunnels"]


def tunnels(rng: random.Random, samples: Sequence[Sample], count: int) -> list[tuple[float, float]]:
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


def receiver(
    sc: VanScenario, samples: Sequence[Sample], proj: LocalProjection
) -> tuple[list[Fix], list[tuple[float, float]]]:
    """The fixes the van's receiver reports along ``samples`` (metres on ``proj``'s plane).

    Returns the fixes and the tunnels (start and end, seconds from the scenario's start).
    """
    rng = random.Random(sc.seed)
    dark = tunnels(rng, samples, sc.tunnels)
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
        if any(a <= s.t <= b for a, b in dark):
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
    return fixes, dark
