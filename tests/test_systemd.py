"""Unattended under systemd (issue 10 item 6): the notify protocol against a real
``NOTIFY_SOCKET``, the watchdog's progress rule, journald log lines, and the shipped units
checked with ``systemd-analyze verify`` and ``security --offline=true``.

systemd is not PID 1 on this machine, so nothing here starts a unit. What systemd would do is
reproduced where it can be: the agent and the hub run as subprocesses with ``NOTIFY_SOCKET`` and
``WATCHDOG_USEC`` set, their datagrams read from a socket the test binds (with the sender's
credentials, as systemd checks ``NotifyAccess=main``); the agent runs under the same seccomp
filters systemd 252 builds from the unit's ``SystemCallFilter=``, ``MemoryDenyWriteExecute=``
and ``RestrictAddressFamilies=`` lines (with libseccomp, as systemd does), read from the unit.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.outbox import Draft, Outbox
from edge_agent.platform.lifecycle import JournalFormatter, Watchdog, add_progress_probe
from edge_agent.platform.systemd import (
    Notifier,
    notify_address,
    stderr_is_journal,
    watchdog_interval,
)
from simulators.broker import Mosquitto, free_port
from simulators.camera import make_labels, write_frames
from tests.harness import ROOT, get, post, scan_event, write_agent_config, write_hub_config

UNITS = ROOT / "systemd"
AGENT_UNIT = UNITS / "edge-agent@.service"
HUB_UNIT = UNITS / "hub-bridge.service"
VENV_BIN = Path(sys.executable).parent
TS = "2026-01-01T00:00:00.000Z"
WAIT_S = 30.0  # the longest any single message may take to arrive (a bound, not a measurement)


# -- a socket in systemd's place -------------------------------------------------------------


class NotifyListener:
    """The service manager's end: a unix datagram socket that records who sent what."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.messages: list[tuple[int, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()

    def recv(self, timeout: float) -> tuple[int, dict[str, str]] | None:
        """The next datagram as (sender pid, fields), or None when nothing came in ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.messages.append((pid, fields))
        return pid, fields

    def wait_for(self, key: str, value: str | None = None) -> tuple[int, dict[str, str]]:
        """Read until a message with ``key`` (and ``value``) arrives; fail after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(left)
            if got is not None and key in got[1] and (value is None or got[1][key] == value):
                return got
        raise AssertionError(f"no {key}={value} in {WAIT_S}s; got {self.messages[-5:]}")

    def drain(self) -> list[dict[str, str]]:
        """What is queued now, without waiting."""
        out = []
        while (got := self.recv(0.001)) is not None:
            out.append(got[1])
        return out


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    name = f"@lastmile-test-{os.getpid()}-{time.monotonic_ns()}"
    lst = NotifyListener(b"\0" + name[1:].encode())
    lst.name = name  # type: ignore[attr-defined]
    try:
        yield lst
    finally:
        lst.close()


def notify_env(listener: NotifyListener, watchdog_s: float) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": listener.name,  # type: ignore[attr-defined]
        "WATCHDOG_USEC": str(int(watchdog_s * 1_000_000)),
    }


def spawn(
    argv: list[str], env: dict[str, str], log: Path, *, journal: bool = False
) -> subprocess.Popen[str]:
    """A service process; its stderr goes to ``log`` (named in ``JOURNAL_STREAM`` as journald's
    stream when ``journal``), its stdout (the ready line) to a pipe."""
    with log.open("w") as err:
        if journal:
            st = os.fstat(err.fileno())
            env = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        return subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT
        )


def stop_process(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


# -- the protocol, piece by piece ------------------------------------------------------------


def test_notify_socket_addresses() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract/name") == b"\0abstract/name"
    assert notify_address("") is None
    assert notify_address(None) is None
    assert notify_address("@") is None
    assert notify_address("vsock:2:1234") is None  # newer systemd's VM sockets: not spoken here
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).enabled
    assert not Notifier.from_env({}).send("READY=1")


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=42) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}, pid=42) == 2.0
    # inherited from a parent: the pings are not ours to send
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_interval({}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "x"}, pid=42) is None


