"""The hub's ETA scored on seeded fleet-simulator days, against a naive peer in the same run.

Each seed is one day of ``--vans`` vans with ``--stops`` stops each (``simulators.world``), one
calendar day after the seed before. Every event a van's agent and its driver's app send reaches
one ``DeliveryModel`` when the hub would get it (``simulators.delivery_days``); the model learns
**online**, as the fleet goes: day 1 starts from the priors, each later day from what the days
before taught (the first ``--warmup`` days teach but are not scored).

Every minute of each van's active route (truth: from leaving the depot to coming back), for every
stop still ahead of it (truth: the van has not yet arrived there), both ETAs are read:

- **ours**: the model's current ETA of the stop (the one the API, stream and webhooks carry);
- **naive**: from the same last fix and the same stops still ahead in the model, straight-line
  distance at a fixed speed plus a fixed time per stop, in sequence (``--naive-speed``,
  ``--naive-stop``; by default the model's own priors, 7 m/s and 240 s).

and compared with the true arrival (the first entry into the stop's zone with a stay). Errors
are pooled by horizon (the time from that minute to the true arrival): 0-10, 10-30, 30-90 min.
Coverage is the share of those (minute, stop) pairs that have an ETA of ours.

Command line (prints one JSON object)::

    python -m simulators.eta_score --seeds 1-20 [--vans 3] [--stops 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hub_bridge.delivery.geo import distance_m
from hub_bridge.delivery.model import DeliveryModel
from simulators.delivery_days import day_runs, envelopes, fleet_days, route_span, stop_truth

__all__ = ["BUCKETS", "EtaScore", "main", "score_days"]

FLEET = "sim"
BUCKETS = ((0, 10), (10, 30), (30, 90))


@dataclass
class EtaScore:
    """Absolute errors per horizon bucket, ours and the naive peer's, and coverage counts."""

    ours: dict[str, list[float]] = field(default_factory=lambda: {_b(b): [] for b in BUCKETS})
    naive: dict[str, list[float]] = field(default_factory=lambda: {_b(b): [] for b in BUCKETS})
    pairs: int = 0
    covered: int = 0
    days: int = 0
    vans: int = 0

    def summary(self) -> dict[str, Any]:
        """MAE per bucket (minutes), the ratio ours/naive, coverage."""
        out: dict[str, Any] = {"days": self.days, "vans": self.vans, "buckets": {}}
        for b in BUCKETS:
            k = _b(b)
            o, n = self.ours[k], self.naive[k]
            mo = sum(o) / len(o) / 60 if o else None
            mn = sum(n) / len(n) / 60 if n else None
            out["buckets"][k] = {
                "pairs": len(o),
                "mae_min": None if mo is None else round(mo, 2),
                "naive_mae_min": None if mn is None else round(mn, 2),
                "ratio": None if not (mo and mn) else round(mo / mn, 3),
            }
        out["coverage"] = round(self.covered / self.pairs, 4) if self.pairs else None
        out["pairs"] = self.pairs
        return out


def _b(b: tuple[int, int]) -> str:
    return f"{b[0]}-{b[1]}"


def _bucket(h_min: float) -> str | None:
    for lo, hi in BUCKETS:
        if lo <= h_min < hi:
            return _b((lo, hi))
    return None


def naive_etas(
    model: DeliveryModel, fleet: str, route_id: str, speed: float, per_stop: float
) -> dict[str, float]:
    """The naive peer: from the van's last fix, straight lines at ``speed`` and ``per_stop``
    seconds at each stop before, over the stops the model has still ahead, in sequence."""
    r = model.routes[(fleet, route_id)]
    if r.fix is None:
        return {}
    t, lat, lon = r.fix
    out = {}
    for k, st in enumerate(s for s in r.stops if s.ahead):
        if k > 0:
            t += per_stop
        t += distance_m(lat, lon, st.lat, st.lon) / speed
        out[st.id] = t
        lat, lon = st.lat, st.lon
    return out


def score_days(
    seeds: Sequence[int],
    *,
    vans: int = 3,
    stops: int = 10,
    warmup: int = 2,
    naive_speed: float | None = None,
    naive_stop: float | None = None,
    model: DeliveryModel | None = None,
) -> EtaScore:
    """Run the days of ``seeds`` through one model (online learning) and score them."""
    m = model if model is not None else DeliveryModel()
    v_naive = naive_speed if naive_speed is not None else m.settings.prior_speed_mps
    s_naive = naive_stop if naive_stop is not None else m.settings.prior_dwell_s
    score = EtaScore()
    for k, scenarios in enumerate(fleet_days(list(seeds), vans=vans, stops=stops)):
        days = day_runs(scenarios)
        scored = k >= warmup
        for d in days:
            m.define(FLEET, d.van, "manifest", d.run.scenario.manifest, d.arrivals[0].event["ts"])
        # the checkpoints: each van's active minutes, with its truth
        checks: list[tuple[float, str, dict[str, float]]] = []
        for d in days:
            span = route_span(d.run)
            if span is None:
                continue
            truth = stop_truth(d.run)
            t = span[0] + 60.0
            while t < span[1]:
                checks.append((t, d.route, truth))
                t += 60.0
        checks.sort(key=lambda c: c[0])
        ci = 0
        for at, env in [*envelopes(days, FLEET), (float("inf"), None)]:
            # every checkpoint before this event reads the ETAs as they stood
            while ci < len(checks) and checks[ci][0] < at:
                if scored:
                    _check(m, score, checks[ci], v_naive, s_naive)
                ci += 1
            if env is not None:
                m.apply(env)
        if scored:
            score.days += 1
            score.vans += len(days)
    return score


def _check(
    m: DeliveryModel,
    score: EtaScore,
    check: tuple[float, str, dict[str, float]],
    v_naive: float,
    s_naive: float,
) -> None:
    """One van's minute: every stop still ahead in truth, ours and the naive ETA against it."""
    t, route_id, truth = check
    r = m.routes[(FLEET, route_id)]
    naive = naive_etas(m, FLEET, route_id, v_naive, s_naive)
    for st in r.stops:
        actual = truth.get(st.id)
        if actual is None or actual <= t:
            continue
        b = _bucket((actual - t) / 60.0)
        score.pairs += 1
        ours = st.eta if st.ahead else None
        if ours is None:
            continue
        score.covered += 1
        if b is None:
            continue
        score.ours[b].append(abs(ours - actual))
        # the naive has no ETA where ours has one (never, as both read the same stops): ours
        score.naive[b].append(abs(naive.get(st.id, ours) - actual))


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators.eta_score``."""
    p = argparse.ArgumentParser(prog="python -m simulators.eta_score", description=__doc__)
    p.add_argument("--seeds", default="1-20", help="a seed or a range: 1-20")
    p.add_argument("--vans", type=int, default=3)
    p.add_argument("--stops", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="first days that teach, not scored")
    p.add_argument("--naive-speed", type=float, default=None, help="m/s (default: the prior)")
    p.add_argument("--naive-stop", type=float, default=None, help="s (default: the prior)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    sc = score_days(
        _seeds(args.seeds),
        vans=args.vans,
        stops=args.stops,
        warmup=args.warmup,
        naive_speed=args.naive_speed,
        naive_stop=args.naive_stop,
    )
    out = sc.summary()
    out["seeds"] = args.seeds
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
