"""The delivery model's exception rules on clean simulated days: what they raise, and whether
the truth bears it out.

A clean day is a fleet-simulator day (``simulators.delivery_days``) with nothing planted: every
parcel delivered at its stop with its PoD (the driver app's dead zone at the second stop posts
that stop's scans and PoDs with the next stop's, as it does), events reaching the hub when the
van would send them, the model's ``tick`` run every minute of the day. The only exception such a
day can justify is ``late_risk`` on a stop the van truly reached after its window ended; every
other exception raised is false. The model learns online over the days, as in
``simulators.eta_score``.

Command line (prints one JSON object)::

    python -m simulators.exception_check --seeds 1-20 [--vans 3] [--stops 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hub_bridge.delivery.model import DeliveryModel
from simulators.delivery_days import (
    day_runs,
    envelopes,
    fleet_days,
    stop_truth,
    tighten_windows,
)

__all__ = ["clean_days", "main"]

FLEET = "sim"


def clean_days(
    seeds: Sequence[int],
    *,
    vans: int = 3,
    stops: int = 10,
    windows: tuple[float, float] | None = None,
    model: DeliveryModel | None = None,
) -> dict[str, Any]:
    """Run clean days through one model with a tick a minute; count true and false exceptions.

    ``windows`` (every, length in minutes: ``tighten_windows``) makes some stops truly late, to
    see ``late_risk`` raised on them and only on them."""
    m = model if model is not None else DeliveryModel()
    raised: Counter[str] = Counter()
    false: list[dict[str, Any]] = []
    late_true = 0
    late_stops = 0
    for scenarios in fleet_days(list(seeds), vans=vans, stops=stops):
        if windows is not None:
            tighten_windows(scenarios, *windows)
        days = day_runs(scenarios)
        truth: dict[tuple[str, str], float] = {}
        ends: dict[tuple[str, str], float] = {}
        for d in days:
            m.define(FLEET, d.van, "manifest", d.run.scenario.manifest, d.arrivals[0].event["ts"])
            for sid, t in stop_truth(d.run).items():
                truth[(d.route, sid)] = t
            for st in m.routes[(FLEET, d.route)].stops:
                if st.window is not None:
                    ends[(d.route, st.id)] = st.window[1]
        late_stops += sum(1 for k, end in ends.items() if truth.get(k, 0.0) > end)
        next_tick: float | None = None
        notices = []
        for at, env in envelopes(days, FLEET):
            while next_tick is not None and next_tick <= at:
                notices += m.tick(next_tick)
                next_tick += 60.0
            if next_tick is None:
                next_tick = (at // 60 + 1) * 60
            notices += m.apply(env)
        for n in notices:
            if n.kind != "exception.raised":
                continue
            exc = n.payload
            raised[exc["type"]] += 1
            if exc["type"] == "late_risk":
                key = (exc["ref"]["route"], exc["ref"]["stop"])
                if key in ends and truth.get(key, float("inf")) > ends[key]:
                    late_true += 1
                    continue
            false.append({"type": exc["type"], "reason": exc["reason"], "ref": exc["ref"]})
    return {
        "days": len(seeds),
        "raised": dict(raised),
        "late_risk_true": late_true,
        "stops_truly_late": late_stops,
        "false": len(false),
        "false_examples": false[:10],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators.exception_check``."""
    p = argparse.ArgumentParser(prog="python -m simulators.exception_check", description=__doc__)
    p.add_argument("--seeds", default="1-20", help="a seed or a range: 1-20")
    p.add_argument("--vans", type=int, default=3)
    p.add_argument("--stops", type=int, default=10)
    p.add_argument(
        "--windows",
        nargs=2,
        type=float,
        metavar=("EVERY", "LENGTH"),
        help="stop k's window: start + k x EVERY, LENGTH long (minutes): some stops truly late",
    )
    args = p.parse_args(argv)
    lo, _, hi = args.seeds.partition("-")
    out = clean_days(
        list(range(int(lo), int(hi or lo) + 1)),
        vans=args.vans,
        stops=args.stops,
        windows=tuple(args.windows) if args.windows else None,
    )
    print(json.dumps(out))
    return 0 if out["false"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