def test_notifier_sends_to_a_path_socket_and_an_abstract_one(
    tmp_path: Path, listener: NotifyListener
) -> None:
    path = tmp_path / "notify"
    by_path = NotifyListener(str(path))
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": str(path)}).ready("up\nand running")
        pid, fields = by_path.wait_for("READY")
        assert pid == os.getpid()
        assert fields == {"READY": "1", "STATUS": "up and running"}  # one line: no field injected
    finally:
        by_path.close()
    notifier = Notifier.from_env({"NOTIFY_SOCKET": listener.name})  # type: ignore[attr-defined]
    assert notifier.watchdog() and notifier.stopping("bye") and notifier.status("x" * 500)
    got = [listener.wait_for(k)[1] for k in ("WATCHDOG", "STOPPING", "STATUS")]
    assert got[0] == {"WATCHDOG": "1"}
    assert got[1] == {"STOPPING": "1", "STATUS": "bye"}
    assert got[2] == {"STATUS": "x" * 200}


def test_a_manager_that_is_not_listening_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "nobody-here"))
    with caplog.at_level(logging.WARNING):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    f = (tmp_path / "stream").open("w")
    other = (tmp_path / "other").open("w")
    try:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, f.fileno())
        assert not stderr_is_journal(env, other.fileno())  # a redirected stderr
        assert not stderr_is_journal({}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, f.fileno())
    finally:
        f.close()
        other.close()


def test_journal_lines_carry_their_priority_and_no_time() -> None:
    fmt = JournalFormatter()

    def line(level: int, msg: str, exc: bool = False) -> str:
        info = None
        if exc:
            try:
                raise ValueError("boom")
            except ValueError:
                info = sys.exc_info()
        record = logging.LogRecord("edge_agent.x", level, __file__, 1, msg, (), info)
        return fmt.format(record)

    assert line(logging.INFO, "hello") == "<6>INFO edge_agent.x: hello"
    assert line(logging.WARNING, "w").startswith("<4>WARNING ")
    assert line(logging.DEBUG, "d").startswith("<7>")
    assert line(logging.CRITICAL, "c").startswith("<2>")
    assert line(25, "between INFO and WARNING").startswith("<6>")
    text = line(logging.ERROR, "failed", exc=True)
    lines = text.split("\n")
    assert len(lines) > 3 and lines[-1] == "<3>ValueError: boom"
    assert all(x.startswith("<3>") for x in lines)  # `journalctl -p err` shows the traceback whole
    assert not re.search(r"\d\d:\d\d:\d\d", text)


def test_watchdog_pings_only_while_every_probe_makes_progress(listener: NotifyListener) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": listener.name})  # type: ignore[attr-defined]
    busy: dict[str, float | None] = {"writer": None}
    wd = Watchdog(notifier, 30.0, probes={"writer": lambda: busy["writer"]})
    assert wd.tick(now=1000.0)  # idle: waiting for work is not being stuck
    busy["writer"] = 1000.0
    assert wd.tick(now=1029.0)  # busy, within the interval
    assert not wd.tick(now=1031.0)  # stuck longer than the interval: no ping
    assert not wd.tick(now=1100.0)
    busy["writer"] = 1095.0  # the next group: progress
    assert wd.tick(now=1100.0)
    sent = [listener.recv(WAIT_S) for _ in range(5)]
    kinds = [next(iter(f)) for _, f in (s for s in sent if s is not None)]
    assert kinds == ["WATCHDOG", "WATCHDOG", "STATUS", "STATUS", "WATCHDOG"]
    statuses = [f["STATUS"] for _, f in listener.messages if "STATUS" in f]
    assert statuses == ["no progress: writer busy for 31s", "running"]  # once per transition
    assert wd.pings == 3

    def broken() -> float | None:
        raise RuntimeError("probe bug")

    assert not Watchdog(notifier, 30.0, probes={"b": broken}).tick(now=0.0)


def test_probes_are_registered_and_removed() -> None:
    wd = Watchdog(Notifier(None), 10.0)
    remove = add_progress_probe("test-probe", lambda: 0.0)
    try:
        assert ("test-probe", 100.0) in wd.stalled(now=100.0)
    finally:
        remove()
    assert all(name != "test-probe" for name, _ in wd.stalled(now=100.0))


