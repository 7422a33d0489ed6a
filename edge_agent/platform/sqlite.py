"""Opening the project's SQLite stores (the outbox, the hub's timeline) the same way.

WAL journal, ``synchronous=FULL``, a busy timeout, and ``PRAGMA user_version`` migrations applied
in one transaction (a power cut leaves the old version intact). A file whose version is newer than
the code is refused and never touched.

The stores hold personal data (names, addresses, positions), so they are private to the service's
user: ``prepare_private(path)`` creates a missing directory 0700 and the file 0600 before SQLite
opens it, and ``configure`` takes the group and other bits off the file and its ``-wal`` and
``-shm`` (SQLite gives those the main file's mode when it creates them again), which also
tightens files left world-readable by older versions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

__all__ = [
    "NewerSchema",
    "configure",
    "make_private",
    "migrate",
    "on_connection_thread",
    "prepare_private",
    "schema_version",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

_SIDE_FILES = ("", "-wal", "-shm", "-journal")


class NewerSchema(Exception):
    """The file was written by a newer version of the program."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"schema version {found} is newer than this program's ({known})")
        self.found = found
        self.known = known


def prepare_private(path: str | Path) -> None:
    """Before SQLite opens ``path``: create its missing directories 0700 and the file 0600.

    SQLite would create the file with the process umask (usually world-readable) and the
    directory is created here rather than by ``mkdir`` defaults for the same reason. Existing
    directories are left as they are (they may be shared, like ``/var/lib``).
    """
    p = Path(path)
    missing = []
    parent = p.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    with contextlib.suppress(FileExistsError):
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_private(path: str | Path) -> None:
    """Take the group and other permission bits off a database file and its side files."""
    for suffix in _SIDE_FILES:
        name = f"{path}{suffix}"
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, mode & ~0o077)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not our file (another user's copy): say so, go on
            log.warning("%s: cannot make it private: %s", name, exc)


async def configure(db: aiosqlite.Connection, busy_timeout_ms: int = 5000) -> None:
    """WAL, synchronous=FULL and a busy timeout on a fresh connection; the file made private."""
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    async with db.execute("PRAGMA database_list") as cur:
        files = [str(row[2]) for row in await cur.fetchall() if row[1] == "main" and row[2]]
    for name in files:
        make_private(name)


async def schema_version(db: aiosqlite.Connection) -> int:
    """The file's ``PRAGMA user_version``."""
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(db: aiosqlite.Connection, steps: Sequence[str]) -> int:
    """Bring the file to version ``len(steps)``; step k holds the statements of version k + 1.

    Returns the version found. Raises NewerSchema for a file of a newer version.
    """
    target = len(steps)
    version = await schema_version(db)
    if version > target:
        raise NewerSchema(version, target)
    if version == target:
        return version
    await db.execute("BEGIN IMMEDIATE")
    try:
        for step in steps[version:]:
            for statement in step.split(";"):
                if statement.strip():
                    await db.execute(statement)
        await db.execute(f"PRAGMA user_version={target}")
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return version


async def on_connection_thread(db: aiosqlite.Connection, fn: Callable[..., T], /, *args: Any) -> T:
    """Run ``fn(con, *args)`` on ``db``'s own thread, with ``con`` its ``sqlite3.Connection``.

    One thread hop for a whole transaction instead of one per statement: each hop costs a
    futex, a write to the event loop's self-pipe and a loop iteration, which on a trickle of
    events was most of the agent's CPU and under load most of the commit's latency.

    ``fn`` runs to its end even when the caller is cancelled (a thread cannot be interrupted):
    a caller that keeps state in step with the file must wait for the outcome anyway.
    aiosqlite offers no public call for this; its queue
    (``_execute``) is what every one of its own methods uses, and this is the one place that
    relies on it (``tests/test_outbox_thread.py`` holds it to that).
    """
    result: T = await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]
    return result
