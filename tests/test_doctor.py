"""``edge-agent doctor`` against real components: a private mosquitto, a hub and an agent as
processes for the round trip; the GNSS simulator on a real pty and a socket; camera-simulator
frames through OpenCV; a TFmini on a socket; the GPIO lines through the real bindings (this
machine has no chip) and the gpiod stand-in; real outbox files, read-only; a real read-only and a
real full file system (root) or a folder without write permission (not root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AgentConfig
from edge_agent.doctor import (
    FSYNC_WARN_S,
    CameraSeen,
    Check,
    DistanceSeen,
    GnssSeen,
    camera_check,
    clock_check,
    disk_check,
    distance_check,
    exit_code,
    fsync_check,
    gnss_check,
    gpio_failure,
    health_check,
    render_json,
    render_text,
    report,
    run,
    run_checks,
)
from edge_agent.drivers.base import SourceError
from edge_agent.drivers.url import parse_device_url
from edge_agent.outbox import SCHEMA_VERSION, Outbox
from edge_agent.platform.health import HealthRegistry
from simulators.broker import Mosquitto, free_port, self_signed
from simulators.camera import Impairments, make_labels, write_frames
from simulators.dock_devices import DeviceServer, tfmini_frame
from simulators.gnss import Driver, GnssSimulator, PtyPort, TcpPort, Waypoint, run_simulation
from tests.diskfull import fill, tmpfs
from tests.gpiod_standin import FakeGpiod
from tests.harness import ROOT, Proc, timeline_rows, write_agent_config, write_hub_config

ROUTE = [Waypoint(52.3731, 4.8922), Waypoint(52.3600, 4.8852), Waypoint(52.3500, 4.9000)]
MiB = 1024 * 1024


def agent_config(tmp: Path, **sections: Any) -> AgentConfig:
    """A configuration of temp files whose broker and API nobody listens on."""
    doc: dict[str, Any] = {
        "device": {"id": "van-042", "fleet": "acme"},
        "broker": {"url": f"mqtt://127.0.0.1:{free_port()}"},
        "outbox": {"path": str(tmp / "state" / "outbox.db")},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
    }
    doc.update(sections)
    return AgentConfig.model_validate(doc)


def by_name(checks: list[Check]) -> dict[str, Check]:
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return {c.name: c for c in checks}


def doctor(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """``python -m edge_agent.doctor --config FILE --json ...`` as a technician runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.doctor", "--config", str(config), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


# -- verdicts (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("synced", "policy", "gnss", "rtc", "status"),
    [
        (True, "auto", False, False, "PASS"),
        (True, "system", False, False, "PASS"),
        (False, "system", False, False, "WARN"),
        (None, "auto", True, False, "WARN"),
        (False, "auto", True, False, "WARN"),
        (False, "auto", False, True, "WARN"),
        (False, "auto", False, False, "FAIL"),
    ],
)
def test_clock_verdicts(
    synced: bool | None, policy: str, gnss: bool, rtc: bool, status: str
) -> None:
    check = clock_check(synced, policy=policy, has_gnss=gnss, has_rtc=rtc)
    assert check.status == status
    assert check.name == "clock"
    assert (check.fix != "") == (status != "PASS")


def test_fsync_verdict_warns_on_slow_storage(tmp_path: Path) -> None:
    fast = fsync_check("outbox-folder", tmp_path, FSYNC_WARN_S / 2, as_user="as edge-agent")
    slow = fsync_check("outbox-folder", tmp_path, FSYNC_WARN_S * 4, as_user="as edge-agent")
    assert fast.status == "PASS" and str(tmp_path) in fast.detail
    assert slow.status == "WARN" and "200.0 ms" in slow.detail and "SD card" in slow.fix


def test_disk_verdicts() -> None:
    kw = {"max_bytes": 256 * MiB, "reserve_bytes": 64 * MiB, "disk_reserve": 4 * MiB}
    assert disk_check(10_000 * MiB, outbox_bytes=0, **kw).status == "PASS"
    # what the outbox holds already counts as room
    assert disk_check(200 * MiB, outbox_bytes=200 * MiB, **kw).status == "PASS"
    short = disk_check(100 * MiB, outbox_bytes=0, **kw)
    assert short.status == "WARN" and "324.0 MiB" in short.detail and "max_bytes" in short.fix
    full = disk_check(3 * MiB, outbox_bytes=50 * MiB, **kw)
    assert full.status == "FAIL" and "full" in full.detail


