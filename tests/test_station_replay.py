"""``edge-agent load replay --plan PLAN INPUT`` (DESIGN §8): the engine over recorded lines."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.station.engine import LoadEngine
from edge_agent.station.plan import parse_load_plan
from edge_agent.station.replay import (
    MAX_LINE_BYTES,
    LineError,
    ReplayStats,
    numbered_lines,
    parse_line,
    replay_events,
    replay_main,
)
from edge_agent.wire.envelope import validate_data

ROOT = Path(__file__).resolve().parent.parent
SSCC = "123456789012345675"
PLAN = {
    "station": "depot-1",
    "routes": [
        {"route": "r1", "vehicle": "van-1", "dock": "D1", "parcels": ["A1", "A2", f"(00){SSCC}"]},
        {"route": "r2", "vehicle": "van-2", "dock": "D2", "parcels": ["B1"]},
    ],
}


def at(s: int) -> str:
    return f"2026-03-02T08:{s // 60:02d}:{s % 60:02d}.250Z"


def line(s: int, kind: str, dock: Any = "D1", **fields: Any) -> str:
    return json.dumps({"t": at(s), "kind": kind, "dock": dock, **fields})


# a shift at two docks, good lines only
GOOD = [
    line(0, "door", state="open"),
    line(1, "bay", state="occupied"),
    line(2, "scan", text="VEH:van-1"),
    line(3, "scan", text="A1"),
    line(4, "scan", text="A1"),
    line(5, "scan", text="B1"),
    line(6, "scan", text=f"00{SSCC}"),
    line(7, "scan", text="ZZ"),
    line(8, "vehicle", dock="D2", vehicle="van-2"),
    line(9, "scan", dock="D2", text="B1"),
    line(10, "gateout", dock="D2"),
    line(11, "door", state="closed"),
    line(12, "bay", state="free"),
    line(13, "gateout"),
]


def gate_at(t: Any) -> bytes:
    return json.dumps({"t": t, "kind": "gateout", "dock": "D1"}).encode()


# each bad line, and what its message must say
BAD: list[tuple[bytes, str]] = [
    (b"not json", "not JSON: Expecting value at column 1"),
    (b"[1, 2]", "must be a JSON object, not list"),
    (line(20, "teleport").encode(), "kind: unknown kind 'teleport'"),
    (json.dumps({"t": at(20), "dock": "D1"}).encode(), "kind: missing"),
    (line(20, "scan").encode(), "text: missing"),
    (line(20, "vehicle").encode(), "vehicle: missing"),
    (gate_at("yesterday"), "t: 'yesterday' is not an ISO 8601 time"),
    (gate_at("2026-03-02T08:00:00"), "t: '2026-03-02T08:00:00' has no zone offset"),
    (gate_at(1700000000), "t: must be an ISO 8601 time string, not int"),
    (gate_at("0001-01-01T00:00:00+01:00"), "is out of range in UTC"),
    (line(20, "scan", dock=3, text="A1").encode(), "dock: must be a string, not int"),
    (line(20, "scan", dock="", text="A1").encode(), "dock: must be 1 to 256 characters, not 0"),
    (line(20, "scan", text=["A1"]).encode(), "text: must be a string, not list"),
    (line(20, "door", state="ajar").encode(), "state: 'ajar' is not one of open, closed"),
    (line(20, "bay", state=True).encode(), "state: True is not one of occupied, free"),
    (line(20, "scan", text=[[[[["x"]]]]]).encode(), "text[0][0][0]: nesting deeper than 4"),
    (line(20, "scan").encode()[:-1] + b', "text": NaN}', "text: NaN is not allowed"),
    (b'{"kind": "scan", "text": "\xff"}', "not UTF-8"),
    (b'{"t": "' + b"9" * (MAX_LINE_BYTES + 10) + b'"}', f"longer than {MAX_LINE_BYTES} bytes"),
]  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(GOOD) + "\n")
    # the garbage interleaved: bad line k after good line k (and a blank line, which is skipped)
    mixed: list[bytes] = [b""]
    for k, g in enumerate(GOOD):
        mixed.append(g.encode())
        if k < len(BAD):
            mixed.append(BAD[k][0])
    mixed += [b for b, _ in BAD[len(GOOD) :]]
    dirty = tmp_path / "dirty.jsonl"
    dirty.write_bytes(b"\n".join(mixed))  # no final newline: the last line counts all the same
    return {"plan": plan, "good": good, "dirty": dirty}


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "load", "replay", *args],
        input=None if stdin is None else stdin.decode("utf-8", "surrogateescape"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def engine_events(lines: list[str]) -> list[dict[str, Any]]:
    """What the engine derives from the good lines, called directly."""
    engine = LoadEngine(parse_load_plan(PLAN))
    state = engine.new_state()
    out = []
    for raw in lines:
        state, res = engine.step(state, parse_line(raw))
        out += [e.to_json() for e in res.events]
    return out


def test_a_clean_input_prints_one_object_per_event(files: dict[str, Path]) -> None:
    proc = run_cli("--plan", str(files["plan"]), str(files["good"]))
    assert (proc.returncode, proc.stderr) == (0, "")
    printed = [json.loads(x) for x in proc.stdout.splitlines()]
    assert printed == engine_events(GOOD)
    for e in printed:
        assert set(e) == {"type", "ts", "data"}
        assert e["ts"].endswith(".250Z") and len(e["ts"]) == 24
        validate_data(e["type"], e["data"])
    assert [e["type"] for e in printed] == [
        "dock.door",
        "dock.bay",
        "dock.vehicle",
        "load.verified",  # A1 (its repeat is silent)
        "load.misload",  # B1 onto van-1
        "load.verified",  # the SSCC read bare, listed as (00)SSCC
        "load.unknown",
        "dock.vehicle",
        "load.verified",  # B1 at its own dock
        "load.gateout",
        "dock.door",
        "dock.bay",
        "load.gateout",  # bay free, door closed; the gate-out scan after it finds no session
        "load.missing",
    ]
    gate = printed[12]["data"]
    assert (gate["verified"], gate["misloaded"], gate["missing"]) == (2, 0, ["A2"])


def test_bad_lines_are_reported_by_number_and_skipped(files: dict[str, Path]) -> None:
    proc = run_cli("--plan", str(files["plan"]), str(files["dirty"]))
    assert proc.returncode == 1
    assert [json.loads(x) for x in proc.stdout.splitlines()] == engine_events(GOOD)
    messages = proc.stderr.splitlines()
    assert len(messages) == len(BAD)
    for k, (msg, (_, why)) in enumerate(zip(messages, BAD, strict=True)):
        # line 1 is blank; then good, bad, good, bad, ... and the rest of the bad ones
        number = 2 * k + 3 if k < len(GOOD) else len(GOOD) * 2 + 2 + (k - len(GOOD))
        assert msg.startswith(f"load replay: {files['dirty']}: line {number}: "), msg
        assert why in msg, (msg, why)
    assert "Traceback" not in proc.stderr


def test_standard_input_and_out_of_order_lines(files: dict[str, Path]) -> None:
    lines = [*GOOD[:5], line(1, "scan", text="A2"), line(2, "scan", text="A1"), *GOOD[5:]]
    proc = run_cli("--plan", str(files["plan"]), "-", stdin="\n".join(lines).encode())
    assert proc.returncode == 0
    assert [json.loads(x) for x in proc.stdout.splitlines()] == engine_events(lines)
    assert proc.stderr.splitlines() == [
        "load replay: standard input: 2 line(s) older than a line before them "
        "(first: line 6), processed in file order"
    ]


def test_a_plan_with_errors_exits_2_naming_the_place(files: dict[str, Path]) -> None:
    bad = json.loads(json.dumps(PLAN))
    bad["routes"][1]["parcels"] = ["B1", "B2", "B3", {"name": "B4"}]
    files["plan"].write_text(json.dumps(bad))
    proc = run_cli("--plan", str(files["plan"]), str(files["good"]))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"load replay: plan {files['plan']}: routes[1].parcels[3].id: missing\n"


def test_unreadable_files_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("--plan", str(tmp_path / "nope.json"), str(files["good"]))
    assert proc.returncode == 2 and "nope.json: cannot read" in proc.stderr
    proc = run_cli("--plan", str(files["plan"]), str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr and proc.stdout == ""


# ---------------------------------------------------------------- the pieces, in process


@pytest.mark.parametrize(("raw", "why"), BAD[:-1])
def test_parse_line_says_what_is_wrong(raw: bytes, why: str) -> None:
    with pytest.raises(LineError) as info:
        parse_line(raw)
    assert why in str(info.value)


def test_parse_line_ignores_fields_it_does_not_know() -> None:
    obs = parse_line(json.dumps({"t": "2026-03-02T09:00:00+01:00", "kind": "gateout",
                                 "dock": "D1", "camera": "cam-3"}))  # fmt: skip
    assert obs.t.isoformat() == "2026-03-02T08:00:00+00:00" and obs.dock == "D1"


def test_numbered_lines_read_past_an_overlong_line_without_holding_it() -> None:
    data = b"a\n" + b"x" * 50 + b"\nbb\n" + b"y" * 10 + b"\n" + b"z" * 11
    got = list(numbered_lines(io.BytesIO(data), max_bytes=10))
    assert got == [(1, b"a\n"), (2, None), (3, b"bb\n"), (4, b"y" * 10 + b"\n"), (5, None)]


def test_replay_main_in_process_counts_what_it_read(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    assert replay_main(str(files["plan"]), str(files["dirty"]), out) == 1
    assert len(out.getvalue().splitlines()) == len(engine_events(GOOD))
    assert capsys.readouterr().err.count("\n") == len(BAD)
    stats = ReplayStats()
    bad: list[int] = []
    with files["dirty"].open("rb") as f:
        events = list(
            replay_events(
                parse_load_plan(PLAN),
                numbered_lines(f),
                on_bad=lambda n, _msg: bad.append(n),
                stats=stats,
            )
        )
    assert [e.to_json() for e in events] == engine_events(GOOD)
    assert (stats.observations, stats.bad, stats.out_of_order) == (len(GOOD), len(BAD), 0)
    assert stats.lines == len(GOOD) + len(BAD) + 1 == bad[-1]
