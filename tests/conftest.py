"""Shared fixtures: a real mosquitto per test on a free port (no mock broker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.broker import Mosquitto


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A private mosquitto without persistence; tests may kill() and restart() it."""
    with Mosquitto() as m:
        yield m
