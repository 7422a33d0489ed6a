"""The reopen loop every driver runs under: backoff between attempts, health per transition.

``supervise(session, ...)`` runs ``session(attempt)`` until it returns (a finite source that
ended) or the task is cancelled. A ``SourceError`` sets the component's health to
``disconnected`` (``HealthRegistry`` logs the transition once, not every retry); anything else a
device library raises is logged with its traceback on the first failure of a run and treated the
same way, so a device never takes the agent down. Between attempts: capped exponential backoff
with full jitter (``edge_agent.platform.backoff``); a session that set ``attempt.productive``
(data flowed before the failure) is retried promptly, as the first retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge_agent.drivers.base import SourceError
from edge_agent.platform.backoff import backoff_delay
from edge_agent.platform.health import HealthRegistry

__all__ = ["Attempt", "supervise"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Attempt:
    """One open-read-close of a device: ``number`` counts failures in a row (0 first)."""

    number: int = 0
    productive: bool = False


async def supervise(
    session: Callable[[Attempt], Awaitable[None]],
    *,
    health: HealthRegistry,
    component: str,
    name: str,
    cap: float,
    base: float = 0.5,
    rand: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``session`` until it returns, reopening after failures (module docstring)."""
    failures = 0
    while True:
        attempt = Attempt(number=failures)
        try:
            await session(attempt)
            return
        except SourceError as exc:
            health.set_state(component, "disconnected", source=name, error=str(exc))
        except (OSError, ValueError, RuntimeError) as exc:
            # Not expected from a driver, but a device must never take the agent down.
            if health.set_state(component, "disconnected", source=name, error=repr(exc)):
                log.exception("%s: unexpected error from %s", component, name)
        failures = 0 if attempt.productive else failures + 1
        await sleep(backoff_delay(max(0, failures - 1), base=base, cap=cap, rand=rand))
