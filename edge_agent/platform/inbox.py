"""A component's bounded input queue: producers never block, one consumer drains it.

Producers (drivers, callbacks, commands) ``put`` without waiting; when the queue is full the
oldest item the component may lose is dropped (a position fix, a sensor reading) rather than one
it must keep (a manifest, a load plan), and ``on_overflow`` counts it. The consumer waits for
work with ``wait``; ``idle`` lets tests and callers wait until everything queued so far was taken
and the consumer is waiting again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Inbox"]

T = TypeVar("T")


class Inbox(Generic[T]):
    """A bounded queue with drop-oldest-droppable overflow (module docstring)."""

    def __init__(
        self,
        size: int,
        *,
        droppable: Callable[[T], bool],
        on_overflow: Callable[[], None] = lambda: None,
    ) -> None:
        self._items: deque[T] = deque()
        self._size = size
        self._droppable = droppable
        self._on_overflow = on_overflow
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        """Queue ``item`` (never blocks; see the module docstring for a full queue)."""
        if len(self._items) >= self._size:
            victim = next((i for i in self._items if self._droppable(i)), None)
            if victim is None:
                self._items.popleft()
            else:
                self._items.remove(victim)
            self._on_overflow()
        self._items.append(item)
        self._idle.clear()
        self._wakeup.set()

    def popleft(self) -> T:
        """The oldest item (IndexError when empty)."""
        return self._items.popleft()

    async def wait(self, max_wait: float | None = None) -> bool:
        """Until an item is queued (True) or ``max_wait`` seconds passed with none (False)."""
        if self._items:
            return True
        self._idle.set()
        self._wakeup.clear()
        try:
            async with asyncio.timeout(max_wait):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def idle(self) -> None:
        """Wait until the consumer has taken everything queued so far and waits again."""
        await self._idle.wait()
