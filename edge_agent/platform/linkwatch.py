"""Watch the host's network links, addresses and routes (Linux rtnetlink), to reconnect at once.

A van leaving a tunnel or a modem re-attaching brings a link up, an address or a default route
back: the kernel announces each on a ``NETLINK_ROUTE`` socket. A reconnect loop that waits out a
backoff meant for a broker restarting under a whole fleet would keep that van waiting; with this
it retries as soon as the network changed (``LinkWatch.changed`` is set), with a small jitter.

Nothing is parsed beyond the message type: any change of link, address or route is a reason to
try again, and the attempt itself tells whether the broker is reachable. Where netlink is not
available (not Linux, a sandbox without it) ``LinkWatch.start`` returns False and the reconnect
loop keeps its timers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

__all__ = ["LinkWatch", "route_changes"]

log = logging.getLogger(__name__)

# rtnetlink multicast groups (linux/rtnetlink.h): links, IPv4/IPv6 addresses and routes
_GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
# message types that mean the network changed: RTM_NEWLINK .. RTM_DELROUTE
_CHANGES = frozenset({16, 17, 20, 21, 24, 25})
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid


def route_changes(datagram: bytes) -> int:
    """How many link, address or route changes one netlink datagram announces (sans-IO)."""
    count = 0
    offset = 0
    while offset + _HEADER.size <= len(datagram):
        length, kind, _flags, _seq, _pid = _HEADER.unpack_from(datagram, offset)
        if length < _HEADER.size:
            break  # malformed: stop rather than loop
        if kind in _CHANGES:
            count += 1
        offset += (length + 3) & ~3  # messages are 4-byte aligned
    return count


class LinkWatch:
    """Sets ``changed`` whenever the host's links, addresses or routes change."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.changes = 0
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        """Subscribe on the running loop; False where netlink is not available."""
        family = getattr(socket, "AF_NETLINK", None)
        if family is None:
            return False
        try:
            sock = socket.socket(family, socket.SOCK_RAW, getattr(socket, "NETLINK_ROUTE", 0))
            sock.bind((0, _GROUPS))
            sock.setblocking(False)
        except OSError as exc:
            log.info("no link watch (netlink unavailable: %s): reconnects keep their timers", exc)
            return False
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        seen = 0
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                try:
                    seen += route_changes(self._sock.recv(65536))
                except OSError as exc:  # ENOBUFS: we missed some; that is a change too
                    if isinstance(exc, BlockingIOError | InterruptedError):
                        raise
                    seen += 1
                    break
        if seen:
            self.changes += seen
            self.changed.set()

    def close(self) -> None:
        """Stop watching."""
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
