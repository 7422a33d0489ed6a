"""Scoring: a van's derived events matched against its ground truth.

``score`` turns the truth's zone stays (``simulators.truth``) into the events they call for
(arrivals, departures, dwells, approaches, geofence enters and exits; required or optional) and
matches the events an engine derived to them one to one, within a time and a distance tolerance:
precision, recall, flaps (events matching nothing), time, position and dwell errors.
``pooled`` adds up many vans' scores (the figures of ``python -m simulators.fleet evaluate``).
Nothing here simulates or runs the engine: the events are plain JSON objects, as ``edge-agent
trips replay`` prints them or the hub stores them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge_agent.trips.config import TripsConfig
from edge_agent.wire.envelope import parse_ts

__all__ = ["SCORED", "Score", "pooled", "score"]


@dataclass
class Score:
    """How well a van's events match its truth."""

    required: int = 0
    matched: int = 0
    optional_matched: int = 0
    events: int = 0
    false_events: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    time_errors: list[float] = field(default_factory=list)
    dist_errors: list[float] = field(default_factory=list)
    dwell_errors: list[float] = field(default_factory=list)
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)

    def _tally(self, type_: str, what: str, n: int = 1) -> None:
        counts = self.by_type.setdefault(type_, {"required": 0, "matched": 0, "false": 0})
        counts[what] += n

    def add(self, other: Score) -> None:
        """Add ``other``'s counts, lists and per-type tallies to this score (pooling vans)."""
        self.required += other.required
        self.matched += other.matched
        self.optional_matched += other.optional_matched
        self.events += other.events
        self.false_events += other.false_events
        self.missed += other.missed
        self.time_errors += other.time_errors
        self.dist_errors += other.dist_errors
        self.dwell_errors += other.dwell_errors
        for type_, counts in other.by_type.items():
            for what, n in counts.items():
                if n:
                    self._tally(type_, what, n)

    @property
    def precision(self) -> float:
        """Matched events over scored events (optional truths absorb their events)."""
        scored = self.events - self.optional_matched
        return 1.0 if scored == 0 else self.matched / scored

    @property
    def recall(self) -> float:
        """Required truths matched exactly once, over required truths."""
        return 1.0 if self.required == 0 else self.matched / self.required

    @property
    def flaps(self) -> int:
        """Events that match no truth: extra enters/exits, duplicates, jitter."""
        return len(self.false_events)

    def summary(self) -> dict[str, Any]:
        """The scores as JSON data."""
        te, de = self.time_errors, self.dist_errors
        return {
            "required": self.required,
            "matched": self.matched,
            "events": self.events,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "flaps": self.flaps,
            "time_error_s": {"mean": _mean(te), "max": _max(te)},
            "dist_error_m": {"mean": _mean(de), "max": _max(de)},
            "dwell_error_s": {"max": _max(self.dwell_errors)},
            "by_type": {k: self.by_type[k] for k in sorted(self.by_type)},
        }


def _mean(v: list[float]) -> float | None:
    return round(sum(v) / len(v), 2) if v else None


def _max(v: list[float]) -> float | None:
    return round(max(v), 2) if v else None


SCORED = (
    "trip.arrive",
    "trip.depart",
    "trip.approach",
    "trip.dwell",
    "geofence.enter",
    "geofence.exit",
)


def _event_zone(ev: dict[str, Any]) -> str:
    ref = ev.get("ref") or {}
    data = ev.get("data") or {}
    stop = ref.get("stop")
    type_ = ev["type"]
    if type_ == "trip.approach":
        return f"approach:{stop}"
    if stop is not None:
        return f"stop:{stop}"
    if type_ in ("trip.arrive", "trip.depart"):
        return "depot"
    return f"zone:{data.get('zone')}"


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(a))