async def test_outbox_writer_says_since_when_it_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", "acme", "van-1")
    release = asyncio.Event()
    entered = asyncio.Event()
    commit = Outbox._commit_group

    async def stuck(self: Outbox, group: Any) -> None:  # an fsync on a dying SD card
        entered.set()
        await release.wait()
        await commit(self, group)

    try:
        assert ob.writer_busy_since is None
        await ob.append([Draft("scan", {"text": "A"}, TS, "ntp")])
        assert ob.writer_busy_since is None  # idle again after the group
        monkeypatch.setattr(Outbox, "_commit_group", stuck)
        before = time.monotonic()
        pending = asyncio.create_task(ob.append([Draft("scan", {"text": "B"}, TS, "ntp")]))
        await asyncio.wait_for(entered.wait(), WAIT_S)
        since = ob.writer_busy_since
        assert since is not None and since >= before
        assert ob.writer_busy_since == since  # it stays there while the commit hangs
        release.set()
        (accepted,) = await asyncio.wait_for(pending, WAIT_S)
        assert accepted.seq == 2
        assert ob.writer_busy_since is None
    finally:
        release.set()
        await ob.close()


# -- the agent and the hub as systemd runs them ----------------------------------------------


def test_agent_ready_watchdog_hang_and_stop(tmp_path: Path, listener: NotifyListener) -> None:
    cfg = write_agent_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}")  # no broker: normal
    proc = spawn(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
        notify_env(listener, 2.0),
        tmp_path / "agent.log",
        journal=True,
    )
    try:
        pid, ready = listener.wait_for("READY", "1")
        assert pid == proc.pid  # the main process itself: NotifyAccess=main accepts it
        port = int(ready["STATUS"].rsplit(" ", 1)[1])
        assert get(port, "/v1/health")["components"]  # READY=1 came after the API was up
        assert proc.stdout is not None and json.loads(proc.stdout.readline())["api_port"] == port
        for _ in range(3):
            assert listener.wait_for("WATCHDOG", "1")[0] == proc.pid
        assert post(port, scan_event(1))[0] == 201

        # a hung process: no pings at all while it hangs, pings again when it runs
        os.kill(proc.pid, signal.SIGSTOP)
        os.waitpid(proc.pid, os.WUNTRACED)  # stopped for sure before the queue is drained
        listener.drain()
        assert listener.recv(3.0) is None  # three ping periods: a systemd would kill it now
        os.kill(proc.pid, signal.SIGCONT)
        listener.wait_for("WATCHDOG", "1")

        proc.send_signal(signal.SIGTERM)
        _, stopping = listener.wait_for("STOPPING", "1")
        assert stopping["STATUS"] == "stopping on a signal"
        assert proc.wait(20) == 0
    finally:
        stop_process(proc)
    # journald's stream: each line's priority, no time stamp (the journal has its own)
    log = (tmp_path / "agent.log").read_text()
    assert "<6>INFO edge_agent.runtime: agent acme/van-042: api on 127.0.0.1:" in log
    assert "<4>WARNING edge_agent.platform.health: broker: disconnected" in log
    assert all(line.startswith("<") for line in log.splitlines()), log[:2000]


HANGING_AGENT = """
import asyncio, sys
from pathlib import Path
from edge_agent import outbox
from edge_agent.cli import main

hang, release = Path(sys.argv[1]), Path(sys.argv[2])
commit = outbox.Outbox._commit_group

async def stuck(self, group):  # an fsync that does not return (a dying SD card) once `hang` exists
    if hang.exists():
        while not release.exists():
            await asyncio.sleep(0.05)
    await commit(self, group)

outbox.Outbox._commit_group = stuck
sys.exit(main(sys.argv[3:]))
"""


def test_a_stuck_outbox_writer_stops_the_pings(tmp_path: Path, listener: NotifyListener) -> None:
    cfg = write_agent_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}")
    hang, release = tmp_path / "hang", tmp_path / "release"
    proc = spawn(
        [sys.executable, "-c", HANGING_AGENT, str(hang), str(release), "run", "--config", str(cfg)],
        notify_env(listener, 1.0),
        tmp_path / "agent.log",
    )
    answers: list[int] = []
    try:
        _, ready = listener.wait_for("READY", "1")
        port = int(ready["STATUS"].rsplit(" ", 1)[1])
        listener.wait_for("WATCHDOG", "1")
        hang.touch()
        poster = threading.Thread(target=lambda: answers.append(post(port, scan_event(2), 60)[0]))
        poster.start()
        _, status = listener.wait_for("STATUS")
        assert status["STATUS"].startswith("no progress: outbox writer busy for ")
        # the event loop still runs (the API answers), yet no ping: systemd would restart it
        assert get(port, "/v1/health")
        quiet = [listener.recv(0.5) for _ in range(6)]
        assert all(q is None or "WATCHDOG" not in q[1] for q in quiet), quiet
        assert answers == []  # the POST waits for its commit
        release.touch()
        listener.wait_for("WATCHDOG", "1")  # progress again: pings resume
        poster.join(WAIT_S)
        assert answers == [201]
        assert "withholding pings" in (tmp_path / "agent.log").read_text()
    finally:
        release.touch()
        stop_process(proc)


