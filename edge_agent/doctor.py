"""``edge-agent doctor``: the self-test a technician runs before leaving the van (DESIGN §10).

Every check gives one line ``STATUS  name  detail`` (``PASS``, ``FAIL``, ``WARN``, ``SKIP``) and,
when it is not a pass, what to do about it:

- ``config``: the file loads and validates (an invalid file is the only check that stops the
  rest, exit 2);
- ``clock``: the kernel's NTP state, as the agent asks it (``edge_agent.clock``);
- ``outbox-folder``: a temporary file written, fsynced and removed in the outbox's folder, timed
  (slow above ``FSYNC_WARN_S``: an SD card on its last legs);
- ``outbox-file``: the outbox opens and reads, **read-only** (never a write to a running agent's
  file): its schema, queue and watermark; ``PRAGMA integrity_check`` when no agent holds it;
- ``disk``: free space against what the outbox may grow to (``outbox.max_bytes`` plus its
  reserves);
- ``gnss``: sentences, a fix, satellites, and the fix's time against the system clock;
- ``camera:<id>``: opens, a frame arrives, the codes of a label held in view;
- ``scanner:<id>``: the device opens;
- ``dock:<id>:door|bay|signal``: GPIO lines can be requested, distance sensor frames parse;
- ``broker``: TCP connect, the TLS handshake with this device's identity, the MQTT CONNACK;
- ``hub``: the hubs the broker holds as online (retained ``lm/v1/_hub/+/state``) and this
  device's retained ack watermark;
- ``round-trip``: a ``device.report`` event ``{"doctor": "ping"}`` posted to the running agent's
  local API, and its seq covered by the hub's ack (``GET /v1/health``); skipped when no agent
  runs.

A device the running agent holds (a serial port, a V4L2 camera, GPIO lines) is not opened a
second time: its check reads the agent's own health of it instead (``/v1/health``), so the
doctor never steals bytes from a receiver or a line from a door. Shareable sources (gpsd, a
recorded file, a camera stream or folder) are opened either way.

Bounded everywhere: every check has its own timeout, blocking device calls run in daemon
threads, and the whole run ends within ``total`` (30 s by default); a check that raises is that
check's FAIL. The pure parts (verdicts from what was observed, the text and JSON output, the exit
code) are functions of their inputs, tested on their own.

``report(config, health=...)`` is the same run from inside the agent, for ``cmd/report``; its
result is the data of a ``device.report`` event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import secrets
import shutil
import sqlite3
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from edge_agent.platform.health import OK_STATES
from edge_agent.platform.redact import redact_text, redact_url

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.drivers.url import DeviceUrl
    from edge_agent.gnss.config import GnssConfig
    from edge_agent.platform.health import HealthRegistry
    from edge_agent.scan.config import CameraConfig, ScannerConfig
    from edge_agent.station.config import DistanceBayConfig, DockConfig

__all__ = [
    "FSYNC_WARN_S",
    "CameraSeen",
    "Check",
    "DistanceSeen",
    "GnssSeen",
    "Status",
    "add_parser",
    "camera_check",
    "clock_check",
    "disk_check",
    "distance_check",
    "exit_code",
    "fsync_check",
    "gnss_check",
    "gpio_failure",
    "health_check",
    "render_json",
    "render_text",
    "report",
    "run",
    "run_checks",
]

Status = Literal["PASS", "FAIL", "WARN", "SKIP"]
T = TypeVar("T")

FSYNC_WARN_S = 0.05
"""A write and fsync of a small file slower than this: the storage is slow (a worn SD card)."""
OFFSET_WARN_S = 2.0
"""GNSS time and the system clock further apart than this: one of them is wrong."""
CERT_WARN_DAYS = 30
"""A client certificate expiring sooner than this is a warning."""
TOTAL_S = 30.0
WAIT_S = 10.0
_PROBE_BYTES = 64 * 1024
_ENOUGH_FIXES = 3
_SETTLE_S = 1.5


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report; ``fix`` says what to do when it is not a pass."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        """The check as JSON-ready data (``--json``, the ``device.report`` event)."""
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def _pass(name: str, detail: str) -> Check:
    return Check(name, "PASS", detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "FAIL", detail, fix)


def _warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "WARN", detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "SKIP", detail)


# -- output and exit code (pure) --------------------------------------------------------------


def exit_code(checks: Sequence[Check]) -> int:
    """0 when no check failed (warnings and skips are fine), else 1."""
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def render_json(checks: Sequence[Check]) -> dict[str, Any]:
    """``{"ok": bool, "checks": [{"name", "status", "detail", "fix"}, ...]}``."""
    return {"ok": exit_code(checks) == 0, "checks": [c.as_dict() for c in checks]}


def render_text(checks: Sequence[Check]) -> str:
    """One line per check, ``STATUS  name  detail``, the fix indented under it, and a summary."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status}  {c.name.ljust(width)}  {c.detail}".rstrip())
        if c.fix and c.status != "PASS":
            lines.append(f"{'':4}  {'':{width}}  fix: {c.fix}")
    counts = Counter(c.status for c in checks)
    summary = ", ".join(f"{counts[s]} {s}" for s in ("FAIL", "WARN", "PASS", "SKIP") if counts[s])
    verdict = "ready" if exit_code(checks) == 0 else "NOT READY"
    lines.append(f"{verdict}: {summary or 'no checks'}")
    return "\n".join(lines) + "\n"


# -- verdicts from observations (pure) ----------------------------------------------------------


def clock_check(synced: bool | None, *, policy: str, has_gnss: bool, has_rtc: bool) -> Check:
    """The clock's verdict from the kernel's NTP state (``kernel_clock_synced``)."""
    name = "clock"
    ntp_fix = (
        "check time synchronisation (timedatectl timesync-status, or chronyc tracking) and that "
        "the network is up; NTP (UDP 123) must be allowed out"
    )
    if synced:
        return _pass(name, "synchronised (the kernel's NTP state)")
    if policy == "system":
        return _warn(
            name,
            "the kernel does not report the clock synchronised, but clock.policy: system trusts "
            "it: events are stamped as ntp time",
            ntp_fix,
        )
    if synced is None:
        return _warn(name, "the kernel's NTP state cannot be read (adjtimex)", ntp_fix)
    if has_gnss:
        return _warn(
            name,
            "not synchronised: events are stamped with GNSS time once the receiver has a fix",
            ntp_fix,
        )
    if has_rtc:
        return _warn(name, "not synchronised: events are stamped from the RTC (clock rtc)", ntp_fix)
    return _fail(
        name,
        "not synchronised, no GNSS and no RTC: events are stamped 'unsynced' and their times "
        "may be wrong",
        ntp_fix,
    )


def fsync_check(name: str, folder: Path, elapsed_s: float, *, as_user: str) -> Check:
    """The verdict on a write and fsync of a small file in ``folder`` that took ``elapsed_s``."""
    took = f"write + fsync of {_PROBE_BYTES // 1024} KiB in {elapsed_s * 1000:.1f} ms"
    if elapsed_s > FSYNC_WARN_S:
        return _warn(
            name,
            f"{folder} writable ({as_user}), but slow: {took} (over {FSYNC_WARN_S * 1000:.0f} ms)",
            "the storage is slow or worn: replace the SD card with an industrial (pSLC) one, or "
            "move the outbox to an SSD (outbox.path)",
        )
    return _pass(name, f"{folder} writable ({as_user}): {took}")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover (the loop returns)