def _merge(intervals: list[dict[str, Any]], out_depth: float) -> list[dict[str, Any]]:
    """Join intervals of a zone separated by an excursion too shallow to count as leaving."""
    merged: list[dict[str, Any]] = []
    for iv in intervals:
        prev = merged[-1] if merged else None
        if prev is not None and prev["zone"] == iv["zone"] and iv["gap_depth_m"] < out_depth:
            prev = dict(prev)
            prev.update(
                exit=iv["exit"],
                exit_lat=iv["exit_lat"],
                exit_lon=iv["exit_lon"],
                depth_m=max(prev["depth_m"], iv["depth_m"]),
                still_s=prev["still_s"] + iv["still_s"],
            )
            merged[-1] = prev
        else:
            merged.append(dict(iv))
    return merged


def _expected(truth: dict[str, Any], cfg: TripsConfig) -> list[dict[str, Any]]:
    """The events the truth calls for: ``(type, zone, t, lat, lon, required)``."""
    need_in = cfg.enter_margin + 10.0
    need_out = cfg.exit_margin + 10.0
    kinds = {k: v["kind"] for k, v in truth["zones"].items()}
    configured = {f"zone:{z.name}" for z in cfg.zones}
    by_zone: dict[str, list[dict[str, Any]]] = {}
    for iv in truth["intervals"]:
        if kinds[iv["zone"]] == "zone" and iv["zone"] not in configured:
            continue  # a geofence the agent was not configured with
        by_zone.setdefault(iv["zone"], []).append(iv)
    exp: list[dict[str, Any]] = []
    for key, ivs in by_zone.items():
        for iv in _merge(sorted(ivs, key=lambda d: d["enter"] or 0.0), need_out):
            kind = kinds[key]
            required = iv["depth_m"] >= need_in
            dur = (iv["exit"] or math.inf) - (iv["enter"] or -math.inf)
            visit: bool | None
            if iv["still_s"] >= 20.0 or dur >= cfg.arrive_after + 30.0:
                visit = True
            elif iv["still_s"] < 5.0 and dur < cfg.arrive_after - 15.0:
                visit = False
            else:
                visit = None  # either reading is right
            if kind == "depot":
                types_in, types_out = ["trip.arrive"], ["trip.depart"]
            elif kind == "stop":
                if visit is None:
                    required = False
                types_in = ["trip.arrive"] if visit else ["geofence.enter"]
                types_out = ["trip.dwell", "trip.depart"] if visit else ["geofence.exit"]
                if visit is None:
                    types_in = ["trip.arrive", "geofence.enter"]
                    types_out = ["trip.dwell", "trip.depart", "geofence.exit"]
            elif kind == "approach":
                types_in, types_out = ["trip.approach"], []
            else:
                types_in, types_out = ["geofence.enter"], ["geofence.exit"]
            common = {"zone": key, "required": required, "visit": visit if kind == "stop" else True}
            if iv["enter"] is not None:
                for ty in types_in:
                    exp.append(
                        {
                            "type": ty,
                            "t": iv["enter"],
                            "lat": iv["enter_lat"],
                            "lon": iv["enter_lon"],
                            **common,
                        }
                    )
            if iv["exit"] is not None:
                for ty in types_out:
                    e = {
                        "type": ty,
                        "t": iv["exit"],
                        "lat": iv["exit_lat"],
                        "lon": iv["exit_lon"],
                        **common,
                    }
                    if ty == "trip.dwell":
                        e["dwell_s"] = iv["exit"] - (
                            iv["enter"] if iv["enter"] is not None else iv["exit"]
                        )
                        e["lat"] = None  # dwell's position is where the van stood, not the exit
                    exp.append(e)
    exp.sort(key=lambda e: e["t"])
    # approach rings of stops already done say nothing: drop their truths
    done: dict[str, float] = {}
    for e in exp:
        if e["type"] == "trip.depart" and e["zone"].startswith("stop:") and e["visit"]:
            done.setdefault(e["zone"][5:], e["t"])
    kept = []
    for e in exp:
        if e["type"] == "trip.approach":
            sid = e["zone"][len("approach:") :]
            if sid in done and done[sid] < e["t"]:
                continue
        kept.append(e)
    # an ambiguous stop visit expects one of two readings: neither is required
    for e in kept:
        if e["visit"] is None:
            e["required"] = False
    return kept