def test_gnss_verdicts() -> None:
    base = GnssSeen(source="serial:/dev/ttyACM0", waited_s=10, opened=True)
    silent = gnss_check(base)
    assert silent.status == "FAIL" and "no NMEA sentence in 10 s" in silent.detail
    assert "baud" in silent.fix
    unopened = gnss_check(replace(base, opened=False, error="cannot open: No such file"))
    assert unopened.status == "FAIL" and "No such file" in unopened.detail
    no_fix = gnss_check(replace(base, sentences=40, sats_in_view={"GP": 2}))
    assert no_fix.status == "FAIL" and "no fix" in no_fix.detail and "2 satellites" in no_fix.detail
    assert "sky" in no_fix.fix
    good = replace(base, sentences=40, fixes=3, kept=3, sats_used=9, offset_s=0.4, hdop=0.9)
    assert gnss_check(good).status == "PASS"
    assert "9 satellites used" in gnss_check(good).detail
    off = gnss_check(replace(good, offset_s=-300.0))
    assert off.status == "WARN" and "-300.00 s" in off.detail and "NTP" in off.fix
    recorded = gnss_check(replace(good, offset_s=-3e6, recorded=True))
    assert recorded.status == "PASS" and "recorded" in recorded.detail


def test_camera_and_distance_verdicts() -> None:
    gone = camera_check("camera:c", CameraSeen("/dev/video9", 8, error="no such device"))
    assert gone.status == "FAIL" and "video group" in gone.fix
    dark = camera_check("camera:c", CameraSeen("rtsp://u:secret@cam/1", 8, opened=True))
    assert dark.status == "FAIL" and "secret" not in dark.detail and "no frame" in dark.detail
    empty = camera_check("camera:c", CameraSeen("0", 8, opened=True, frames=5, size=(640, 480)))
    assert empty.status == "PASS" and "hold a test label" in empty.detail
    label = CameraSeen("0", 8, opened=True, frames=2, codes=[("QRCode", "PKG-1")])
    assert "QRCode 'PKG-1'" in camera_check("camera:c", label).detail

    seen = DistanceSeen("socket:h:1", "tfmini", 5)
    assert distance_check("dock:d:bay", seen).status == "FAIL"
    assert "protocol" in distance_check("dock:d:bay", replace(seen, garbage=90)).fix
    blind = distance_check("dock:d:bay", replace(seen, frames=20, no_reading=20))
    assert blind.status == "WARN"
    ok = distance_check("dock:d:bay", replace(seen, frames=20, readings=[1.2, 1.25]))
    assert ok.status == "PASS" and "1.25 m" in ok.detail


@pytest.mark.parametrize(
    ("code", "says", "fix"),
    [
        (errno.ENOENT, "no GPIO chip /dev/gpiochip3", "gpiodetect"),
        (errno.EACCES, "permission denied", "gpio group"),
        (errno.EBUSY, "taken by another program", "consumer"),
        (errno.EINVAL, "no such line", "line="),
    ],
)
def test_gpio_failures_say_chip_line_and_reason(code: int, says: str, fix: str) -> None:
    spec = parse_device_url("gpio:///dev/gpiochip3?line=17")
    try:
        try:
            raise OSError(code, os.strerror(code))
        except OSError as os_error:
            raise SourceError(spec.describe(), "cannot request the line") from os_error
    except SourceError as exc:
        check = gpio_failure("dock:d1:door", spec, exc)
    assert check.status == "FAIL"
    assert says in check.detail and "17" in check.detail
    assert fix in check.fix


def test_health_verdicts_of_held_devices() -> None:
    assert health_check("gnss", None, what="the receiver", fix="f").status == "WARN"
    ok = health_check("gnss", {"state": "ok", "since_s": 40, "fixes": 12}, what="r", fix="f")
    assert ok.status == "PASS" and "held by the running agent" in ok.detail and "12" in ok.detail
    lost = health_check("gnss", {"state": "lost", "silent_s": 9.5}, what="r", fix="see the log")
    assert lost.status == "FAIL" and "lost" in lost.detail and lost.fix == "see the log"


