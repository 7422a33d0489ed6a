"""Byte sources the GNSS service reads NMEA from: serial port, TCP socket, log file.

Each source is opened, read chunk by chunk and closed by the service; any device trouble
(cannot open, unplugged, connection reset) is raised as ``SourceError`` so the service can
back off and reopen. Exceptions::

    SourceError            transient: the service logs the transition once and reopens
    └── NoNmeaError        the port opened but no baud rate carried valid NMEA

The serial source reads without a thread: the port is non-blocking and the event loop
watches its file descriptor. When no baud rate is given it tries ``bauds`` in turn (the last
one that worked first) until a rate carries checksummed sentences (``BaudProbe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence
from typing import IO, Protocol

import serial

from edge_agent.gnss.baud import BaudProbe
from edge_agent.gnss.nmea import checksum
from edge_agent.gnss.source_url import STANDARD_BAUDS, SourceSpec
from edge_agent.platform.redact import redact_url

__all__ = [
    "ByteSource",
    "FileSource",
    "NoNmeaError",
    "SerialSource",
    "SocketSource",
    "SourceError",
    "complete_sentence",
    "make_source",
]

log = logging.getLogger(__name__)

_READ_SIZE = 4096


class SourceError(Exception):
    """A transient device error: the source should be closed and reopened later."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class NoNmeaError(SourceError):
    """The device opened, but at none of the baud rates did valid NMEA arrive."""


class ByteSource(Protocol):
    """Where NMEA bytes come from."""

    name: str

    async def open(self) -> None:
        """Open the device (raises SourceError)."""

    async def read(self) -> bytes:
        """The next bytes; ``b""`` only at the end of a finite source (a file)."""
        ...

    def close(self) -> None:
        """Release the device; safe to call twice."""


def complete_sentence(line: str) -> bytes:
    """An init sentence with ``*hh`` and CRLF, adding the checksum when it is missing."""
    line = line.strip()
    if "*" not in line:
        body = line[1:].encode("ascii")
        line = f"{line}*{checksum(body):02X}"
    return line.encode("ascii") + b"\r\n"


