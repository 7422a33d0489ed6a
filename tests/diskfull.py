"""A real full disk for tests: a small tmpfs mounted for the test, and another process's file
that fills it (root only; where the machine cannot mount one the test says so)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "tmpfs"]


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (made here) for the block, unmounted after."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs (a real full disk) needs root, this run is not root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"this machine cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path, leave: int = 0) -> None:
    """Fill the file system that holds ``path`` (another process's file), leaving ``leave``
    bytes free."""
    st = os.statvfs(path.parent)
    todo = max(0, st.f_bavail * st.f_frsize - leave)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while todo >= chunk or (leave == 0 and chunk == 1):
                    todo -= os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