def disk_check(
    free: int, *, outbox_bytes: int, max_bytes: int, reserve_bytes: int, disk_reserve: int
) -> Check:
    """Free space against what the outbox may still grow to.

    ``outbox_bytes`` is what its files take now (the database, its WAL and the spare file):
    the outbox may take ``max_bytes + reserve_bytes`` of events plus the spare file
    ``disk_reserve``; what it holds already is counted as room.
    """
    name = "disk"
    may_use = max_bytes + reserve_bytes + disk_reserve
    room = free + outbox_bytes
    detail = f"{_size(free)} free; the outbox may grow to {_size(may_use)}"
    fix = (
        "free space on the outbox's file system (old logs: journalctl --vacuum-size=100M), or "
        "lower outbox.max_bytes"
    )
    if free < disk_reserve + 1024 * 1024:
        return _fail(name, f"the disk is full: {detail}", fix)
    if room < may_use:
        return _warn(name, f"{detail}: a long time offline would fill the disk before the cap", fix)
    return _pass(name, detail)


@dataclass(slots=True)
class GnssSeen:
    """What a GNSS source gave within the wait."""

    source: str
    waited_s: float
    recorded: bool = False
    opened: bool = False
    error: str | None = None
    sentences: int = 0
    rejected: int = 0
    fixes: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    sats_used: int | None = None
    sats_in_view: dict[str, int] = field(default_factory=dict)
    hdop: float | None = None
    position: tuple[float, float] | None = None
    offset_s: float | None = None
    """System clock minus the fix's time, the smallest seen (delivery only adds delay)."""
    first_kept: float | None = None
    """When (monotonic) the first fix was kept."""

    def enough(self, now: float) -> bool:
        """Seen all a check needs: a few fixes over a while (what a port buffered before it was
        read is old: the time offset is the smallest of the later ones too) and the satellites
        in view, or long enough without them."""
        if self.kept < _ENOUGH_FIXES or self.first_kept is None:
            return False
        settled = now - self.first_kept
        return settled >= _SETTLE_S and (bool(self.sats_in_view) or settled >= 2 * _SETTLE_S)


def gnss_check(seen: GnssSeen) -> Check:
    """The verdict on a GNSS source from what it gave."""
    name = "gnss"
    src = seen.source
    device_fix = (
        "check gnss.source (ls -l /dev/serial/by-id/), the cable and the receiver's power; the "
        "service user needs the dialout group"
    )
    if seen.sentences == 0:
        if seen.error is not None:
            return _fail(name, f"{src}: {seen.error}", device_fix)
        what = "opened, but" if seen.opened else "not opened:"
        bad = f" ({seen.rejected} bad sentences or garbage bytes)" if seen.rejected else ""
        return _fail(
            name,
            f"{src}: {what} no NMEA sentence in {seen.waited_s:.0f} s{bad}",
            "check the baud rate (gnss.bauds, or ?baud= in the URL) and the wiring (the "
            "receiver's TX to the computer's RX); " + device_fix,
        )
    in_view = sum(seen.sats_in_view.values())
    view = f", {in_view} satellites in view" if seen.sats_in_view else ""
    if seen.kept == 0:
        dropped = f" ({seen.fixes} fixes dropped: {_reasons(seen.dropped)})" if seen.fixes else ""
        return _fail(
            name,
            f"{src}: {seen.sentences} sentences but no fix in {seen.waited_s:.0f} s{view}{dropped}",
            "give the antenna a clear view of the sky (not under a metal roof; check the antenna "
            "cable); a cold start can take a minute or more: run again with --wait 60",
        )
    used = f", {seen.sats_used} satellites used" if seen.sats_used is not None else ""
    hdop = f", hdop {seen.hdop:g}" if seen.hdop is not None else ""
    where = ""
    if seen.position is not None:
        where = f" at {seen.position[0]:.5f},{seen.position[1]:.5f}"
    detail = f"{src}: {seen.sentences} sentences, {seen.kept} fixes{where}{used}{view}{hdop}"
    if seen.recorded or seen.offset_s is None:
        return _pass(
            name, detail + ("; a recorded log: time not compared" if seen.recorded else "")
        )
    offset = seen.offset_s
    detail += f"; system clock {offset:+.2f} s from GNSS time"
    if abs(offset) > OFFSET_WARN_S:
        return _warn(
            name,
            detail,
            "if the clock check says synchronised, the receiver's time is wrong (a GPS week "
            "rollover: update its firmware); else the system clock is wrong: fix NTP (events are "
            "stamped with GNSS time meanwhile)",
        )
    return _pass(name, detail)


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


@dataclass(slots=True)
class CameraSeen:
    """What a camera gave within the wait."""

    source: str
    waited_s: float
    error: str | None = None
    opened: bool = False
    frames: int = 0
    size: tuple[int, int] | None = None
    codes: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False


def camera_check(name: str, seen: CameraSeen) -> Check:
    """The verdict on a camera: opened, frames, codes read."""
    src = redact_url(seen.source)
    if seen.error is not None and seen.frames == 0:
        fix = (
            "check the camera's source (v4l2-ctl --list-devices for /dev/video*, the stream's URL "
            "and credentials), its cable and power; the service user needs the video group"
        )
        return _fail(name, f"{src}: {redact_text(seen.error)}", fix)
    if seen.frames == 0:
        end = " (the file or folder has no frame)" if seen.ended else ""
        return _fail(
            name,
            f"{src}: opened, but no frame within {seen.waited_s:.0f} s{end}",
            "check the camera's power and cable; a stream may need its URL's path",
        )
    size = f" of {seen.size[0]}x{seen.size[1]}" if seen.size else ""
    base = f"{src}: {seen.frames} frames{size}"
    if not seen.codes:
        return _pass(name, f"{base}, no code in view (hold a test label to test decoding)")
    shown = ", ".join(f"{fmt} {text!r}" for fmt, text in seen.codes[:6])
    return _pass(name, f"{base}, read {shown}")


@dataclass(slots=True)
class DistanceSeen:
    """What a distance sensor gave within the wait."""

    source: str
    protocol: str
    waited_s: float
    error: str | None = None
    readings: list[float] = field(default_factory=list)
    frames: int = 0
    bad_frames: int = 0
    no_reading: int = 0
    garbage: int = 0


def distance_check(name: str, seen: DistanceSeen) -> Check:
    """The verdict on a bay's distance sensor: frames of its protocol parse."""
    src = f"{seen.source} ({seen.protocol})"
    if seen.error is not None and seen.frames == 0:
        return _fail(
            name,
            f"{src}: {seen.error}",
            "check the bay's source (the serial device, or the ser2net address), its cable and "
            "power; the service user needs the dialout group",
        )
    if seen.frames == 0:
        junk = f" ({seen.garbage} bytes of garbage, {seen.bad_frames} bad frames)"
        return _fail(
            name,
            f"{src}: no {seen.protocol} frame in {seen.waited_s:.0f} s"
            + (junk if seen.garbage or seen.bad_frames else ""),
            "check protocol (tfmini, a02yyuw, maxbotix) and baud rate (?baud= in the URL) match "
            "the sensor, and the wiring (sensor TX to the computer's RX)",
        )
    if not seen.readings:
        return _warn(
            name,
            f"{src}: {seen.frames} frames, none with a distance (blind: too close, too far or "
            "dazzled)",
            "point the sensor at the bay floor or a wall within its range, lens clean",
        )
    bad = f", {seen.bad_frames} bad frames" if seen.bad_frames else ""
    return _pass(name, f"{src}: {seen.frames} frames, distance {seen.readings[-1]:.2f} m{bad}")


