"""Simulated van days as the hub receives them: the events a van's agent and its driver's app
send, each with the time it reaches the hub, for the delivery model's scores.

One van's day (``van_day``) is what its agent would publish: ``gnss.fix`` pings chosen by the
agent's own GNSS pipeline (``edge_agent.gnss.pipeline``: every 10 s moving, 5 min stopped), the
trip events of the agent's trip engine (each reaching the hub when the fix that confirmed it came
in, not at its earlier crossing time), and the driver app's scans and PoDs
(``simulators.driver_app.plan_deliveries``: a stop's posts in a dead zone come with the next
stop's). ``fleet_days`` draws many seeded days, one calendar day apart, so a model that learns
as it goes sees them in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from edge_agent.gnss.pipeline import GnssPipeline
from edge_agent.trips.engine import EngineParams, TripEngine
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.reorder import FixOrder
from edge_agent.wire.envelope import format_ts, parse_ts
from simulators.driver_app import plan_deliveries
from simulators.van import VanRun, run_van
from simulators.world import START, VanScenario, fleet_scenarios

__all__ = [
    "Arrival",
    "VanDay",
    "day_runs",
    "envelopes",
    "fleet_days",
    "route_span",
    "stop_truth",
    "tighten_windows",
    "van_day",
]


@dataclass(frozen=True, slots=True)
class Arrival:
    """An event (``type``, ``ts``, ``data``, ``ref``) reaching the hub at ``at`` (epoch s)."""

    at: float
    event: dict[str, Any]


@dataclass(slots=True)
class VanDay:
    """A simulated van's day: its run (path, fixes, truth) and what the hub receives."""

    run: VanRun
    arrivals: list[Arrival]

    @property
    def van(self) -> str:
        """The van's device id."""
        return self.run.scenario.van

    @property
    def route(self) -> str:
        """The route of its manifest."""
        return str(self.run.scenario.manifest["route"])


def van_day(run: VanRun, *, deliveries: bool = True) -> VanDay:
    """What the hub receives from one simulated van (module docstring)."""
    sc = run.scenario
    cfg = sc.config()
    m = parse_manifest(sc.manifest)
    eng = TripEngine(build_zones(m, cfg), EngineParams.from_config(cfg), m.route)
    order = FixOrder(cfg.reorder_window, cfg.max_time_jump)
    pipe = GnssPipeline()
    st = eng.new_state()
    out: list[Arrival] = []
    for fix in run.fixes:
        t = fix.time.timestamp()
        if pipe.push_fix(fix).report is not None:
            out.append(
                Arrival(
                    t, {"type": "gnss.fix", "ts": format_ts(fix.time), "data": fix.event_data()}
                )
            )
        for due in order.push(fix):
            st, evs = eng.step(st, due)
            for e in evs:
                out.append(Arrival(t, {**e.to_json(), "ref": dict(e.ref)}))
    end = run.fixes[-1].time.timestamp() if run.fixes else 0.0
    for due in order.flush():
        st, evs = eng.step(st, due)
        out += [Arrival(end, {**e.to_json(), "ref": dict(e.ref)}) for e in evs]
    if deliveries:
        day0 = run.fixes[0].time.timestamp()
        for post in plan_deliveries(run, 1.0):
            bodies = post.body if isinstance(post.body, list) else [post.body]
            out += [Arrival(day0 + post.at, dict(b)) for b in bodies]
    out.sort(key=lambda a: (a.at, a.event["ts"]))
    return VanDay(run, out)


def stop_truth(run: VanRun) -> dict[str, float]:
    """When the van really arrived at each stop it stopped at: the first entry into the stop's
    zone with a stay in it (a drive-by through another stop's zone is not an arrival)."""
    out: dict[str, float] = {}
    for iv in sorted(
        (i for i in run.truth["intervals"] if i["zone"].startswith("stop:") and i["enter"]),
        key=lambda i: i["enter"],
    ):
        sid = iv["zone"][len("stop:") :]
        if sid not in out and iv["still_s"] >= 20.0:
            out[sid] = float(iv["enter"])
    return out


def route_span(run: VanRun) -> tuple[float, float] | None:
    """When the van really left its depot and came back (the route is active between)."""
    dep = [i for i in run.truth["intervals"] if i["zone"] == "depot"]
    left = next((i["exit"] for i in dep if i["exit"] is not None), None)
    back = next(
        (
            i["enter"]
            for i in dep
            if i["enter"] is not None and left is not None and i["enter"] > left
        ),
        None,
    )
    if left is None or back is None:
        return None
    return float(left), float(back)


def fleet_days(
    seeds: range | list[int], *, vans: int = 3, stops: int = 10, **kw: Any
) -> Iterator[list[VanScenario]]:
    """One list of van scenarios per seed, each seed's day one calendar day after the last."""
    for k, seed in enumerate(seeds):
        yield fleet_scenarios(vans, seed=seed, stops=stops, start=START + timedelta(days=k), **kw)


def tighten_windows(scenarios: list[VanScenario], every_min: float, length_min: float) -> None:
    """Give each van's stop ``k`` the window [start + k x every, + length] (minutes), in place:
    tighter than the world's own (20 min apart, an hour long), so some stops are truly late."""
    for sc in scenarios:
        for k, stop in enumerate(sc.manifest["stops"]):
            w0 = sc.start + timedelta(minutes=every_min * k)
            stop["window"] = [format_ts(w0), format_ts(w0 + timedelta(minutes=length_min))]


def day_runs(scenarios: list[VanScenario]) -> list[VanDay]:
    """Simulate one day's vans."""
    return [van_day(run_van(sc)) for sc in scenarios]


def envelopes(days: list[VanDay], fleet: str) -> Iterator[tuple[float, dict[str, Any]]]:
    """All vans' arrivals of one day merged in arrival order, as envelopes of ``fleet``."""
    merged = sorted(
        ((a.at, d.van, i, a.event) for d in days for i, a in enumerate(d.arrivals)),
        key=lambda x: (x[0], x[1], x[2]),
    )
    seqs: dict[str, int] = {}
    for at, van, _i, ev in merged:
        seq = seqs[van] = seqs.get(van, 0) + 1
        env = {
            "id": f"{van}-{parse_ts(ev['ts']).strftime('%Y%m%d')}-{seq}",
            "seq": seq,
            "fleet": fleet,
            "device": van,
            "type": ev["type"],
            "ts": ev["ts"],
            "clock": "gnss",
            "data": ev.get("data", {}),
        }
        if ev.get("ref"):
            env["ref"] = ev["ref"]
        yield at, env
