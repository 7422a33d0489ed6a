"""``edge-agent gnss replay FILE|-`` (DESIGN §4): output contract and bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.gnss.replay import fixes_from_lines, replay_main
from edge_agent.wire.envelope import parse_ts

FIXTURES = Path(__file__).parent / "fixtures" / "gpsd-nmea"
KEYS = ["time", "lat", "lon", "alt_m", "speed_mps", "track_deg", "mode", "quality", "hdop", "sats"]


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "gnss", "replay", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_one_json_object_per_fix_with_the_contract_keys() -> None:
    out = io.StringIO()
    assert replay_main(str(FIXTURES / "gr8013-w.log"), out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert list(row) == KEYS
        assert parse_ts(row["time"]).tzinfo is not None
        assert row["time"].endswith("Z")
        assert row["mode"] in (2, 3)
    assert rows[0] == {
        "time": "2015-06-19T18:11:41.000Z",
        "lat": pytest.approx(52.514809167, abs=1e-9),
        "lon": pytest.approx(13.464265167, abs=1e-9),
        "alt_m": 62.6,
        "speed_mps": 0.016,
        "track_deg": None,  # the receiver sent an empty track: null, not 0
        "mode": 3,
        "quality": 1,
        "hdop": 0.93,
        "sats": 12,
    }


def test_stdin_and_file_give_the_same_output() -> None:
    log = FIXTURES / "sirfstarv-nmea.log"
    by_file = run_cli(str(log))
    by_stdin = run_cli("-", stdin=log.read_bytes())
    assert by_file.returncode == by_stdin.returncode == 0
    assert by_file.stdout == by_stdin.stdout
    assert len(by_file.stdout.splitlines()) == 59
    with log.open("rb") as f:
        assert len(list(fixes_from_lines(f))) == 59


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (("/nonexistent/log.nmea",), None, 2, b"cannot read /nonexistent/log.nmea"),
        (("/",), None, 2, b"cannot read /: Is a directory"),
        (("-",), bytes(range(256)) * 40, 1, b"no NMEA sentence in standard input"),
        (("-",), b"", 1, b"no NMEA sentence"),
    ],
)
def test_bad_input_exits_with_a_message_not_a_traceback(
    args: tuple[str, ...], stdin: bytes | None, code: int, message: bytes
) -> None:
    result = run_cli(*args, stdin=stdin)
    assert result.returncode == code
    assert message in result.stderr
    assert b"Traceback" not in result.stderr
    assert result.stdout == b""


def test_nmea_without_a_valid_fix_is_not_an_error() -> None:
    cold = b"$GPGGA,120000.00,,,,,0,00,99.99,,,,,,*6B\r\n$GPRMC,120000.00,V,,,,,,,,,,N*7E\r\n"
    result = run_cli("-", stdin=cold * 5)
    assert result.returncode == 0
    assert result.stdout == b""
    assert b"no valid fix" in result.stderr


def test_truncated_and_corrupted_log_still_replays(tmp_path: Path) -> None:
    data = (FIXTURES / "quectel.log").read_bytes()
    damaged = data[: len(data) // 2] + b"\x00\xff\xfe garbage $GPGGA,12" + data[len(data) // 2 :]
    path = tmp_path / "damaged.nmea"
    path.write_bytes(damaged[:-37])  # and cut off mid-sentence at the end
    result = run_cli(str(path))
    assert result.returncode == 0
    assert 30 <= len(result.stdout.splitlines()) <= 34