def gpio_failure(name: str, spec: DeviceUrl, exc: BaseException) -> Check:
    """A GPIO line that could not be requested, said with its chip, line and the reason."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    code = cause.errno if isinstance(cause, OSError) else None
    where = f"line {spec.line} of {spec.path}"
    chips = "list the chips with gpiodetect and their lines with gpioinfo"
    if code == errno.ENOENT:
        return _fail(
            name,
            f"no GPIO chip {spec.path} (for {where}): {cause}",
            f"{chips}, and name the right chip in the URL",
        )
    if code in (errno.EACCES, errno.EPERM):
        return _fail(
            name,
            f"{where}: permission denied",
            f"the service user needs access to {spec.path} (the gpio group, or a udev rule)",
        )
    if code == errno.EBUSY:
        return _fail(
            name,
            f"{where}: taken by another program",
            "gpioinfo shows the line's consumer: stop it, or use another line",
        )
    if code in (errno.EINVAL, errno.ENODEV) or isinstance(cause, ValueError):
        return _fail(name, f"{where}: no such line ({cause})", f"{chips}; check line= in the URL")
    return _fail(name, f"{where}: {redact_text(str(exc))}", f"{chips}; check the URL")


def health_check(
    name: str,
    entry: Mapping[str, Any] | None,
    *,
    what: str,
    fix: str,
    describe: str = "",
    good: frozenset[str] = OK_STATES,
) -> Check:
    """A device the running agent holds, judged from the agent's own health of it: a state in
    ``good`` passes, another healthy one (``connected`` before a GNSS fix) is a warning."""
    held = "held by the running agent"
    if entry is None or "state" not in entry:
        return _warn(
            name,
            f"{held}, which reports nothing of {what} yet",
            "look again in a minute, or stop the agent and run doctor for a full device test",
        )
    state = str(entry["state"])
    since = entry.get("since_s")
    for_how_long = f" for {float(since):.0f} s" if isinstance(since, int | float) else ""
    skip = {"state", "since_s", "counters", "source"}
    facts = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in skip)
    detail = f"{held}: {state}{for_how_long}" + (f" ({facts})" if facts else "")
    if describe:
        detail = f"{describe}: {detail}"
    if state in good:
        return _pass(name, redact_text(detail))
    if state in OK_STATES:
        return _warn(
            name, redact_text(detail) + ": no verdict yet", "look again in a minute; " + fix
        )
    return _fail(name, redact_text(detail), fix)


# -- the run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    config: AgentConfig
    wait_s: float
    agent: Mapping[str, Any] | None
    """The running agent's health (``/v1/health``), or None when no agent runs."""
    in_agent: bool = False
    gpiod: ModuleType | None = None
    api_base: str | None = None
    api_headers: dict[str, str] = field(default_factory=dict)
    agent_note: str = ""
    """Why no agent was found (the round trip's SKIP), or what answered instead."""

    @property
    def held(self) -> bool:
        return self.agent is not None

    def component(self, name: str) -> Mapping[str, Any] | None:
        comps = (self.agent or {}).get("components")
        entry = comps.get(name) if isinstance(comps, Mapping) else None
        return entry if isinstance(entry, Mapping) else None


@dataclass(frozen=True, slots=True)
class _Job:
    names: tuple[str, ...]
    run: Callable[[], Awaitable[list[Check]]]
    timeout: float