def test_hub_is_ready_once_subscribed_and_pings_under_its_filters(
    tmp_path: Path, listener: NotifyListener, broker: Mosquitto
) -> None:
    cfg = write_hub_config(tmp_path, broker.url)
    proc = spawn(  # under the hub unit's own seccomp filters, as systemd would run it
        [
            sys.executable,
            "-c",
            SANDBOX,
            sys.executable,
            "-m",
            "hub_bridge",
            "run",
            "--config",
            str(cfg),
        ],
        {**notify_env(listener, 2.0), "LM_SANDBOX": json.dumps(sandbox_spec(HUB_UNIT))},
        tmp_path / "hub.log",
    )
    try:
        pid, ready = listener.wait_for("READY", "1")
        assert pid == proc.pid
        port = int(ready["STATUS"].rsplit(" ", 1)[1])
        assert get(port, "/v1/health")
        listener.wait_for("WATCHDOG", "1")
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING", "1")
        assert proc.wait(20) == 0
    finally:
        stop_process(proc)
    log = (tmp_path / "hub.log").read_text()
    assert "Traceback" not in log and "Operation not permitted" not in log, log[-3000:]


# -- the units -------------------------------------------------------------------------------


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys repeat in unit files)."""
    out = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_values(path: Path, key: str) -> list[str]:
    return [v for _, k, v in unit_entries(path) if k == key]


def runnable_copy(unit: Path, folder: Path, name: str) -> Path:
    """The unit with ExecStart pointing at this venv's script (verify wants it to exist)."""
    text = unit.read_text().replace("/opt/lastmile/.venv/bin/", f"{VENV_BIN}/")
    out = folder / name
    out.write_text(text)
    return out


@pytest.mark.parametrize(
    ("unit", "name", "script"),
    [
        (AGENT_UNIT, "edge-agent@van-042.service", "edge-agent"),
        (HUB_UNIT, "hub-bridge.service", "hub-bridge"),
    ],
)
def test_units_declare_notify_watchdog_and_a_user_of_their_own(
    unit: Path, name: str, script: str
) -> None:
    assert unit_values(unit, "Type") == ["notify"]
    assert unit_values(unit, "NotifyAccess") == ["main"]
    assert unit_values(unit, "WatchdogSec") == ["30s"]
    assert unit_values(unit, "Restart") == ["always"]
    assert unit_values(unit, "StartLimitIntervalSec") == ["0"]  # never given up on
    (user,) = unit_values(unit, "User")
    assert user not in ("", "root") and unit_values(unit, "DynamicUser") == []
    (exec_start,) = unit_values(unit, "ExecStart")
    assert exec_start.startswith(f"/opt/lastmile/.venv/bin/{script} run --config /etc/")
    assert unit_values(unit, "CapabilityBoundingSet") == [""]
    assert unit_values(unit, "NoNewPrivileges") == ["yes"]
    assert unit_values(unit, "ProtectSystem") == ["strict"]


def test_agent_unit_allows_exactly_its_devices() -> None:
    allowed = {v.split()[0] for v in unit_values(AGENT_UNIT, "DeviceAllow")}
    assert unit_values(AGENT_UNIT, "DevicePolicy") == ["closed"]
    assert {"char-ttyUSB", "char-ttyACM", "char-video4linux", "char-gpiochip"} <= allowed
    assert not any(a.startswith(("block-", "/dev/sd", "/dev/mem")) for a in allowed)
    groups = set(unit_values(AGENT_UNIT, "SupplementaryGroups")[0].split())
    assert groups == {"dialout", "video", "input", "gpio"}
    families = unit_values(AGENT_UNIT, "RestrictAddressFamilies")[0].split()
    assert "AF_NETLINK" in families and "AF_PACKET" not in families


