"""Real processes for end-to-end tests: an agent and a hub as subprocesses on temp files."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pytest

from simulators.broker import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Proc:
    """A ``python -m PACKAGE run --config FILE`` subprocess that prints a ready line."""

    def __init__(self, module: str, config: Path, log: Path, prefix: Sequence[str] = ()) -> None:
        self.module = module
        self.prefix = list(prefix)
        """Prepended to the command (``ip netns exec NAME`` runs it inside a namespace)."""
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.api_port: int | None = None

    def start(self, timeout: float = 60.0, *, replace_taken_port: bool = True) -> None:
        """Start and wait for the ready line. A port another test took between ``free_port``
        and the bind (workers run in parallel) is replaced by a new one, twice at most, unless
        the test took it on purpose (``replace_taken_port=False``)."""
        for attempt in range(3 if replace_taken_port else 1):
            mark = self.log.stat().st_size if self.log.exists() else 0
            try:
                self._start(timeout)
                return
            except AssertionError:
                taken = "address already in use" in self.log.read_text(errors="replace")[mark:]
                if not taken or not replace_taken_port or attempt == 2 or not self._new_port():
                    raise

    def _new_port(self) -> bool:
        """Give the config's ``api.listen`` a new free port (False if it has none to change)."""
        try:
            cfg = json.loads(self.config.read_text())
            host, _, _ = str(cfg["api"]["listen"]).rpartition(":")
        except (ValueError, KeyError, TypeError):
            return False
        cfg["api"]["listen"] = f"{host}:{free_port()}"
        self.config.write_text(json.dumps(cfg, indent=1))
        return True

    def _start(self, timeout: float) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("a") as log:
            log.write(f"--- start {time.time()}\n")
            log.flush()
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    sys.executable,
                    "-m",
                    self.module,
                    "run",
                    "--config",
                    str(self.config),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=ROOT,
            )
        assert self.proc.stdout is not None
        # a process that neither announces itself nor exits (stuck at start) fails the test
        # after ``timeout`` instead of hanging the suite
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            raise AssertionError(
                f"{self.module} not ready in {timeout:.0f}s: {self.log.read_text()[-3000:]}"
            )
        line = self.proc.stdout.readline()
        if not line:
            # reaped and closed here: a process object left behind warns in a later test
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            raise AssertionError(f"{self.module} exited: {self.log.read_text()[-3000:]}")
        self.api_port = json.loads(line)["api_port"]

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, like a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> int:
        """SIGTERM and wait: a clean shutdown."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def write_agent_config(
    tmp: Path, broker_url: str, device: str = "van-042", fleet: str = "acme", **extra: Any
) -> Path:
    """An agent config on temp files; ``extra`` sections are merged in (YAML is JSON)."""
    cfg: dict[str, Any] = {
        "device": {"id": device, "fleet": fleet},
        "broker": {"url": broker_url},
        "outbox": {"path": str(tmp / f"{device}.outbox.db")},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "uplink": {"ack_timeout": "3s", "backoff_max": "1s"},
        "log": {"level": "INFO"},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp / f"{device}.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def write_hub_config(
    tmp: Path, broker_url: str, timeline: Path | None = None, **extra: Any
) -> Path:
    """A hub config in ``tmp``, its timeline there too unless given; ``extra`` sections merge in
    (a non-dict value, like ``hub_id``, is set as it is)."""
    cfg: dict[str, Any] = {
        "broker": {"url": broker_url},
        "timeline": {"url": f"sqlite:///{timeline or tmp / 'timeline.db'}"},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / "hub.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def post(
    port: int,
    body: Any,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
    token: str | None = None,
) -> tuple[int, Any]:
    """POST JSON to the agent's /v1/events (with ``Authorization: Bearer`` when a ``token`` is
    given: a client not on loopback needs one); return (status, decoded body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://{host}:{port}/v1/events",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def get(port: int, path: str, host: str = "127.0.0.1", token: str | None = None) -> Any:
    """GET JSON from a local API (with ``Authorization: Bearer`` when a ``token`` is given)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    req = urllib.request.Request(f"http://{host}:{port}{path}", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def timeline_rows(db: Path, device: str | None = None) -> list[tuple[int, str, int]]:
    """(seq, id, ingest) of the stored events, in seq order, read straight from SQLite."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        sql = "SELECT seq, id, ingest FROM events"
        args: tuple[str, ...] = ()
        if device is not None:
            sql += " WHERE device = ?"
            args = (device,)
        return [(int(s), str(i), int(g)) for s, i, g in con.execute(sql + " ORDER BY seq", args)]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def scan_event(i: int, client_id: str | None = None) -> dict[str, Any]:
    """A scan as a handheld posts it."""
    ev: dict[str, Any] = {
        "type": "scan",
        "data": {"text": f"JJD{i:012d}", "symbology": "code128", "source": "handheld-1"},
    }
    if client_id is not None:
        ev["id"] = client_id
    return ev


def fix_event(i: int) -> dict[str, Any]:
    """A position ping."""
    return {
        "type": "gnss.fix",
        "data": {"lat": 52.37 + i * 1e-5, "lon": 4.89, "mode": 3, "speed_mps": 8.0},
    }


class _Runs(Protocol):
    def run(self) -> Awaitable[None]: ...


S = TypeVar("S", bound=_Runs)


class Running(Generic[S]):
    """A component's ``run()`` as a task for the block; cancelled and awaited on exit.

    ``check_still_running`` also asserts that it was still running (components run until
    cancelled)."""

    def __init__(self, service: S, *, check_still_running: bool = False) -> None:
        self.service = service
        self.check = check_still_running
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> S:
        async def run() -> None:
            await self.service.run()

        self.task = asyncio.create_task(run())
        return self.service

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        if self.check:
            assert not self.task.done(), "the service must run until cancelled"
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
