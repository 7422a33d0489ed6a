"""``cmd/config``: a new device configuration from the hub, applied on trial and rolled back by
the agent itself when it cannot reach the hub with it (issue 10, item 7).

A van is sent a configuration while nobody stands next to it: a wrong broker address, a typo in a
certificate path, and it would never be heard of again. So:

1. **Validated before anything is written.** The payload is ``{"id", "config": {...},
   "trial"?: "5m"}``: ``config`` is the whole device file as a JSON object, validated exactly as
   ``edge-agent config`` validates a file. Refused (``CommandRefused``, the ack's ``error``) with
   ``config: KEY: message``: an invalid configuration, one that changes the device's identity
   (``device.id``, ``device.fleet``: the identity is the certificate's) or moves the outbox
   (what it holds would be stranded), and a folder the agent cannot write in.
2. **Applied on trial.** Next to the running file ``F`` (all written atomically: a temporary
   file, fsync, rename, fsync the folder; a power cut leaves the old file or the new one):
   ``F.previous`` (the last configuration that reached the hub: kept as it is while another
   trial runs), then ``F.trial`` (JSON: the command id, the deadline), then ``F`` itself. The
   marker comes before the file, so no crash can leave a new configuration without its trial.
   The ack's ``ok`` means "accepted and applied, on trial"; the agent then restarts itself on
   the new file (``reexec``: the same process image again, so it works with or without systemd).
3. **Confirmed or rolled back.** At start (``ConfigTrial.start``) a marker means the file is on
   trial. ``ConfigTrial.supervise`` emits one event and confirms the trial (the marker removed,
   ``F.previous`` kept) once the broker is connected and the hub's ack watermark covers that
   event: the hub itself stored something sent with the new file. If the deadline passes first
   (or the agent cannot even start with it, or has started more than ``MAX_TRIAL_STARTS`` times
   on it), ``F.previous`` is restored, the failed file kept as ``F.failed``, the reason recorded
   in ``F.rollback`` and the agent restarts on the old file, which then reports an
   ``exception.config_rollback`` event (``report_rollback``). The same command delivered again
   after a roll-back is refused: a lost ack must not start the same failed trial over and over.

The window begins at the first start on the new file: a restart slower than the trial (a Pi
reading its SD card, a loaded host) must not roll a file back before it was tried. The deadline
is then kept as wall time in the marker (a later restart must not reset it) and counted in
monotonic time while the process runs (NTP stepping the clock must not end a trial early).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import yaml

from edge_agent.config import AgentConfig
from edge_agent.outbox import OutboxError
from edge_agent.platform.units import parse_duration
from edge_agent.platform.yamlconf import ConfigError, load_model
from edge_agent.sink import EventSink
from edge_agent.wire import jsonbounds
from edge_agent.wire.commands import CommandRefused, command_id
from edge_agent.wire.envelope import EnvelopeError, new_event_id

__all__ = [
    "MAX_TRIAL_STARTS",
    "PROBE_EVENT_TYPE",
    "RESTART_AFTER_ACK_S",
    "ROLLBACK_EVENT_TYPE",
    "TRIAL_DEFAULT_S",
    "TRIAL_MAX_S",
    "TRIAL_MIN_S",
    "ConfigChange",
    "ConfigTrial",
    "apply_config",
    "failed_path",
    "hub_reached",
    "parse_config_command",
    "previous_path",
    "reexec",
    "render_config",
    "report_rollback",
    "rollback_path",
    "trial_path",
]

log = logging.getLogger(__name__)

TRIAL_DEFAULT_S = 300.0
"""How long a new configuration has to reach the hub when the command names no ``trial``."""
TRIAL_MIN_S = 2.0
TRIAL_MAX_S = 3600.0
"""Bounds of ``trial``: a van that has not reached its hub within an hour on a new file is
better back on the old one."""
MAX_TRIAL_STARTS = 5
"""Starts on one trial before it is rolled back whatever its deadline says: a file the agent
crashes on, under systemd's ``Restart=always``, or a clock set back at every boot."""
PROBE_EVENT_TYPE = "device.health"
"""The event a trial sends to learn that the hub stores what the new file sends (a free-form
type the registry has; ``data.config_trial`` says what it is)."""
ROLLBACK_EVENT_TYPE = "exception.config_rollback"
"""Reported after a roll-back, from the old file: the ack had said ``ok``, the timeline says
what became of it (an exception: never thinned from a full outbox)."""
RESTART_AFTER_ACK_S = 1.0
"""How long after ``apply_config`` returned the runtime restarts: the uplink publishes the ack
(QoS 1, awaited) once the handler returns. An ack lost anyway is harmless: the hub sends the
command again and a command already on trial is acked again without a change."""
POLL_S = 0.5
"""How often a trial looks at the uplink (two attribute reads)."""

