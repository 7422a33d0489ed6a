"""Capped exponential backoff with full jitter, as a pure function (used by every reconnect)."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay", "is_silence", "probe_delay"]


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


PROBE_INTERVAL = 1.0
"""Mean wait between connection attempts while the link is silent."""


def probe_delay(rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before probing a silent link again: about a second, jittered.

    A link that says nothing (a tunnel, a dead zone) costs one SYN per attempt, so it is probed
    often and a van leaving the tunnel is back within seconds; a broker that answers and refuses
    (restarting under a whole fleet) gets the exponential backoff instead.
    """
    return PROBE_INTERVAL * (0.5 + rand())


def is_silence(error: BaseException) -> bool:
    """Whether a connection attempt failed because nothing answered (timed out, no route)."""
    text = str(error).lower()
    return any(
        word in text
        for word in ("timed out", "timeout", "no route to host", "network is unreachable")
    )
