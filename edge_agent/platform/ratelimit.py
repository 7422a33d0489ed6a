"""Token buckets per client, in a table of bounded size: the rate limits of an API.

Each client key (an address, a prefix) has a bucket of ``burst`` tokens that refills at ``rate``
tokens per second; a request takes one token, or is refused with the seconds until one is there
(the ``Retry-After`` of a 429). Pure: the caller passes the time (a monotonic clock in the
server, a plain number in tests), so nothing here sleeps, reads a clock or does I/O.

The table holds at most ``max_keys`` buckets, least recently used first out, so a flood of new
keys costs a fixed amount of memory (a spoofed source address never completes a TCP handshake,
but a client on the Wi-Fi can change its address, and IPv6 gives one host a whole /64). What
such a flood buys is that an evicted client starts again with a full bucket; the bucket evicted
is the one untouched for longest, which had the most time to refill: usually a full bucket,
whose loss forgets nothing.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["RateLimiter", "parse_rate", "retry_after"]

_RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*/\s*([a-zA-Z]+)")


def parse_rate(value: object) -> float:
    """Events per second from ``"50/s"``, ``"10/min"``, ``"600/h"``, ``"2/d"`` or a number (per
    second). Raises ValueError naming the value; a rate must be above zero."""
    if isinstance(value, bool):
        raise ValueError("a rate must be a number or COUNT/UNIT (50/s), not a boolean")
    if isinstance(value, int | float):
        per_s = float(value)
    elif isinstance(value, str):
        m = _RATE_RE.fullmatch(value.strip())
        if m is None:
            raise ValueError(f"{value!r} is not a rate (COUNT/UNIT, for example 50/s or 10/min)")
        unit = m.group(2).lower()
        if unit not in _RATE_UNITS:
            known = ", ".join(sorted(_RATE_UNITS))
            raise ValueError(f"{value!r}: unknown unit {m.group(2)!r} (one of {known})")
        per_s = float(m.group(1)) / _RATE_UNITS[unit]
    else:
        raise ValueError("a rate must be a number or COUNT/UNIT (50/s)")
    if not math.isfinite(per_s) or per_s <= 0:
        raise ValueError(f"{value!r}: a rate must be above zero")
    return per_s


def retry_after(wait_s: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1 (0 would invite an
    immediate retry that is refused again; a day at most, never an overflow)."""
    return max(1, math.ceil(min(wait_s, 86400.0)))


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token buckets of ``burst`` tokens refilled at ``rate`` per second, one per client key,
    at most ``max_keys`` of them (least recently used evicted first)."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be above zero, not {rate!r}")
        if not burst >= 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.evicted = 0
        """Buckets dropped to make room for new keys, since the start."""
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def _refill(self, bucket: _Bucket, now: float) -> None:
        # a clock that goes back (it should not: monotonic) refills nothing and loses nothing
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
        bucket.stamp = max(bucket.stamp, now)

    def _wait(self, bucket: _Bucket, cost: float) -> float:
        return 0.0 if bucket.tokens >= cost else (cost - bucket.tokens) / self.rate

    def peek(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Seconds until ``key`` could take ``cost`` tokens (0.0: now); takes nothing and never
        adds a key to the table."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0 if cost <= self.burst else math.inf
        self._refill(bucket, now)
        return self._wait(bucket, cost)

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket: 0.0 when they were there, else the seconds
        until they will be (nothing is taken then; ``math.inf`` if ``cost`` exceeds ``burst``)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
                self.evicted += 1
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
            self._refill(bucket, now)
        if cost > self.burst:
            return math.inf
        wait = self._wait(bucket, cost)
        if wait == 0.0:
            bucket.tokens -= cost
        return wait