@pytest.mark.parametrize(
    ("unit", "name"),
    [(AGENT_UNIT, "edge-agent@van-042.service"), (HUB_UNIT, "hub-bridge.service")],
)
def test_units_verify_clean(tmp_path: Path, unit: Path, name: str) -> None:
    copy = runnable_copy(unit, tmp_path, name)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # an unknown key is only a warning: none


def exposure(unit: Path) -> tuple[float, str]:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        check=False,
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1)), done.stdout


@pytest.mark.parametrize(
    ("unit", "name", "target"),
    [(AGENT_UNIT, "edge-agent@van-042.service", 2.5), (HUB_UNIT, "hub-bridge.service", 2.0)],
)
def test_units_security_exposure(tmp_path: Path, unit: Path, name: str, target: float) -> None:
    level, table = exposure(runnable_copy(unit, tmp_path, name))
    print(table)
    assert level <= target, table
    # the same check can fail: the unit systemd had before issue 10 (9.6 "UNSAFE")
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nExecStart={VENV_BIN}/python -V\n")
    assert exposure(bare)[0] > 9.0


# -- the agent under the unit's seccomp filters ----------------------------------------------

SANDBOX = r"""
import ctypes, errno, json, os, sys

lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_release.argtypes = [ctypes.c_void_p]

class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
ALLOW = 0x7FFF0000
EQ, MASKED_EQ = 4, 7
def ERRNO(e): return 0x00050000 | e

def load(default, rules):
    ctx = lib.seccomp_init(default)
    assert ctx
    for name, action, conds in rules:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not a syscall of this architecture
        arr = (ArgCmp * max(1, len(conds)))(*[ArgCmp(*c) for c in conds])
        assert lib.seccomp_rule_add_array(ctx, action, nr, len(conds), arr) in (0, -errno.EEXIST)
    assert lib.seccomp_load(ctx) == 0
    lib.seccomp_release(ctx)

spec = json.loads(os.environ.pop("LM_SANDBOX"))
libc = ctypes.CDLL(None)
for cap in range(64):  # CapabilityBoundingSet= : root keeps no capability across the exec
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        break
if spec["mdwe"]:  # MemoryDenyWriteExecute=yes, as systemd 252's seccomp_memory_deny_write_execute
    W, X, SHM_EXEC = 2, 4, 0o100000
    load(ALLOW, [
        ("mmap", ERRNO(errno.EPERM), [(2, MASKED_EQ, W | X, W | X)]),
        ("mprotect", ERRNO(errno.EPERM), [(2, MASKED_EQ, X, X)]),
        ("pkey_mprotect", ERRNO(errno.EPERM), [(2, MASKED_EQ, X, X)]),
        ("shmat", ERRNO(errno.EPERM), [(2, MASKED_EQ, SHM_EXEC, SHM_EXEC)]),
    ])
families = set(spec["families"])  # RestrictAddressFamilies=
load(ALLOW, [("socket", ERRNO(errno.EAFNOSUPPORT), [(0, EQ, af, 0)])
             for af in range(64) if af not in families])
# SystemCallFilter= with SystemCallErrorNumber=EPERM, last as in systemd (it refuses seccomp())
load(ERRNO(errno.EPERM), [(n, ALLOW, []) for n in spec["allow"]])
os.execv(sys.argv[1], sys.argv[1:])
"""


def syscall_set(name: str) -> set[str]:
    """A ``@group`` as systemd-analyze lists it, nested groups expanded, or one syscall."""
    if not name.startswith("@"):
        return {name}
    done = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    )
    out: set[str] = set()
    for line in done.stdout.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            out |= syscall_set(word)
    return out


def sandbox_spec(unit: Path) -> dict[str, Any]:
    """The unit's seccomp settings as systemd resolves them: the first SystemCallFilter= line
    (an allow list) starts from @default, ``~`` lines take away, later lines add back."""
    allow: set[str] = set()
    for i, value in enumerate(unit_values(unit, "SystemCallFilter")):
        invert = value.startswith("~")
        names = set().union(*(syscall_set(w) for w in value.lstrip("~").split()))
        if i == 0:
            assert not invert, "an allow list is expected"
            allow = syscall_set("@default") | names
        elif invert:
            allow -= names
        else:
            allow |= names
    families = [getattr(socket, f) for f in unit_values(unit, "RestrictAddressFamilies")[0].split()]
    return {
        "allow": sorted(allow),
        "families": families,
        "mdwe": unit_values(unit, "MemoryDenyWriteExecute") == ["yes"],
    }


