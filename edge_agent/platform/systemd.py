"""The service manager's side channels: ``sd_notify`` over ``$NOTIFY_SOCKET``, the watchdog's
interval from ``$WATCHDOG_USEC``/``$WATCHDOG_PID``, and whether stderr goes to the journal.

Plain socket code, no libsystemd: a notification is one datagram of ``KEY=VALUE`` lines sent to
the unix socket systemd names in ``$NOTIFY_SOCKET``, a path (``/run/systemd/notify``) or an
abstract address (``@name``: the ``@`` stands for the leading NUL byte). Without the variable
every call does nothing, so the same program runs under systemd, in a terminal and in tests.

Nothing here raises on a bad environment or a socket that refuses: the first failure is logged
once and the call answers False. A service is not stopped because its manager is not listening.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = [
    "JOURNAL_PRIORITY",
    "Notifier",
    "notify_address",
    "stderr_is_journal",
    "watchdog_interval",
]

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0
"""Longest wait for room in systemd's socket queue (a full queue would block the event loop)."""

MAX_STATUS_CHARS = 200
"""A ``STATUS=`` text is cut to this (``systemctl status`` shows one line)."""

JOURNAL_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
"""Python log levels as syslog priorities, for the ``<N>`` prefix journald reads on stderr."""


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address ``$NOTIFY_SOCKET`` names: a path, or ``@name`` as the abstract
    address ``b"\\0name"``; None when unset, empty or of a kind this code does not speak
    (``vsock:`` addresses of newer systemd)."""
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """The watchdog interval in seconds systemd asks this process for (``WatchdogSec=``), or
    None: ``$WATCHDOG_USEC`` unset or not a positive integer, or ``$WATCHDOG_PID`` naming another
    process (the variables were inherited from a parent)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer: no watchdog pings", usec[:40])
        return None
    if value <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            owner_pid = int(owner)
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not an integer: no watchdog pings", owner[:40])
            return None
        if owner_pid != (os.getpid() if pid is None else pid):
            return None
    return value / 1_000_000


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` (stderr) is the journal's stream: ``$JOURNAL_STREAM`` (``DEV:INODE``)
    names this very file, not one a parent had before redirecting our stderr elsewhere."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


class Notifier:
    """Sends notifications to the service manager; a no-op without ``$NOTIFY_SOCKET``.

    ``Notifier.from_env()`` reads the environment once; the methods answer whether the
    datagram was sent.
    """

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._failed = False  # log the first failure only: a van's journal is small

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier ``$NOTIFY_SOCKET`` asks for (a no-op when it is unset or unusable)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = notify_address(raw)
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket address: not notifying", raw[:80])
        return cls(address)

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to notify."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram (``send("READY=1", "STATUS=up")``)."""
        if self.address is None or not fields:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify the service manager at %r: %s", self.address, exc)
            return False
        if self._failed:
            self._failed = False
            log.info("notifying the service manager again")
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up is finished (``Type=notify`` units become active)."""
        return self.send("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: the service is shutting down by itself or on a signal."""
        return self.send("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive and making progress."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line that ``systemctl status`` shows."""
        return self.send(*_status(text))


def _status(text: str | None) -> list[str]:
    if text is None:
        return []
    # one line: a newline would start a field of its own
    return ["STATUS=" + " ".join(text.split())[:MAX_STATUS_CHARS]]
