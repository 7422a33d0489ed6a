"""Capped exponential backoff with full jitter, as a pure function (used by every reconnect)."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 60.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Full jitter: uniform in [0, min(cap, base * 2**attempt)], so a fleet of vans coming out of
    the same outage does not reconnect in lockstep.
    """
    ceiling: float = min(cap, base * 2.0 ** min(attempt, 32))
    return rand() * ceiling
