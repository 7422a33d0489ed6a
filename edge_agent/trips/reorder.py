"""Fix-time order in front of the engine: a small reorder buffer and a guard on time jumps.

Fixes can arrive out of order (a receiver or a GNSS service that backfills what it buffered, two
sources merged). ``FixOrder`` holds each fix until it is ``window`` seconds of fix time older than
the newest one seen, then releases fixes in time order; a fix older than one already released
comes too late and is dropped and counted (the engine would drop it anyway: it never moves its
state backwards).

A single fix far in the future (a receiver's bad date, a GPS week rollover, FIELD-NOTES 2) would
otherwise become the newest and make every real fix after it "too late". A fix more than
``max_jump`` seconds ahead of the newest is therefore held aside until a second fix agrees with it
(the van was off overnight: the next fix is a second later) and dropped as ``future`` when
``JUMP_VOTES`` fixes on the old timeline come first.

Pure: no clock, no I/O. Counters: ``late``, ``future``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from itertools import count

from edge_agent.gnss.fix import Fix

__all__ = ["JUMP_VOTES", "FixOrder"]

JUMP_VOTES = 3


class FixOrder:
    """Releases fixes in fix-time order, ``window`` seconds behind the newest."""

    def __init__(self, window: float = 2.0, max_jump: float = 600.0) -> None:
        if window < 0 or max_jump <= 0:
            raise ValueError("window must be >= 0 and max_jump > 0")
        self.window = window
        self.max_jump = max_jump
        self._heap: list[tuple[float, int, Fix]] = []
        self._seq = count()
        self._newest: float | None = None
        self._released: float | None = None
        self._suspect: tuple[float, Fix] | None = None
        self._votes = 0
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._heap) + (self._suspect is not None)

    def push(self, fix: Fix) -> list[Fix]:
        """Add one fix; return the fixes now due, oldest first."""
        t = fix.time.timestamp()
        if self._released is not None and t <= self._released:
            self.counters["late"] += 1
            return []
        newest = self._newest
        if newest is not None and t > newest + self.max_jump:
            return self._jump(t, fix)
        if self._suspect is not None:
            self._votes += 1
            if self._votes >= JUMP_VOTES:
                self._suspect = None
                self.counters["future"] += 1
        heapq.heappush(self._heap, (t, next(self._seq), fix))
        if newest is None or t > newest:
            self._newest = t
        return self._due()

    def _jump(self, t: float, fix: Fix) -> list[Fix]:
        if self._suspect is None:
            self._suspect, self._votes = (t, fix), 0
            return []
        st, sfix = self._suspect
        if abs(t - st) > self.max_jump:
            # another far-off fix, unrelated to the first: keep the newer doubt
            self.counters["future"] += 1
            self._suspect, self._votes = (t, fix), 0
            return []
        # two fixes agree: the timeline really moved on; everything before it is due now
        self._suspect = None
        out = self.flush()
        for tt, f in sorted(((st, sfix), (t, fix)), key=lambda p: p[0]):
            heapq.heappush(self._heap, (tt, next(self._seq), f))
        self._newest = max(st, t)
        return out + self._due()

    def _due(self) -> list[Fix]:
        assert self._newest is not None
        limit = self._newest - self.window
        out: list[Fix] = []
        heap = self._heap
        while heap and heap[0][0] <= limit:
            t, _, f = heapq.heappop(heap)
            if self._released is not None and t <= self._released:
                self.counters["late"] += 1  # a duplicate time: the first one won
                continue
            self._released = t
            out.append(f)
        return out

    def flush(self) -> list[Fix]:
        """Release everything buffered (end of a log; no fix for a while), oldest first.

        A held far-future fix stays held: nothing has confirmed it.
        """
        out: list[Fix] = []
        heap = self._heap
        while heap:
            t, _, f = heapq.heappop(heap)
            if self._released is not None and t <= self._released:
                self.counters["late"] += 1
                continue
            self._released = t
            out.append(f)
        return out
