"""Text scanners read through the driver layer: serial or socket bytes, or an evdev keyboard.

A scanner's ``source`` is a device URL (``edge_agent.drivers.url``): a serial path or
``serial://``, ``socket://host:port``, or a keyboard wedge (``/dev/input/by-id/...-event-kbd``,
``evdev://``; every path is a keyboard with ``kind: evdev``). The drivers move the bytes and key
events; the pure parts here (``CodeFramer``, ``KeyTranslator``) make codes of them, and each
code goes to ``submit`` (the scan service: dedup, GS1, event). Device failures are a health state
of ``scan:<id>`` and a reopen after a capped, jittered backoff (``drivers.supervise``); they
never end the service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType

from edge_agent.drivers.keyboard import KeyboardSource
from edge_agent.drivers.sources import make_byte_source
from edge_agent.drivers.supervise import Attempt, supervise
from edge_agent.drivers.url import DeviceUrl, parse_device_url
from edge_agent.platform.health import HealthRegistry
from edge_agent.scan.config import SCANNER_KINDS, ScannerConfig
from edge_agent.scan.events import Read, read_from_scanner
from edge_agent.scan.framing import CodeFramer
from edge_agent.scan.keymap import KeyTranslator

__all__ = ["run_scanner", "scanner_url"]

Submit = Callable[[Read], Awaitable[bool]]


def scanner_url(cfg: ScannerConfig) -> DeviceUrl:
    """The device URL of a scanner (ValueError names what is wrong)."""
    return parse_device_url(cfg.source, allowed=SCANNER_KINDS, path_kind=cfg.kind)


async def run_scanner(
    cfg: ScannerConfig,
    submit: Submit,
    health: HealthRegistry,
    *,
    evdev: ModuleType | None = None,
) -> None:
    """Read one scanner forever, reopening it after failures (``evdev``: a stand-in module)."""
    spec = scanner_url(cfg)
    component = f"scan:{cfg.id}"

    async def session(attempt: Attempt) -> None:
        if spec.kind == "evdev":
            await _keyboard_session(cfg, spec, submit, health, component, attempt, evdev)
        else:
            await _byte_session(cfg, spec, submit, health, component, attempt)

    await supervise(
        session, health=health, component=component, name=spec.describe(), cap=cfg.reconnect_max
    )


async def _byte_session(
    cfg: ScannerConfig,
    spec: DeviceUrl,
    submit: Submit,
    health: HealthRegistry,
    component: str,
    attempt: Attempt,
) -> None:
    source = make_byte_source(spec, baud=cfg.baud)
    await source.open()
    try:
        health.set_state(component, "ok", source=cfg.source)
        framer = CodeFramer(cfg.prefix, cfg.suffix)
        while True:
            data = await source.read()
            if not data:
                return  # a finite source ended
            attempt.productive = True
            for text in framer.feed(data):
                await submit(read_from_scanner(text, cfg.id))
            _count(health, component, framer)
    finally:
        source.close()


def _count(health: HealthRegistry, component: str, counted: CodeFramer | KeyTranslator) -> None:
    for reason in ("overlong", "undecodable", "empty", "unknown_keys"):
        n = getattr(counted, reason, 0)
        if n:
            health.count(component, reason, n)
            setattr(counted, reason, 0)


async def _keyboard_session(
    cfg: ScannerConfig,
    spec: DeviceUrl,
    submit: Submit,
    health: HealthRegistry,
    component: str,
    attempt: Attempt,
    evdev: ModuleType | None,
) -> None:
    grab = cfg.grab and spec.grab
    keyboard = KeyboardSource(spec.path, grab=grab, evdev=evdev)
    await keyboard.open()
    try:
        health.set_state(component, "ok", source=cfg.source, grabbed=grab)
        keys = KeyTranslator()
        async for event in keyboard.events():
            attempt.productive = True
            text = keys.feed(event.code, event.value)
            if text is not None:
                if cfg.prefix and text.startswith(cfg.prefix):
                    text = text[len(cfg.prefix) :]
                await submit(read_from_scanner(text, cfg.id))
            _count(health, component, keys)
    finally:
        keyboard.close()
