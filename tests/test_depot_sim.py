"""The depot simulator and its score, and the load engine against the simulator's truth.

The simulator's own tests read its output without the engine (parcel names come from
``edge_agent.scan.gs1`` directly); the engine tests run ``edge_agent.station.replay`` over many
seeded shifts and ``python -m edge_agent load replay`` once, scored by ``simulators.depot score``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.scan.gs1 import is_gs1_text, parse_element_string
from edge_agent.station.plan import parse_load_plan
from edge_agent.station.replay import parse_line, replay_events
from edge_agent.wire.envelope import parse_ts, validate_data
from simulators.depot import Shift, ShiftParams, main, simulate_shift, write_shift
from simulators.station_score import read_events, score_shift

ROOT = Path(__file__).resolve().parents[1]


def _key(text: str) -> str:
    """A label's parcel name, worked out here from GS1 alone (not the engine's parcel_key)."""
    s = text.strip()
    # the bare transmitted form is AI 00 and 18 digits; a bare SSCC is only 18 digits
    if is_gs1_text(s) or (len(s) >= 20 and s.startswith("00") and s[:20].isdigit()):
        return parse_element_string(s)["00"]
    return s


def _reads(shift: Shift) -> list[tuple[int, str, str]]:
    """(t ms, dock, parcel) of every parcel read in the input (not vehicle or gate-out codes)."""
    vehicles = {r["vehicle"] for r in shift.plan["routes"]}
    out = []
    for o in shift.observations:
        if o.kind != "scan" or o.value.startswith(("VEH:", "GATEOUT")) or o.value in vehicles:
            continue
        out.append((o.t, o.dock, _key(o.value)))
    return out


def _ms(shift: Shift, ts: str) -> int:
    return round((parse_ts(ts) - shift.params.start).total_seconds() * 1000)


# ---------------------------------------------------------------- the simulator


def test_a_seed_gives_the_same_shift_byte_for_byte(tmp_path: Path) -> None:
    params = ShiftParams(seed=11, routes=6, parcels=30, misload=0.1)
    write_shift(tmp_path / "a", params)
    write_shift(tmp_path / "b", simulate_shift(params))
    write_shift(tmp_path / "c", ShiftParams(seed=12, routes=6, parcels=30, misload=0.1))
    names = ("plan.json", "input.jsonl", "edges.json", "truth.json")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_rates_are_respected_over_many_parcels() -> None:
    params = ShiftParams(
        seed=5,
        docks=6,
        routes=60,
        parcels=100,
        misload=0.05,
        unreadable=0.03,
        unknown=0.02,
        left_behind=0.04,
        duplicates=0.3,
    )
    shift = simulate_shift(params)
    fates = Counter(f for d in shift.departures for f in d.fates.values())
    n = sum(fates.values())
    assert n > 5000
    assert _within(fates["misloaded"], n, params.misload)
    assert _within(fates["unread"], n, params.unreadable)
    assert _within(fates["left_behind"], n, params.left_behind)
    carried = fates["loaded"] + fates["unread"]
    assert _within(len(shift.truth["unknowns"]), carried, params.unknown)
    # each read is repeated with probability `duplicates`, 1 to 3 times (2 on average)
    reads = Counter((o.dock, o.value) for o in shift.observations if o.kind == "scan")
    extra = sum(c - 1 for c in reads.values())
    assert 0.3 * 1.6 < extra / len(reads) < 0.3 * 2.4


def test_departure_rates_are_respected_over_many_departures() -> None:
    params = ShiftParams(
        seed=8,
        docks=5,
        routes=600,
        parcels=2,
        vehicle_id=0.7,
        gateout_scan=0.2,
        gateout_both=0.15,
        reuse=0.3,
    )
    deps = simulate_shift(params).departures
    by = Counter(d.gateout_by for d in deps)
    assert _within(by["scan"], len(deps), 0.2) and _within(by["both"], len(deps), 0.15)
    assert _within(sum(d.vehicle_by != "none" for d in deps), len(deps), 0.7)
    assert {d.vehicle_by for d in deps} == {"scan", "plain", "command", "late-scan", "none"}
    reused = sum(len(deps[i].vehicle) > 0 and deps[i].vehicle == deps[i - 5].vehicle
                 for i in range(5, len(deps)))  # fmt: skip
    assert _within(reused, len(deps) - 5, 0.3)


def test_the_input_is_replay_input_in_time_order(tmp_path: Path) -> None:
    params = ShiftParams(seed=2, duplicates=0.5, vehicle_command=0.5, gateout_command=0.5)
    shift = write_shift(tmp_path, params)
    fields = {
        "scan": {"t", "kind", "dock", "text"},
        "door": {"t", "kind", "dock", "state"},
        "bay": {"t", "kind", "dock", "state"},
        "vehicle": {"t", "kind", "dock", "vehicle"},
        "gateout": {"t", "kind", "dock"},
    }
    lines = (tmp_path / "input.jsonl").read_bytes().splitlines()
    assert len(lines) == len(shift.observations)
    times = []
    for raw in lines:
        obj = json.loads(raw)
        assert set(obj) == fields[obj["kind"]]  # exactly DESIGN §8's fields
        times.append(parse_ts(obj["t"]))  # ISO, milliseconds, Z
        obs = parse_line(raw)  # and the replay's own reader takes it
        assert obs.t == times[-1] and obs.dock == obj["dock"]
    assert times == sorted(times) and len(set(times)) == len(times)
    kinds = Counter(json.loads(raw)["kind"] for raw in lines)
    assert kinds["scan"] > 200 and all(kinds[k] for k in fields)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["station"] == "depot-1"
    parse_load_plan(plan)  # a valid load plan


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_the_truth_is_what_the_input_shows(seed: int) -> None:
    shift = simulate_shift(ShiftParams(seed=seed, docks=3, routes=9, misload=0.08, unknown=0.03))
    truth, plan = shift.truth, shift.plan
    plan_route = {r["route"]: r for r in plan["routes"]}
    owner = {_key(p): r["route"] for r in plan["routes"] for p in r["parcels"]}
    reads = _reads(shift)
    read_at = Counter((dock, key) for _, dock, key in reads)
    ever_read = {key for _, _, key in reads}
    deps = {d["route"]: d for d in truth["departures"]}
    # a dock's stays do not overlap
    for dock in {d["dock"] for d in deps.values()}:
        stays = sorted((_ms(shift, d["arrive"]), _ms(shift, d["gateout_at"]))
                       for d in deps.values() if d["dock"] == dock)  # fmt: skip
        assert all(a[1] < b[0] for a, b in itertools.pairwise(stays))

    def during(route: str, t: int) -> bool:
        d = deps[route]
        return _ms(shift, d["arrive"]) <= t < _ms(shift, d["gateout_at"])

    # verified and missing split each route's parcels
    verified = {(v["route"], v["parcel"]) for v in truth["verified"]}
    for route, r in plan_route.items():
        keys = {_key(p) for p in r["parcels"]}
        gone = {m["parcel"] for m in truth["missing"].get(route, [])}
        ok = {p for rr, p in verified if rr == route}
        assert ok | gone == keys and not ok & gone
        assert deps[route]["missing"] == sorted(gone)
        assert deps[route]["verified"] == len(ok) and deps[route]["expected"] == len(keys)
    # a verified parcel was read at its dock while its van was there; a missing one never was
    for v in truth["verified"]:
        assert any(d == v["dock"] and k == v["parcel"] and during(v["route"], t)
                   for t, d, k in reads)  # fmt: skip
    for route, ms in truth["missing"].items():
        for m in ms:
            if m["why"] in ("unread", "left_behind"):
                assert m["parcel"] not in ever_read
            else:
                assert read_at[(plan_route[route]["dock"], m["parcel"])] == 0 or any(
                    d == plan_route[route]["dock"] and k == m["parcel"] and not during(route, t)
                    for t, d, k in reads
                )
    # a misload was read at the wrong dock in the wrong van's stay, and names the parcel's route
    assert truth["misloads"]
    for m in truth["misloads"]:
        at = _ms(shift, m["at"])
        assert (at, m["dock"], m["parcel"]) in reads and during(m["route"], at)
        assert owner[m["parcel"]] == m["expected_route"] != m["route"]
        own = plan_route[m["expected_route"]]
        assert (own["vehicle"], own["dock"]) == (m["expected_vehicle"], m["expected_dock"])
        assert (m["vehicle"], m["dock"]) == (deps[m["route"]]["vehicle"], deps[m["route"]]["dock"])
        if m["corrected_at"] is not None:
            c = _ms(shift, m["corrected_at"])
            assert c > at and during(m["expected_route"], c)
            assert (c, m["expected_dock"], m["parcel"]) in reads
            assert m["parcel"] in truth["corrected"]
    # a gate-out's misloaded count: misloads still not verified at their own dock when it leaves
    for d in deps.values():
        leave = _ms(shift, d["gateout_at"])
        onto = [m for m in truth["misloads"] if m["route"] == d["route"]]
        still = [
            m for m in onto if m["corrected_at"] is None or _ms(shift, m["corrected_at"]) > leave
        ]
        assert d["misloaded"] == len(still)
    for u in truth["unknowns"]:
        assert u["parcel"] not in owner and read_at[(u["dock"], u["parcel"])] >= 1


def test_each_departure_ends_by_its_signals() -> None:
    shift = simulate_shift(ShiftParams(seed=9, routes=40, parcels=5, gateout_both=0.3))
    obs = shift.observations
    for dep, d in zip(shift.departures, shift.truth["departures"], strict=True):
        a, g = _ms(shift, d["arrive"]), _ms(shift, d["gateout_at"])
        # the stay's own signals (the next van comes at least 30 s after the last of them)
        mine = [o for o in obs if o.dock == d["dock"] and a <= o.t <= dep.last_signal]
        gateouts = {
            o.t for o in mine if o.kind == "gateout" or o.value in ("GATEOUT", f"GATEOUT:{o.dock}")
        }
        bays = [o.value for o in mine if o.kind == "bay"]
        doors = [o.value for o in mine if o.kind == "door"]
        assert doors == ["open", "closed"]
        if d["gateout_by"] == "scan":
            assert gateouts and min(gateouts) == g and bays == []
        else:
            assert bays == ["occupied", "free"]
            assert bool(gateouts) == (d["gateout_by"] == "both")
        if d["vehicle_by"] == "none":
            assert not any(o.kind == "vehicle" or o.value.endswith(d["vehicle"]) for o in mine)
        else:
            assert any(o.value in (d["vehicle"], f"VEH:{d['vehicle']}") for o in mine)


def _debounce(edges: list[list[float]], window: float) -> list[tuple[float, int]]:
    """Changes from raw edges: a burst of edges closer than ``window`` is one change to the
    burst's last level, stamped with its first edge."""
    out: list[tuple[float, int]] = []
    i = 0
    while i < len(edges):
        j = i
        while j + 1 < len(edges) and edges[j + 1][0] - edges[j][0] < window:
            j += 1
        out.append((edges[i][0], int(edges[j][1])))
        i = j + 1
    return out


