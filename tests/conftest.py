"""Shared fixtures: a real mosquitto per test on a free port (no mock broker), a private
PostgreSQL; and a report of the asyncio tasks when a test times out."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_timeout

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


def _asyncio_tasks_report() -> str:
    """Every task of the running event loop with the chain of awaits it is stopped in: what a
    hang of an async test shows (the thread stacks show only the loop's select)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "no event loop running\n"
    out = io.StringIO()
    for task in asyncio.all_tasks(loop):
        out.write(f"task {task.get_name()}: {task!r}\n")
        awaited: Any = task.get_coro()
        for _ in range(40):  # the await chain, innermost last
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                out.write(
                    f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n"
                )
            nxt = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
            if nxt is None:
                out.write(f"    waiting on {awaited!r:.300}\n")
                break
            awaited = nxt
    return out.getvalue()


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's signal method, plus a report of the asyncio tasks before it fails the
    test (printed to stderr, which the failure report shows)."""
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own way

    def handler(_signum: int, _frame: Any) -> None:
        sys.stderr.write("+++ Timeout: asyncio tasks +++\n" + _asyncio_tasks_report())
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # read by pytest-timeout
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


LONGEST_FIRST = (
    "tests/test_spine_stateful.py",
    "tests/test_hub_chaos.py",
    "tests/test_deadzone.py",
    "tests/test_remote_config.py::test_config_commands_end_to_end",
    "tests/test_hub_commands.py::test_the_exit_codes_of_send",
    "tests/test_delivery_eta.py",
    "tests/test_hub_pki.py",
    "tests/test_driver_app_contract.py",
    "tests/test_hub_bounds.py",
)
"""Tests that take ten seconds or more here, by ``--durations``. Started first, they overlap with
the many short ones; started last (in file order most come late), one alone makes the run's
tail."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (a stable sort: the order stays the files' otherwise)."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))
