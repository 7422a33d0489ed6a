"""The GNSS simulator: route driving, impairments, GPX, the command line and TCP serving."""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.gnss.config import FilterConfig
from edge_agent.gnss.filters import FixFilter
from edge_agent.gnss.fix import Fix
from edge_agent.gnss.geo import distance_m
from edge_agent.gnss.nmea import NmeaStreamParser
from edge_agent.gnss.replay import fixes_from_bytes
from simulators.gnss import (
    Driver,
    GnssSimulator,
    Impairments,
    Waypoint,
    load_gpx,
    parse_waypoints,
    serve_fixes,
)

ROUTE = [Waypoint(52.3731, 4.8922), Waypoint(52.3600, 4.8852, 30.0), Waypoint(52.3500, 4.9000)]
START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def run(sim: GnssSimulator, epochs: int) -> tuple[bytes, list[Fix | None]]:
    data = b""
    truth: list[Fix | None] = []
    for _ in range(epochs):
        _, lines, fix = sim.epoch()
        data += "".join(lines).encode()
        truth.append(fix)
    return data, truth


def test_driver_accelerates_cruises_stops_and_dwells() -> None:
    d = Driver(ROUTE, cruise_mps=13.9, accel=1.2, decel=1.8)
    speeds = []
    prev = 0.0
    dwell_seen = 0
    for _ in range(2000):
        t = d.step(0.5)
        assert t.speed_mps <= 13.9 + 1e-9
        assert t.speed_mps - prev <= 1.2 * 0.5 + 1e-9  # never faster than it can accelerate
        if d.dwell > 0:
            dwell_seen += 1
            assert t.speed_mps == 0.0
        prev = t.speed_mps
        speeds.append(t.speed_mps)
        if t.finished:
            break
    assert d.finished
    assert max(speeds) == pytest.approx(13.9)
    assert dwell_seen >= 55  # about 30 s at the stop, in half-second steps
    end = d.truth()
    assert distance_m(end.lat, end.lon, ROUTE[-1].lat, ROUTE[-1].lon) < 1.0
    # The route is about 1.5 + 1.4 km: at 50 km/h with stops, a few minutes.
    assert 200 < len(speeds) * 0.5 < 600


def test_clean_receiver_reports_the_truth() -> None:
    sim = GnssSimulator(Driver(ROUTE), start=START, rate_hz=1.0)
    data, truth = run(sim, 120)
    fixes = list(fixes_from_bytes([data]))
    assert [f.time for f in fixes] == [t.time for t in truth if t is not None]
    for got, want in zip(fixes, truth, strict=True):
        assert want is not None
        assert distance_m(got.lat, got.lon, want.lat, want.lon) < 0.01
        assert got.speed_mps == pytest.approx(want.speed_mps, abs=0.01)


@pytest.mark.parametrize("rate", [1.0, 5.0, 10.0])
def test_rates_from_1_to_10_hz(rate: float) -> None:
    sim = GnssSimulator(Driver(ROUTE), start=START, rate_hz=rate)
    data, _ = run(sim, int(10 * rate))
    fixes = list(fixes_from_bytes([data]))
    assert len(fixes) == int(10 * rate)
    assert fixes[1].time - fixes[0].time == timedelta(seconds=1 / rate)
    kinds = [s.kind for s in NmeaStreamParser().feed(data)]
    assert {"GGA", "RMC", "GSA", "VTG", "GSV"} <= set(kinds)
    assert kinds.count("GGA") == int(10 * rate)


def test_cold_start_dropouts_and_noise() -> None:
    imp = Impairments(noise_m=3.0, cold_start_s=20.0, dropouts=[(60.0, 15.0)])
    sim = GnssSimulator(Driver(ROUTE), start=START, rate_hz=1.0, impairments=imp, seed=7)
    data, _ = run(sim, 120)
    fixes = list(fixes_from_bytes([data]))
    seconds = {int((f.time - START).total_seconds()) for f in fixes}
    assert not seconds & set(range(20))  # cold start: no fix
    assert not seconds & set(range(60, 75))  # tunnel
    assert len(seconds) >= 120 - 20 - 15 - 2  # (the first epoch after a cold start has no date)
    errors = []
    d = Driver(ROUTE)
    for k in range(120):
        t = d.truth() if k == 0 else d.step(1.0)
        if k in seconds:
            f = next(f for f in fixes if int((f.time - START).total_seconds()) == k)
            errors.append(distance_m(f.lat, f.lon, t.lat, t.lon))
    rms = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert 0.5 < rms < 10.0