def test_sensor_edges_bounce_and_settle_to_the_input() -> None:
    shift = simulate_shift(ShiftParams(seed=4, docks=3, routes=12))
    edges = shift.edges
    assert edges["active"] == {"door": "open", "bay": "occupied"}
    bursts = 0
    for dock, per in edges["docks"].items():
        assert per["initial"] == {"door": 0, "bay": 0}
        for kind in ("door", "bay"):
            raw = per[kind]
            levels = [per["initial"][kind]] + [lvl for _, lvl in raw]
            assert all(a != b for a, b in itertools.pairwise(levels))  # edges toggle
            changes = _debounce(raw, 0.1)
            bursts += sum(1 for t, _ in changes if sum(1 for e in raw if t <= e[0] < t + 0.1) > 1)
            for t, _ in changes:
                assert max(e[0] for e in raw if t <= e[0] < t + 0.1) - t <= edges["bounce_s"]
            want = [
                (o.t / 1000, int(o.value in ("open", "occupied")))
                for o in shift.observations
                if o.dock == dock and o.kind == kind and o.t > 100
            ]
            assert [(round(t, 3), lvl) for t, lvl in changes] == want
    assert bursts > 10


def test_bad_params_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="misload"):
        ShiftParams(misload=1.5)
    with pytest.raises(ValueError, match="docks"):
        ShiftParams(docks=0)
    with pytest.raises(ValueError, match="gateout_scan"):
        ShiftParams(gateout_scan=0.7, gateout_both=0.5)


