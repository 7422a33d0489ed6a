"""The agent's trip engine run over simulated vans and scored against their truth.

``events_of`` derives a van's events the way ``edge-agent trips replay`` does; ``evaluate``
simulates, derives and scores many vans and pools the scores (``python -m simulators.fleet
evaluate``, the figures quoted in the README).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edge_agent.trips.config import TripsConfig
from edge_agent.trips.engine import EngineParams, TripEngine
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.reorder import FixOrder
from edge_agent.trips.replay import replay_events
from edge_agent.wire.envelope import parse_ts
from simulators.nmea_out import nmea_lines
from simulators.scoring import Score, pooled, score
from simulators.van import VanRun, run_van
from simulators.world import VanScenario

__all__ = ["evaluate", "events_of"]


def events_of(
    run: VanRun, config: TripsConfig | None = None, *, nmea: bool = False
) -> list[dict[str, Any]]:
    """The van's events as ``trips replay`` derives them (``ref`` in full), for scoring.

    With ``nmea`` the fixes go through NMEA sentences and the GNSS fix assembly first, as a
    recorded log would; otherwise straight to the reorder buffer and the engine.
    """
    cfg = config if config is not None else run.scenario.config()
    m = parse_manifest(run.scenario.manifest)
    if nmea:
        events = list(replay_events(m, ["".join(nmea_lines(run.fixes)).encode("ascii")], cfg))
    else:
        eng = TripEngine(build_zones(m, cfg), EngineParams.from_config(cfg), m.route)
        order = FixOrder(cfg.reorder_window, cfg.max_time_jump)
        st = eng.new_state()
        events = []
        for due in [f for fix in run.fixes for f in order.push(fix)] + order.flush():
            st, evs = eng.step(st, due)
            events += evs
    return [{**e.to_json(), "ref": e.ref} for e in events]


def edge_visits(
    events: list[dict[str, Any]], truth: dict[str, Any], cfg: TripsConfig, tol: float = 15.0
) -> dict[str, int]:
    """Stop visits where the van stood inside for a minute or more but never ``enter_margin``
    + 10 m deep (the scorer leaves those optional): how many got their arrival and their
    departure within ``tol`` seconds of the truth."""
    out = {"visits": 0, "arrive": 0, "depart": 0}
    need_in = cfg.enter_margin + 10.0
    for iv in truth["intervals"]:
        if not iv["zone"].startswith("stop:") or iv["enter"] is None or iv["exit"] is None:
            continue
        if iv["still_s"] < 60.0 or iv["depth_m"] >= need_in:
            continue
        out["visits"] += 1
        stop = iv["zone"][len("stop:") :]
        for type_, key in (("trip.arrive", "enter"), ("trip.depart", "exit")):
            if any(
                e["type"] == type_
                and e["ref"].get("stop") == stop
                and abs(parse_ts(e["ts"]).timestamp() - iv[key]) <= tol
                for e in events
            ):
                out[type_[len("trip.") :]] += 1
    return out


def evaluate(scenarios: Iterable[VanScenario], *, nmea: bool = False) -> dict[str, Any]:
    """Score many vans and pool the results (the figures quoted in the README), with the
    shallow stop visits (``edge_visits``) counted apart."""
    edge = {"visits": 0, "arrive": 0, "depart": 0}

    def one(sc: VanScenario) -> Score:
        run = run_van(sc)
        events = events_of(run, nmea=nmea)
        for k, n in edge_visits(events, run.truth, sc.config()).items():
            edge[k] += n
        return score(events, run.truth, sc.config())

    out = pooled(one(sc) for sc in scenarios)
    out["edge_visits"] = edge
    return out