async def _in_thread(fn: Callable[[], T], limit_s: float) -> T:
    """``fn()`` in a daemon thread, waited for at most ``limit_s`` seconds.

    A device call that hangs (a V4L2 open, an fsync on a dying card) keeps its thread, never
    the doctor: the thread is a daemon, so it does not hold the process at exit either (the
    default executor's threads would).
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(settle, False, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=work, name="doctor-io", daemon=True).start()
    async with asyncio.timeout(limit_s):
        return await fut


def _user() -> str:
    try:
        import pwd

        return f"as {pwd.getpwuid(os.geteuid()).pw_name}"
    except (ImportError, KeyError):
        return f"as uid {os.geteuid()}"


# -- outbox, disk, clock ------------------------------------------------------------------------


def _existing_parent(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_folder(folder: Path) -> float:
    """Write, fsync and remove a temporary file in ``folder``; the seconds it took."""
    probe = folder / f".doctor-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    data = os.urandom(_PROBE_BYTES)
    t0 = time.perf_counter()
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        elapsed = time.perf_counter() - t0
    finally:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()
    return elapsed


async def _check_outbox_folder(ctx: _Context) -> list[Check]:
    name = "outbox-folder"
    folder = ctx.config.outbox.path.parent
    user = _user()
    if not folder.is_dir():
        parent = _existing_parent(folder)
        if folder.exists():
            return [_fail(name, f"{folder} is not a folder", "fix outbox.path")]
        if os.access(parent, os.W_OK | os.X_OK):
            return [
                _warn(
                    name,
                    f"{folder} does not exist yet; {parent} is writable ({user}): the agent "
                    "makes it at its first start",
                    "start the agent once (systemctl start edge-agent@DEVICE) and run doctor again",
                )
            ]
        return [
            _fail(
                name,
                f"{folder} does not exist and {parent} is not writable ({user})",
                f"create it for the service user: install -d -m 0700 -o edge-agent {folder}",
            )
        ]
    try:
        elapsed = await _in_thread(lambda: _probe_folder(folder), 10.0)
    except TimeoutError:
        return [
            _fail(
                name,
                f"{folder}: a write and fsync of {_PROBE_BYTES // 1024} KiB did not finish "
                "within 10 s",
                "the storage hangs: check dmesg for I/O errors, replace the SD card",
            )
        ]
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        fixes = {
            errno.EACCES: f"give the service user the folder: chown edge-agent {folder}; "
            "chmod 0700",
            errno.EPERM: f"give the service user the folder: chown edge-agent {folder}",
            errno.EROFS: "the file system is read-only (remounted after errors? check dmesg); "
            "fsck it and remount read-write",
            errno.ENOSPC: "the disk is full: free space",
            errno.EDQUOT: "the user's quota is used up: free space or raise the quota",
        }
        fix = fixes.get(exc.errno or 0, "check dmesg for I/O errors")
        return [_fail(name, f"{folder} is not writable ({user}): {reason}", fix)]
    return [fsync_check(name, folder, elapsed, as_user=user)]


def _read_outbox(path: Path, *, held: bool, deadline_s: float) -> dict[str, Any]:
    """Facts of the outbox file, opened read-only; integrity checked unless an agent holds it.

    A file closed cleanly (no ``-wal`` beside it) is opened ``immutable``: SQLite then makes no
    ``-wal``/``-shm`` files either. Otherwise ``mode=ro``, which reads through the WAL.
    """
    wal = Path(f"{path}-wal")
    mode = "ro" if held or wal.exists() else "ro&immutable=1"
    con = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=2.0)
    try:
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        facts: dict[str, Any] = {"version": version}
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            facts["meta"] = {str(k): v for k, v in con.execute("SELECT key, value FROM meta")}
        if held:
            return facts
        end = time.monotonic() + deadline_s
        stopped = [False]

        def past_deadline() -> int:
            if time.monotonic() > end:
                stopped[0] = True
                return 1
            return 0

        con.set_progress_handler(past_deadline, 10_000)
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check(5)").fetchall()]
            facts["integrity"] = rows
        except sqlite3.OperationalError:
            if not stopped[0]:
                raise
            facts["integrity"] = None  # interrupted at the deadline
        return facts
    finally:
        con.close()


async def _check_outbox_file(ctx: _Context) -> list[Check]:
    from edge_agent.outbox import SCHEMA_VERSION

    name = "outbox-file"
    path = ctx.config.outbox.path
    if not path.exists():
        return [_pass(name, f"{path} not created yet (the agent makes it at its first start)")]
    size = path.stat().st_size
    deadline = min(10.0, ctx.wait_s)
    try:
        facts = await _in_thread(
            lambda: _read_outbox(path, held=ctx.held, deadline_s=deadline), deadline + 5.0
        )
    except TimeoutError:
        return [
            _fail(
                name, f"{path}: no answer within {deadline + 5:.0f} s", "check dmesg for I/O errors"
            )
        ]
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return [
                _warn(
                    name,
                    f"{path}: locked by another process: {exc}",
                    "run doctor again; stop the agent for a full check",
                )
            ]
        return [_damaged(name, path, str(exc))]
    except OSError as exc:
        return [
            _fail(
                name,
                f"{path}: cannot be read ({_user()}): {exc}",
                "run doctor as the service user (sudo -u edge-agent edge-agent doctor ...) or "
                "as root",
            )
        ]
    version = int(facts["version"])
    if version > SCHEMA_VERSION:
        return [
            _fail(
                name,
                f"{path}: written by a newer agent (schema {version}, this one knows "
                f"{SCHEMA_VERSION})",
                "install the newer edge-agent again; the agent refuses the file and never "
                "touches it",
            )
        ]
    meta = facts.get("meta", {})
    queue = ""
    if meta:
        depth = meta.get("depth")
        queue = (
            f"; queued: {depth if depth is not None else '?'} events, "
            f"{_size(int(meta.get('bytes', 0) or 0))}; last seq "
            f"{int(meta.get('next_seq', 1) or 1) - 1}, acked {meta.get('acked', 0)}"
        )
    base = f"{path} ({_size(size)}, schema {version}{queue})"
    if ctx.held:
        return [_pass(name, f"{base} readable; held by the running agent (integrity not checked)")]
    integrity = facts.get("integrity")
    if integrity is None:
        return [
            _warn(
                name,
                f"{base}: the integrity check did not finish within {deadline:.0f} s",
                "nothing to do by hand: the agent checks a large file in the background",
            )
        ]
    if integrity != ["ok"]:
        return [_damaged(name, path, "; ".join(map(str, integrity[:3])))]
    return [_pass(name, f"{base}: integrity ok")]


def _damaged(name: str, path: Path, why: str) -> Check:
    return _fail(
        name,
        f"{path} is damaged: {why}",
        "start the agent: it moves the file aside (outbox.db.corrupt-<time>) and starts a fresh "
        "one by itself, its seqs continuing; copy the moved file off the device for analysis",
    )


def _outbox_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm", ".reserve"):
        with contextlib.suppress(OSError):
            total += Path(f"{path}{suffix}").stat().st_size
    return total


async def _check_disk(ctx: _Context) -> list[Check]:
    ob = ctx.config.outbox
    usage = shutil.disk_usage(_existing_parent(ob.path.parent))
    return [
        disk_check(
            usage.free,
            outbox_bytes=_outbox_bytes(ob.path),
            max_bytes=ob.max_bytes,
            reserve_bytes=ob.effective_reserve,
            disk_reserve=ob.disk_reserve,
        )
    ]


def _clock_now(ctx: _Context) -> Check:
    from edge_agent.clock import kernel_clock_synced

    return clock_check(
        kernel_clock_synced(),
        policy=ctx.config.clock.policy,
        has_gnss=ctx.config.gnss is not None,
        has_rtc=Path("/dev/rtc0").exists(),  # as the agent's Clock decides it
    )


async def _check_clock(ctx: _Context) -> list[Check]:
    return [_clock_now(ctx)]


# -- GNSS ---------------------------------------------------------------------------------------

_SHARED_KINDS = frozenset({"gpsd", "file"})
"""Sources a second reader may open while the agent reads them (gpsd multiplexes; a file)."""


async def _check_gnss(ctx: _Context) -> list[Check]:
    cfg = ctx.config.gnss
    assert cfg is not None
    spec = cfg.spec
    if ctx.held and spec.kind not in _SHARED_KINDS:
        return [
            health_check(
                "gnss",
                ctx.component("gnss"),
                what="the receiver",
                fix="see the agent's log (journalctl -u edge-agent@DEVICE); stop the agent and "
                "run doctor for a full receiver test",
                describe=spec.describe(),
                good=frozenset({"ok"}),  # connected is not yet a fix
            )
        ]
    seen = GnssSeen(source=spec.describe(), waited_s=ctx.wait_s, recorded=spec.kind == "file")
    try:
        await _observe_gnss(cfg, seen, ctx.wait_s)
    except TimeoutError:
        pass  # what was seen until then is the answer
    except Exception as exc:
        seen.error = redact_text(str(exc) or type(exc).__name__)
    return [gnss_check(seen)]


async def _observe_gnss(cfg: GnssConfig, seen: GnssSeen, wait_s: float) -> None:
    from edge_agent.drivers.gpsd import GpsdSource
    from edge_agent.gnss.pipeline import GnssPipeline, Outcome
    from edge_agent.gnss.service import make_source

    spec = cfg.spec
    pipeline = GnssPipeline(
        cfg.filter,
        cfg.report,
        max_sentence=cfg.max_sentence,
        require_checksum=cfg.require_checksum,
        comments=spec.kind == "file",
    )  # no wall clock: a fix far from the system clock is reported, not dropped

    def take(outcome: Outcome, now: float) -> None:
        seen.fixes += 1
        if outcome.dropped is not None:
            seen.dropped[outcome.dropped] += 1
            return
        fix = outcome.fix
        seen.kept += 1
        if seen.first_kept is None:
            seen.first_kept = time.monotonic()
        seen.sats_used = fix.sats if fix.sats is not None else seen.sats_used
        seen.hdop = fix.hdop if fix.hdop is not None else seen.hdop
        seen.position = (fix.lat, fix.lon)
        offset = now - fix.time.timestamp()
        if seen.offset_s is None or offset < seen.offset_s:
            seen.offset_s = offset

    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    async with asyncio.timeout(wait_s):
        if spec.kind == "gpsd":
            gpsd = GpsdSource(spec.host, spec.port)
            await gpsd.open()
            seen.opened = True
            try:
                while not seen.enough(time.monotonic()):
                    report = await gpsd.read()
                    seen.sentences += 1
                    outcome = pipeline.push_report(report)
                    if outcome is not None:
                        take(outcome, time.time())
            finally:
                gpsd.close()
            return
        source = make_source(spec, cfg)
        await source.open()
        seen.opened = True
        try:
            while not seen.enough(time.monotonic()):
                try:
                    data = await asyncio.wait_for(
                        source.read(), max(0.01, min(0.5, end - loop.time()))
                    )
                except TimeoutError:
                    data = None
                now = time.time()
                if data == b"":
                    for outcome in pipeline.end():
                        take(outcome, now)
                    break
                if data is None:
                    for outcome in pipeline.flush():
                        take(outcome, now)
                    continue
                for sentence in pipeline.parser.feed(data):
                    if sentence.kind == "GSV" and len(sentence.fields) > 3:
                        count = sentence.fields[3]
                        if count.isdigit():
                            seen.sats_in_view[sentence.talker] = int(count)
                    for fix in pipeline.assembler.push(sentence):
                        take(pipeline.push_fix(fix), now)
                stats = pipeline.parser.stats
                seen.sentences = stats.sentences
                seen.rejected = sum(stats.as_dict().values()) - stats.sentences
        finally:
            source.close()
            stats = pipeline.parser.stats
            seen.sentences = stats.sentences
            seen.rejected = sum(stats.as_dict().values()) - stats.sentences


# -- cameras and scanners -----------------------------------------------------------------------


def _camera_is_device(source: str) -> bool:
    return source.isdigit() or source.startswith("/dev/")


def _watch_camera(cam: CameraConfig, seen: CameraSeen, stop: threading.Event, every: bool) -> None:
    """Open a camera, read frames until one shows codes, the source ends or ``stop`` is set."""
    from edge_agent.scan.camera import CameraError, open_source
    from edge_agent.scan.engine import DecodeEngine

    try:
        source = open_source(cam.source)
    except CameraError as exc:
        seen.error = str(exc)
        return
    seen.opened = True
    engine = DecodeEngine(budget_s=0.25)
    try:
        while not stop.is_set():
            try:
                frame = source.read()
            except CameraError as exc:
                seen.error = str(exc)
                return
            if frame is None:
                seen.ended = True
                return
            seen.frames += 1
            seen.size = (int(frame.shape[1]), int(frame.shape[0]))
            result = engine.decode_all(frame) if every else engine.decode(frame)
            if result.codes:
                seen.codes = sorted({(c.format, c.text) for c in result.codes})
                return
    finally:
        source.close()


async def _check_camera(ctx: _Context, name: str, cam: CameraConfig, every: bool) -> list[Check]:
    if ctx.held and _camera_is_device(cam.source):
        return [
            health_check(
                name,
                ctx.component(f"scan:{cam.id}"),
                what="the camera",
                fix="check the camera's cable and power; stop the agent and run doctor for a "
                "full camera test",
                describe=cam.source,
            )
        ]
    wait = min(ctx.wait_s, 8.0)
    seen = CameraSeen(source=cam.source, waited_s=wait)
    stop = threading.Event()
    try:
        await _in_thread(lambda: _watch_camera(cam, seen, stop, every), wait)
    except TimeoutError:
        stop.set()  # the frame loop ends by itself; an open that hangs keeps only its thread
    return [camera_check(name, seen)]


async def _check_scanner(ctx: _Context, name: str, cfg: ScannerConfig) -> list[Check]:
    from edge_agent.drivers.base import SourceError
    from edge_agent.drivers.keyboard import KeyboardSource
    from edge_agent.drivers.sources import make_byte_source
    from edge_agent.scan.scanners import scanner_url

    spec = scanner_url(cfg)
    if ctx.held:
        return [
            health_check(
                name,
                ctx.component(f"scan:{cfg.id}"),
                what="the scanner",
                fix="check its cable (or the ser2net address); stop the agent and run doctor "
                "for a full scanner test",
                describe=spec.describe(),
            )
        ]
    fix = (
        "check the scanner's source (ls -l /dev/serial/by-id/ or /dev/input/by-id/), its cable; "
        "the service user needs the dialout (serial) or input (evdev) group"
    )
    try:
        async with asyncio.timeout(min(5.0, ctx.wait_s)):
            if spec.kind == "evdev":
                # no grab: a doctor takes nothing from a console
                keyboard = KeyboardSource(spec.path, grab=False)
                await keyboard.open()
                keyboard.close()
            else:
                source = make_byte_source(spec, baud=cfg.baud)
                await source.open()
                source.close()
    except TimeoutError:
        return [_fail(name, f"{spec.describe()}: no answer within 5 s", fix)]
    except (SourceError, OSError, ValueError) as exc:
        return [_fail(name, redact_text(str(exc)), fix)]
    return [_pass(name, f"{spec.describe()} opens")]


# -- dock sensors -------------------------------------------------------------------------------


async def _check_contact(ctx: _Context, name: str, dock: str, part: str, url: str) -> list[Check]:
    from edge_agent.drivers.base import SourceError
    from edge_agent.drivers.gpio import GpioInput
    from edge_agent.station.config import contact_url

    spec = contact_url(url)
    if ctx.held:
        return [
            health_check(
                name,
                ctx.component(f"station:{dock}:{part}"),
                what=f"the {part} contact",
                fix="see the agent's log; stop the agent and run doctor for a full line test",
                describe=spec.describe(),
            )
        ]
    line = GpioInput(spec, gpiod=ctx.gpiod, consumer="edge-agent-doctor")
    try:
        await line.open()
    except SourceError as exc:
        return [gpio_failure(name, spec, exc)]
    try:
        level = "active" if line.value else "inactive"
        meaning = {"door": ("open", "closed"), "bay": ("occupied", "free")}[part]
        now = meaning[0] if line.value else meaning[1]
        return [_pass(name, f"{spec.describe()} requested: {level} ({part} {now})")]
    finally:
        line.close()


async def _check_signal(ctx: _Context, name: str, dock: DockConfig) -> list[Check]:
    from edge_agent.drivers.base import SourceError
    from edge_agent.drivers.gpio import GpioOutput
    from edge_agent.station.config import output_url

    assert dock.signal is not None
    if ctx.held:
        return [
            health_check(
                name,
                ctx.component(f"station:{dock.id}:signal"),
                what="the signal",
                fix="see the agent's log; stop the agent and run doctor for a full line test",
            )
        ]
    names = ["green", "red", "buzzer"]
    done = []
    for part, url in zip(names, dock.signal.urls(), strict=False):
        spec = output_url(url)
        out = GpioOutput(spec, gpiod=ctx.gpiod, consumer="edge-agent-doctor")
        try:
            await out.open()  # at its initial level (off unless the URL says initial=1)
        except SourceError as exc:
            return [gpio_failure(name, spec, exc)]
        out.close()
        done.append(f"{part} {spec.describe()}")
    return [_pass(name, f"lines requested: {', '.join(done)}")]


async def _check_distance(
    ctx: _Context, name: str, dock: str, bay: DistanceBayConfig
) -> list[Check]:
    from edge_agent.drivers.sources import make_byte_source
    from edge_agent.drivers.url import parse_device_url
    from edge_agent.station.config import DISTANCE_KINDS
    from edge_agent.station.distance import default_baud, make_parser

    spec = parse_device_url(bay.source, allowed=DISTANCE_KINDS)
    if ctx.held and spec.kind != "file":
        return [
            health_check(
                name,
                ctx.component(f"station:{dock}:bay"),
                what="the bay sensor",
                fix="check the sensor's cable and power; stop the agent and run doctor for a "
                "full sensor test",
                describe=spec.describe(),
            )
        ]
    wait = min(ctx.wait_s, 5.0)
    seen = DistanceSeen(source=spec.describe(), protocol=bay.protocol, waited_s=wait)
    parser = make_parser(bay.protocol)
    try:
        async with asyncio.timeout(wait):
            source = make_byte_source(spec, baud=default_baud(bay.protocol))
            await source.open()
            try:
                while len(seen.readings) < 3:
                    data = await source.read()
                    if not data:
                        break
                    seen.readings += parser.feed(data)
            finally:
                source.close()
    except TimeoutError:
        pass
    except Exception as exc:
        seen.error = redact_text(str(exc) or type(exc).__name__)
    seen.frames, seen.bad_frames = parser.frames, parser.bad_frames
    seen.no_reading, seen.garbage = parser.no_reading, parser.garbage
    return [distance_check(name, seen)]


# -- broker, hub and the round trip -------------------------------------------------------------


def _certificate_facts(path: Path) -> tuple[str | None, datetime]:
    """(CN, not valid after) of a PEM certificate."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else None
    return cn, cert.not_valid_after_utc


