"""Device URLs (DESIGN §4, §7): one string says where a domain's bytes, reports or events come from.

====================================================  =============================================
``/dev/ttyACM0``                                      serial port, baud rate autodetected (GNSS) or
                                                      the domain's default
``serial:///dev/ttyUSB0?baud=9600``                   serial port at a fixed rate (``auto``: detect)
``socket://host:port``                                raw bytes over TCP (simulators, ser2net)
``gpsd://host:2947``                                  gpsd's JSON reports (port 2947 by default)
``file://log.nmea?rate=10``                           a recorded log, ``rate`` epochs per second
                                                      (0: as fast as read)
``/dev/input/by-id/...-event-kbd``                    a keyboard wedge through evdev (grabbed)
``evdev:///dev/input/event3?grab=false``              the same, with the grab turned off
``gpio:///dev/gpiochip0?line=17&edge=both``           a GPIO input line with edge events
                                                      (``bias=pull_up|pull_down|disabled``,
                                                      ``debounce=10ms``, ``active_low=true``)
``gpio:///dev/gpiochip0?line=27&direction=output``    a GPIO output line (``initial=1``)
====================================================  =============================================

``parse_device_url`` is pure; ``allowed`` limits the kinds a domain accepts (a GNSS source is no
keyboard). Bad input raises ``ValueError`` naming what is wrong, with any credentials in the URL
masked (``edge_agent.platform.redact``): the message is printed and logged.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from edge_agent.platform.redact import redact_text

__all__ = [
    "DeviceKind",
    "DeviceUrl",
    "GpioBias",
    "GpioEdge",
    "parse_device_url",
]

DeviceKind = Literal["serial", "socket", "gpsd", "file", "evdev", "gpio"]
GpioEdge = Literal["rising", "falling", "both"]
GpioBias = Literal["as_is", "pull_up", "pull_down", "disabled"]

_FORMS = {
    "serial": "a /dev path or serial:///dev/ttyUSB0",
    "socket": "socket://HOST:PORT",
    "gpsd": "gpsd://HOST:2947",
    "file": "file://log.nmea",
    "evdev": "/dev/input/... or evdev:///dev/input/...",
    "gpio": "gpio:///dev/gpiochip0?line=N",
}
_INPUT_DIR = "/dev/input/"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|us)?$")


@dataclass(frozen=True, slots=True)
class DeviceUrl:
    """A parsed device URL; the fields a kind does not use keep their defaults.

    ``baud`` None means autodetect (or the domain's default); ``rate`` is for file replay;
    ``grab`` for evdev; ``line``, ``output``, ``edge``, ``bias``, ``debounce_s``, ``active_low``
    and ``initial`` for GPIO (``line`` is an offset like ``"17"`` or a line name).
    """

    kind: DeviceKind
    url: str
    path: str = ""
    host: str = ""
    port: int = 0
    baud: int | None = None
    rate: float = 0.0
    grab: bool = True
    line: str = ""
    output: bool = False
    edge: GpioEdge = "both"
    bias: GpioBias = "as_is"
    debounce_s: float = 0.0
    active_low: bool = False
    initial: bool = False

    def describe(self) -> str:
        """A short name for logs and health reports (never the credentials)."""
        if self.kind in ("socket", "gpsd"):
            return f"{self.kind}:{self.host}:{self.port}"
        if self.kind == "gpio":
            return f"gpio:{self.path}:{self.line}"
        return f"{self.kind}:{self.path}"


def parse_device_url(
    url: str,
    *,
    allowed: Collection[DeviceKind] | None = None,
    path_kind: Literal["serial", "evdev"] = "serial",
) -> DeviceUrl:
    """Parse a device URL (module docstring).

    A bare path is a serial port (``path_kind`` for a domain whose paths are keyboards), or a
    keyboard when it lies under ``/dev/input/``. ``allowed``: the kinds the caller can read.
    """
    try:
        spec = _parse(url, path_kind)
        if allowed is not None and spec.kind not in allowed:
            kinds = [k for k in get_args(DeviceKind) if k in allowed]
            forms = ", ".join(_FORMS[k] for k in kinds)
            raise ValueError(f"{url!r}: a {spec.kind} device cannot be used here ({forms})")
        return spec
    except ValueError as exc:
        raise ValueError(redact_text(str(exc))) from None


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


def _flag(text: str | None, key: str, default: bool, url: str) -> bool:
    if text is None:
        return default
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{url!r}: {key} must be true or false, not {text!r}")


def _choice(text: str | None, key: str, choices: tuple[str, ...], default: str, url: str) -> str:
    if text is None:
        return default
    low = text.lower().replace("-", "_")
    if low not in choices:
        raise ValueError(f"{url!r}: {key} must be one of {', '.join(choices)}, not {text!r}")
    return low


def _seconds(text: str | None, key: str, url: str) -> float:
    if text is None:
        return 0.0
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"{url!r}: {key} must be a duration like 10ms, not {text!r}")
    scale = {"ms": 1e-3, "us": 1e-6, "s": 1.0, None: 1.0}[m.group(2)]
    value = float(m.group(1)) * scale
    if value > 1.0:
        raise ValueError(f"{url!r}: {key} above 1s is not a debounce")
    return value


def _path(parts_netloc: str, parts_path: str, url: str, form: str) -> str:
    path = unquote(parts_netloc + parts_path)
    if not path:
        raise ValueError(f"{url!r}: no path ({form})")
    return path


def _parse(url: str, path_kind: Literal["serial", "evdev"]) -> DeviceUrl:
    if not isinstance(url, str) or not url.strip():
        raise ValueError("empty device URL")
    url = url.strip()
    if url.startswith("/"):
        kind: DeviceKind = "evdev" if url.startswith(_INPUT_DIR) else path_kind
        return DeviceUrl(kind, url, path=url)
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    spec: DeviceUrl
    scheme = parts.scheme
    if scheme == "serial":
        path = _path(parts.netloc, parts.path, url, "serial:///dev/ttyUSB0")
        spec = DeviceUrl("serial", url, path=path, baud=_baud(_one(query, "baud", url), url))
    elif scheme == "socket":
        host, port = _host_port(url, None)
        spec = DeviceUrl("socket", url, host=host, port=port)
    elif scheme == "gpsd":
        host, port = _host_port(url, 2947)
        spec = DeviceUrl("gpsd", url, host=host, port=port)
    elif scheme == "file":
        path = _path(parts.netloc, parts.path, url, "file://log.nmea")
        rate_text = _one(query, "rate", url)
        try:
            rate = float(rate_text) if rate_text is not None else 0.0
        except ValueError:
            raise ValueError(f"{url!r}: rate must be a number, not {rate_text!r}") from None
        if not 0.0 <= rate <= 1000.0:
            raise ValueError(f"{url!r}: rate must be between 0 and 1000 epochs per second")
        spec = DeviceUrl("file", url, path=path, rate=rate)
    elif scheme == "evdev":
        path = _path(parts.netloc, parts.path, url, "evdev:///dev/input/event3")
        grab = _flag(_one(query, "grab", url), "grab", True, url)
        spec = DeviceUrl("evdev", url, path=path, grab=grab)
    elif scheme == "gpio":
        spec = _gpio(url, parts.netloc, parts.path, query)
    else:
        forms = ", ".join(_FORMS.values())
        raise ValueError(f"{url!r}: unknown source ({forms})")
    if query:
        raise ValueError(f"{url!r}: unknown parameter(s) {', '.join(sorted(query))}")
    return spec


_EDGES: dict[str, GpioEdge] = {"rising": "rising", "falling": "falling", "both": "both"}
_BIASES: dict[str, GpioBias] = {
    "as_is": "as_is",
    "pull_up": "pull_up",
    "pull_down": "pull_down",
    "disabled": "disabled",
}


def _gpio(url: str, netloc: str, path_part: str, query: dict[str, list[str]]) -> DeviceUrl:
    path = _path(netloc, path_part, url, "gpio:///dev/gpiochip0?line=17")
    line = _one(query, "line", url)
    if not line:
        raise ValueError(f"{url!r}: no line (gpio:///dev/gpiochip0?line=17 or line=NAME)")
    direction = _choice(
        _one(query, "direction", url), "direction", ("input", "output"), "input", url
    )
    edge = _choice(_one(query, "edge", url), "edge", tuple(_EDGES), "both", url)
    bias = _choice(_one(query, "bias", url), "bias", tuple(_BIASES), "as_is", url)
    debounce = _seconds(_one(query, "debounce", url), "debounce", url)
    output = direction == "output"
    if output and debounce:
        raise ValueError(f"{url!r}: debounce is for input lines")
    return DeviceUrl(
        "gpio",
        url,
        path=path,
        line=line,
        output=output,
        edge=_EDGES[edge],
        bias=_BIASES[bias],
        debounce_s=debounce,
        active_low=_flag(_one(query, "active_low", url), "active_low", False, url),
        initial=_flag(_one(query, "initial", url), "initial", False, url),
    )