def test_a_connected_receiver_without_a_fix_is_no_pass_yet() -> None:
    entry = {"state": "connected", "since_s": 1}
    check = health_check("gnss", entry, what="r", fix="f", good=frozenset({"ok"}))
    assert check.status == "WARN" and "no verdict yet" in check.detail


def test_text_json_and_exit_code() -> None:
    checks = [
        Check("config", "PASS", "loaded"),
        Check("clock", "WARN", "not synchronised", "check NTP"),
        Check("round-trip", "SKIP", "the agent is not running"),
    ]
    assert exit_code(checks) == 0
    text = render_text(checks)
    lines = text.splitlines()
    assert lines[0].split() == ["PASS", "config", "loaded"]
    assert lines[1].startswith("WARN  clock       not synchronised")
    assert lines[2].strip() == "fix: check NTP"
    assert lines[-1] == "ready: 1 WARN, 1 PASS, 1 SKIP"
    failed = [*checks, Check("broker", "FAIL", "refused", "start it")]
    assert exit_code(failed) == 1
    assert render_text(failed).splitlines()[-1].startswith("NOT READY: 1 FAIL")
    doc = render_json(failed)
    assert doc["ok"] is False
    assert doc["checks"][-1] == {
        "name": "broker",
        "status": "FAIL",
        "detail": "refused",
        "fix": "start it",
    }
    assert render_json(checks)["ok"] is True


# -- the whole device, against real components ------------------------------------------------


def test_round_trip_to_a_real_hub_then_the_broker_killed(tmp_path: Path, broker: Mosquitto) -> None:
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url), tmp_path / "hub.log")
    hub.start()
    cfg = write_agent_config(tmp_path, broker.url, clock={"policy": "system"})
    agent = Proc("edge_agent", cfg, tmp_path / "agent.log")
    agent.start()
    try:
        code, doc = doctor(cfg, "--wait", "10")
        checks = {c["name"]: c for c in doc["checks"]}
        assert code == 0, doc
        assert doc["ok"] is True
        assert all(set(c) == {"name", "status", "detail", "fix"} for c in doc["checks"])
        assert [c["name"] for c in doc["checks"]] == [
            "config",
            "clock",
            "outbox-folder",
            "outbox-file",
            "disk",
            "broker",
            "hub",
            "round-trip",
        ]
        assert checks["broker"]["status"] == "PASS"
        assert "CONNACK" in checks["broker"]["detail"]
        assert checks["hub"]["status"] == "PASS"
        assert checks["hub"]["detail"].startswith("online: hub;")
        assert "held by the running agent" in checks["outbox-file"]["detail"]
        trip = checks["round-trip"]
        assert trip["status"] == "PASS", trip
        seq = int(trip["detail"].split("seq ")[1].split()[0])
        assert seq in {row[0] for row in timeline_rows(tmp_path / "timeline.db", "van-042")}

        broker.kill()
        code, doc = doctor(cfg, "--wait", "2")
        checks = {c["name"]: c for c in doc["checks"]}
        assert code == 1
        assert doc["ok"] is False
        assert checks["broker"]["status"] == "FAIL"
        assert "Connection refused" in checks["broker"]["detail"]
        assert "that the broker runs" in checks["broker"]["fix"]
        assert checks["hub"]["status"] == "SKIP"
        assert checks["round-trip"]["status"] == "FAIL"
        assert "not acked" in checks["round-trip"]["detail"]
    finally:
        agent.stop()
        hub.stop()


def test_without_an_agent_the_round_trip_is_skipped_and_text_lines_print(
    tmp_path: Path, broker: Mosquitto
) -> None:
    cfg = write_agent_config(tmp_path, broker.url)
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.doctor", "--config", str(cfg), "--wait", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    lines = done.stdout.splitlines()
    broker_line = next(x for x in lines if x.split()[1:2] == ["broker"])
    assert broker_line.startswith("PASS")
    hub_line = next(x for x in lines if x.split()[1:2] == ["hub"])
    assert hub_line.startswith("FAIL") and "no hub has announced itself" in hub_line
    trip = next(x for x in lines if x.split()[1:2] == ["round-trip"])
    assert trip.startswith("SKIP") and "not running" in trip
    assert lines[lines.index(hub_line) + 1].strip().startswith("fix: start the hub")
    assert done.returncode == 1  # no hub is a failure


