"""A coalescing work queue: a key queued many times is reconciled once; failures retry with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

logger = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


class WorkQueue:
    def __init__(self, work: Callable[[Hashable], Awaitable[None]], workers: int = 4) -> None:
        self._work = work
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._pending: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._delayed: dict[Hashable, asyncio.TimerHandle] = {}
        self._workers = workers

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._run()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._delayed.values():  # a delayed re-add must not restart a stopped queue
            timer.cancel()
        self._delayed.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def add(self, key: Hashable) -> None:
        self.start()
        if key in self._running:
            self._again.add(key)  # reconcile once more after the running pass
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add `key` after `delay` seconds; a key keeps one delayed add, the earliest asked for."""
        loop = asyncio.get_running_loop()
        earlier = self._delayed.get(key)
        if earlier is not None:
            if earlier.when() <= loop.time() + delay:
                return
            earlier.cancel()

        def fire() -> None:
            del self._delayed[key]
            self.add(key)

        self._delayed[key] = loop.call_later(delay, fire)

    def idle(self) -> bool:
        return not self._pending and not self._running

    async def _run(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            self._running.add(key)
            try:
                await self._work(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a failed reconcile must not stop the others
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(0.5 * 2 ** (failures - 1), MAX_BACKOFF)
                logger.warning("reconcile of %s failed (%s: %s); retrying in %.1fs",
                               key, type(error).__name__, error, delay)
                self.add_after(key, delay)
            finally:
                self._running.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