def _identity(ctx: _Context) -> tuple[Check | None, str]:
    """A check of the client certificate (None when fine) and how to name it in the detail."""
    tls = ctx.config.broker.tls
    if tls is None or tls.cert is None:
        return None, ""
    try:
        cn, not_after = _certificate_facts(tls.cert)
    except ImportError:
        return None, ""
    except (OSError, ValueError) as exc:
        return (
            _fail(
                "broker",
                f"the client certificate {tls.cert} cannot be read: {exc}",
                "provision the device again (edge-agent provision) or fix broker.tls.cert",
            ),
            "",
        )
    expected = f"{ctx.config.device.fleet}/{ctx.config.device.id}"
    days = (not_after - datetime.now(UTC)).total_seconds() / 86400
    who = f"as {cn} (certificate valid until {not_after:%Y-%m-%d})"
    if days < 0:
        return (
            _fail(
                "broker",
                f"the client certificate {tls.cert} expired on {not_after:%Y-%m-%d}",
                "provision the device again with a new claim (hub-bridge claim create)",
            ),
            who,
        )
    if cn != expected:
        return (
            _warn(
                "broker",
                f"the client certificate names {cn!r}, this configuration is {expected!r}: the "
                "broker's ACL gives it another device's topics",
                "provision this device again, or fix device.id / device.fleet",
            ),
            who,
        )
    if days < CERT_WARN_DAYS:
        return (
            _warn(
                "broker",
                f"the client certificate expires in {days:.0f} days ({not_after:%Y-%m-%d})",
                "provision the device again before it expires",
            ),
            who,
        )
    return None, who


