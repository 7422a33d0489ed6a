"""The bounded input queue of the trip and station services."""

from __future__ import annotations

import asyncio

from edge_agent.platform.inbox import Inbox


async def test_a_full_inbox_drops_the_oldest_droppable_item_and_counts_it() -> None:
    dropped: list[int] = []
    inbox: Inbox[str] = Inbox(
        3, droppable=lambda s: s.startswith("fix"), on_overflow=lambda: dropped.append(1)
    )
    for item in ("plan-1", "fix-1", "fix-2", "fix-3", "plan-2"):
        inbox.put(item)
    assert [inbox.popleft() for _ in range(len(inbox))] == ["plan-1", "fix-3", "plan-2"]
    assert len(dropped) == 2
    only_plans: Inbox[str] = Inbox(2, droppable=lambda s: False)
    for item in ("plan-1", "plan-2", "plan-3"):
        only_plans.put(item)
    assert [only_plans.popleft() for _ in range(2)] == ["plan-2", "plan-3"]  # the oldest goes


async def test_wait_returns_on_an_item_or_after_max_wait_and_idle_follows_the_consumer() -> None:
    inbox: Inbox[int] = Inbox(10, droppable=lambda _: True)
    assert await inbox.wait(0.01) is False
    await asyncio.wait_for(inbox.idle(), 1)  # waiting with nothing queued is idle
    inbox.put(1)
    idle = asyncio.create_task(inbox.idle())
    await asyncio.sleep(0)
    assert not idle.done()  # an item is queued: not idle
    assert await inbox.wait(0.01) is True and inbox.popleft() == 1
    waiter = asyncio.create_task(inbox.wait())
    await asyncio.wait_for(idle, 1)  # the consumer waits again: idle
    inbox.put(2)
    assert await asyncio.wait_for(waiter, 1) is True
