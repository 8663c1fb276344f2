"""The work queue's delayed adds: one per key, the earliest asked for, and none after a stop."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from funcplane.kube.workqueue import WorkQueue


async def test_a_key_keeps_one_delayed_add_the_earliest() -> None:
    ran: list[Hashable] = []
    done = asyncio.Event()

    async def work(key: Hashable) -> None:
        ran.append(key)
        done.set()

    queue = WorkQueue(work)
    queue.add_after("swap", 3600)
    queue.add_after("swap", 0.01)  # sooner: replaces the hour-long wait
    queue.add_after("swap", 1800)  # later than the one pending: ignored
    await asyncio.wait_for(done.wait(), timeout=30)
    await queue.stop()
    assert ran == ["swap"]
    assert queue.idle() and not queue._delayed


async def test_stopping_cancels_delayed_adds() -> None:
    ran: list[Hashable] = []

    async def work(key: Hashable) -> None:
        ran.append(key)

    queue = WorkQueue(work)
    queue.add_after("swap", 0.01)
    await queue.stop()
    await asyncio.sleep(0.05)
    assert ran == []