async def test_mutual_tls_with_this_identity(tmp_path: Path) -> None:
    pki = self_signed(tmp_path / "pki")  # CN=localhost: the broker's and the device's own
    stranger = self_signed(tmp_path / "other", name="van-007")  # signed by no CA the broker knows
    with Mosquitto(tls=pki) as broker:

        def tls_config(cert: Path, key: Path, ca: Path) -> AgentConfig:
            files = {"ca": str(ca), "cert": str(cert), "key": str(key)}
            return agent_config(tmp_path, broker={"url": broker.url, "tls": files})

        own = by_name(await run_checks(tls_config(pki.cert, pki.key, pki.ca), wait_s=2))
        foreign = by_name(
            await run_checks(tls_config(stranger.cert, stranger.key, pki.ca), wait_s=2)
        )
        untrusting = by_name(await run_checks(tls_config(pki.cert, pki.key, stranger.ca), wait_s=2))
    # the handshake and CONNACK pass; the certificate names another device than the file's
    assert own["broker"].status == "WARN", own["broker"]
    assert "'localhost'" in own["broker"].detail and "acme/van-042" in own["broker"].detail
    assert own["hub"].status == "FAIL"  # reached: no hub on this broker
    assert foreign["broker"].status == "FAIL", foreign["broker"]
    assert "does not accept this device's certificate" in foreign["broker"].fix
    assert untrusting["broker"].status == "FAIL"
    assert "not trusted" in untrusting["broker"].detail
    assert "fleet CA" in untrusting["broker"].fix


def test_invalid_configuration_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: {id: van-042, fleet: acme}\noutbox: {path: /tmp/x.db}\nbogus: 1\n")
    assert run(argparse.Namespace(config=str(bad), json=True)) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["checks"][0]["name"] == "config"
    assert doc["checks"][0]["status"] == "FAIL"
    assert "bogus" in doc["checks"][0]["detail"]


async def test_gnss_on_a_real_pty_passes_with_a_fix(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "ttyGNSS", baud=9600)
    port.open()
    sim = GnssSimulator(Driver(ROUTE), rate_hz=10.0, start=datetime.now(UTC), seed=3)
    sim_task = asyncio.create_task(run_simulation(sim, port))
    try:
        cfg = agent_config(tmp_path, gnss={"source": str(port.path)})
        checks = by_name(await run_checks(cfg, wait_s=8, total_s=20))
    finally:
        sim_task.cancel()
        port.close()
    gnss = checks["gnss"]
    assert gnss.status == "PASS", gnss
    assert "9 satellites used" in gnss.detail and "12 satellites in view" in gnss.detail
    assert "from GNSS time" in gnss.detail


async def test_gnss_time_far_from_the_system_clock_warns(tmp_path: Path) -> None:
    tcp = TcpPort()
    await tcp.start()
    early = datetime.now(UTC) - timedelta(minutes=5)
    sim = GnssSimulator(Driver(ROUTE), rate_hz=10.0, start=early, seed=4)
    sim_task = asyncio.create_task(run_simulation(sim, tcp))
    try:
        cfg = agent_config(tmp_path, gnss={"source": f"socket://127.0.0.1:{tcp.port}"})
        checks = by_name(await run_checks(cfg, wait_s=8, total_s=20))
    finally:
        sim_task.cancel()
        await tcp.close()
    gnss = checks["gnss"]
    assert gnss.status == "WARN", gnss
    offset = float(gnss.detail.split("system clock ")[1].split(" s")[0])
    assert offset > 250  # the receiver is five minutes behind the system clock


async def test_a_silent_gnss_socket_fails(tmp_path: Path) -> None:
    tcp = TcpPort()
    await tcp.start()
    try:
        cfg = agent_config(tmp_path, gnss={"source": f"socket://127.0.0.1:{tcp.port}"})
        gnss = by_name(await run_checks(cfg, wait_s=1, total_s=10))["gnss"]
    finally:
        await tcp.close()
    assert gnss.status == "FAIL"
    assert "no NMEA sentence" in gnss.detail


