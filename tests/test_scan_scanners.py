"""Text scanners: sans-IO framing, the keyboard-wedge keymap, and a serial scanner on a real
pty and on socket:// into scan events on the real outbox. The evdev device cannot run here (no
/dev/input or uinput in the sandbox): the keyboard driver is driven through a stand-in ``evdev``
module with python-evdev's API (``InputDevice``, ``grab``, ``async_read_loop``, ``ecodes``)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge_agent.clock import Clock
from edge_agent.outbox import Outbox
from edge_agent.platform.health import HealthRegistry
from edge_agent.recorder import OutboxSink
from edge_agent.scan.config import ScanConfig, ScannerConfig
from edge_agent.scan.events import Read
from edge_agent.scan.framing import CodeFramer
from edge_agent.scan.keymap import KEY_ENTER, KeyTranslator
from edge_agent.scan.scanners import run_scanner
from edge_agent.scan.service import ScanService

SSCC = "106141412345678908"


def test_framing_across_reads_with_prefix_and_crlf() -> None:
    f = CodeFramer(prefix="]C1", suffix="\r")
    assert f.feed(b"]C100" + SSCC[:5].encode()) == []
    assert f.feed(SSCC[5:].encode() + b"\r\nJD0001\r\n") == ["00" + SSCC, "JD0001"]
    assert f.feed(b"\r\r") == [] and f.empty == 2


def test_framing_multibyte_suffix_overlong_and_garbage() -> None:
    f = CodeFramer(suffix="\r\n", max_length=8)
    assert f.feed(b"ABC\r") == []  # a CR alone does not end a code
    assert f.feed(b"\n") == ["ABC"]
    assert f.feed(b"X" * 20) == [] and f.overlong == 1
    assert f.feed(b"\xff\xfe\r\nOK\r\n") == ["OK"] and f.undecodable == 1
    with pytest.raises(ValueError, match="suffix"):
        CodeFramer(suffix="")


def type_text(t: KeyTranslator, keys: list[tuple[int, int]]) -> list[str]:
    return [s for code, value in keys if (s := t.feed(code, value)) is not None]


def press(code: int) -> list[tuple[int, int]]:
    return [(code, 1), (code, 0)]


def test_keymap_shift_caps_gs_and_enter() -> None:
    t = KeyTranslator()
    keys = [(42, 1), *press(36), *press(32), (42, 0)]  # Shift+J Shift+D
    keys += press(11) + press(2)  # "01"
    keys += [(29, 1), *press(27), (29, 0)]  # Ctrl+] = GS
    keys += [(30, 2)]  # autorepeat types nothing
    keys += press(58) + press(30) + press(58) + press(30)  # caps: "A", then "a"
    keys += press(KEY_ENTER)
    assert type_text(t, keys) == ["JD01\x1dAa"]
    assert type_text(t, press(KEY_ENTER)) == []  # Enter alone is no code
    assert type_text(t, press(183) + press(2) + press(KEY_ENTER)) == ["1"]
    assert t.unknown_keys == 1


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-7")
    try:
        yield ob
    finally:
        await ob.close()


async def scans(ob: Outbox) -> list[dict[str, Any]]:
    rows = await ob.read_after(0, max_bytes=10_000_000)
    return [e for e in (json.loads(b) for _, b in rows) if e["type"] == "scan"]


async def until(ob: Outbox, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while len(events := await scans(ob)) < n:
        assert time.monotonic() < deadline, f"only {len(events)} scan events"
        await asyncio.sleep(0.02)
    return events


def service(ob: Outbox, source: str) -> tuple[ScanService, HealthRegistry]:
    cfg = ScanConfig.model_validate(
        {
            "dedup_window": "10s",
            "scanners": [{"id": "hand-1", "source": source, "prefix": "\x02", "suffix": "\r"}],
        }
    )
    health, clock = HealthRegistry(), Clock("system")
    return ScanService(cfg, OutboxSink(ob, clock), health, clock), health


async def test_serial_scanner_on_a_pty_into_scan_events(outbox: Outbox) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)  # as a USB-serial port is: no CR -> LF translation before pyserial opens
    try:
        svc, health = service(outbox, os.ttyname(slave))
        task = asyncio.create_task(svc.run())
        try:
            deadline = time.monotonic() + 10
            while health.state("scan:hand-1") != "ok":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            os.write(master, b"\x02]C100" + SSCC.encode() + b"42010115\r\n")
            os.write(master, b"\x02]C100" + SSCC.encode() + b"42010115\r\n")  # a double scan
            os.write(master, b"JD014600006\r\n")
            events = await until(outbox, 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        os.close(master)
        os.close(slave)
    first, second = events
    assert first["data"]["gs1"] == {"00": SSCC, "420": "10115"}
    assert first["ref"] == {"parcel": SSCC}
    assert first["data"]["source"] == "hand-1" and first["data"]["symbology"] == "Code128"
    assert first["data"]["text"] == "00" + SSCC + "42010115"
    assert second["data"]["text"] == "JD014600006" and "gs1" not in second["data"]
    assert second["data"]["symbology"] == "unknown"
    assert health.counters("scan:hand-1")["duplicates"] == 1


async def test_socket_scanner_and_a_refused_connection_is_a_health_state(
    outbox: Outbox,
) -> None:
    writers: list[asyncio.StreamWriter] = []
    opened = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        # pyserial's socket:// empties the input buffer when it opens, as with a real port:
        # a scanner's codes come after that, when someone scans
        await opened.wait()
        writer.write(b"PARCEL-1\rPARCEL-2\r")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    svc, first_health = service(outbox, f"socket://127.0.0.1:{port}")

    async def watch_open() -> None:
        deadline = time.monotonic() + 10
        while first_health.state("scan:hand-1") != "ok":
            assert time.monotonic() < deadline, "the scanner never opened"
            await asyncio.sleep(0.01)
        opened.set()

    watcher = asyncio.create_task(watch_open())
    task = asyncio.create_task(svc.run())
    try:
        events = await until(outbox, 2)
    finally:
        task.cancel()
        watcher.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
    assert [e["data"]["text"] for e in events] == ["PARCEL-1", "PARCEL-2"]

    svc, health = service(outbox, f"socket://127.0.0.1:{port}")  # nobody listens now
    task = asyncio.create_task(svc.run())
    try:
        deadline = time.monotonic() + 10
        while health.state("scan:hand-1") != "disconnected":
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert str(port) in json.dumps(health.snapshot()["scan:hand-1"])


class FakeKeyboard:
    """An evdev ``InputDevice`` whose key events come from a list, then it is unplugged."""

    def __init__(self, path: str, events: list[tuple[int, int]]) -> None:
        self.path = path
        self.events = events
        self.grabbed = False
        self.ever_grabbed = False
        self.closed = False

    def grab(self) -> None:
        self.grabbed = self.ever_grabbed = True

    def ungrab(self) -> None:
        self.grabbed = False

    def close(self) -> None:
        self.closed = True

    async def async_read_loop(self) -> AsyncIterator[Any]:
        for code, value in self.events:
            yield SimpleNamespace(type=4, code=0, value=code, sec=0, usec=0)  # EV_MSC: skipped
            yield SimpleNamespace(type=1, code=code, value=value, sec=1_700_000_000, usec=5)
        raise OSError(19, "No such device")  # unplugged


class FakeEvdev:
    """The ``evdev`` module, handing out one ``FakeKeyboard`` per open."""

    ecodes = SimpleNamespace(EV_KEY=1)

    def __init__(self, typed: list[tuple[int, int]]) -> None:
        self.typed = typed
        self.devices: list[FakeKeyboard] = []

    def InputDevice(self, path: str) -> FakeKeyboard:  # evdev's name
        device = FakeKeyboard(path, self.typed)
        self.devices.append(device)
        return device


async def test_keyboard_wedge_is_grabbed_typed_into_codes_and_reopened() -> None:
    typed = [(42, 1), *press(36), *press(32), (42, 0), *press(11), *press(2), *press(KEY_ENTER)]
    fake = FakeEvdev(typed)
    cfg = ScannerConfig(id="wedge", kind="evdev", source="/dev/input/by-id/usb-x-event-kbd")
    health = HealthRegistry()
    reads: list[Read] = []

    async def submit(read: Read) -> bool:
        reads.append(read)
        return True

    task = asyncio.create_task(run_scanner(cfg, submit, health, evdev=fake))  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 10
        while len(reads) < 2:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.text for r in reads[:2]] == ["JD01", "JD01"]  # once per open
    assert reads[0].source == "wedge"
    first = fake.devices[0]
    assert first.path == cfg.source
    assert first.ever_grabbed and not first.grabbed and first.closed  # released at unplug
    assert all(d.ever_grabbed for d in fake.devices)
    assert health.state("scan:wedge") in ("ok", "disconnected")  # between unplugs
