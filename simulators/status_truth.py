"""Parcel statuses against the truth, with the events delivered late, twice and out of order.

Two sources of simulated days, each with the status every parcel must end in:

- **van days** (``simulators.world`` through the agent's trip engine, ``simulators.delivery_days``)
  with the driver app's scans and PoDs (``simulators.driver_app.plan_deliveries``), where a seeded
  share of parcels fail: a PoD of kind ``none`` (refused), or no PoD at all (scanned, nobody
  home). A parcel whose stop the van stopped at ends ``delivered``, or ``returned`` when it
  failed and the van came back to the depot; on a day cut short after the last stop (the van
  is still out: every second seed), a failed parcel ends ``failed_attempt``.
- **depot shifts** (``simulators.depot``) through the station's own load engine
  (``edge_agent.station.replay``): a parcel verified at its dock (a corrected misload too) ends
  ``loaded``; one the van left without ends ``missing`` (left behind, or loaded but never read:
  the timeline can only know what was read), or ``misloaded`` when it went onto another van.

``check(seeds)`` runs each day's events through a fresh ``DeliveryModel`` in a seeded random
order, with a share of them sent twice, and compares every parcel's final status with the truth.

Command line (prints one JSON object)::

    python -m simulators.status_truth --seeds 1-10
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.station.plan import parse_load_plan
from edge_agent.station.replay import replay_events as station_events
from edge_agent.wire.envelope import parse_ts
from hub_bridge.delivery.model import DeliveryModel
from simulators.delivery_days import stop_truth, van_day
from simulators.depot import ShiftParams, simulate_shift
from simulators.van import run_van
from simulators.world import fleet_scenarios

__all__ = ["StatusCheck", "check", "depot_case", "main", "messy", "van_case"]


@dataclass
class Case:
    """One simulated day: definitions to send first, the events, and the truth per parcel."""

    fleet: str
    defines: list[tuple[str, str, dict[str, Any]]]  # (device, command name, payload)
    events: list[dict[str, Any]]  # envelopes
    truth: dict[str, str]


@dataclass
class StatusCheck:
    """How many parcels ended in their true status, and the first few that did not."""

    parcels: int = 0
    right: int = 0
    events: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    wrong: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON data."""
        return {
            "parcels": self.parcels,
            "right": self.right,
            "wrong": self.parcels - self.right,
            "events": self.events,
            "truth_by_status": dict(sorted(self.by_status.items())),
            "examples": self.wrong[:10],
        }


def _env(fleet: str, device: str, seq: int, ev: dict[str, Any], tag: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "id": f"{tag}-{device}-{seq}",
        "seq": seq,
        "fleet": fleet,
        "device": device,
        "type": ev["type"],
        "ts": ev["ts"],
        "clock": "gnss",
        "data": ev.get("data", {}),
    }
    if ev.get("ref"):
        env["ref"] = ev["ref"]
    return env


def van_case(seed: int, *, vans: int = 2, stops: int = 8, fail: float = 0.15) -> Case:
    """A van day with failed deliveries (module docstring); cut short on odd seeds."""
    rng = random.Random(f"status-{seed}")
    fleet = f"vans-{seed}"
    cut_short = seed % 2 == 1
    case = Case(fleet, [], [], {})
    for sc in fleet_scenarios(vans, seed=seed, stops=stops):
        run = run_van(sc)
        day = van_day(run)
        visited = stop_truth(run)
        stops_of = {s["id"]: s for s in sc.manifest["stops"]}
        fails: dict[str, str] = {}
        for sid in visited:
            for pid in stops_of[sid]["parcels"]:
                r = rng.random()
                if r < fail / 2:
                    fails[pid] = "refused"
                elif r < fail:
                    fails[pid] = "nobody"
        cut = None
        if cut_short and visited:
            last = max(visited, key=lambda s: visited[s])
            exits = [
                iv["exit"]
                for iv in run.truth["intervals"]
                if iv["zone"] == f"stop:{last}" and iv["exit"] is not None
            ]
            cut = max(exits) + 120.0 if exits else None
        events = []
        for a in day.arrivals:
            ev = a.event
            if cut is not None and parse_ts(ev["ts"]).timestamp() > cut:
                continue
            if ev["type"] == "pod":
                why = fails.get(ev["data"]["parcel"])
                if why == "nobody":
                    continue
                if why == "refused":
                    ev = {**ev, "data": {"parcel": ev["data"]["parcel"], "kind": "none"}}
            events.append(ev)
        case.defines.append((sc.van, "manifest", sc.manifest))
        case.events += [_env(fleet, sc.van, i + 1, ev, "v") for i, ev in enumerate(events)]
        for sid in visited:
            for pid in stops_of[sid]["parcels"]:
                if pid not in fails:
                    case.truth[pid] = "delivered"
                else:
                    case.truth[pid] = "failed_attempt" if cut is not None else "returned"
    return case


