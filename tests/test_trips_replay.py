"""``edge-agent trips replay --manifest FILE LOG`` (DESIGN §4), on simulated and real logs."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import main as cli_main
from edge_agent.gnss.replay import fixes_from_bytes
from edge_agent.trips.config import TripsConfig
from edge_agent.trips.engine import EngineParams, TripEngine
from edge_agent.trips.layout import build_zones
from edge_agent.trips.manifest import parse_manifest
from edge_agent.trips.reorder import FixOrder
from edge_agent.trips.replay import replay_main
from edge_agent.wire.envelope import parse_ts
from simulators.nmea_out import nmea_lines
from simulators.scoring import score
from simulators.van import run_van
from simulators.world import fleet_scenarios

FIXTURES = Path(__file__).parent / "fixtures"
BT451 = FIXTURES / "gpsd-nmea" / "bt451.log"  # see fixtures/gpsd-nmea/README.md (BSD, GPSD)


@pytest.fixture(scope="module")
def van(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One simulated van's manifest, NMEA log and truth, as files."""
    folder = tmp_path_factory.mktemp("van")
    sc = fleet_scenarios(1, seed=11, stops=4)[0]
    run = run_van(sc)
    (folder / "manifest.json").write_text(json.dumps(sc.manifest))
    (folder / "van.nmea").write_text("".join(nmea_lines(run.fixes)), newline="")
    code, events, err = _replay(folder / "manifest.json", folder / "van.nmea")
    return {"dir": folder, "truth": run.truth, "scenario": sc, "run": (code, events, err)}


def _replay(manifest: Path | str, log: Path | str) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        code = replay_main(str(manifest), str(log), out)
    finally:
        sys.stderr = old
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_replay_prints_one_json_object_per_event(van: dict[str, Any]) -> None:
    code, events, err = van["run"]
    assert code == 0 and err == ""
    assert events
    for e in events:
        assert set(e) == {"type", "ts", "ref", "data"}
        parse_ts(e["ts"])
        assert set(e["ref"]) <= {"route", "stop"} and e["ref"]["route"] == "r-11-01"
    types = [e["type"] for e in events]
    assert types[0] == "trip.moving" and "trip.depart" in types and types.count("trip.arrive") == 5
    # the replay scores like the live engine: every visit exactly once (no geofences here)
    summary = score(events, van["truth"], TripsConfig()).summary()
    for t in ("trip.arrive", "trip.depart", "trip.dwell"):
        assert summary["by_type"][t]["matched"] == summary["by_type"][t]["required"]
        assert summary["by_type"][t]["false"] == 0


def test_the_command_line_runs_it(van: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        [
            "trips",
            "replay",
            "--manifest",
            str(van["dir"] / "manifest.json"),
            str(van["dir"] / "van.nmea"),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == van["run"][1]


def test_as_a_process_reading_standard_input(van: dict[str, Any]) -> None:
    log = (van["dir"] / "van.nmea").read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "trips",
            "replay",
            "--manifest",
            str(van["dir"] / "manifest.json"),
            "-",
        ],
        input=log,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == van["run"][1]


def test_garbage_and_bad_checksums_in_the_log_change_nothing(
    van: dict[str, Any], tmp_path: Path
) -> None:
    lines = (van["dir"] / "van.nmea").read_bytes().split(b"\r\n")
    rng = random.Random(4)
    noisy = []
    for line in lines:
        noisy.append(line)
        if rng.random() < 0.02:
            noisy.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))))
        if rng.random() < 0.01:
            noisy.append(line[:-2] + b"00")  # the same sentence with a wrong checksum
    log = tmp_path / "noisy.nmea"
    log.write_bytes(b"\r\n".join(noisy))
    code, got, _ = _replay(van["dir"] / "manifest.json", log)
    assert code == 0 and got == van["run"][1]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ('{"route": "r", "depot": {"lat": 52.5}, "stops": []}', "depot.lon: missing"),
        ('{"route": "r", "depot": {"lat": 52.5, "lon": 13.4}, "stops": [{"id": "a"}]}', "stops[0]"),
        ("not json", "not JSON"),
    ],
)
def test_a_bad_manifest_names_file_field_and_reason(
    tmp_path: Path, manifest: str, message: str
) -> None:
    path = tmp_path / "m.json"
    path.write_text(manifest)
    code, events, err = _replay(path, BT451)
    assert code == 2 and events == []
    assert str(path) in err and message in err
    assert "Traceback" not in err


def test_unreadable_inputs_exit_2_and_a_log_without_nmea_exits_1(
    tmp_path: Path, van: dict[str, Any]
) -> None:
    code, _, err = _replay(tmp_path / "missing.json", BT451)
    assert code == 2 and "cannot read" in err
    code, _, err = _replay(van["dir"] / "manifest.json", tmp_path / "missing.nmea")
    assert code == 2 and "cannot read" in err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(
        bytes(random.Random(1).randrange(256) for _ in range(5000)).replace(b"$", b"#")
    )
    code, events, err = _replay(van["dir"] / "manifest.json", junk)
    assert code == 1 and events == [] and "no NMEA sentence" in err


def test_a_real_log_that_goes_back_in_time_never_moves_the_state_backwards(tmp_path: Path) -> None:
    # bt451.log (gpsd corpus, a u-blox ANTARIS receiver in Lithuania) is two recordings run
    # together: 3 s parked at 15:25, then a drive at 16 m/s timed 14:33 the same day. Only the
    # first part may count. (The drive's first epoch carries an RMC dated a day ahead; like
    # gpsd, whose .chk has it on the 9th, the assembler reports the epoch's last word on it.)
    fixes = list(fixes_from_bytes([BT451.read_bytes()]))
    assert len(fixes) == 12
    parked, drive = fixes[0], fixes[-1]
    manifest = {
        "route": "lt-1",
        "depot": {"lat": parked.lat, "lon": parked.lon, "radius_m": 100},
        "stops": [{"id": "road", "lat": drive.lat, "lon": drive.lon, "radius_m": 60}],
    }
    m = parse_manifest(manifest)
    cfg = TripsConfig()
    eng = TripEngine(build_zones(m, cfg), EngineParams.from_config(cfg), m.route)
    order = FixOrder(cfg.reorder_window, cfg.max_time_jump)
    st = eng.new_state()
    events = []
    for f in [*fixes, None]:
        for due in order.push(f) if f is not None else order.flush():
            st, evs = eng.step(st, due)
            events += evs
    assert events == []
    assert st.last is not None and st.last.t == parked.time.timestamp() + 3.0
    assert [f.time.day for f in fixes] == [9] * 12  # as gpsd reports them
    assert order.counters["late"] == 5  # the drive, older than the parked van's state
    assert len(order) == 0
    path = tmp_path / "lt.json"
    path.write_text(json.dumps(manifest))
    code, out, err = _replay(path, BT451)
    assert (code, out, err) == (0, [], "")
