"""A serial port (USB CDC ``/dev/ttyACM0``, a UART, a pty) read without a thread.

The port is non-blocking and the event loop watches its file descriptor. With no fixed baud
rate the source tries ``bauds`` in turn (the last rate that worked first) until the domain's
probe (``base.BaudProbe``: NMEA checksums for GNSS, anything else for another protocol)
recognises what arrives, within ``probe_window`` seconds per rate; ``init`` bytes are written
once the rate is known (a receiver profile). Failures raise ``SourceError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import serial

from edge_agent.drivers.base import BaudProbe, NoSignalError, SourceError

__all__ = ["SerialSource", "detect_baud"]

log = logging.getLogger(__name__)


class SerialSource:
    """A serial port as a ``ByteSource``, with baud rate autodetection (module docstring)."""

    def __init__(
        self,
        path: str,
        baud: int | None = None,
        *,
        bauds: Sequence[int] = (9600,),
        probe: Callable[[], BaudProbe] | None = None,
        init: Sequence[bytes] = (),
        probe_window: float = 2.5,
    ) -> None:
        if baud is None and probe is None:
            raise ValueError(f"serial:{path}: no baud rate and no probe to detect one")
        if not bauds:
            raise ValueError(f"serial:{path}: no baud rate to try")
        self.name = f"serial:{path}"
        self.path = path
        self.baud = baud
        self.bauds = list(bauds)
        self.probe = probe
        self.init = list(init)
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
            if self.baud is None and self.probe is not None:
                self.detected_baud = await detect_baud(
                    self, self.bauds, self.probe, window=self.probe_window, last=self.detected_baud
                )
            for data in self.init:
                ser.write(data)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise SourceError(self.name, f"setting up the port failed: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def set_baud(self, baud: int) -> None:
        """Switch the open port to ``baud`` and drop what arrived at the old rate."""
        ser = self._ser
        if ser is None:
            raise SourceError(self.name, "not open")
        ser.baudrate = baud
        ser.reset_input_buffer()

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

    def write(self, data: bytes) -> None:
        """Write to the port (a command to the device)."""
        ser = self._ser
        if ser is None:
            raise SourceError(self.name, "not open")
        try:
            ser.write(data)
        except (serial.SerialException, OSError) as exc:
            raise SourceError(self.name, f"write failed: {exc}") from exc

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


async def detect_baud(
    port: SerialSource,
    bauds: Sequence[int],
    probe: Callable[[], BaudProbe],
    *,
    window: float,
    last: int | None = None,
) -> int:
    """The first of ``bauds`` (``last`` tried first) whose data ``probe`` recognises.

    Each rate gets ``window`` seconds, less if the probe decides sooner; raises
    ``NoSignalError`` naming the rates tried when none carried recognisable data.
    """
    order = list(bauds)
    if last in order:
        order.remove(last)
        order.insert(0, last)
    loop = asyncio.get_running_loop()
    for baud in order:
        port.set_baud(baud)
        verdict_of = probe()
        deadline = loop.time() + window
        verdict: bool | None = None
        while verdict is None:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):  # not wait_for: it can swallow a cancel (3.11)
                    data = await port.read()
            except TimeoutError:
                break
            verdict = verdict_of.feed(data)
        if verdict:
            if last != baud:
                log.info("%s: device found at %d baud", port.name, baud)
            return baud
    tried = ", ".join(str(b) for b in order)
    raise NoSignalError(port.name, f"no recognisable data at {tried} baud")
