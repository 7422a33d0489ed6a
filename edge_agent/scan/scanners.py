"""Drivers of text scanners: serial/socket byte sources and evdev keyboard wedges.

Both feed the pure parts (``CodeFramer``, ``KeyTranslator``) and hand each code to the scan
service (dedup, GS1, event). Device failures are a health state of ``scan:<id>`` and a reopen
after a capped, jittered backoff; they never end the service.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import serial

from edge_agent.platform.backoff import backoff_delay
from edge_agent.scan.config import ScannerConfig
from edge_agent.scan.events import read_from_scanner
from edge_agent.scan.framing import CodeFramer
from edge_agent.scan.keymap import KeyTranslator

if TYPE_CHECKING:
    from edge_agent.scan.service import ScanService

__all__ = ["run_scanner"]


async def run_scanner(service: ScanService, cfg: ScannerConfig) -> None:
    """Read one scanner forever, reopening it after failures."""
    component = f"scan:{cfg.id}"
    session = _serial_session if cfg.kind == "serial" else _evdev_session
    attempt = 0
    while True:
        productive = False
        try:
            productive = await session(service, cfg, component)
        except (OSError, serial.SerialException) as exc:
            service.health.set_state(component, "disconnected", error=f"{cfg.source}: {exc}")
        attempt = 0 if productive else attempt + 1
        await asyncio.sleep(backoff_delay(attempt, cap=cfg.reconnect_max))


async def _serial_session(service: ScanService, cfg: ScannerConfig, component: str) -> bool:
    port = await asyncio.to_thread(
        serial.serial_for_url, cfg.source, baudrate=cfg.baud, timeout=0.2
    )
    service.health.set_state(component, "ok", source=cfg.source)
    framer = CodeFramer(cfg.prefix, cfg.suffix)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                data = port.read(max(1, port.in_waiting))
                if data:
                    loop.call_soon_threadsafe(queue.put_nowait, data)
        except Exception as exc:  # pyserial raises SerialException/OSError on unplug
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            port.close()

    thread = threading.Thread(target=reader, name=f"scanner-{cfg.id}", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise OSError(str(item)) from item
            for text in framer.feed(item):
                await service.submit(read_from_scanner(text, cfg.id))
            _count(service, component, framer)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 2.0)


def _count(service: ScanService, component: str, counted: CodeFramer | KeyTranslator) -> None:
    for reason in ("overlong", "undecodable", "empty", "unknown_keys"):
        n = getattr(counted, reason, 0)
        if n:
            service.health.count(component, reason, n)
            setattr(counted, reason, 0)


async def _evdev_session(service: ScanService, cfg: ScannerConfig, component: str) -> bool:
    # The evdev device itself cannot run in this sandbox (no /dev/input); KeyTranslator,
    # which does the translation, is tested on its own.
    import evdev

    device = evdev.InputDevice(cfg.source)
    try:
        if cfg.grab:
            device.grab()  # exclusive: the scanner's keystrokes never reach a console
        service.health.set_state(component, "ok", source=cfg.source, grabbed=cfg.grab)
        keys = KeyTranslator()
        on_key: Callable[[int, int], str | None] = keys.feed
        async for event in device.async_read_loop():
            if event.type != evdev.ecodes.EV_KEY:
                continue
            text = on_key(event.code, event.value)
            if text is not None:
                if cfg.prefix and text.startswith(cfg.prefix):
                    text = text[len(cfg.prefix) :]
                await service.submit(read_from_scanner(text, cfg.id))
            _count(service, component, keys)
    finally:
        device.close()
    return True
