"""What every driver shares: the byte-source protocol and the exception tree.

Device trouble (cannot open, unplugged, connection reset, no data at any baud rate) is raised as
``SourceError``: transient, decided here once, so every domain closes the device, logs the
transition and reopens after a backoff (``supervise``). Exceptions::

    SourceError              transient: close, back off, reopen (``source`` names the device)
    └── NoSignalError        the device opened, but at none of the baud rates did the domain's
                             probe recognise its data
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["BaudProbe", "ByteSource", "NoSignalError", "SourceError"]


class SourceError(Exception):
    """A transient device error: the device should be closed and reopened later."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class NoSignalError(SourceError):
    """The device opened, but at none of the baud rates did recognisable data arrive."""


class ByteSource(Protocol):
    """Where a domain's bytes come from (serial port, TCP socket, recorded log)."""

    name: str

    async def open(self) -> None:
        """Open the device (raises SourceError)."""

    async def read(self) -> bytes:
        """The next bytes; ``b""`` only at the end of a finite source (a file)."""
        ...

    def close(self) -> None:
        """Release the device; safe to call twice."""


class BaudProbe(Protocol):
    """A domain's sans-IO verdict on one baud rate: fed what arrived, True when it recognises
    its data, False when it is sure the rate is wrong, None while it cannot tell."""

    def feed(self, data: bytes) -> bool | None:
        """Add bytes read at the rate under test; return the verdict so far."""
        ...
