"""Fleet simulator command line: generate, serve, score and evaluate simulated van-days.

Vans drive routes of stops from a depot (``simulators.world``, ``simulators.itinerary``), seen by a
noisy receiver (``simulators.noise``); the simulator writes, next to each van's NMEA log and
manifest, the ground truth of every zone it entered and left (``simulators.truth``), so the
engine's events can be scored against it (``simulators.scoring``, ``simulators.evaluation``).

Command line::

    python -m simulators.fleet generate --out DIR [--vans 2] [--seed 1] [--stops 6]
    python -m simulators.fleet serve --out DIR [--vans 2] [--speed 10] [--base-port 0]
    python -m simulators.fleet score DIR/van-01.truth.json EVENTS.jsonl
    python -m simulators.fleet evaluate --seeds 1-10 [--vans 2] [--sparse 20] [--nmea]

``generate`` writes ``van-NN.manifest.json``, ``van-NN.nmea``, ``van-NN.truth.json`` and
``van-NN.zones.json`` (the extra geofences, as ``trips.zones`` configuration) per van and a
``fleet.json`` index; ``serve`` also feeds each van's NMEA through the GNSS simulator (a TCP
socket per van, ``speed`` times real time) for agents to connect to; ``score`` prints the scores
of a van's events (JSON lines as ``edge-agent trips replay`` prints them) against its truth;
``evaluate`` simulates, runs the engine over and scores many vans and prints the pooled scores.
The whole system on these vans (broker, hub, agents, driver apps) is ``python -m simulators.demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge_agent.trips.config import TripsConfig
from simulators.evaluation import evaluate
from simulators.feed import serve_runs
from simulators.nmea_out import nmea_lines
from simulators.scoring import score
from simulators.van import VanRun, run_van
from simulators.world import START, fleet_scenarios

__all__ = ["main"]


def _write_van(out: Path, run: VanRun) -> dict[str, Any]:
    sc = run.scenario
    base = out / sc.van
    paths = {
        "manifest": base.with_suffix(".manifest.json"),
        "nmea": base.with_suffix(".nmea"),
        "truth": base.with_suffix(".truth.json"),
        "zones": base.with_suffix(".zones.json"),
    }
    paths["manifest"].write_text(json.dumps(sc.manifest, indent=1) + "\n")
    with paths["nmea"].open("w", newline="") as f:
        f.writelines(nmea_lines(run.fixes))
    paths["truth"].write_text(json.dumps(run.truth, indent=1) + "\n")
    paths["zones"].write_text(json.dumps({"zones": sc.geofences}, indent=1) + "\n")
    return {"van": sc.van, "fixes": len(run.fixes), **{k: str(v) for k, v in paths.items()}}


def _generate(args: argparse.Namespace, *, live: bool) -> list[tuple[VanRun, dict[str, Any]]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.start:
        start = datetime.fromisoformat(args.start).astimezone(UTC)
    elif live:
        # served live: the agents' clocks must agree with the fixes' times
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    else:
        start = START
    scs = fleet_scenarios(
        args.vans,
        seed=args.seed,
        stops=args.stops,
        noise_m=args.noise,
        sparse_every=args.sparse,
        tunnels=args.tunnels,
        start=start,
    )
    runs = []
    for sc in scs:
        run = run_van(sc)
        runs.append((run, _write_van(out, run)))
    (out / "fleet.json").write_text(json.dumps([info for _, info in runs], indent=1) + "\n")
    return runs


def _cmd_generate(args: argparse.Namespace) -> int:
    for _, info in _generate(args, live=False):
        print(json.dumps(info))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    runs = _generate(args, live=True)
    return asyncio.run(serve_runs(runs, args.speed, args.base_port, args.host))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    scenarios = [
        sc
        for seed in seeds
        for sc in fleet_scenarios(
            args.vans,
            seed=seed,
            stops=args.stops,
            noise_m=args.noise,
            sparse_every=args.sparse,
            tunnels=args.tunnels,
        )
    ]
    print(json.dumps(evaluate(scenarios, nmea=args.nmea)))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    truth = json.loads(Path(args.truth).read_text())
    text = sys.stdin.read() if args.events == "-" else Path(args.events).read_text()
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    cfg = (
        TripsConfig(zones=json.loads(Path(args.zones).read_text())["zones"]) if args.zones else None
    )
    print(json.dumps(score(events, truth, cfg).summary()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators.fleet``."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.fleet", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("generate", "serve"):
        g = sub.add_parser(name, help=f"{name} a fleet's logs, manifests and truth")
        g.add_argument("--out", required=True, help="output folder")
        g.add_argument("--vans", type=int, default=2)
        g.add_argument("--seed", type=int, default=1)
        g.add_argument("--stops", type=int, default=6)
        g.add_argument("--noise", type=float, default=5.0, help="position noise per axis, metres")
        g.add_argument(
            "--sparse", type=float, default=None, help="every second van: a fix every N s"
        )
        g.add_argument("--tunnels", type=int, default=2)
        g.add_argument(
            "--start", help="ISO time of the first van's first fix (default: now for serve)"
        )
        g.set_defaults(func=_cmd_generate)
        if name == "serve":
            g.add_argument("--speed", type=float, default=1.0, help="times real time")
            g.add_argument("--base-port", type=int, default=0, help="van k listens on base+k")
            g.add_argument("--host", default="127.0.0.1")
            g.set_defaults(func=_cmd_serve)
    e = sub.add_parser("evaluate", help="simulate, run the engine and score many vans")
    e.add_argument("--seeds", default="1-10", help="a seed or a range: 1-10")
    e.add_argument("--vans", type=int, default=2)
    e.add_argument("--stops", type=int, default=6)
    e.add_argument("--noise", type=float, default=5.0, help="position noise per axis, metres")
    e.add_argument("--sparse", type=float, default=None, help="every second van: a fix every N s")
    e.add_argument("--tunnels", type=int, default=2)
    e.add_argument("--nmea", action="store_true", help="through NMEA and fix assembly")
    e.set_defaults(func=_cmd_evaluate)
    s = sub.add_parser("score", help="score a van's events against its truth")
    s.add_argument("truth")
    s.add_argument("events", help="JSON lines (trips replay output), or -")
    s.add_argument("--zones", help="the van's zones.json (its extra geofences)")
    s.set_defaults(func=_cmd_score)
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
