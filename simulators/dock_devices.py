"""A dock's devices on TCP sockets, for a live station agent: a handheld scanner and a distance
sensor over the bay, the way ser2net would serve real ones.

Each device is a TCP server the agent connects to (``socket://127.0.0.1:PORT`` in its station
configuration). The scanner sends each code followed by its terminator (``\\r``); the distance
sensor streams Benewake TFmini frames (9 bytes: ``0x59 0x59``, distance in cm little-endian,
signal strength, temperature, checksum: the low byte of the sum of the first eight, as the
TFmini datasheet gives them) at ``rate`` Hz, reporting ``distance_m`` as it changes: a van in the
bay is about a metre away, an empty bay several.

Used by the demo, the station's end-to-end test and the station benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from simulators.broker import free_port

__all__ = ["DeviceServer", "DockDevices", "tfmini_frame"]

OCCUPIED_M = 1.2
FREE_M = 4.5


def tfmini_frame(distance_m: float, strength: int = 1200, temp_c: float = 35.0) -> bytes:
    """One TFmini frame: distance in cm, strength, temperature (raw = (temp+256)*8), checksum."""
    cm = max(0, min(0xFFFF, round(distance_m * 100)))
    raw_temp = max(0, min(0xFFFF, round((temp_c + 256) * 8)))
    body = b"\x59\x59" + struct.pack("<HHH", cm, strength, raw_temp)
    return body + bytes([sum(body) & 0xFF])


class DeviceServer:
    """A TCP server that sends the same bytes to every connected client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.connected = asyncio.Event()

    @property
    def url(self) -> str:
        """The agent's source URL for this device."""
        return f"socket://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen."""
        self._server = await asyncio.start_server(self._on_client, self.host, self.port)

    async def _on_client(self, _r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connected.set()

    async def send(self, data: bytes) -> None:
        """Send ``data`` to every client; a client gone is forgotten."""
        for writer in list(self._writers):
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                self._writers.discard(writer)
                writer.close()

    async def close(self) -> None:
        """Stop listening and drop the clients."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


class DockDevices:
    """One dock: a scanner and a TFmini over the bay (module docstring)."""

    def __init__(self, dock: str, *, rate: float = 10.0, suffix: bytes = b"\r") -> None:
        self.dock = dock
        self.scanner = DeviceServer()
        self.distance = DeviceServer()
        self.distance_m = FREE_M
        self.rate = rate
        self.suffix = suffix
        self._stream: asyncio.Task[None] | None = None

    def station_dock(self) -> dict[str, object]:
        """This dock in an agent's ``station.docks`` configuration."""
        return {
            "id": self.dock,
            "bay": {"source": self.distance.url, "protocol": "tfmini"},
            "scanners": [{"id": f"{self.dock}-hand", "source": self.scanner.url}],
        }

    async def start(self) -> None:
        """Listen, and stream distances from now on."""
        await self.scanner.start()
        await self.distance.start()
        self._stream = asyncio.create_task(self._stream_distance(), name=f"tfmini-{self.dock}")

    async def wait_connected(self) -> None:
        """Until the agent has connected to both devices (wrap in ``asyncio.timeout``)."""
        await self.scanner.connected.wait()
        await self.distance.connected.wait()

    async def _stream_distance(self) -> None:
        while True:
            await self.distance.send(tfmini_frame(self.distance_m))
            await asyncio.sleep(1.0 / self.rate)

    async def scan(self, text: str) -> None:
        """The scanner reads ``text``."""
        await self.scanner.send(text.encode() + self.suffix)

    def arrive(self) -> None:
        """A van backs into the bay."""
        self.distance_m = OCCUPIED_M

    def leave(self) -> None:
        """The van pulls out."""
        self.distance_m = FREE_M

    async def close(self) -> None:
        """Stop streaming and close both servers."""
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream
        await self.scanner.close()
        await self.distance.close()
