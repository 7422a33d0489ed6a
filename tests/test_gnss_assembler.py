"""Fix assembly beyond the corpus: round trips, dates, validity, cycle learning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.gnss.assembler import ROLLOVER, FixAssembler, correct_week_rollover
from edge_agent.gnss.config import FilterConfig
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.nmea import NmeaStreamParser, checksum
from edge_agent.gnss.replay import fixes_from_bytes
from simulators.nmea_out import fix_to_nmea

REF = datetime(2026, 11, 21, tzinfo=UTC)


def nmea(*bodies: str) -> bytes:
    return b"".join(
        b"$" + b.encode() + b"*" + f"{checksum(b.encode()):02X}".encode() + b"\r\n" for b in bodies
    )


# Assembly alone: the replay's filters would drop what these tests generate on purpose (0, 0).
ASSEMBLY_ONLY = FilterConfig(max_hdop=None, drop_null_island=False, jump_reset_after=1)


def assemble(data: bytes) -> list[Fix]:
    return list(fixes_from_bytes([data], reference=REF, filter=ASSEMBLY_ONLY))


fixes_strategy = st.builds(
    Fix,
    time=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
    ).map(lambda t: t.replace(microsecond=(t.microsecond // 100_000) * 100_000)),
    lat=st.floats(-89.9, 89.9),
    lon=st.floats(-179.9, 179.9),
    alt_m=st.one_of(st.none(), st.floats(-400, 9000).map(lambda a: round(a, 1))),
    speed_mps=st.floats(0, 90),
    track_deg=st.floats(0, 359.99).map(lambda a: round(a, 2)),
    mode=st.just(3),
    quality=st.sampled_from([1, 2, 4, 5]),
    hdop=st.floats(0.5, 20).map(lambda a: round(a, 1)),
    pdop=st.floats(0.5, 20).map(lambda a: round(a, 1)),
    sats=st.integers(4, 12),
)


@settings(max_examples=150, deadline=None)
@given(first=fixes_strategy, steps=st.integers(1, 5), talker=st.sampled_from(["GP", "GN", "GL"]))
def test_simulator_sentences_round_trip(first: Fix, steps: int, talker: str) -> None:
    """nmea_out writes what the assembler reads back: the fleet simulator depends on it."""
    fixes = [
        Fix(
            time=first.time + timedelta(seconds=i),
            lat=first.lat,
            lon=first.lon,
            alt_m=first.alt_m,
            speed_mps=first.speed_mps,
            track_deg=first.track_deg,
            mode=3 if first.alt_m is not None else 2,
            quality=first.quality,
            hdop=first.hdop,
            pdop=first.pdop,
            sats=first.sats,
        )
        for i in range(steps)
    ]
    data = "".join(line for f in fixes for line in fix_to_nmea(f, talker=talker)).encode()
    got = assemble(data)
    assert len(got) == len(fixes)
    for want, have in zip(fixes, got, strict=True):
        assert have.time == want.time
        assert have.lat == pytest.approx(want.lat, abs=1e-7)
        assert have.lon == pytest.approx(want.lon, abs=1e-7)
        assert have.alt_m == want.alt_m
        assert have.speed_mps == pytest.approx(want.speed_mps, abs=0.001)
        assert have.track_deg == pytest.approx(want.track_deg, abs=0.01)
        assert (have.mode, have.quality, have.hdop, have.pdop, have.sats) == (
            want.mode,
            want.quality,
            want.hdop,
            want.pdop,
            want.sats,
        )


def test_ten_hz_times_are_exact() -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    fixes = [Fix(time=t0 + timedelta(milliseconds=100 * i), lat=1.0, lon=2.0) for i in range(30)]
    got = assemble("".join(line for f in fixes for line in fix_to_nmea(f)).encode())
    assert [f.time for f in got] == [f.time for f in fixes]


def test_week_rollover_correction() -> None:
    true = datetime(2019, 4, 7, 0, 2, 31, 420000, tzinfo=UTC)
    assert correct_week_rollover(true - ROLLOVER, REF) == true
    assert correct_week_rollover(true - 2 * ROLLOVER, REF) == true
    recent = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)
    assert correct_week_rollover(recent, REF) == recent
    assert correct_week_rollover(recent - ROLLOVER, REF) == recent
    # Not a whole number of eras back: left alone, however old.
    old = datetime(2015, 6, 19, tzinfo=UTC)
    assert correct_week_rollover(old, REF) == old
    # Within a day after the reference (a clock a little behind): no correction.
    assert correct_week_rollover(REF + timedelta(hours=20), REF) == REF + timedelta(hours=20)


def test_rollover_applies_to_assembled_fixes() -> None:
    data = nmea("GPRMC,000231.42,A,4829.0005,N,00022.0016,E,0.16,212.28,220899,,,A")
    (fix,) = list(fixes_from_bytes([data], reference=REF))
    assert fix.time == datetime(2019, 4, 7, 0, 2, 31, 420000, tzinfo=UTC)
    (old,) = list(fixes_from_bytes([data], reference=datetime(2000, 1, 1, tzinfo=UTC)))
    assert old.time.year == 1999


def test_date_carries_over_midnight() -> None:
    """A receiver sending RMC once, then GGA only: the date follows the clock past midnight."""
    data = nmea(
        "GPRMC,235958.00,A,5230.0,N,01327.0,E,0.0,0.0,311226,,,A",
        "GPGGA,235958.00,5230.0,N,01327.0,E,1,08,1.0,40.0,M,,M,,",
        "GPGGA,235959.00,5230.0,N,01327.0,E,1,08,1.0,40.0,M,,M,,",
        "GPGGA,000000.00,5230.0,N,01327.0,E,1,08,1.0,40.0,M,,M,,",
        "GPGGA,000001.00,5230.0,N,01327.0,E,1,08,1.0,40.0,M,,M,,",
    )
    times = [f.time for f in assemble(data)]
    assert times[-2:] == [
        datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC),
        datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC),
    ]
    assert times[0] == datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)


def test_no_date_no_fix() -> None:
    """GGA carries no date: without RMC or ZDA there is no fix time, so no fix (as gpsd)."""
    data = nmea(
        *(f"GPGGA,1200{s:02d}.00,5230.0,N,01327.0,E,1,08,1.0,40.0,M,,M,," for s in range(5))
    )
    a = FixAssembler(reference=REF)
    p = NmeaStreamParser()
    out = [f for s in p.feed(data) for f in a.push(s)] + a.flush()
    assert out == []
    assert a.stats.no_date > 0
    with_zda = nmea("GPZDA,115959.00,21,11,2026,00,00") + data
    # The ZDA is taken as the cycle ender, and never comes again: the first GGA-only epoch
    # goes unreported until GGA is learned as the ender, as gpsd does.
    assert [f.time.second for f in assemble(with_zda)] == [1, 2, 3, 4]


def test_receiver_says_invalid_means_no_fix() -> None:
    epochs = []
    for s in range(4):
        t = f"1200{s:02d}.00"
        epochs.append(f"GPRMC,{t},V,5230.0,N,01327.0,E,0.0,0.0,211126,,,N")
        epochs.append(f"GPGGA,{t},5230.0,N,01327.0,E,0,00,,,M,,M,,")
    assert assemble(nmea(*epochs)) == []
    # RMC says valid, but the GGA that ends the cycle says "no fix": withdrawn.
    mixed = []
    for s in range(4):
        t = f"1200{s:02d}.00"
        mixed.append(f"GPRMC,{t},A,5230.0,N,01327.0,E,0.0,0.0,211126,,,A")
        mixed.append(f"GPGGA,{t},5230.0,N,01327.0,E,{0 if s >= 2 else 1},05,1.0,40.0,M,,M,,")
    assert [f.time.second for f in assemble(nmea(*mixed))] == [0, 1]


def test_faa_mode_n_and_gsa_fix_type() -> None:
    epochs = []
    for s in range(3):
        t = f"1200{s:02d}.00"
        epochs.append(f"GPRMC,{t},A,5230.0,N,01327.0,E,0.0,0.0,211126,,,N")
    assert assemble(nmea(*epochs)) == []
    gsa_first = []
    for s in range(3):
        t = f"1200{s:02d}.00"
        gsa_first.append(f"GPRMC,{t},A,5230.0,N,01327.0,E,0.0,0.0,211126,,,A")
        gsa_first.append("GPGSA,A,2,01,02,03,,,,,,,,,,2.0,1.5,1.2")
    fixes = assemble(nmea(*gsa_first))
    assert len(fixes) == 3
    assert {f.mode for f in fixes} == {2}
    assert {f.sats for f in fixes} == {3}
    assert {f.pdop for f in fixes} == {2.0}


def test_multi_constellation_gsa_adds_up_and_gns_modes() -> None:
    epochs = []
    for s in range(3):
        t = f"1200{s:02d}.00"
        epochs += [
            f"GNRMC,{t},A,5230.0,N,01327.0,E,0.0,0.0,211126,,,D,V",
            f"GNGNS,{t},5230.0,N,01327.0,E,ADA,,1.1,40.0,,,,V",
            "GNGSA,A,3,01,02,03,04,,,,,,,,,1.5,1.1,1.0,1",
            "GNGSA,A,3,65,66,,,,,,,,,,,1.5,1.1,1.0,2",
        ]
    fixes = assemble(nmea(*epochs))
    assert len(fixes) == 3
    assert {f.sats for f in fixes} == {6}  # GNS gives no count: 4 GPS + 2 GLONASS in GSA
    assert {f.quality for f in fixes} == {2}  # the best constellation mode: D
    # A GNS whose GPS character is N is no fix (as gpsd reads it) when it ends the cycle.
    gns_only = [
        f"GNGNS,1200{s:02d}.00,5230.0,N,01327.0,E,{m},08,1.1,40.0,,,,V"
        for s, m in enumerate(["AA", "AA", "NA", "AN"])
    ]
    zda = nmea("GNZDA,115959.00,21,11,2026,00,00")
    assert [f.time.second for f in assemble(zda + nmea(*gns_only))] == [1, 3]


def test_cycle_is_learned_and_fixes_come_without_waiting() -> None:
    """After the first cycle, a fix is returned by the sentence that ends its epoch."""
    a = FixAssembler(reference=REF)
    p = NmeaStreamParser()
    results = []
    for s in range(3):
        t = f"1200{s:02d}.00"
        for body in (
            f"GPGGA,{t},5230.0,N,01327.0,E,1,08,1.0,40.0,M,,M,,",
            "GPGSA,A,3,01,02,03,04,05,06,07,08,,,,,1.5,1.0,1.1",
            f"GPRMC,{t},A,5230.0,N,01327.0,E,0.0,0.0,211126,,,A",
        ):
            got = [f.time.second for s_ in p.feed(nmea(body)) for f in a.push(s_)]
            results.append((body[2:5], got))
    assert a.cycle_learned
    # Epoch 0 is returned when epoch 1 starts; epochs 1 and 2 by their RMC.
    assert [r for r in results if r[1]] == [("GGA", [0]), ("RMC", [1]), ("RMC", [2])]
    assert a.flush() == []
