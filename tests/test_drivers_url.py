"""One device URL scheme for every domain (DESIGN §4, §7), and the reopen loop under it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from edge_agent.drivers.base import SourceError
from edge_agent.drivers.sources import make_byte_source
from edge_agent.drivers.supervise import Attempt, supervise
from edge_agent.drivers.url import DeviceUrl, parse_device_url
from edge_agent.gnss.config import GnssConfig
from edge_agent.platform.health import HealthRegistry
from edge_agent.scan.config import ScanConfig


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("/dev/ttyACM0", DeviceUrl("serial", "/dev/ttyACM0", path="/dev/ttyACM0")),
        (
            "serial:///dev/ttyUSB0?baud=9600",
            DeviceUrl("serial", "serial:///dev/ttyUSB0?baud=9600", path="/dev/ttyUSB0", baud=9600),
        ),
        ("socket://sim:10110", DeviceUrl("socket", "socket://sim:10110", host="sim", port=10110)),
        ("gpsd://localhost", DeviceUrl("gpsd", "gpsd://localhost", host="localhost", port=2947)),
        (
            "file://x.nmea?rate=10",
            DeviceUrl("file", "file://x.nmea?rate=10", path="x.nmea", rate=10.0),
        ),
        (
            "/dev/input/by-id/kbd",
            DeviceUrl("evdev", "/dev/input/by-id/kbd", path="/dev/input/by-id/kbd"),
        ),
        (
            "evdev:///dev/input/event3?grab=no",
            DeviceUrl(
                "evdev", "evdev:///dev/input/event3?grab=no", path="/dev/input/event3", grab=False
            ),
        ),
    ],
)
def test_one_parser_for_every_kind(url: str, want: DeviceUrl) -> None:
    assert parse_device_url(url) == want


def test_domains_accept_their_kinds_with_a_clear_error() -> None:
    assert parse_device_url("/dev/hidraw-scanner", path_kind="evdev").kind == "evdev"
    with pytest.raises(ValueError, match="a evdev device cannot be used here"):
        GnssConfig.model_validate({"source": "/dev/input/event1"})
    with pytest.raises(ValueError, match="a gpsd device cannot be used here"):
        ScanConfig.model_validate({"scanners": [{"id": "s", "source": "gpsd://h"}]})
    cfg = ScanConfig.model_validate({"scanners": [{"id": "s", "kind": "evdev", "source": "/x"}]})
    assert cfg.scanners[0].kind == "evdev"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty device URL"),
        ("serial://", "no path"),
        ("serial:///dev/x?baud=fast", "baud must be a rate"),
        ("socket://host", "no port"),
        ("socket://host:99999", "bad port"),
        ("file://x?rate=-1", "between 0 and 1000"),
        ("file://x?speed=2", "unknown parameter"),
        ("evdev:///dev/input/e?grab=perhaps", "grab must be true or false"),
        ("ftp://host/x", "unknown source"),
    ],
)
def test_bad_urls_name_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_device_url(url)


def test_credentials_never_appear_in_errors_or_names() -> None:
    with pytest.raises(ValueError, match="unknown parameter") as info:
        parse_device_url("socket://user:hunter2@host:1?token=abc&x=1&x=2")
    assert "hunter2" not in str(info.value) and "abc" not in str(info.value)
    spec = parse_device_url("socket://user:hunter2@host:1?")
    assert spec.describe() == "socket:host:1"
    with pytest.raises(ValueError, match="not a byte source") as info:
        make_byte_source(parse_device_url("gpsd://u:hunter2@h"))
    assert "hunter2" not in str(info.value) and "not a byte source" in str(info.value)


async def test_supervise_logs_transitions_once_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = HealthRegistry()
    delays: list[float] = []
    calls: list[int] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    async def session(attempt: Attempt) -> None:
        calls.append(attempt.number)
        if len(calls) == 4:
            attempt.productive = True  # data flowed, then the device went away
        if len(calls) < 6:
            raise SourceError("serial:/dev/x", "cannot open: gone")
        if len(calls) == 6:
            raise OSError("a library's own error")

    def rand() -> float:
        return 1.0  # the ceiling of each full-jitter draw

    caplog.set_level(logging.INFO)
    kw: dict[str, Any] = {"health": health, "component": "c", "name": "serial:/dev/x"}
    await supervise(session, cap=4.0, rand=rand, sleep=sleep, **kw)
    assert calls == [0, 1, 2, 3, 0, 1, 2]
    assert delays == [0.5, 1.0, 2.0, 0.5, 0.5, 1.0]  # productive: retried promptly
    assert health.state("c") == "disconnected"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # six failures, one transition
    assert sum("unexpected error" in r.getMessage() for r in caplog.records) == 0
