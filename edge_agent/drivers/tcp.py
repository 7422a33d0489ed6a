"""Raw bytes over TCP (``socket://host:port``: simulators, ser2net, receivers with Wi-Fi)."""

from __future__ import annotations

import asyncio

from edge_agent.drivers.base import SourceError

__all__ = ["SocketSource"]

_READ_SIZE = 4096


class SocketSource:
    """A TCP connection as a ``ByteSource``; a closed connection is an error (the peer may
    come back), not an end."""

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
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # lands as the connection completes, and a stopping agent would go on reconnecting
            async with asyncio.timeout(self.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise SourceError(self.name, f"cannot connect: {exc or 'timeout'}") from exc

    async def read(self) -> bytes:
        """The next bytes (raises SourceError when the connection fails or closes)."""
        if self._reader is None:
            raise SourceError(self.name, "not connected")
        try:
            data = await self._reader.read(_READ_SIZE)
        except OSError as exc:
            raise SourceError(self.name, f"read failed: {exc}") from exc
        if not data:
            raise SourceError(self.name, "connection closed by the peer")
        return data

    async def readline(self) -> bytes:
        """The next line with its terminator (raises SourceError on a closed connection or a
        line longer than the stream's limit)."""
        if self._reader is None:
            raise SourceError(self.name, "not connected")
        try:
            line = await self._reader.readline()
        except (OSError, ValueError) as exc:
            raise SourceError(self.name, f"read failed: {exc}") from exc
        if not line:
            raise SourceError(self.name, "connection closed by the peer")
        return line

    async def write(self, data: bytes) -> None:
        """Send ``data`` (a command to the peer)."""
        if self._writer is None:
            raise SourceError(self.name, "not connected")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise SourceError(self.name, f"write failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
