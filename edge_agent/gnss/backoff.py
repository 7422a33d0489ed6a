"""Reconnect delays: capped exponential backoff with full jitter, as a pure function."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 for the first retry).

    Full jitter (a uniform draw between 0 and the capped exponential) spreads a fleet's
    reconnects after a shared outage instead of having every van retry in step.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return uniform(0.0, ceiling)
