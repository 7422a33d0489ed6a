"""A private PostgreSQL server on a free loopback port, for tests, benchmarks and chaos tests.

Like ``simulators.broker.Mosquitto``: ``initdb`` into a temporary directory, the server started
on a free port of 127.0.0.1 (its Unix socket inside that directory), stopped and the directory
removed at the end. The machine's own PostgreSQL (5432) is never used: a user's machine does not
have one. Debian's ``postgresql`` package provides the binaries (``scripts/setup`` installs it);
they are looked for in ``/usr/lib/postgresql/*/bin`` (the newest version) and on ``PATH``.

``kill()`` SIGKILLs the server and every backend (its process group): a crash, recovered from
the write-ahead log at the next ``start()``. ``restart()`` is kill and start on the same port.

PostgreSQL refuses to run as root; started by root, the server runs as the ``postgres`` user
(which Debian's package creates), owning the temporary directory.

``fsync=False`` (what the tests use) skips flushing to disk: every commit is still written to
the OS before it is acknowledged, so a killed server loses nothing; only a machine crash would.
Benchmarks keep ``fsync=True``, so their figures include the commit's flush, as SQLite's
``synchronous=FULL`` does.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from simulators.broker import free_port

__all__ = ["PostgresServer", "find_bindir"]

SUPERUSER = "lastmile"
"""The superuser the private cluster is made with (trust authentication on loopback only)."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl`` (newest installed version)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError(
        "PostgreSQL's server is not installed: run scripts/setup (apt-get install postgresql)"
    )


class PostgresServer:
    """One private PostgreSQL cluster: ``start()``, ``kill()``, ``restart()``, ``stop()``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        fsync: bool = True,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.fsync = fsync
        self.settings = dict(settings or {})
        """More ``postgresql.conf`` settings (``-c name=value``)."""
        self.bindir = find_bindir()
        self._dir = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.data = self._dir / "data"
        self._runas: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._runas = pwd.getpwnam("postgres")
            except KeyError:
                self._runas = pwd.getpwnam("nobody")
            os.chown(self._dir, self._runas.pw_uid, self._runas.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None
        self._initialised = False
        self._databases = 0

    # -- addresses ---------------------------------------------------------------------------

    def url_for(self, database: str) -> str:
        """``postgresql://lastmile@127.0.0.1:PORT/DATABASE``."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database (the maintenance database)."""
        return self.url_for("postgres")

    @property
    def log(self) -> str:
        """What the server logged so far."""
        path = self._dir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- processes ---------------------------------------------------------------------------

    def _run_kw(self) -> dict[str, Any]:
        if self._runas is None:
            return {}
        return {"user": self._runas.pw_uid, "group": self._runas.pw_gid, "extra_groups": []}

    def _tool(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / name), *args],
            check=check,
            capture_output=True,
            text=True,
            **self._run_kw(),
        )

    def _initdb(self) -> None:
        try:
            self._tool(
                "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr[-2000:]}") from None
        self._initialised = True

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (making the cluster the first time); wait until it accepts
        connections."""
        if not self._initialised:
            self._initdb()
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self._dir),
            "fsync": "on" if self.fsync else "off",
            # on even without fsync: a commit reaches the OS before it is acknowledged, so a
            # killed server loses nothing (off, the last commits die with its WAL buffers)
            "synchronous_commit": "on",
            "full_page_writes": "on" if self.fsync else "off",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
            **self.settings,
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        log = self._dir / "postgres.log"
        with log.open("ab") as sink:
            if self._runas is not None:
                os.chown(log, self._runas.pw_uid, self._runas.pw_gid)
            # its own process group: kill() takes the backends with the postmaster
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                start_new_session=True,
                **self._run_kw(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}: {self.log[-2000:]}"
                )
            ready = self._tool(
                "pg_isready", "-q", "-h", self.host, "-p", str(self.port), "-U", SUPERUSER,
                "-d", "postgres", check=False,
            )  # fmt: skip
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"postgres did not accept connections on {self.port} within {timeout}s")

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server and its backends: a crash (recovered at the next start)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            # the backends were in the group too: a new server refuses to start while one of
            # them still holds the old shared memory
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.01)
        self.proc = None

    def restart(self) -> None:
        """Kill and start again on the same port (crash recovery runs)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Shut the server down (fast) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: clients disconnected
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; its output (unaligned, tuples only)."""
        try:
            done = self._tool(
                "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"psql: {exc.stderr.strip()[-2000:]}") from None
        return done.stdout

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database (named ``name`` or ``db_N``); return its URL."""
        if name is None:
            self._databases += 1
            name = f"db_{os.getpid()}_{self._databases}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _main() -> None:  # pragma: no cover - a manual check: python -m simulators.postgres
    with PostgresServer(fsync=False) as pg:
        print(pg.create_database("check"), getpass.getuser())
        print(pg.psql("SELECT version()").strip())


if __name__ == "__main__":  # pragma: no cover
    _main()