async def test_cameras_a_label_read_and_a_missing_camera(tmp_path: Path) -> None:
    labels = make_labels(2, 3, 1, seed=7)
    write_frames(tmp_path / "cam", labels, size=(960, 540), imp=Impairments(blur=0.5), gap=1)
    cfg = agent_config(
        tmp_path,
        scan={
            "cameras": [
                {"id": "door", "source": str(tmp_path / "cam")},
                {"id": "gone", "source": "/dev/video9"},
            ]
        },
    )
    checks = by_name(await run_checks(cfg, wait_s=8, total_s=25))
    door = checks["camera:door"]
    assert door.status == "PASS", door
    assert f"{labels[0].format} {labels[0].text!r}" in door.detail
    gone = checks["camera:gone"]
    assert gone.status == "FAIL"
    assert "/dev/video9" in gone.detail and "no such device" in gone.detail


async def test_scanners_open_or_fail(tmp_path: Path) -> None:
    server = DeviceServer()
    await server.start()
    try:
        cfg = agent_config(
            tmp_path,
            scan={
                "scanners": [
                    {"id": "hand", "source": server.url},
                    {"id": "gone", "source": "/dev/ttyUSB9"},
                ]
            },
        )
        checks = by_name(await run_checks(cfg, wait_s=3, total_s=15))
    finally:
        await server.close()
    assert checks["scanner:hand"].status == "PASS"
    assert checks["scanner:gone"].status == "FAIL"
    assert "/dev/ttyUSB9" in checks["scanner:gone"].detail


def station_config(tmp: Path, dock: dict[str, Any]) -> AgentConfig:
    return agent_config(
        tmp,
        device={"id": "dock-3", "fleet": "acme", "role": "station"},
        station={"docks": [{"id": "d1", **dock}]},
    )


async def test_gpio_contacts_on_this_machine_fail_naming_the_chip(tmp_path: Path) -> None:
    cfg = station_config(tmp_path, {"door": "gpio:///dev/gpiochip0?line=17&bias=pull_up"})
    door = by_name(await run_checks(cfg, wait_s=2, total_s=15))["dock:d1:door"]
    assert door.status == "FAIL"
    assert "no GPIO chip /dev/gpiochip0" in door.detail and "line 17" in door.detail
    assert "gpiodetect" in door.fix


async def test_gpio_lines_through_the_standin(tmp_path: Path) -> None:
    dock = {
        "door": "gpio:///dev/gpiochip0?line=17",
        "bay": "gpio:///dev/gpiochip0?line=22",
        "signal": {
            "green": "gpio:///dev/gpiochip0?line=23&direction=output",
            "red": "gpio:///dev/gpiochip0?line=24&direction=output",
        },
    }
    cfg = station_config(tmp_path, dock)
    chip = FakeGpiod()
    checks = by_name(await run_checks(cfg, wait_s=2, total_s=15, gpiod=chip))  # type: ignore[arg-type]
    assert checks["dock:d1:door"].status == "PASS"
    assert "door closed" in checks["dock:d1:door"].detail
    assert checks["dock:d1:signal"].status == "PASS"
    assert "green" in checks["dock:d1:signal"].detail
    assert len(chip.requests) == 4 and not chip.live()  # every line given back
    busy = by_name(await run_checks(cfg, wait_s=2, total_s=15, gpiod=FakeGpiod(busy=True)))  # type: ignore[arg-type]
    assert busy["dock:d1:bay"].status == "FAIL"
    assert "taken by another program" in busy["dock:d1:bay"].detail


async def test_a_tfmini_bay_sensor_on_a_socket(tmp_path: Path) -> None:
    server = DeviceServer()
    await server.start()

    async def stream() -> None:
        await server.connected.wait()
        while True:
            await server.send(b"\x00\x13garbage" + tfmini_frame(1.2) + tfmini_frame(1.25))
            await asyncio.sleep(0.05)

    feeder = asyncio.create_task(stream())
    try:
        cfg = station_config(tmp_path, {"bay": {"source": server.url, "protocol": "tfmini"}})
        bay = by_name(await run_checks(cfg, wait_s=3, total_s=15))["dock:d1:bay"]
    finally:
        feeder.cancel()
        await server.close()
    assert bay.status == "PASS", bay
    assert "distance 1.2" in bay.detail


