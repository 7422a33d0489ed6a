"""GNSS source URLs (DESIGN §4): one string says where the NMEA bytes or fixes come from.

==================================  ========================================================
``/dev/ttyACM0``                    serial port, baud rate autodetected
``serial:///dev/ttyUSB0?baud=9600`` serial port at a fixed baud rate (``baud=auto`` detects)
``socket://host:port``              raw NMEA over TCP (simulators, ser2net)
``gpsd://host:2947``                fixes from a running gpsd (its JSON TPV reports)
``file://log.nmea?rate=10``         replay of a log, ``rate`` epochs per second (0: at once)
==================================  ========================================================

``parse_source_url`` is pure and raises ``ValueError`` naming what is wrong (with any credentials
in the URL masked: the message is printed and logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from edge_agent.platform.redact import redact_text

__all__ = ["STANDARD_BAUDS", "SourceSpec", "parse_source_url"]

# Receivers ship at 9600 (most), 4800 (NMEA's own rate, older units), 38400/115200 (u-blox,
# 10 Hz set-ups); the order is the autodetect's order of trial.
STANDARD_BAUDS = (9600, 4800, 38400, 115200, 57600, 19200)

SourceKind = Literal["serial", "socket", "gpsd", "file"]


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed source URL. ``baud`` None means autodetect; ``rate`` is for file replay."""

    kind: SourceKind
    url: str
    path: str = ""
    host: str = ""
    port: int = 0
    baud: int | None = None
    rate: float = 0.0

    def describe(self) -> str:
        """A short name for logs and health reports."""
        if self.kind in ("serial", "file"):
            return f"{self.kind}:{self.path}"
        return f"{self.kind}:{self.host}:{self.port}"


def _one(query: dict[str, list[str]], key: str, url: str) -> str | None:
    values = query.pop(key, None)
    if values is None:
        return None
    if len(values) != 1:
        raise ValueError(f"{url!r}: {key} given more than once")
    return values[0]


def _host_port(url: str, default_port: int | None) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    if port is None:
        if default_port is None:
            raise ValueError(f"{url!r}: no port (socket://HOST:PORT)")
        port = default_port
    if port == 0:
        raise ValueError(f"{url!r}: port 0")
    return parts.hostname, port


def _baud(text: str | None, url: str) -> int | None:
    if text is None or text == "auto":
        return None
    if not text.isdigit() or not 300 <= int(text) <= 4_000_000:
        raise ValueError(f"{url!r}: baud must be a rate like 9600 or 'auto', not {text!r}")
    return int(text)


def parse_source_url(url: str) -> SourceSpec:
    """Parse a source URL (see the module docstring)."""
    try:
        return _parse(url)
    except ValueError as exc:
        raise ValueError(redact_text(str(exc))) from None


def _parse(url: str) -> SourceSpec:
    if not isinstance(url, str) or not url.strip():
        raise ValueError("empty source URL")
    url = url.strip()
    if url.startswith("/"):
        return SourceSpec("serial", url, path=url)
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    spec: SourceSpec
    if parts.scheme == "serial":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"{url!r}: no device path (serial:///dev/ttyUSB0)")
        spec = SourceSpec("serial", url, path=path, baud=_baud(_one(query, "baud", url), url))
    elif parts.scheme == "socket":
        host, port = _host_port(url, None)
        spec = SourceSpec("socket", url, host=host, port=port)
    elif parts.scheme == "gpsd":
        host, port = _host_port(url, 2947)
        spec = SourceSpec("gpsd", url, host=host, port=port)
    elif parts.scheme == "file":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"{url!r}: no file path (file://log.nmea)")
        rate_text = _one(query, "rate", url)
        try:
            rate = float(rate_text) if rate_text is not None else 0.0
        except ValueError:
            raise ValueError(f"{url!r}: rate must be a number, not {rate_text!r}") from None
        if not 0.0 <= rate <= 1000.0:
            raise ValueError(f"{url!r}: rate must be between 0 and 1000 epochs per second")
        spec = SourceSpec("file", url, path=path, rate=rate)
    else:
        raise ValueError(
            f"{url!r}: unknown source (a /dev path, serial://, socket://, gpsd:// or file://)"
        )
    if query:
        raise ValueError(f"{url!r}: unknown parameter(s) {', '.join(sorted(query))}")
    return spec
