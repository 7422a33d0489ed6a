"""Opening the project's SQLite stores (the outbox, the hub's timeline) the same way.

WAL journal, ``synchronous=FULL``, a busy timeout, and ``PRAGMA user_version`` migrations applied
in one transaction (a power cut leaves the old version intact). A file whose version is newer than
the code is refused and never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

__all__ = ["NewerSchema", "configure", "migrate", "schema_version"]


class NewerSchema(Exception):
    """The file was written by a newer version of the program."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"schema version {found} is newer than this program's ({known})")
        self.found = found
        self.known = known


async def configure(db: aiosqlite.Connection, busy_timeout_ms: int = 5000) -> None:
    """WAL, synchronous=FULL and a busy timeout on a fresh connection."""
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")


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
