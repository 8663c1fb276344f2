"""HTTP concurrency limits from host.json extensions.http: queue up to the concurrency limit,
reject with 429 beyond the outstanding limit."""

from __future__ import annotations

import asyncio

from funcplane_host.metrics import HostMetrics

THROTTLED = "too many outstanding requests (extensions.http.maxOutstandingRequests)"


class HttpThrottle:
    def __init__(self, max_concurrent: int, max_outstanding: int, metrics: HostMetrics) -> None:
        self.max_concurrent = max_concurrent
        self.max_outstanding = max_outstanding
        self._semaphore = asyncio.Semaphore(max_concurrent) if max_concurrent > 0 else None
        self.outstanding = 0
        self._metrics = metrics

    def try_enter(self) -> bool:
        """Count a new request as outstanding, or refuse it (the caller answers 429)."""
        if 0 < self.max_outstanding <= self.outstanding:
            self._metrics.http_throttled.inc()
            return False
        self.outstanding += 1
        return True

    async def acquire(self) -> None:
        semaphore = self._semaphore
        if semaphore is None:
            return
        if semaphore.locked():
            self._metrics.http_queued.inc()
            try:
                await semaphore.acquire()
            finally:
                self._metrics.http_queued.dec()
        else:
            await semaphore.acquire()

    def release(self, acquired: bool) -> None:
        if acquired and self._semaphore is not None:
            self._semaphore.release()
        self.outstanding -= 1

    def admitted(self) -> Admission:
        """`async with throttle.admitted() as admitted:` holds a concurrency slot for the block
        (queueing for one first); `admitted` is False, holding nothing, when the request is beyond
        maxOutstandingRequests (the caller answers 429)."""
        return Admission(self)


class Admission:
    __slots__ = ("_throttle", "_entered", "_acquired")

    def __init__(self, throttle: HttpThrottle) -> None:
        self._throttle = throttle
        self._entered = self._acquired = False

    async def __aenter__(self) -> bool:
        if not self._throttle.try_enter():
            return False
        self._entered = True
        await self._throttle.acquire()
        self._acquired = True
        return True

    async def __aexit__(self, *exc: object) -> None:
        if self._entered:
            self._throttle.release(self._acquired)