# ---------------------------------------------------------------- the score


def _ideal(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a perfect station would send for ``truth`` (order does not matter to score)."""
    ts = "2026-03-02T05:00:00.000Z"
    evs: list[dict[str, Any]] = []
    for m in truth["misloads"]:
        keys = ("parcel", "dock", "vehicle", "expected_route", "expected_vehicle", "expected_dock")
        evs.append({"type": "load.misload", "ts": ts, "data": {k: m[k] for k in keys}})
    for u in truth["unknowns"]:
        data = {k: u[k] for k in ("parcel", "dock", "vehicle")}
        evs.append({"type": "load.unknown", "ts": ts, "data": data})
    for v in truth["verified"]:
        evs.append({"type": "load.verified", "ts": ts, "data": dict(v)})
    for d in truth["departures"]:
        fields = ("route", "vehicle", "dock", "expected", "verified", "misloaded", "missing")
        evs.append({"type": "load.gateout", "ts": ts, "data": {k: d[k] for k in fields}})
        if d["missing"]:
            data = {"route": d["route"], "vehicle": d["vehicle"], "parcels": d["missing"]}
            evs.append({"type": "load.missing", "ts": ts, "data": data})
    for e in evs:
        validate_data(e["type"], e["data"])  # what a perfect station sends is valid on the wire
    return evs


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    t = simulate_shift(ShiftParams(seed=21, misload=0.08, unknown=0.03, corrected=0.8)).truth
    assert t["misloads"] and t["unknowns"] and t["corrected"] and t["missing"]
    return t


def test_a_perfect_station_scores_ok(truth: dict[str, Any]) -> None:
    sc = score_shift(truth, _ideal(truth))
    assert sc.ok and not sc.problems
    s = sc.summary()
    assert s["misload"] == {"found": len(truth["misloads"]), "expected": len(truth["misloads"]),
                            "extra": 0}  # fmt: skip
    assert sum(v["expected"] for v in s["missing_by_why"].values()) == s["missing"]["expected"]


def _first(evs: list[dict[str, Any]], type_: str) -> int:
    return next(i for i, e in enumerate(evs) if e["type"] == type_)


def _faults(truth: dict[str, Any]) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(name, category that must fail, events) for each kind of station mistake."""
    base = _ideal(truth)
    for type_, cat in (("load.misload", "misload"), ("load.unknown", "unknown"),
                       ("load.missing", "missing"), ("load.gateout", "gateout"),
                       ("load.verified", "verified")):  # fmt: skip
        evs = copy.deepcopy(base)
        del evs[_first(evs, type_)]
        yield f"one {type_} dropped", cat, evs
        evs = copy.deepcopy(base)
        evs.append(copy.deepcopy(evs[_first(evs, type_)]))
        yield f"one {type_} repeated", cat, evs
    evs = copy.deepcopy(base)
    evs[_first(evs, "load.misload")]["data"]["expected_dock"] = "dock-99"
    yield "a misload naming the wrong dock", "misload", evs
    evs = copy.deepcopy(base)
    evs[_first(evs, "load.gateout")]["data"]["misloaded"] += 1
    yield "a gate-out with a wrong misloaded count", "gateout", evs
    evs = copy.deepcopy(base)
    evs[_first(evs, "load.missing")]["data"]["parcels"].append("PKNOTMISSING")
    yield "a parcel flagged missing that was not", "missing", evs
    evs = copy.deepcopy(base)
    u = evs[_first(evs, "load.unknown")]["data"]
    evs.append({"type": "load.unknown", "ts": "x", "data": {**u, "parcel": "PKSTRAY"}})
    yield "an unknown that was not", "unknown", evs


def test_every_kind_of_station_mistake_fails_the_score(truth: dict[str, Any]) -> None:
    names = []
    for name, cat, evs in _faults(truth):
        sc = score_shift(truth, evs)
        assert not sc.ok, name
        assert not sc.categories[cat].ok, name
        assert sc.problems, name
        names.append(name)
    assert len(names) == 14


def test_events_read_from_replay_lines_and_hub_envelopes(truth: dict[str, Any]) -> None:
    evs = _ideal(truth)
    replay_text = "".join(json.dumps(e) + "\n" for e in evs)
    hub = [
        {"id": f"e{i}", "seq": i + 1, "fleet": "f", "device": "depot-1", "clock": "ntp", **e}
        for i, e in enumerate(evs)
    ]
    other = {**hub[0], "device": "van-9", "id": "other"}
    hub_text = "\n".join(json.dumps(e) for e in [*hub, other]) + "\n\n"
    assert score_shift(truth, read_events(replay_text)).ok
    assert not score_shift(truth, read_events(hub_text)).ok  # another device's event counts
    assert score_shift(truth, read_events(hub_text, device="depot-1")).ok
    for bad, what in (("[1]", "line 2: not a JSON object"), ('{"type": 1, "data": {}}', "type"),
                      ('{"type": "x"}', "data"), ("{oops", "line 2: not JSON")):  # fmt: skip
        with pytest.raises(ValueError, match=what):
            read_events(replay_text.splitlines()[0] + "\n" + bad)


def test_the_command_line_generates_and_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shift"
    assert main(["generate", "--out", str(out), "--docks", "2", "--routes", "4", "--seed", "7",
                 "--misload", "0.1", "--unknown", "0.05"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out)
    truth = json.loads((out / "truth.json").read_text())
    assert info["departures"] == len(truth["departures"]) == 4
    assert truth["params"]["seed"] == 7 and truth["params"]["misload"] == 0.1
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(e) + "\n" for e in _ideal(truth)))
    assert main(["score", "--truth", str(out / "truth.json"), str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    lines = good.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(line for line in lines if '"load.misload"' not in line))
    assert main(["score", "--truth", str(out / "truth.json"), str(bad)]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["ok"] is False and s["misload"]["found"] == 0 < s["misload"]["expected"]
    bad.write_text("not json\n")
    assert main(["score", "--truth", str(out / "truth.json"), str(bad)]) == 2
    assert "line 1: not JSON" in capsys.readouterr().err


# ---------------------------------------------------------------- the engine against the truth

SHIFTS = [
    ShiftParams(
        seed=seed,
        docks=1 + seed % 5,
        routes=3 + seed % 9,
        parcels=(10, 40, 80)[seed % 3],
        misload=(0.0, 0.03, 0.08, 0.15)[seed % 4],
        unreadable=(0.0, 0.01, 0.05)[seed % 3],
        unknown=(0.01, 0.05)[seed % 2],
        left_behind=(0.02, 0.0, 0.06)[seed % 3],
        corrected=(0.5, 0.9)[seed % 2],
        duplicates=(0.2, 0.6)[seed % 2],
        vehicle_id=(0.85, 0.5, 1.0, 0.0)[seed % 4],
        gateout_scan=(0.2, 0.4)[seed % 2],
        gateout_both=(0.1, 0.3)[seed % 2],
        reuse=(0.25, 0.6)[seed % 2],
        out_of_order=(0.1, 0.5)[seed % 2],
    )
    for seed in range(1, 31)
]


def _engine_events(shift: Shift) -> list[dict[str, Any]]:
    plan = parse_load_plan(shift.plan)
    lines = [(n, line.encode()) for n, line in enumerate(shift.input_lines(), 1)]
    bad: list[tuple[int, str]] = []
    events = [
        e.to_json() for e in replay_events(plan, lines, on_bad=lambda n, m: bad.append((n, m)))
    ]
    assert bad == []
    return events


def test_the_engine_reports_the_truth_over_many_seeded_shifts() -> None:
    pooled: Counter[str] = Counter()
    failures = []
    for params in SHIFTS:
        shift = simulate_shift(params)
        sc = score_shift(shift.truth, _engine_events(shift))
        if not sc.ok:
            failures.append({"seed": params.seed, **sc.summary()})
        for name, c in sc.categories.items():
            pooled[f"{name}.expected"] += c.expected
            pooled[f"{name}.found"] += c.found
            pooled[f"{name}.extra"] += c.extra + c.wrong
        pooled["corrected"] += len(shift.truth["corrected"])
        for d in shift.departures:
            pooled[f"gateout_by.{d.gateout_by}"] += 1
            pooled[f"vehicle_by.{d.vehicle_by}"] += 1
            pooled["out_of_order"] += d.out_of_order
        for ms in shift.truth["missing"].values():
            pooled.update(f"why.{m['why']}" for m in ms)
    assert failures == [], json.dumps(failures, indent=1)[:6000]
    # the shifts did exercise every case
    for what in ("misload", "unknown", "missing", "gateout", "verified"):
        assert pooled[f"{what}.expected"] > 20 and pooled[f"{what}.extra"] == 0, what
    assert min(pooled[k] for k in ("corrected", "why.unread", "why.left_behind",
                                   "why.misloaded")) > 5  # fmt: skip
    for by in ("sensors", "scan", "both"):
        assert pooled[f"gateout_by.{by}"] > 5, by
    assert pooled["out_of_order"] > 2
    for by in ("scan", "plain", "command", "late-scan", "none"):
        assert pooled[f"vehicle_by.{by}"] > 2, by


def test_load_replay_on_the_command_line_scores_ok(tmp_path: Path) -> None:
    write_shift(tmp_path, ShiftParams(seed=31, misload=0.08, unknown=0.03, corrected=0.8))
    run = subprocess.run(
        [sys.executable, "-m", "edge_agent", "load", "replay", "--plan",
         str(tmp_path / "plan.json"), str(tmp_path / "input.jsonl")],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = tmp_path / "events.jsonl"
    events.write_text(run.stdout)
    score = subprocess.run(
        [sys.executable, "-m", "simulators.depot", "score", "--truth",
         str(tmp_path / "truth.json"), str(events)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert score.returncode == 0, score.stdout + score.stderr
    s = json.loads(score.stdout)
    assert s["ok"] and s["misload"]["found"] == s["misload"]["expected"] > 0
    assert s["gateout"]["found"] == 8
    # and a station that lost one of those lines fails
    events.write_text(
        "".join(ln + "\n" for ln in run.stdout.splitlines() if "load.unknown" not in ln)
    )
    score = subprocess.run(
        [sys.executable, "-m", "simulators.depot", "score", "--truth",
         str(tmp_path / "truth.json"), str(events)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert score.returncode == 1 and json.loads(score.stdout)["unknown"]["found"] == 0