async def _tls_probe(host: str, port: int, ctx_ssl: ssl.SSLContext) -> str | None:
    """The TLS handshake; a refusal of our certificate under TLS 1.3 comes after it, so read a
    moment: the broker waits for CONNECT in silence when it accepted us. None when fine."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx_ssl, server_hostname=host)
    try:
        try:
            data = await asyncio.wait_for(reader.read(1), 0.5)
        except TimeoutError:
            return None
        except (ssl.SSLError, ConnectionError) as exc:
            return f"the broker ended the TLS session: {exc}"
        return None if data else "the broker closed the connection after the TLS handshake"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _check_broker(ctx: _Context) -> list[Check]:
    import aiomqtt

    from edge_agent.platform.mqtt import make_client, tls_context
    from edge_agent.uplink import parse_ack, parse_hub_state
    from edge_agent.wire import topics

    cfg = ctx.config
    broker = cfg.broker.model_copy(update={"client_id": None})  # never the agent's session
    url = redact_url(broker.url)
    host, port = broker.host, broker.port
    net_fix = (
        f"check broker.url ({url}), that the broker runs, and the network: ping {host}; the "
        f"firewall must let TCP {port} through"
    )
    hub_skip = _skip("hub", "no MQTT connection to the broker (see the broker check)")
    try:
        async with asyncio.timeout(5.0):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
    except TimeoutError:
        return [_fail("broker", f"{url}: no answer to a TCP connect within 5 s", net_fix), hub_skip]
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return [
            _fail("broker", f"{url}: cannot connect to {host}:{port}: {reason}", net_fix),
            hub_skip,
        ]
    ident_problem, who = _identity(ctx)
    steps = ["TCP"]
    if broker.use_tls:
        try:
            ctx_ssl = tls_context(broker)
        except (OSError, ssl.SSLError) as exc:
            return [
                _fail(
                    "broker",
                    f"the TLS files of broker.tls cannot be loaded: {exc}",
                    "check broker.tls.ca, .cert and .key (the files edge-agent provision wrote) "
                    "and that the service user can read them",
                ),
                hub_skip,
            ]
        assert ctx_ssl is not None
        try:
            async with asyncio.timeout(5.0):
                refused = await _tls_probe(host, port, ctx_ssl)
        except ssl.SSLCertVerificationError as exc:
            return [
                _fail(
                    "broker",
                    f"{url}: the broker's certificate is not trusted: {exc.verify_message}",
                    "broker.tls.ca must be the fleet CA (ca.crt from the provisioning) and the "
                    "URL's host a name in the broker's certificate",
                ),
                hub_skip,
            ]
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            refused = f"TLS handshake failed: {exc or 'no answer within 5 s'}"
        if refused is not None:
            return [
                _fail(
                    "broker",
                    f"{url}: {refused}",
                    "the broker does not accept this device's certificate (revoked, expired or "
                    "of another CA): provision the device again (edge-agent provision)",
                ),
                hub_skip,
            ]
        steps.append("TLS")
    fleet, device = cfg.device.fleet, cfg.device.id
    ack_topic = topics.ack(fleet, device)
    client = make_client(
        broker, f"doctor-{fleet}-{device}-{secrets.token_hex(3)}", persistent=False
    )
    hubs: dict[str, str] = {}
    watermark: int | None = None
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(8.0):
            async with client:
                connack_ms = (time.monotonic() - t0) * 1000
                steps.append(f"CONNACK in {connack_ms:.0f} ms")
                granted = await client.subscribe([(topics.HUB_STATE_FILTER, 1), (ack_topic, 1)])
                codes = _reason_codes(granted)
                denied = [
                    t
                    for t, c in zip((topics.HUB_STATE_FILTER, ack_topic), codes, strict=False)
                    if c >= 0x80
                ]
                if denied:
                    return [
                        _pass("broker", f"{url}: {', '.join(steps)} {who}".strip()),
                        _fail(
                            "hub",
                            f"the broker does not let this device read {', '.join(denied)}",
                            "the broker's ACL must let a device read lm/v1/_hub/+/state and its "
                            "own ack (firmware_configs/mosquitto.acl)",
                        ),
                    ]
                # retained messages come right after the SUBACK: wait for a quiet moment
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        quiet = 0.3
                        messages = aiter(client.messages)
                        while True:
                            message = await asyncio.wait_for(anext(messages), quiet)
                            topic = str(message.topic)
                            payload = message.payload if isinstance(message.payload, bytes) else b""
                            if topic == ack_topic:
                                parsed = parse_ack(payload)
                                watermark = parsed.seq if parsed is not None else watermark
                            elif topic.startswith(f"{topics.PREFIX}/_hub/"):
                                hub = topic.split("/")[3][:64]
                                hubs[hub] = parse_hub_state(payload) or "unknown"
    except TimeoutError:
        return [
            _fail(
                "broker",
                f"{url}: {', '.join(steps)} ok, but no MQTT CONNACK within 8 s",
                "the broker is overloaded or not an MQTT 5 broker on this port; see its log",
            ),
            hub_skip,
        ]
    except aiomqtt.MqttError as exc:
        return [
            _fail(
                "broker",
                f"{url}: {', '.join(steps)} ok, MQTT refused: {redact_text(str(exc))}",
                "the broker refuses this identity (its certificate or broker.username): check "
                "the broker's log and ACL",
            ),
            hub_skip,
        ]
    reached = f"{url}: {', '.join(steps)} {who}".strip()
    broker_check = _pass("broker", reached)
    if ident_problem is not None:  # connected, but with a certificate that will not do for long
        broker_check = replace(ident_problem, detail=f"{reached}; {ident_problem.detail}")
    return [broker_check, _hub_check(hubs, watermark)]


def _reason_codes(granted: Any) -> list[int]:
    out = []
    for code in granted or []:
        value = getattr(code, "value", code)
        out.append(int(value) if isinstance(value, int) else 0)
    return out


def _hub_check(hubs: Mapping[str, str], watermark: int | None) -> Check:
    online = sorted(h for h, s in hubs.items() if s == "online")
    acked = (
        f"this device's ack watermark: {watermark}"
        if watermark is not None
        else "no ack for this device yet (the hub holds none of its events)"
    )
    if online:
        return _pass("hub", f"online: {', '.join(online)}; {acked}")
    if hubs:
        offline = ", ".join(f"{h} {s}" for h, s in sorted(hubs.items()))
        return _fail(
            "hub",
            f"no hub online ({offline}); {acked}",
            "start the hub (systemctl start hub-bridge) and check its broker settings",
        )
    return _fail(
        "hub",
        f"no hub has announced itself on lm/v1/_hub/+/state; {acked}",
        "start the hub (systemctl start hub-bridge); it must use this broker",
    )


def _api_token(cfg: AgentConfig) -> str | None:
    api = cfg.api
    token = getattr(api, "token", None)
    if token is not None:
        return str(token.get_secret_value() if hasattr(token, "get_secret_value") else token)
    token_file = getattr(api, "token_file", None)
    if token_file is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return Path(token_file).read_text().strip() or None
    return None


def _api_base(cfg: AgentConfig) -> str:
    from edge_agent.config import parse_listen

    host, port = parse_listen(cfg.api.listen)
    # a wildcard listen answers on loopback too, where no token is needed
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _find_agent(ctx: _Context) -> None:
    """Ask the local API whether this device's agent runs; fills ``ctx.agent`` when it does."""
    import aiohttp

    base = _api_base(ctx.config)
    token = _api_token(ctx.config)
    ctx.api_base = base
    ctx.api_headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=3.0)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{base}/v1/health", headers=ctx.api_headers) as resp,
        ):
            if resp.status != 200:
                ctx.agent_note = f"the local API at {base} answered {resp.status}"
                return
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        cause = getattr(exc, "os_error", None)
        why = os.strerror(cause.errno) if isinstance(cause, OSError) and cause.errno else exc
        ctx.agent_note = f"the agent is not running (nothing answers at {base}: {why or 'timeout'})"
        return
    want = (ctx.config.device.fleet, ctx.config.device.id)
    got = (body.get("fleet"), body.get("device")) if isinstance(body, dict) else (None, None)
    if got != want:
        ctx.agent_note = f"the API at {base} is another agent's ({got[0]}/{got[1]})"
        return
    ctx.agent = body


