"""Events per second through the delivery model's ``apply``, and the time of each call.

A plain script (``python benchmarks/bench_delivery_model.py``) that prints one JSON object. The
events are simulated fleet days (``simulators.delivery_days``: each van's ``gnss.fix`` pings,
trip events, the driver app's scans and PoDs) of ``VANS`` vans with 20 stops each, as the hub
receives them; they are built first, then timed through one ``DeliveryModel`` alone (no
storage, no push: that is the projector's share of the issue's 1,000 events/s at p99 250 ms).

The machine is shared and noisy, so a peer is measured in the same run: ``validate``, the wire
validator (``edge_agent.wire.envelope.validate_envelope``) over the same envelopes, which every
event passes through once at ingest anyway. Compare the ratio.
"""

from __future__ import annotations

import json
import platform
import time
from statistics import quantiles
from typing import Any

from edge_agent.wire.envelope import validate_envelope
from hub_bridge.delivery.model import DeliveryModel
from simulators.delivery_days import day_runs, envelopes, fleet_days

VANS = 6
STOPS = 20


def _events() -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    envs: list[dict[str, Any]] = []
    plans: list[tuple[str, dict[str, Any]]] = []
    for scenarios in fleet_days([1, 2], vans=VANS, stops=STOPS):
        days = day_runs(scenarios)
        plans += [(d.van, d.run.scenario.manifest) for d in days]
        envs += [env for _, env in envelopes(days, "bench")]
    return envs, plans


def main() -> None:
    """Print the figures as one JSON object."""
    envs, plans = _events()
    m = DeliveryModel()
    for van, manifest in plans:
        m.define("bench", van, "manifest", manifest, envs[0]["ts"])
    times = []
    t0 = time.perf_counter()
    for env in envs:
        a = time.perf_counter()
        m.apply(env)
        times.append(time.perf_counter() - a)
    model_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for env in envs:
        validate_envelope(env)
    validate_s = time.perf_counter() - t0
    q = quantiles(times, n=1000)
    print(
        json.dumps(
            {
                "events": len(envs),
                "by_type": {
                    t: sum(e["type"] == t for e in envs) for t in ("gnss.fix", "scan", "pod")
                }
                | {"trip.*": sum(e["type"].startswith("trip.") for e in envs)},
                "apply_events_per_s": round(len(envs) / model_s),
                "apply_p50_us": round(q[499] * 1e6, 1),
                "apply_p99_us": round(q[989] * 1e6, 1),
                "apply_max_ms": round(max(times) * 1e3, 2),
                "peer_validate_events_per_s": round(len(envs) / validate_s),
                "apply_over_validate": round(model_s / validate_s, 2),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