def score(
    events: Iterable[dict[str, Any]],
    truth: dict[str, Any],
    config: TripsConfig | None = None,
    *,
    time_tol: float = 10.0,
    dist_tol: float = 30.0,
) -> Score:
    """Score events (``trips replay`` JSON objects) against a van's truth.

    Every required true transition must be matched by exactly one event of the right type and
    zone within ``time_tol`` seconds and ``dist_tol`` metres; an event matching nothing is a
    false event (a flap, a duplicate). Truths too shallow to be told from noise (depth under the
    margin + 10 m), and stop visits too short to tell a stop from a drive-by, are optional: an
    event may match them, none is required. Geofences (``zone:*``) count only if ``config``
    has them (``trips replay`` runs with the manifest alone).
    """
    cfg = config if config is not None else TripsConfig()
    evs = [
        {**e, "_t": parse_ts(e["ts"]).timestamp(), "_zone": _event_zone(e)}
        for e in events
        if e.get("type") in SCORED
    ]
    sc = Score(events=len(evs))
    used = [False] * len(evs)
    expected = _expected(truth, cfg)
    # required truths first, so an optional one cannot steal their event
    for e in sorted(expected, key=lambda d: not d["required"]):
        if e["required"]:
            sc.required += 1
            sc._tally(e["type"], "required")
        best, best_dt = None, math.inf
        for k, ev in enumerate(evs):
            if used[k] or ev["type"] != e["type"] or ev["_zone"] != e["zone"]:
                continue
            dt = abs(ev["_t"] - e["t"])
            if dt > time_tol or dt >= best_dt:
                continue
            if e["lat"] is not None:
                d = _haversine(ev["data"]["lat"], ev["data"]["lon"], e["lat"], e["lon"])
                if d > dist_tol:
                    continue
            best, best_dt = k, dt
        if best is None:
            if e["required"]:
                sc.missed.append(dict(e))
            continue
        used[best] = True
        ev = evs[best]
        if e["required"]:
            sc.matched += 1
            sc._tally(e["type"], "matched")
            sc.time_errors.append(best_dt)
            if e["lat"] is not None:
                sc.dist_errors.append(
                    _haversine(ev["data"]["lat"], ev["data"]["lon"], e["lat"], e["lon"])
                )
            if e["type"] == "trip.dwell":
                sc.dwell_errors.append(abs(float(ev["data"]["dwell_s"]) - e["dwell_s"]))
        else:
            sc.optional_matched += 1
    for k, ev in enumerate(evs):
        if not used[k]:
            sc._tally(ev["type"], "false")
            sc.false_events.append({kk: v for kk, v in ev.items() if not kk.startswith("_")})
    return sc


def pooled(scores: Iterable[Score]) -> dict[str, Any]:
    """Many vans' scores added up: the summary, 95th percentiles, visits and what was missed."""
    total = Score()
    vans = 0
    for one in scores:
        total.add(one)
        vans += 1
    out = total.summary()
    te = sorted(total.time_errors)
    de = sorted(total.dist_errors)
    out["vans"] = vans
    out["time_error_s"]["p95"] = round(te[int(0.95 * (len(te) - 1))], 2) if te else None
    out["dist_error_m"]["p95"] = round(de[int(0.95 * (len(de) - 1))], 2) if de else None
    visits = [out["by_type"].get(t, {}) for t in ("trip.arrive", "trip.depart", "trip.dwell")]
    out["visits"] = {k: sum(v.get(k, 0) for v in visits) for k in ("required", "matched", "false")}
    out["missed"] = [{k: m[k] for k in ("type", "zone", "t")} for m in total.missed]
    return out