# apply, confirm and roll back never interleave (a second command during a trial, a deadline
# reached while a command is written): one lock for the whole protocol of this process
_LOCK = threading.Lock()


def previous_path(path: Path) -> Path:
    """``F.previous``: the last configuration that reached the hub."""
    return path.with_name(path.name + ".previous")


def trial_path(path: Path) -> Path:
    """``F.trial``: the marker of a configuration on trial (JSON)."""
    return path.with_name(path.name + ".trial")


def failed_path(path: Path) -> Path:
    """``F.failed``: the last configuration rolled back, kept to be looked at."""
    return path.with_name(path.name + ".failed")


def rollback_path(path: Path) -> Path:
    """``F.rollback``: why and when the last trial was rolled back (JSON)."""
    return path.with_name(path.name + ".rollback")


# -- the command: pure ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A valid ``cmd/config``: its id, the configuration (as sent and validated), the trial."""

    command: str
    document: dict[str, Any]
    config: AgentConfig
    trial_s: float


def _refuse(key: str, message: str) -> NoReturn:
    raise CommandRefused(f"config: {key}: {message}" if key else f"config: {message}")


def parse_config_command(payload: bytes, current: AgentConfig) -> ConfigChange:
    """Check a ``cmd/config`` payload against the running configuration ``current``.

    Raises CommandRefused with ``config: KEY: message`` (the key path inside ``config``) for a
    payload that is not ``{"id", "config": {...}, "trial"?}``, an invalid configuration, another
    device identity (``device.id``, ``device.fleet``) or another ``outbox.path``.
    """
    cid = command_id(payload)
    if cid is None:
        _refuse("", 'a command is a JSON object with an "id"')
    doc = jsonbounds.loads(payload)  # command_id parsed it already: it is a bounded object
    unknown = sorted(set(doc) - {"id", "config", "trial"})
    if unknown:
        _refuse("", f"unknown field {unknown[0]!r} (a command is {{id, config, trial?}})")
    body = doc.get("config")
    if not isinstance(body, dict):
        _refuse("", 'the command carries the whole device configuration as "config": {...}')
    trial_s = TRIAL_DEFAULT_S
    if "trial" in doc:
        try:
            trial_s = parse_duration(doc["trial"])
        except ValueError as exc:
            raise CommandRefused(f"trial: {exc}") from None
        if not TRIAL_MIN_S <= trial_s <= TRIAL_MAX_S:
            raise CommandRefused(
                f"trial: {doc['trial']!r} is not between {TRIAL_MIN_S:g}s and {TRIAL_MAX_S:g}s"
            )
    # validated from the text that will be written: what runs after the restart is what was
    # checked here, to the key
    try:
        config = load_model(AgentConfig, "config", render_config(body, cid))
    except ConfigError as exc:
        _refuse(exc.key, exc.message)
    for key, new, old in (
        ("device.fleet", config.device.fleet, current.device.fleet),
        ("device.id", config.device.id, current.device.id),
    ):
        if new != old:
            _refuse(
                key,
                f"{new!r} is not this device's {old!r}: a device's identity is its certificate;"
                " provision the device again to change it",
            )
    if config.outbox.path != current.outbox.path:
        _refuse(
            "outbox.path",
            f"stays {str(current.outbox.path)!r}: what the outbox holds would be stranded",
        )
    return ConfigChange(cid, body, config, trial_s)