async def _check_round_trip(ctx: _Context) -> list[Check]:
    import aiohttp

    name = "round-trip"
    if ctx.in_agent:
        return [_skip(name, "this report is an event itself: its arrival is the round trip")]
    if ctx.agent is None:
        if ctx.agent_note.startswith("the agent is not running"):
            return [
                _skip(
                    name,
                    f"{ctx.agent_note}; start it (systemctl start edge-agent@DEVICE) and run "
                    "doctor again for an event's round trip",
                )
            ]
        return [
            _fail(
                name,
                ctx.agent_note,
                "api.listen must be this device's agent; with a token, api.token_file must be "
                "readable by whoever runs doctor",
            )
        ]
    base, headers = ctx.api_base, ctx.api_headers
    event = {"type": "device.report", "data": {"doctor": "ping"}}
    wait = min(ctx.wait_s, 15.0)
    timeout = aiohttp.ClientTimeout(total=5.0)
    t0 = time.monotonic()
    acked = 0
    broker_state = "unknown"
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(f"{base}/v1/events", json=event, headers=headers) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 201 or not isinstance(body, dict):
                return [
                    _fail(
                        name,
                        f"the agent refused the test event: {resp.status} {body}",
                        "see GET /v1/health and the agent's log (507: the outbox is full)",
                    )
                ]
        seq = int(body["seq"])
        end = t0 + wait
        while time.monotonic() < end:
            async with http.get(f"{base}/v1/health", headers=headers) as resp:
                health = await resp.json()
            queue = health.get("queue", {}) if isinstance(health, dict) else {}
            acked = int(queue.get("acked", 0) or 0)
            broker_state = str((health.get("broker") or {}).get("state", "unknown"))
            if acked >= seq:
                took = time.monotonic() - t0
                return [_pass(name, f"device.report seq {seq} acked by the hub in {took:.2f} s")]
            await asyncio.sleep(0.1)
    return [
        _fail(
            name,
            f"device.report accepted as seq {seq}, but not acked within {wait:.0f} s (acked "
            f"{acked}; the agent's broker link: {broker_state})",
            "see the broker and hub checks above; the agent resends by itself once the hub answers",
        )
    ]


# -- assembling the run -------------------------------------------------------------------------


def _jobs(ctx: _Context) -> list[_Job]:
    cfg = ctx.config
    w = ctx.wait_s
    jobs = [
        _Job(("clock",), lambda: _check_clock(ctx), 3.0),
        _Job(("outbox-folder",), lambda: _check_outbox_folder(ctx), 12.0),
        _Job(("outbox-file",), lambda: _check_outbox_file(ctx), min(10.0, w) + 6.0),
        _Job(("disk",), lambda: _check_disk(ctx), 3.0),
    ]
    if cfg.gnss is not None:
        jobs.append(_Job(("gnss",), lambda: _check_gnss(ctx), w + 3.0))

    def camera_job(name: str, cam: CameraConfig, every: bool) -> _Job:
        return _Job((name,), lambda: _check_camera(ctx, name, cam, every), min(w, 8.0) + 3.0)

    def scanner_job(name: str, sc: ScannerConfig) -> _Job:
        return _Job((name,), lambda: _check_scanner(ctx, name, sc), 8.0)

    if cfg.scan is not None:
        for cam in cfg.scan.cameras:
            jobs.append(camera_job(f"camera:{cam.id}", cam, cam.decode == "every"))
        for sc in cfg.scan.scanners:
            jobs.append(scanner_job(f"scanner:{sc.id}", sc))
    if cfg.station is not None:
        for dock in cfg.station.docks:
            jobs.extend(_dock_jobs(ctx, dock, camera_job, scanner_job))
    jobs.append(_Job(("broker", "hub"), lambda: _check_broker(ctx), 20.0))
    jobs.append(_Job(("round-trip",), lambda: _check_round_trip(ctx), min(w, 15.0) + 8.0))
    return jobs


