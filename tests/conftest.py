"""Shared fixtures: a real mosquitto per test on a free port (no mock broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import Mosquitto
from simulators.postgres import PostgresServer


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A private mosquitto without persistence; tests may kill() and restart() it."""
    with Mosquitto() as m:
        yield m


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One private PostgreSQL for the session (initdb on a free port in a temp dir, never the
    machine's own server), started by the first test that needs it. fsync is off: a killed
    server loses nothing it wrote, only a machine crash would. Tests take a fresh database
    each (``pg_url``)."""
    with PostgresServer(fsync=False) as pg:
        yield pg


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A new empty database on the session's PostgreSQL, dropped after the test."""
    url = postgres.create_database()
    yield url
    if postgres.running:
        postgres.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def timeline_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ``timeline.url`` of each backend, empty: the timeline tests run against both."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'timeline.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
