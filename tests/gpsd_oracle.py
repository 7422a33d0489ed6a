"""The real gpsd as an oracle: NMEA logs in, gpsd's own JSON reports out.

``GpsdOracle`` starts one private gpsd (``-N -n -b``: foreground, devices opened at once,
read-only) on a free port with its own control socket, then feeds it logs the way gpsd's
``gpsfake`` does for its regression files (the ``.chk`` of ``tests/fixtures/gpsd-nmea``): each
log is sent as fast as gpsd reads it and ends with the ``# EOF`` comment that gpsfake appends in
one-shot mode (gpsd closes the device when it reads it). A watcher client collects the reports
of every device; a log is done when gpsd announces its device deactivated, so no test waits on
a clock.

The device is a ``tcp://`` source that gpsd is told to add over its control socket: gpsd
connects to a socket of ours. gpsfake uses a pty instead, but gpsd flushes a serial line while
it sets it up, so the first sentences of a log written as soon as the pty is open are lost
(gpsfake sleeps 1.4 s before feeding for that reason); a connection has no such window and is
synchronous (accepted = gpsd reads from the first byte). gpsd parses the bytes the same way:
the 20 corpus logs give exactly their ``.chk`` fixes through it. Each log gets a fresh gpsd (it
carries state from one device to the next); several run side by side.

``gpsd_fixes(reports)`` applies the corpus test's rule: a TPV with a ``time`` and ``mode`` >= 2
is a fix.

gpsd is a Debian package (``gpsd``; scripts/setup installs it). When it is missing,
``require_gpsd()`` raises ``GpsdMissing`` with that instruction: the tests that need it fail,
they do not skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EOF_MARK",
    "GpsdMissing",
    "GpsdOracle",
    "OracleError",
    "as_gpsfake_plays",
    "gpsd_fixes",
    "require_gpsd",
    "run_gpsd",
]

# gpsfake's one-shot end of log: gpsd's lexer takes it as a comment and deactivates the device.
EOF_MARK = b"# EOF\n"
_GPSD_CANDIDATES = ("/usr/sbin/gpsd", "/usr/local/sbin/gpsd")
_INSTALL_HINT = (
    "gpsd is not installed: the gpsd oracle tests need Debian's gpsd (3.22). "
    "Run scripts/setup, or: apt-get install --no-install-recommends gpsd gpsd-clients"
)


class GpsdMissing(RuntimeError):
    """gpsd is not installed on this machine."""


class OracleError(RuntimeError):
    """gpsd did not behave as the oracle needs (died, did not open or close a device)."""


def require_gpsd() -> str:
    """The path of the gpsd binary, or ``GpsdMissing`` saying how to install it."""
    found = shutil.which("gpsd")
    if found:
        return found
    for cand in _GPSD_CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    raise GpsdMissing(_INSTALL_HINT)


def as_gpsfake_plays(log: bytes) -> bytes:
    """The log as gpsfake hands it to gpsd: comment lines dropped, except ``# Date:`` ones
    (gpsd takes those as the date of a log whose sentences carry none)."""
    lines = log.splitlines(keepends=True)
    return b"".join(ln for ln in lines if not ln.startswith(b"#") or b"Date:" in ln)


def gpsd_fixes(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """gpsd's fixes among its reports, in order: TPV with a ``time``, ``mode`` >= 2 and a
    position (gpsd also reports a 2D/3D mode from a GSA in a cycle that brought no position
    yet: there is nothing to compare with a fix then)."""
    return [
        r
        for r in reports
        if r.get("class") == "TPV"
        and "time" in r
        and isinstance(r.get("mode"), int)
        and r["mode"] >= 2
        and "lat" in r
        and "lon" in r
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class _Device:
    path: str
    reports: list[dict[str, Any]] = field(default_factory=list)
    opened: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)


class GpsdOracle:
    """One private gpsd and a watcher on it (module docstring). Use as a context manager."""

    def __init__(self, workdir: Path, *, timeout: float = 30.0, echo: bool = False) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.port = 0
        self.control = workdir / "gpsd.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._devices: dict[str, _Device] = {}
        self._lock = threading.Lock()
        self._stderr = workdir / "gpsd.stderr"
        self._used = False
        # echo: gpsd also sends each sentence it read before the reports it caused (as in a
        # .chk); they come in the reports as {"class": "NMEA", "sentence": ...}.
        self.echo = echo
        self._watching = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> GpsdOracle:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start gpsd with no device and connect the watcher."""
        gpsd = require_gpsd()
        self.port = _free_port()
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        err = self._stderr.open("wb")
        # -N foreground, -n open devices without waiting for a client, -b never write to a
        # device (no probing: what gpsd reports comes from the log alone), -G not needed.
        self._proc = subprocess.Popen(
            [gpsd, "-N", "-n", "-b", "-S", str(self.port), "-F", str(self.control)],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
        err.close()
        deadline = time.monotonic() + self.timeout
        while True:
            self._check_alive()
            if self.control.exists():
                try:
                    self._watch = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise OracleError(f"gpsd did not start listening on port {self.port}")
            time.sleep(0.02)
        self._watch.settimeout(None)
        nmea = b',"nmea":true' if self.echo else b""
        self._watch.sendall(b'?WATCH={"enable":true,"json":true' + nmea + b"};\n")
        self._reader = threading.Thread(target=self._read_reports, daemon=True)
        self._reader.start()
        # Only once gpsd confirmed the watch does it report every device to us.
        self._wait(self._watching, "gpsd did not confirm the watch")

    def stop(self) -> None:
        """Stop gpsd and close every pty."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._watch is not None:
            with contextlib.suppress(OSError):
                self._watch.shutdown(socket.SHUT_RDWR)
            self._watch.close()
            self._watch = None
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        self._devices.clear()

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            tail = self._stderr.read_text(errors="replace")[-2000:] if self._stderr.exists() else ""
            raise OracleError(
                f"gpsd is not running (exit {self._proc and self._proc.returncode}): {tail}"
            )

    # -- the watcher ---------------------------------------------------------------------

    def _read_reports(self) -> None:
        assert self._watch is not None
        buf = b""
        while True:
            try:
                chunk = self._watch.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"$"):
                    self._echoed(line.decode(errors="replace").strip())
                    continue
                try:
                    report = json.loads(line)
                except ValueError:
                    continue
                if isinstance(report, dict):
                    self._dispatch(report)

    def _echoed(self, line: str) -> None:
        # A raw sentence names no device: with one device per gpsd, it is that one's.
        with self._lock:
            devs = list(self._devices.values())
        if len(devs) == 1:
            devs[0].reports.append({"class": "NMEA", "sentence": line})

    def _dispatch(self, report: dict[str, Any]) -> None:
        cls = report.get("class")
        if cls == "WATCH":
            self._watching.set()
            return
        if cls == "DEVICES":
            for d in report.get("devices", []):
                if isinstance(d, dict):
                    self._dispatch({"class": "DEVICE", **d})
            return
        path = report.get("path") if cls == "DEVICE" else report.get("device")
        with self._lock:
            dev = self._devices.get(path) if isinstance(path, str) else None
        if dev is None:
            return
        if cls == "DEVICE":
            # gpsd announces an open device with its activation time, a closed one with 0.
            if report.get("activated") in (0, None) and "activated" in report:
                dev.closed.set()
            elif report.get("activated"):
                dev.opened.set()
            return
        dev.reports.append(report)

    # -- devices -------------------------------------------------------------------------

    def _control(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(str(self.control))
            s.sendall(command.encode() + b"\r\n\x00")
            return s.recv(64).decode(errors="replace").strip()

    def run(self, log: bytes) -> list[dict[str, Any]]:
        """Feed one log to this gpsd and return its reports (call once per gpsd, see
        ``run_gpsd``)."""
        if self._used:
            raise OracleError("one log per gpsd: a second log would start from the first's state")
        self._used = True
        with socket.create_server(("127.0.0.1", 0)) as ls:
            ls.settimeout(self.timeout)
            dev = _Device(f"tcp://127.0.0.1:{ls.getsockname()[1]}")
            with self._lock:
                self._devices[dev.path] = dev
            answer = self._control(f"+{dev.path}")
            if answer != "OK":
                raise OracleError(f"gpsd refused device {dev.path}: {answer!r}")
            # gpsd connected: from here on every byte sent is read (nothing is flushed as on a
            # serial line being set up), so the first sentence counts.
            try:
                conn, _ = ls.accept()
            except TimeoutError as exc:
                raise OracleError(f"gpsd did not connect to {dev.path}") from exc
        with conn:
            writer = threading.Thread(target=self._feed, args=(conn, log + EOF_MARK), daemon=True)
            writer.start()
            self._wait(dev.closed, f"gpsd did not reach the end of the log on {dev.path}")
            writer.join(self.timeout)
        return dev.reports

    @staticmethod
    def _feed(conn: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(data)

    def _wait(self, event: threading.Event, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not event.wait(0.1):
            self._check_alive()
            if time.monotonic() > deadline:
                raise OracleError(what)


def run_gpsd(
    logs: Sequence[bytes], workdir: Path, *, parallel: int = 4, echo: bool = False
) -> list[list[dict[str, Any]]]:
    """gpsd's reports for each log, in order: a fresh gpsd per log, ``parallel`` at a time.

    A fresh daemon each time because gpsd keeps state across devices (a second log fed to the
    same gpsd lost its first fix); starting one takes well under 0.1 s.
    """

    def one(i: int) -> list[dict[str, Any]]:
        d = workdir / f"gpsd-{i}"
        d.mkdir(parents=True, exist_ok=True)
        with GpsdOracle(d, echo=echo) as oracle:
            return oracle.run(logs[i])

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, range(len(logs))))
