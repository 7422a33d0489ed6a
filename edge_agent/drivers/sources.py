"""The byte source for a parsed URL: serial port, TCP socket or recorded log.

``gpsd://``, ``evdev`` and ``gpio`` URLs are not byte sources (reports, key events, edges): a
domain that accepts them opens ``GpsdSource``, ``KeyboardSource`` or the GPIO drivers itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edge_agent.drivers.base import BaudProbe, ByteSource
from edge_agent.drivers.url import DeviceUrl
from edge_agent.platform.redact import redact_url

__all__ = ["BYTE_KINDS", "make_byte_source"]

BYTE_KINDS = ("serial", "socket", "file")


def make_byte_source(
    spec: DeviceUrl,
    *,
    baud: int | None = None,
    bauds: Sequence[int] = (9600,),
    probe: Callable[[], BaudProbe] | None = None,
    init: Sequence[bytes] = (),
    epoch_key: Callable[[bytes], bytes | None] | None = None,
) -> ByteSource:
    """The byte source for ``spec``.

    Serial: the URL's ``baud``, else ``baud``, else autodetected over ``bauds`` with ``probe``;
    ``init`` is written once the port is set up. File: paced by ``epoch_key`` (``filereplay``).
    """
    if spec.kind == "serial":
        from edge_agent.drivers.serialport import SerialSource  # pyserial: only when used

        return SerialSource(
            spec.path, spec.baud or baud, bauds=bauds or (9600,), probe=probe, init=init
        )
    if spec.kind == "socket":
        from edge_agent.drivers.tcp import SocketSource

        return SocketSource(spec.host, spec.port)
    if spec.kind == "file":
        from edge_agent.drivers.filereplay import FileSource

        return FileSource(spec.path, spec.rate, epoch_key=epoch_key)
    raise ValueError(f"{redact_url(spec.url)}: a {spec.kind} device is not a byte source")
