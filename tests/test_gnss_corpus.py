"""Fix assembly against gpsd on 20 real receivers' logs (tests/fixtures/gpsd-nmea).

gpsd's fixes are the TPV reports of each ``.chk`` with a ``time`` and ``mode`` >= 2. Every one
must be reported by us with the same time of day (to the millisecond) and position (to 1e-6
degrees), and we must report no fix at a time gpsd did not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_agent.gnss.fix import Fix
from edge_agent.gnss.replay import fixes_from_bytes, fixes_from_lines

FIXTURES = Path(__file__).parent / "fixtures" / "gpsd-nmea"
LOGS = (FIXTURES / "LIST").read_text().split()
TOLERANCE_DEG = 1e-6


def _tod(iso: str) -> str:
    # "2007-12-23T19:32:21.000Z" -> "19:32:21.000": dates differ on purpose (week rollover).
    return iso[11:23]


def _fix_tod(fix: Fix) -> str:
    t = fix.time
    return f"{t:%H:%M:%S}.{t.microsecond // 1000:03d}"


def gpsd_fixes(chk: Path) -> dict[str, list[tuple[float, float]]]:
    """gpsd's fixes in a .chk: time of day -> the (lat, lon) of every TPV with that time."""
    out: dict[str, list[tuple[float, float]]] = {}
    for line in chk.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        report = json.loads(line)
        if report.get("class") == "TPV" and "time" in report and report.get("mode", 0) >= 2:
            out.setdefault(_tod(report["time"]), []).append((report["lat"], report["lon"]))
    return out


@dataclass
class Comparison:
    matched: int = 0
    missed: list[str] = field(default_factory=list)
    wrong_position: list[str] = field(default_factory=list)
    spurious: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def compare(ours: list[Fix], theirs: dict[str, list[tuple[float, float]]]) -> Comparison:
    """Match our fixes to gpsd's by time of day; the position must agree with every report."""
    result = Comparison()
    by_time: dict[str, Fix] = {}
    for fix in ours:
        key = _fix_tod(fix)
        if key in by_time:
            result.duplicates.append(key)
        by_time[key] = fix
    for key, positions in theirs.items():
        fix = by_time.get(key)
        if fix is None:
            result.missed.append(key)
        elif all(
            abs(fix.lat - lat) <= TOLERANCE_DEG and abs(fix.lon - lon) <= TOLERANCE_DEG
            for lat, lon in positions
        ):
            result.matched += 1
        else:
            result.wrong_position.append(f"{key}: ours {fix.lat},{fix.lon} gpsd {positions}")
    result.spurious = [key for key in by_time if key not in theirs]
    return result


def assemble(log: Path) -> list[Fix]:
    with log.open("rb") as f:
        return list(fixes_from_lines(f))


def test_fixture_list_is_complete() -> None:
    assert len(LOGS) == 20
    for name in LOGS:
        assert (FIXTURES / name).is_file()
        assert (FIXTURES / f"{name}.chk").is_file()


@pytest.mark.parametrize("name", LOGS)
def test_log_matches_gpsd(name: str) -> None:
    theirs = gpsd_fixes(FIXTURES / f"{name}.chk")
    assert theirs, f"{name}: the oracle holds no fix"
    result = compare(assemble(FIXTURES / name), theirs)
    summary = (
        f"{name}: matched {result.matched}/{len(theirs)}, missed {result.missed}, "
        f"wrong position {result.wrong_position}, spurious {result.spurious}"
    )
    assert result.matched == len(theirs), summary
    assert not result.spurious, summary
    assert not result.duplicates, f"{name}: fixes reported twice: {result.duplicates}"


def test_corpus_totals(capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    totals = Comparison()
    expected = 0
    for name in LOGS:
        theirs = gpsd_fixes(FIXTURES / f"{name}.chk")
        r = compare(assemble(FIXTURES / name), theirs)
        expected += len(theirs)
        totals.matched += r.matched
        totals.missed += r.missed
        totals.wrong_position += r.wrong_position
        totals.spurious += r.spurious
        rows.append(
            f"{name:28} gpsd {len(theirs):3}  matched {r.matched:3}  "
            f"missed {len(r.missed) + len(r.wrong_position):2}  spurious {len(r.spurious):2}"
        )
    rows.append(
        f"{'TOTAL':28} gpsd {expected:3}  matched {totals.matched:3}  "
        f"missed {len(totals.missed) + len(totals.wrong_position):2}  "
        f"spurious {len(totals.spurious):2}"
    )
    with capsys.disabled():
        print("\n" + "\n".join(rows))
    assert totals.matched == expected == 278
    assert not totals.spurious


def test_byte_at_a_time_gives_the_same_fixes() -> None:
    """Transport variant: the whole corpus fed one byte at a time."""
    for name in ("quectel.log", "ac12.log", "nmea-fuzzy-cases.log", "ublox-f9p-hpnmea.log"):
        data = (FIXTURES / name).read_bytes()
        whole = list(fixes_from_bytes([data]))
        bytewise = list(fixes_from_bytes(data[i : i + 1] for i in range(len(data))))
        assert whole == bytewise
        assert whole, name


def test_week_rollover_date_is_corrected() -> None:
    """april6_2019: a Telit module reports 1999-08-22 for 2019-04-07 (1024 weeks later)."""
    fixes = assemble(FIXTURES / "april6_2019.log")
    assert len(fixes) == 1
    assert fixes[0].time.isoformat() == "2019-04-07T00:02:31.420000+00:00"