def test_the_sandbox_is_real() -> None:
    """The stand-in refuses what the unit refuses, so the test below can fail."""
    probe = (
        "import mmap, os, socket\n"
        "for name, f in [('wx', lambda: mmap.mmap(-1, 4096, prot=7)),\n"
        "                ('setuid', lambda: os.setuid(0)),\n"
        "                ('packet', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))]:\n"
        "    try:\n"
        "        f(); print(name, 'allowed')\n"
        "    except OSError as e:\n"
        "        print(name, e.errno)\n"
    )
    env = {**os.environ, "LM_SANDBOX": json.dumps(sandbox_spec(AGENT_UNIT))}
    done = subprocess.run(
        [sys.executable, "-c", SANDBOX, sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split("\n")[:3] == [
        f"wx {errno.EPERM}",
        f"setuid {errno.EPERM}",
        f"packet {errno.EAFNOSUPPORT}",
    ]


def test_agent_with_a_camera_runs_under_the_units_seccomp_filters(
    tmp_path: Path, listener: NotifyListener, broker: Mosquitto
) -> None:
    """MemoryDenyWriteExecute= with OpenCV, numpy, zxing-cpp and ZBar decoding real frames; the
    syscall allow list without @privileged and @resources; rtnetlink for the link watch; the
    kernel's clock status through adjtimex."""
    labels = make_labels(4, frames_per_label=4, gap=2, seed=3)
    write_frames(tmp_path / "frames", labels, size=(640, 480), gap=2, seed=3)
    cfg = write_agent_config(
        tmp_path,
        broker.url,
        scan={"cameras": [{"id": "dock-1", "source": str(tmp_path / "frames"), "fps": 20}]},
    )
    env = {**notify_env(listener, 5.0), "LM_SANDBOX": json.dumps(sandbox_spec(AGENT_UNIT))}
    proc = spawn(
        [
            sys.executable,
            "-c",
            SANDBOX,
            sys.executable,
            "-m",
            "edge_agent",
            "run",
            "--config",
            str(cfg),
        ],
        env,
        tmp_path / "agent.log",
    )
    try:
        _, ready = listener.wait_for("READY", "1")
        port = int(ready["STATUS"].rsplit(" ", 1)[1])
        listener.wait_for("WATCHDOG", "1")
        deadline = time.monotonic() + WAIT_S
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            health = get(port, "/v1/health")
            comps = health["components"]
            if comps.get("scan:dock-1", {}).get("state") == "idle" and (
                comps.get("broker", {}).get("state") == "connected"
            ):
                break
            time.sleep(0.1)
        assert post(port, scan_event(3))[0] == 201
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING", "1")
        assert proc.wait(20) == 0
    finally:
        stop_process(proc)
    log = (tmp_path / "agent.log").read_text()
    assert "Operation not permitted" not in log and "Traceback" not in log, log[-3000:]
    comps = health["components"]
    assert comps["broker"]["state"] == "connected", comps
    texts = asyncio.run(outbox_texts(Path(json.loads(cfg.read_text())["outbox"]["path"])))
    assert sorted(t for t in texts if t != scan_event(3)["data"]["text"]) == sorted(
        lab.text for lab in labels
    )


async def outbox_texts(path: Path) -> list[str]:
    ob = await Outbox.open(path, "acme", "van-042")
    try:
        rows = await ob.read_after(0, max_bytes=10_000_000)
    finally:
        await ob.close()
    events = [json.loads(body) for _, body in rows]
    return [e["data"]["text"] for e in events if e["type"] == "scan"]


def test_systemd_analyze_and_libseccomp_are_there() -> None:
    """The unit checks need systemd-analyze (Debian's systemd) and libseccomp (libseccomp2)."""
    import ctypes

    assert shutil.which("systemd-analyze"), "install Debian's systemd package"
    assert ctypes.CDLL("libseccomp.so.2").seccomp_init