def _dock_jobs(
    ctx: _Context,
    dock: DockConfig,
    camera_job: Callable[[str, CameraConfig, bool], _Job],
    scanner_job: Callable[[str, ScannerConfig], _Job],
) -> list[_Job]:
    from edge_agent.station.config import DistanceBayConfig

    prefix = f"dock:{dock.id}"
    jobs: list[_Job] = []

    def contact(part: str, url: str) -> _Job:
        name = f"{prefix}:{part}"
        return _Job((name,), lambda: _check_contact(ctx, name, dock.id, part, url), 5.0)

    if dock.door is not None:
        jobs.append(contact("door", dock.door))
    if isinstance(dock.bay, str):
        jobs.append(contact("bay", dock.bay))
    elif isinstance(dock.bay, DistanceBayConfig):
        bay = dock.bay
        name = f"{prefix}:bay"
        jobs.append(
            _Job((name,), lambda: _check_distance(ctx, name, dock.id, bay), min(ctx.wait_s, 5) + 3)
        )
    if dock.signal is not None:
        name = f"{prefix}:signal"
        jobs.append(_Job((name,), lambda: _check_signal(ctx, name, dock), 5.0))
    for cam in dock.cameras:
        jobs.append(camera_job(f"{prefix}:camera:{cam.id}", cam, True))
    for sc in dock.scanners:
        jobs.append(scanner_job(f"{prefix}:scanner:{sc.id}", sc))
    return jobs


async def _guarded(job: _Job) -> list[Check]:
    """Run one check: its timeout and any exception are its own FAIL, never the doctor's."""
    try:
        async with asyncio.timeout(job.timeout):
            return await job.run()
    except TimeoutError:
        return [
            _fail(
                n,
                f"no result within {job.timeout:.0f} s",
                "the device or service hangs: see dmesg and its log",
            )
            for n in job.names
        ]
    except Exception as exc:
        text = redact_text(f"{type(exc).__name__}: {exc}")
        return [
            _fail(n, f"the check failed: {text}", "report this with the agent's log")
            for n in job.names
        ]


async def run_checks(
    config: AgentConfig,
    *,
    config_check: Check | None = None,
    wait_s: float = WAIT_S,
    total_s: float = TOTAL_S,
    health: HealthRegistry | Mapping[str, Any] | None = None,
    gpiod: ModuleType | None = None,
) -> list[Check]:
    """Every check of ``config``'s device, concurrently, within ``total_s`` seconds.

    ``health`` (a ``HealthRegistry`` or its snapshot) says the run is inside the agent
    (``cmd/report``): held devices are judged from it and no event is posted. Otherwise the
    running agent, if any, is found through its local API. ``gpiod``: a stand-in for tests.
    """
    ctx = _Context(config=config, wait_s=wait_s, agent=None, gpiod=gpiod)
    loop = asyncio.get_running_loop()
    end = loop.time() + total_s
    if health is not None:
        snap = health.snapshot() if hasattr(health, "snapshot") else dict(health)
        ctx.agent, ctx.in_agent = {"components": snap}, True
    else:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(4.0, total_s)):
                await _find_agent(ctx)
    jobs = _jobs(ctx)
    tasks = [asyncio.create_task(_guarded(job), name=f"doctor:{job.names[0]}") for job in jobs]
    await asyncio.wait(tasks, timeout=max(0.1, end - loop.time()))
    checks = [config_check or _pass("config", "loaded")]
    for job, task in zip(jobs, tasks, strict=True):
        if task.done() and not task.cancelled() and task.exception() is None:
            checks.extend(task.result())
        else:
            task.cancel()
            checks.extend(
                _fail(n, f"not finished when the doctor's {total_s:.0f} s were up", "run again")
                for n in job.names
            )
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return checks


async def report(
    config: AgentConfig,
    *,
    health: HealthRegistry | Mapping[str, Any] | None = None,
    wait_s: float = 5.0,
    total_s: float = 20.0,
) -> dict[str, Any]:
    """The doctor's report as the data of a ``device.report`` event (``cmd/report``).

    From inside the agent, pass its ``health``: the devices it holds are judged from it, and
    the round trip is skipped (the event carrying this report is one). The result is
    ``{"ok", "checks": [...], "sw", "at"}``.
    """
    from edge_agent import __version__

    device = config.device
    first = _pass("config", f"{device.fleet}/{device.id} ({device.role}): in use by the agent")
    checks = await run_checks(
        config, config_check=first, wait_s=wait_s, total_s=total_s, health=health
    )
    out = render_json(checks)
    out["sw"] = __version__
    out["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


# -- command line -------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    from edge_agent.platform.units import parse_duration

    try:
        # a bare number is seconds, as a technician types it
        value = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError("must be above 0 and at most 10 minutes")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``doctor`` to ``edge-agent``'s subcommands (``sub.add_parser`` of argparse)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check the device before leaving it: every check PASS/FAIL/WARN/SKIP; exit 0 when "
        "none failed",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument(
        "--wait",
        type=_seconds,
        default=WAIT_S,
        help="how long GNSS, cameras and the round trip may take (default 10s)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=TOTAL_S,
        help="the whole run's limit (default 30s)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``edge-agent doctor``: 0 when no check failed, 1 when one did, 2 for an invalid file."""
    from edge_agent.config import load_agent_config
    from edge_agent.platform.yamlconf import ConfigError

    as_json = bool(getattr(args, "json", False))
    try:
        config = load_agent_config(args.config)
    except ConfigError as exc:
        check = _fail(
            "config",
            redact_text(str(exc)),
            f"fix the file (edge-agent config --config {args.config} shows the same error)",
        )
        _print([check], as_json)
        return 2
    device = config.device
    first = _pass("config", f"{args.config}: {device.fleet}/{device.id} ({device.role})")
    wait = float(getattr(args, "wait", WAIT_S))
    total = float(getattr(args, "timeout", TOTAL_S))
    checks = asyncio.run(run_checks(config, config_check=first, wait_s=wait, total_s=total))
    _print(checks, as_json)
    return exit_code(checks)


def _print(checks: Sequence[Check], as_json: bool) -> None:
    if as_json:
        print(json.dumps(render_json(checks), indent=1))
    else:
        sys.stdout.write(render_text(checks))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge_agent.doctor --config FILE [--json]`` (the same as the subcommand)."""
    from edge_agent.platform.lifecycle import cli_main

    parser = argparse.ArgumentParser(prog="edge-agent")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return cli_main(parser, ["doctor", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
