"""A recorded log replayed as a ``ByteSource``, at ``rate`` epochs per second (0: at once).

What an epoch is belongs to the domain: ``epoch_key(line)`` returns a key that changes at each
epoch boundary (the time field of an NMEA sentence) or None for lines that do not mark one. At
``rate=1`` a 1 Hz log plays in real time, at ``rate=10`` ten times faster; without a key every
line is an epoch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import IO

from edge_agent.drivers.base import SourceError

__all__ = ["FileSource"]

_READ_SIZE = 4096


class FileSource:
    """A log file read line by line and paced, or in chunks at full speed (module docstring)."""

    def __init__(
        self,
        path: str,
        rate: float = 0.0,
        *,
        epoch_key: Callable[[bytes], bytes | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = f"file:{path}"
        self.path = path
        self.rate = rate
        self._epoch_key = epoch_key
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._key: bytes | None = None
        self._next_at = 0.0
        self._pending: bytes | None = None

    async def open(self) -> None:
        """Open the log."""
        try:
            # A local log: opening it does not block the loop long enough to matter.
            self._file = open(self.path, "rb")  # noqa: ASYNC230, SIM115
        except OSError as exc:
            raise SourceError(self.name, f"cannot open: {exc.strerror or exc}") from exc
        self._key = None
        self._pending = None
        self._next_at = self._clock()

    async def read(self) -> bytes:
        """The next line of the log, paced (or the next chunk at rate 0); ``b""`` at the end.

        Cancelling a read (a caller's quiet-line timeout) loses nothing: the line waiting for
        its time is kept for the next call.
        """
        if self._file is None:
            raise SourceError(self.name, "not open")
        if self._pending is None:
            try:
                line = self._file.readline() if self.rate > 0 else self._file.read(_READ_SIZE)
            except OSError as exc:
                raise SourceError(self.name, f"read failed: {exc}") from exc
            if self.rate > 0 and line:
                # Without a rule every line is an epoch of its own.
                key = self._epoch_key(line) if self._epoch_key is not None else line
                if key is not None and (key != self._key or self._epoch_key is None):
                    if self._key is not None:
                        self._next_at += 1.0 / self.rate
                    self._key = key
            self._pending = line
        delay = self._next_at - self._clock()
        if self.rate > 0 and delay > 0:
            await asyncio.sleep(delay)
        line, self._pending = self._pending, None
        return line

    def close(self) -> None:
        """Close the log."""
        if self._file is not None:
            self._file.close()
            self._file = None