def render_config(document: Mapping[str, Any], command: str) -> str:
    """The device file written for ``document``: YAML, keys in the order sent, a header line."""
    header = f"# written by cmd/config {command}; the last file that reached the hub: *.previous\n"
    return header + yaml.safe_dump(
        dict(document), sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def config_digest(config: AgentConfig) -> str:
    """The short hash of a configuration (the one the birth message announces)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def hub_reached(connected: bool, acked: int, probe_seq: int | None) -> bool:
    """Whether a trial has reached the hub: the broker connected and the hub's ack watermark
    covering the probe event this process sent. A retained ack alone proves nothing (the broker
    keeps it with no hub running); a watermark at the probe's seq is the hub's answer."""
    return connected and probe_seq is not None and acked >= probe_seq


# -- files: atomic writes ---------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, like: Path | None = None) -> None:
    """Replace ``path``: a temporary file (with ``like``'s mode and owner, else 0600), fsync,
    rename, fsync the folder."""
    mode, owner = 0o600, None
    if like is not None:
        with contextlib.suppress(OSError):
            st = like.stat()
            mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from O_CREAT's mode
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            with contextlib.suppress(PermissionError):  # only root may give files away
                os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON object of ours, or None when missing; a damaged one reads as ``{}``."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(dict(doc), indent=1) + "\n").encode()


def _check_writable(folder: Path) -> None:
    """Refuse, naming the folder, when a file cannot be made in it (a read-only mount under
    ``ProtectSystem=strict``, a folder of another user)."""
    probe = folder / f".cmd-config-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        hint = (
            "the unit needs ReadWritePaths= for it"
            if exc.errno == errno.EROFS
            else "the folder must be writable by the agent's user"
        )
        raise CommandRefused(
            f"cannot write in {folder} ({exc.strerror or exc}): nothing was changed; {hint}"
        ) from None
    os.close(fd)
    probe.unlink(missing_ok=True)


def _apply_files(path: Path, change: ConfigChange, now: float) -> bool:
    with _LOCK:
        marker = _read_json(trial_path(path))
        if marker is not None and marker.get("command") == change.command:
            return False  # delivered again while on trial: already applied
        record = _read_json(rollback_path(path))
        if record is not None and record.get("command") == change.command:
            raise CommandRefused(
                f"config: rolled back at {record.get('at', '?')}: {record.get('reason', '?')}"
            )
        _check_writable(path.parent)
        text = render_config(change.document, change.command).encode()
        if marker is None:
            # the running file reached the hub (or was there before any trial): it is the one
            # to come back to; during a trial the confirmed one already is in F.previous
            try:
                current = path.read_bytes()
            except OSError as exc:
                raise CommandRefused(
                    f"cannot read the running file {path} ({exc.strerror or exc}): nothing was"
                    " changed"
                ) from None
            _write_atomic(previous_path(path), current, like=path)
        _write_atomic(
            trial_path(path),
            _dumps(
                {
                    "command": change.command,
                    "digest": config_digest(change.config),
                    "trial_s": change.trial_s,
                    "started": now,
                    "deadline": now + change.trial_s,
                    "starts": 0,
                }
            ),
        )
        _write_atomic(path, text, like=path)
        return True


async def apply_config(
    agent_config_path: Path,
    payload: bytes,
    current: AgentConfig,
    *,
    now: Callable[[], float] = time.time,
) -> bool:
    """Validate a ``cmd/config`` payload and apply it on trial (see the module docstring).

    Returns True when the file was replaced and the agent must restart on it (after its ack),
    False when there is nothing to do: the command delivered again, or a configuration equal to
    the running one. Raises CommandRefused (the ack's ``error``) for an invalid command, another
    identity or outbox, a command already rolled back, or a folder it cannot write in; nothing
    is changed then.
    """
    change = parse_config_command(payload, current)
    marker = _read_json(trial_path(agent_config_path))
    if change.config == current and (marker is None or marker.get("command") == change.command):
        return False
    # fsync on an SD card takes tens of milliseconds: off the event loop
    return await asyncio.to_thread(_apply_files, agent_config_path, change, now())


# -- the trial --------------------------------------------------------------------------------


class _Link(Protocol):
    @property
    def connected(self) -> bool: ...


class _Acked(Protocol):
    @property
    def acked(self) -> int: ...


class ConfigTrial:
    """The running configuration on trial: confirm it, or roll it back (see the module
    docstring). Made by ``ConfigTrial.start`` at the start of the process."""

    def __init__(self, path: Path, marker: Mapping[str, Any], now: float) -> None:
        self.path = path
        command = marker.get("command")
        self.command = command if isinstance(command, str) else ""
        trial_s = _number(marker, "trial_s", TRIAL_DEFAULT_S)
        self.trial_s = min(max(trial_s, TRIAL_MIN_S), TRIAL_MAX_S)
        self.deadline = _number(marker, "deadline", now)
        self.started = _number(marker, "started", now)
        self.starts = int(_number(marker, "starts", 0))
        """Starts on this trial before this one."""
        self.digest = str(marker.get("digest", ""))
        self.outcome: str | None = None
        """``confirmed`` or ``rolled-back`` once decided."""

    @classmethod
    def start(cls, path: Path, *, now: Callable[[], float] = time.time) -> ConfigTrial | None:
        """At the start of the process, before the file is read: the trial the file is on, or
        None. A trial past its deadline, started too often, or with a damaged marker is rolled
        back here and None returned: the caller then reads the restored file."""
        path = Path(path)
        at = now()
        with _LOCK:
            marker = _read_json(trial_path(path))
            if marker is None:
                return None
            if not previous_path(path).exists():
                # nothing to come back to (removed by hand): the trial cannot end but one way
                log.error("%s is on trial but %s is missing: trial ended", path, "F.previous")
                _remove(trial_path(path))
                return None
            trial = cls(path, marker, at)
            starts, started = trial.starts + 1, trial.started
            if starts == 1 and at > started:
                # the first start on the new file: its window begins now, not when the command
                # was applied (the restart in between may have taken longer than the trial)
                trial.deadline = max(trial.deadline, at + trial.trial_s)
                started = at
            reason = None
            if not trial.command:
                reason = f"the marker {trial_path(path)} is damaged"
            elif starts > MAX_TRIAL_STARTS:
                reason = f"started {starts - 1} times on it without reaching the hub"
            elif at >= trial.deadline:
                reason = f"the hub was not reached within {_duration(trial.trial_s)}"
            if reason is None:
                if at < started:
                    # the clock is behind the one that wrote the marker (a Pi without an RTC,
                    # booted offline): the wall deadline means nothing, give a whole window
                    trial.deadline = at + trial.trial_s
                    started = at
                marker = {
                    **marker,
                    "starts": starts,
                    "started": started,
                    "deadline": trial.deadline,
                }
                _write_atomic(trial_path(path), _dumps(marker))
                log.warning(
                    "configuration %s on trial (command %s): %.0fs left to reach the hub",
                    path,
                    trial.command,
                    trial.remaining(at),
                )
                return trial
            trial._roll_back_locked(reason, at)
            return None

    def remaining(self, now: float | None = None) -> float:
        """Seconds left to reach the hub (0 when past the deadline)."""
        at = time.time() if now is None else now
        return max(0.0, min(self.trial_s, self.deadline - at))

    def _mine(self) -> bool:
        marker = _read_json(trial_path(self.path))
        return marker is not None and marker.get("command") == self.command

    def confirm(self) -> bool:
        """The hub was reached: the marker goes, ``F.previous`` stays. False when another
        command's trial replaced this one meanwhile (that one is not confirmed by this)."""
        with _LOCK:
            if not self._mine():
                return False
            _remove(trial_path(self.path))  # F.rollback stays: the last roll-back's record
            self.outcome = "confirmed"
        log.info("configuration %s confirmed (command %s reached the hub)", self.path, self.command)
        return True

    def roll_back(self, reason: str, *, now: Callable[[], float] = time.time) -> bool:
        """Put ``F.previous`` back (the failed file kept as ``F.failed``, ``reason`` in
        ``F.rollback``); the caller restarts the agent. False when the trial is no longer
        this one's to end (another command's trial replaced it)."""
        with _LOCK:
            if not self._mine():
                return False
            self._roll_back_locked(reason, now())
            return True

    def _roll_back_locked(self, reason: str, at: float) -> None:
        path = self.path
        previous = previous_path(path).read_bytes()
        with contextlib.suppress(FileNotFoundError):
            _write_atomic(failed_path(path), path.read_bytes(), like=path)
        _write_atomic(path, previous, like=previous_path(path))
        record = {
            "command": self.command,
            "reason": reason,
            "at": _iso(at),
            "digest": self.digest,
            "event_id": new_event_id(),  # one id: a report repeated after a crash is stored once
            "reported": False,
        }
        _write_atomic(rollback_path(path), _dumps(record))
        _remove(trial_path(path))  # last: a crash before it rolls back again, harmlessly
        self.outcome = "rolled-back"
        log.error(
            "configuration %s rolled back (command %s): %s; %s is back",
            path,
            self.command,
            reason,
            previous_path(path).name,
        )

    async def supervise(
        self,
        sink: EventSink,
        outbox: _Acked,
        uplink: Callable[[], _Link | None],
        restart: Callable[[], None],
        *,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll_s: float = POLL_S,
    ) -> bool:
        """Run beside the agent: send the probe event, confirm once ``hub_reached``, or roll
        back at the deadline and call ``restart``. Returns whether it was confirmed."""
        deadline = monotonic() + self.remaining(now())
        probe: int | None = None
        ever_connected = False
        failed_probe = False
        while True:
            link = uplink()
            connected = link is not None and link.connected
            ever_connected |= connected
            if probe is None:
                try:
                    accepted = await sink.emit(
                        PROBE_EVENT_TYPE,
                        {"config_trial": {"command": self.command, "digest": self.digest}},
                    )
                    probe = accepted.seq
                except (OutboxError, EnvelopeError) as exc:
                    if not failed_probe:  # a full outbox frees up: try again at the next poll
                        failed_probe = True
                        log.warning("config trial: the probe event is not accepted: %s", exc)
            if hub_reached(connected, outbox.acked, probe):
                return await asyncio.to_thread(self.confirm)
            if monotonic() >= deadline:
                why = (
                    "connected to the broker, no ack from the hub"
                    if ever_connected
                    else ("never connected to the broker")
                )
                reason = f"the hub was not reached within {_duration(self.trial_s)} ({why})"
                if await asyncio.to_thread(self.roll_back, reason):
                    restart()
                return False
            await sleep(poll_s)


async def report_rollback(path: Path, sink: EventSink) -> bool:
    """After a roll-back, from the restored file: emit ``exception.config_rollback`` once
    (the command, the reason, when). Returns whether an event was emitted now."""
    path = Path(path)
    record = _read_json(rollback_path(path))
    if not record or record.get("reported") is not False or not record.get("event_id"):
        return False
    data: dict[str, Any] = {
        k: record[k] for k in ("command", "reason", "at", "digest") if k in record
    }
    await sink.emit(ROLLBACK_EVENT_TYPE, data, event_id=str(record["event_id"]))
    record["reported"] = True
    await asyncio.to_thread(_write_atomic, rollback_path(path), _dumps(record))
    return True


def reexec() -> NoReturn:
    """Start this program again in this very process (``execv`` of the interpreter with the
    original command line). Called once the agent has stopped cleanly (outbox closed, offline
    announced). The process id stays: systemd keeps its main PID and watchdog, a shell or a test
    keeps its child, and the new image says ``READY=1`` again."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.execv(sys.executable, sys.orig_argv)


def _number(doc: Mapping[str, Any], key: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default  # damaged (a marker is ours, so only by a crash or a hand): the default
    return float(value)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def _iso(at: float) -> str:
    return (
        dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"