def test_multipath_jumps_are_caught_by_the_filter() -> None:
    imp = Impairments(multipath_prob=0.05, multipath_m=300.0)
    sim = GnssSimulator(Driver(ROUTE), start=START, rate_hz=1.0, impairments=imp, seed=11)
    data, _ = run(sim, 300)
    f = FixFilter(FilterConfig(max_speed_mps=40.0))
    kept = [fx for fx in fixes_from_bytes([data]) if f.check(fx) is None]
    assert f.counts["jump"] >= 5
    for a, b in itertools.pairwise(kept):
        dt = (b.time - a.time).total_seconds()
        assert distance_m(a.lat, a.lon, b.lat, b.lon) / dt <= 40.0


def test_waypoints_and_gpx(tmp_path: Path) -> None:
    assert parse_waypoints("52.1,4.3;52.2,4.4,60") == [
        Waypoint(52.1, 4.3),
        Waypoint(52.2, 4.4, 60.0),
    ]
    for bad in ("52.1,4.3", "52.1;52.2,4.4", "95,4;52,4", "a,b;c,d"):
        with pytest.raises(ValueError, match=r"waypoint|two waypoints"):
            parse_waypoints(bad)
    gpx = tmp_path / "route.gpx"
    gpx.write_text(
        '<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
        '<trk><trkseg><trkpt lat="52.1" lon="4.3"/><trkpt lat="52.2" lon="4.4"/>'
        '<trkpt lat="52.3" lon="4.5"/></trkseg></trk></gpx>'
    )
    assert [w.lat for w in load_gpx(gpx)] == [52.1, 52.2, 52.3]
    broken = tmp_path / "broken.gpx"
    broken.write_text("<gpx><trk>")
    with pytest.raises(ValueError, match="cannot read GPX"):
        load_gpx(broken)
    empty = tmp_path / "empty.gpx"
    empty.write_text("<gpx/>")
    with pytest.raises(ValueError, match="no track"):
        load_gpx(empty)


def test_command_line_writes_nmea(tmp_path: Path) -> None:
    gpx = tmp_path / "r.gpx"
    gpx.write_text(
        '<gpx><rte><rtept lat="52.1" lon="4.3"/><rtept lat="52.11" lon="4.3"/></rte></gpx>'
    )
    args = ["--gpx", str(gpx), "--stdout", "--duration", "20", "--time-scale", "1e3", "--rate", "2"]
    out = subprocess.run(
        [sys.executable, "-m", "simulators.gnss", *args],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert len(list(fixes_from_bytes([out]))) == 40
    bad = subprocess.run(
        [sys.executable, "-m", "simulators.gnss", "--waypoints", "1,2", "--stdout"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2
    assert b"two waypoints" in bad.stderr
    assert b"Traceback" not in bad.stderr


async def test_serve_fixes_over_tcp() -> None:
    fixes = [
        Fix(time=START + timedelta(seconds=i), lat=52.0 + i * 1e-4, lon=4.0, mode=3, speed_mps=5.0)
        for i in range(5)
    ]
    listening = asyncio.Event()
    port_box: list[int] = []

    def on_listen(port: int) -> None:
        port_box.append(port)
        listening.set()

    async def client() -> bytes:
        await listening.wait()
        reader, writer = await asyncio.open_connection("127.0.0.1", port_box[0])
        data = await reader.read()
        writer.close()
        return data

    data, port = await asyncio.gather(
        client(), serve_fixes(fixes, speed=100.0, wait_for_client=True, on_listen=on_listen)
    )
    assert port == port_box[0]
    assert [f.lat for f in fixes_from_bytes([data])] == pytest.approx([f.lat for f in fixes])