class SerialSource:
    """A serial port (USB CDC ``/dev/ttyACM0``, a UART ...), with baud rate autodetection."""

    def __init__(
        self,
        path: str,
        baud: int | None = None,
        *,
        bauds: Sequence[int] = STANDARD_BAUDS,
        init: Sequence[str] = (),
        probe_window: float = 2.5,
    ) -> None:
        self.name = f"serial:{path}"
        self.path = path
        self.baud = baud
        self.bauds = list(bauds)
        self.init = [complete_sentence(x) for x in init]
        self.probe_window = probe_window
        self.detected_baud: int | None = None
        self._ser: serial.Serial | None = None
        self._ready = asyncio.Event()
        self._fd: int | None = None

    async def open(self) -> None:
        """Open the port (and find its baud rate when none is configured)."""
        first = self.baud or self.detected_baud or self.bauds[0]
        try:
            ser = serial.Serial()
            ser.port = self.path
            ser.baudrate = first
            ser.timeout = 0  # non-blocking: the event loop says when to read
            ser.write_timeout = 1.0
            ser.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(self.name, f"cannot open: {exc}") from exc
        self._ser = ser
        self._fd = ser.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self._ready.set)
        try:
            if self.baud is None:
                await self._detect()
            for line in self.init:
                ser.write(line)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise SourceError(self.name, f"setting up the port failed: {exc}") from exc
        except BaseException:
            self.close()
            raise

    async def _detect(self) -> None:
        ser = self._ser
        assert ser is not None
        order = list(self.bauds)
        if self.detected_baud in order:
            order.remove(self.detected_baud)
            order.insert(0, self.detected_baud)
        loop = asyncio.get_running_loop()
        for baud in order:
            ser.baudrate = baud
            ser.reset_input_buffer()
            probe = BaudProbe()
            deadline = loop.time() + self.probe_window
            verdict: bool | None = None
            while verdict is None:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    data = await asyncio.wait_for(self.read(), timeout=left)
                except TimeoutError:
                    break
                verdict = probe.feed(data)
            if verdict:
                if self.detected_baud != baud:
                    log.info("%s: receiver found at %d baud", self.name, baud)
                self.detected_baud = baud
                return
        tried = ", ".join(str(b) for b in order)
        raise NoNmeaError(self.name, f"no valid NMEA at {tried} baud")

    async def read(self) -> bytes:
        """The next bytes from the port (raises SourceError when it goes away)."""
        ser = self._ser
        if ser is None:
            raise SourceError(self.name, "not open")
        while True:
            try:
                data: bytes = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise SourceError(self.name, f"read failed (unplugged?): {exc}") from exc
            if data:
                return data
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Close the port."""
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.close()
            self._ser = None


class SocketSource:
    """Raw NMEA over TCP (``socket://host:port``: simulators, ser2net, receivers with Wi-Fi)."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 5.0) -> None:
        self.name = f"socket:{host}:{port}"
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect."""
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise SourceError(self.name, f"cannot connect: {exc or 'timeout'}") from exc

    async def read(self) -> bytes:
        """The next bytes; a closed connection is an error (the peer may come back)."""
        if self._reader is None:
            raise SourceError(self.name, "not connected")
        try:
            data = await self._reader.read(_READ_SIZE)
        except OSError as exc:
            raise SourceError(self.name, f"read failed: {exc}") from exc
        if not data:
            raise SourceError(self.name, "connection closed by the peer")
        return data

    def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


_TIME_FIELD = re.compile(rb"^\$[A-Z]{2}(?:GGA|RMC|GNS|ZDA),(\d{6}(?:\.\d*)?),")


class FileSource:
    """A recorded NMEA log replayed at ``rate`` epochs per second (0: as fast as read).

    An epoch boundary is where the time of day of GGA/RMC/GNS/ZDA changes, so a 1 Hz log at
    ``rate=1`` plays in real time and at ``rate=10`` ten times faster.
    """

    def __init__(self, path: str, rate: float = 0.0) -> None:
        self.name = f"file:{path}"
        self.path = path
        self.rate = rate
        self._file: IO[bytes] | None = None
        self._tod: bytes | None = None
        self._next_at = 0.0
        self._pending: bytes | None = None

    async def open(self) -> None:
        """Open the log."""
        try:
            # A local log: opening it does not block the loop long enough to matter.
            self._file = open(self.path, "rb")  # noqa: ASYNC230, SIM115
        except OSError as exc:
            raise SourceError(self.name, f"cannot open: {exc.strerror or exc}") from exc
        self._tod = None
        self._pending = None
        self._next_at = time.monotonic()

    async def read(self) -> bytes:
        """The next line of the log, paced; ``b""`` at the end.

        Cancelling a read (the service's quiet-line timeout) loses nothing: the line waiting
        for its time is kept for the next call.
        """
        if self._file is None:
            raise SourceError(self.name, "not open")
        if self._pending is None:
            try:
                line = self._file.readline() if self.rate > 0 else self._file.read(_READ_SIZE)
            except OSError as exc:
                raise SourceError(self.name, f"read failed: {exc}") from exc
            if self.rate > 0:
                m = _TIME_FIELD.match(line)
                if m is not None and m.group(1) != self._tod:
                    if self._tod is not None:
                        self._next_at += 1.0 / self.rate
                    self._tod = m.group(1)
            self._pending = line
        delay = self._next_at - time.monotonic()
        if self.rate > 0 and delay > 0:
            await asyncio.sleep(delay)
        line, self._pending = self._pending, None
        return line

    def close(self) -> None:
        """Close the log."""
        if self._file is not None:
            self._file.close()
            self._file = None


def make_source(spec: SourceSpec, *, bauds: Sequence[int], init: Sequence[str]) -> ByteSource:
    """The byte source for a parsed URL (``gpsd://`` is not a byte source: see the service)."""
    if spec.kind == "serial":
        return SerialSource(spec.path, spec.baud, bauds=bauds, init=init)
    if spec.kind == "socket":
        return SocketSource(spec.host, spec.port)
    if spec.kind == "file":
        return FileSource(spec.path, spec.rate)
    raise ValueError(f"{redact_url(spec.url)}: not a byte source")
