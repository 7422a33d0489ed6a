"""A producer's files kept across restarts: the last document it was given and its engine state.

Two small files in one folder (by default the outbox's): the *document* is the payload of the
last valid command that configures the producer, as received (the trip service's manifest, the
station's load plan); the *state* is the engine state and the events not yet confirmed durable
in the outbox (written ahead). Each is replaced atomically (write a temporary file, fsync,
rename, fsync the folder), so a power cut leaves the old or the new file, never half of one. A
file that cannot be parsed is moved aside (``.corrupt-<time>``) and reported, and the service
starts from scratch rather than not at all.

Blocking I/O: the service calls these through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["StateFiles"]


class StateFiles:
    """Reads and atomically writes the ``document`` and ``state`` files in ``folder``."""

    def __init__(self, folder: Path, *, document: str, state: str) -> None:
        self.folder = folder
        self.document_path = folder / document
        self.state_path = folder / state
        self.moved_aside: list[str] = []

    def load_document(self) -> bytes | None:
        """The stored document payload, or None if there is none."""
        try:
            return self.document_path.read_bytes()
        except FileNotFoundError:
            return None

    def save_document(self, payload: bytes) -> None:
        """Keep a (validated) document payload."""
        self._write(self.document_path, payload)

    def load_state(self) -> dict[str, Any] | None:
        """The stored state, or None if there is none or it was unreadable (moved aside)."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            self.move_aside(self.state_path)
            return None
        return data

    def save_state(self, data: dict[str, Any]) -> None:
        """Replace the stored state."""
        self._write(self.state_path, json.dumps(data, separators=(",", ":")).encode())

    def move_aside(self, path: Path) -> str:
        """Rename an unusable file out of the way; return its new name."""
        target = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        os.replace(path, target)
        self.moved_aside.append(str(target))
        return str(target)

    def _write(self, path: Path, payload: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        # routes and plans name recipients' addresses and parcels: readable by the service user only
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
