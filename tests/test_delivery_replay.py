"""``hub-bridge eta replay`` (hub_bridge.delivery.replay): the hub's ETA behind the agent's GNSS
pipeline and trip engine, over a simulated van's NMEA log; and its refusals."""

from __future__ import annotations

import io
import itertools
import json
from datetime import datetime
from pathlib import Path

import pytest

from hub_bridge.delivery.replay import EXIT_NO_NMEA, EXIT_UNUSABLE, run_eta_replay
from simulators.delivery_days import stop_truth
from simulators.nmea_out import nmea_lines
from simulators.van import VanRun, run_van
from simulators.world import fleet_scenarios


@pytest.fixture(scope="module")
def van(tmp_path_factory: pytest.TempPathFactory) -> tuple[VanRun, Path, Path]:
    """One simulated van's day: its run, manifest file and NMEA log."""
    run = run_van(fleet_scenarios(1, seed=5, stops=6)[0])
    d = tmp_path_factory.mktemp("van")
    (d / "manifest.json").write_text(json.dumps(run.scenario.manifest, indent=1))
    (d / "day.nmea").write_text("".join(nmea_lines(run.fixes)))
    return run, d / "manifest.json", d / "day.nmea"


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_every_stop_ahead_once_a_minute_close_to_the_truth(
    van: tuple[VanRun, Path, Path],
) -> None:
    run, manifest, log = van
    out = io.StringIO()
    assert run_eta_replay(str(manifest), str(log), out) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines and all(set(x) == {"at", "stop", "eta"} for x in lines)
    truth = stop_truth(run)
    by_minute: dict[str, set[str]] = {}
    for x in lines:
        by_minute.setdefault(x["at"], set()).add(x["stop"])
    minutes = sorted(_t(a) for a in by_minute)
    # once a minute of log time, without a gap, from the route's start to its last stop
    assert all(b - a == 60.0 for a, b in itertools.pairwise(minutes))
    assert minutes[-1] >= max(truth.values()) - 60.0
    # every minute lists every stop the van has not yet reached (give the engine its minute
    # to confirm an arrival)
    for at, stops in by_minute.items():
        ahead = {s for s, t in truth.items() if t > _t(at) + 90.0}
        assert ahead <= stops, at
    # and the next stop's ETA is within a few minutes of the truth
    errs = [
        abs(_t(x["eta"]) - truth[x["stop"]])
        for x in lines
        if x["stop"] in truth and 0 < truth[x["stop"]] - _t(x["at"]) < 600
    ]
    assert errs and sum(errs) / len(errs) < 240.0


def test_a_bad_manifest_exits_2_naming_the_file_and_the_line(
    tmp_path: Path, van: tuple[VanRun, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest, log = van
    bad = tmp_path / "bad.json"
    bad.write_text('{"route": "r",\n "stops": [\n  {"id": 1,}\n]}\n')
    assert run_eta_replay(str(bad), str(log), io.StringIO()) == EXIT_UNUSABLE
    assert f"{bad}:3:" in capsys.readouterr().err
    doc = json.loads(manifest.read_text())
    doc["stops"][2]["lat"] = 123.0
    bad.write_text(json.dumps(doc))
    assert run_eta_replay(str(bad), str(log), io.StringIO()) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert f"{bad}: stops[2].lat" in err and "out of range" in err
    assert run_eta_replay(str(tmp_path / "none.json"), str(log), io.StringIO()) == EXIT_UNUSABLE
    assert "cannot read" in capsys.readouterr().err


def test_a_log_without_nmea_or_unreadable(
    tmp_path: Path, van: tuple[VanRun, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest, _ = van
    junk = tmp_path / "junk.log"
    junk.write_bytes(b"not a sentence\n\x00\xff garbage\n")
    out = io.StringIO()
    assert run_eta_replay(str(manifest), str(junk), out) == EXIT_NO_NMEA
    assert out.getvalue() == "" and "no NMEA sentence" in capsys.readouterr().err
    assert run_eta_replay(str(manifest), str(tmp_path / "gone.nmea"), out) == EXIT_UNUSABLE
    assert "cannot read" in capsys.readouterr().err


def test_the_command_line_is_the_contracts(van: tuple[VanRun, Path, Path]) -> None:
    """`hub-bridge eta replay --manifest FILE LOG` (DESIGN §9), the log on stdin with `-`."""
    import subprocess
    import sys

    _, manifest, log = van
    direct = io.StringIO()
    assert run_eta_replay(str(manifest), str(log), direct) == 0
    cmd = [sys.executable, "-m", "hub_bridge", "eta", "replay", "--manifest", str(manifest), "-"]
    done = subprocess.run(
        cmd, check=False, input=log.read_bytes(), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == direct.getvalue()