def depot_case(seed: int, *, routes: int = 8, parcels: int = 30) -> Case:
    """A depot shift through the station's load engine (module docstring)."""
    shift = simulate_shift(
        ShiftParams(seed=seed, routes=routes, parcels=parcels, misload=0.05, left_behind=0.03)
    )
    fleet = f"depot-{seed}"
    plan = parse_load_plan(shift.plan)
    lines = [(n + 1, line.encode()) for n, line in enumerate(shift.input_lines())]
    evs = [e.to_json() for e in station_events(plan, lines)]
    case = Case(fleet, [("station-1", "loadplan", shift.plan)], [], {})
    case.events = [_env(fleet, "station-1", i + 1, ev, "s") for i, ev in enumerate(evs)]
    t = shift.truth
    for v in t["verified"]:
        case.truth[v["parcel"]] = "loaded"
    for _route, gone in t["missing"].items():
        for g in gone:
            case.truth[g["parcel"]] = "misloaded" if g["why"] == "misloaded" else "missing"
    return case


def messy(
    events: list[dict[str, Any]], rng: random.Random, twice: float = 0.15
) -> list[dict[str, Any]]:
    """The events in a random order, a share of them twice (the copy anywhere after)."""
    out = list(events) + [e for e in events if rng.random() < twice]
    rng.shuffle(out)
    return out


def run_case(case: Case, order: Iterable[dict[str, Any]], into: StatusCheck) -> DeliveryModel:
    """Send a case's definitions, then its events in ``order``; compare the statuses."""
    m = DeliveryModel()
    for device, name, payload in case.defines:
        m.define(case.fleet, device, name, payload, "2026-03-02T00:00:00.000Z")
    for env in order:
        into.events += 1
        m.apply(env)
    for pid, want in sorted(case.truth.items()):
        p = m.parcel(case.fleet, pid)
        got = None if p is None else p["status"]
        into.parcels += 1
        into.by_status[want] = into.by_status.get(want, 0) + 1
        if got == want:
            into.right += 1
        else:
            into.wrong.append({"fleet": case.fleet, "parcel": pid, "want": want, "got": got})
    return m


def check(seeds: Sequence[int], *, shuffle: bool = True) -> StatusCheck:
    """Van days and depot shifts of ``seeds``, delivered messily (or in order), checked."""
    out = StatusCheck()
    for seed in seeds:
        rng = random.Random(seed)
        for case in (van_case(seed), depot_case(seed)):
            order = messy(case.events, rng) if shuffle else case.events
            run_case(case, order, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators.status_truth``."""
    p = argparse.ArgumentParser(prog="python -m simulators.status_truth", description=__doc__)
    p.add_argument("--seeds", default="1-10", help="a seed or a range: 1-10")
    p.add_argument("--in-order", action="store_true", help="deliver in order, once each")
    args = p.parse_args(argv)
    lo, _, hi = args.seeds.partition("-")
    res = check(range(int(lo), int(hi or lo) + 1), shuffle=not args.in_order)
    print(json.dumps(res.summary()))
    return 0 if res.right == res.parcels else 1


if __name__ == "__main__":
    sys.exit(main())
