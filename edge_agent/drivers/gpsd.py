"""gpsd as a source (``gpsd://host:2947``): its JSON reports, one decoded object per read.

The source connects, asks gpsd to ``?WATCH`` in JSON and returns each report as a dict; what a
report means (a TPV is a fix) belongs to the GNSS domain. A line that is not a JSON object is
skipped and counted in ``malformed``; a line longer than ``max_line`` or a closed connection is
a ``SourceError`` (the supervisor reconnects).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edge_agent.drivers.base import SourceError

__all__ = ["WATCH_COMMAND", "GpsdSource"]

WATCH_COMMAND = b'?WATCH={"enable":true,"json":true};\n'
_MAX_LINE = 64 * 1024  # gpsd's longest reports (SKY with many satellites) are a few KiB


class GpsdSource:
    """A running gpsd's reports (module docstring)."""

    def __init__(
        self,
        host: str,
        port: int = 2947,
        *,
        connect_timeout: float = 5.0,
        max_line: int = _MAX_LINE,
    ) -> None:
        self.name = f"gpsd:{host}:{port}"
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_line = max_line
        self.malformed = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect and start watching."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            async with asyncio.timeout(self.connect_timeout):
                self._reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=self.max_line
                )
            self._writer = writer
            writer.write(WATCH_COMMAND)
            await writer.drain()
        except (OSError, TimeoutError) as exc:
            self.close()
            raise SourceError(self.name, f"cannot connect: {exc or 'timeout'}") from exc

    async def read(self) -> dict[str, Any]:
        """The next report as a JSON object."""
        if self._reader is None:
            raise SourceError(self.name, "not connected")
        while True:
            try:
                line = await self._reader.readline()
            except (OSError, ValueError) as exc:  # ValueError: a line over the limit
                raise SourceError(self.name, f"read failed: {exc}") from exc
            if not line:
                raise SourceError(self.name, "gpsd closed the connection")
            try:
                report = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                report = None
            if isinstance(report, dict):
                return report
            self.malformed += 1

    def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