# -- the outbox: read-only, and its folder ----------------------------------------------------


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


async def test_outbox_is_checked_read_only(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path)
    ob = await Outbox.open(cfg.outbox.path, "acme", "van-042")
    await ob.close()
    before = listing(cfg.outbox.path.parent)
    checks = by_name(await run_checks(cfg, wait_s=2, total_s=15))
    assert listing(cfg.outbox.path.parent) == before  # nothing written, nothing left behind
    assert checks["outbox-file"].status == "PASS"
    assert "integrity ok" in checks["outbox-file"].detail
    assert f"schema {SCHEMA_VERSION}" in checks["outbox-file"].detail
    assert checks["outbox-folder"].status in {"PASS", "WARN"}  # WARN: a slow fsync here
    assert "write + fsync" in checks["outbox-folder"].detail
    assert checks["disk"].status == "PASS"


async def test_a_damaged_or_newer_outbox_fails(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path)
    cfg.outbox.path.parent.mkdir()
    cfg.outbox.path.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    damaged = by_name(await run_checks(cfg, wait_s=2, total_s=15))["outbox-file"]
    assert damaged.status == "FAIL" and "damaged" in damaged.detail
    assert "moves the file aside" in damaged.fix

    cfg.outbox.path.unlink()
    con = sqlite3.connect(cfg.outbox.path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    newer = by_name(await run_checks(cfg, wait_s=2, total_s=15))["outbox-file"]
    assert newer.status == "FAIL" and "newer agent" in newer.detail


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[str]:
    """A folder its user cannot write: a read-only tmpfs as root, else a mode without w."""
    if os.geteuid() == 0:
        with tmpfs(folder, "1m"):
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            yield "Read-only file system"
        return
    folder.mkdir()
    folder.chmod(0o500)
    try:
        yield "Permission denied"
    finally:
        folder.chmod(0o700)


async def test_an_unwritable_outbox_folder_fails(tmp_path: Path) -> None:
    with unwritable(tmp_path / "state") as reason:
        cfg = agent_config(tmp_path)
        folder = by_name(await run_checks(cfg, wait_s=2, total_s=15))["outbox-folder"]
    assert folder.status == "FAIL"
    assert "not writable" in folder.detail and reason in folder.detail
    assert folder.fix


async def test_a_full_disk_fails(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        # no mount without root: a filled disk cannot be made here, its verdict is tested pure
        assert (
            disk_check(0, outbox_bytes=0, max_bytes=1, reserve_bytes=0, disk_reserve=0).status
            == "FAIL"
        )
        return
    with tmpfs(tmp_path / "state", "8m") as state:
        fill(state / "hog")
        checks = by_name(await run_checks(agent_config(tmp_path), wait_s=2, total_s=15))
    assert checks["disk"].status == "FAIL" and "full" in checks["disk"].detail
    assert checks["outbox-folder"].status == "FAIL"
    assert "No space left" in checks["outbox-folder"].detail


# -- inside the agent (cmd/report) ------------------------------------------------------------


@pytest.fixture
async def held_outbox(tmp_path: Path) -> AsyncIterator[AgentConfig]:
    cfg = agent_config(tmp_path, gnss={"source": "/dev/ttyGNSS-held"})
    ob = await Outbox.open(cfg.outbox.path, "acme", "van-042")
    try:
        yield cfg
    finally:
        await ob.close()


async def test_report_from_inside_the_agent_reads_its_health(held_outbox: AgentConfig) -> None:
    health = HealthRegistry()
    health.set_state("gnss", "lost", source="serial:/dev/ttyGNSS-held", silent_s=12.0)
    data = await report(held_outbox, health=health, wait_s=2, total_s=15)
    checks = {c["name"]: c for c in data["checks"]}
    assert data["ok"] is False
    assert checks["gnss"]["status"] == "FAIL"
    assert "held by the running agent: lost" in checks["gnss"]["detail"]
    assert checks["round-trip"]["status"] == "SKIP"
    assert "readable; held by the running agent" in checks["outbox-file"]["detail"]
    assert checks["config"]["status"] == "PASS"
    assert data["sw"] and data["at"]
    json.dumps(data)  # the data of a device.report event
