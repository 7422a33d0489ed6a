"""Files holding personal data are private (issue 8): the outbox and the timeline, with their
``-wal`` and ``-shm``, are 0600 and a directory the hub creates for its timeline is 0700."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.platform.sqlite import prepare_private
from simulators.broker import Mosquitto
from tests.harness import (
    Proc,
    post,
    scan_event,
    timeline_rows,
    wait_for,
    write_agent_config,
    write_hub_config,
)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """The usual umask (022), under which SQLite would make its files world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_prepare_private_creates_directories_and_file_private(
    tmp_path: Path, lax_umask: None
) -> None:
    target = tmp_path / "a" / "b" / "store.db"
    os.chmod(tmp_path, 0o755)
    prepare_private(target)
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    assert mode(target) == 0o600 and target.stat().st_size == 0
    target.write_bytes(b"kept")
    prepare_private(target)  # an existing file is left as it is
    assert target.read_bytes() == b"kept"
    assert mode(tmp_path) == 0o755  # an existing folder is not ours to change


def test_agent_and_hub_files_are_private(
    tmp_path: Path, broker: Mosquitto, lax_umask: None
) -> None:
    timeline = tmp_path / "hub-data" / "timeline.db"  # a folder the hub has to create
    hub = Proc("hub_bridge", write_hub_config(tmp_path, broker.url, timeline), tmp_path / "hub.log")
    hub.start()
    agent = Proc("edge_agent", write_agent_config(tmp_path, broker.url), tmp_path / "agent.log")
    agent.start()
    outbox = tmp_path / "van-042.outbox.db"
    try:
        for i in range(5):
            assert post(agent.api_port or 0, scan_event(i))[0] == 201
        wait_for(lambda: len(timeline_rows(timeline)) == 5, 20, "events in the timeline")
        for db in (outbox, timeline):
            for suffix in ("", "-wal", "-shm"):
                path = Path(f"{db}{suffix}")
                assert path.exists(), path
                assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
        assert mode(timeline.parent) == 0o700
    finally:
        agent.stop()
        hub.stop()
    for db in (outbox, timeline):
        assert mode(db) == 0o600
