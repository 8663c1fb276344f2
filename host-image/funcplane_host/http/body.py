"""Reading request bodies within bounds: a size limit checked against Content-Length before any
byte is read (and while reading chunked bodies), a deadline, and a memory budget shared by all
requests so that concurrent large uploads wait instead of exhausting the host's memory."""

from __future__ import annotations

import asyncio
import collections

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from funcplane_host.app.front_door import FrontDoorOptions


class BodyRefused(Exception):
    """The body cannot be taken; `status` and the message are the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MemoryBudget:
    """Bytes of request bodies that may be held at once; waiters are served first come, first served."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def take(self, amount: int) -> None:
        if amount <= self.available and not self._waiters:
            self.available -= amount
            return
        future = asyncio.get_running_loop().create_future()
        entry = (amount, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give_back(amount)  # granted just as the wait was given up
            else:
                self._waiters.remove(entry)
                self._grant()
            raise

    def give_back(self, amount: int) -> None:
        self.available += amount
        self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.available:
            amount, future = waiters.popleft()
            if not future.done():
                self.available -= amount
                future.set_result(None)


class RequestBody:
    """One request's body, read within the front door's limits; `release()` frees its memory budget."""

    __slots__ = ("data", "_budget", "_held")

    def __init__(self, budget: MemoryBudget) -> None:
        self.data = b""
        self._budget = budget
        self._held = 0

    def take(self) -> bytes:
        """The body, handed over: this object keeps no reference (its memory stays held until
        `release()`, as the copies made from it live until the invocation ends)."""
        data, self.data = self.data, b""
        return data

    def release(self) -> None:
        if self._held:
            self._budget.give_back(self._held)
            self._held = 0

    async def _hold(self, amount: int) -> None:
        await self._budget.take(amount)
        self._held += amount

    async def read(self, request: web.Request, options: FrontDoorOptions) -> None:
        """Read the whole body or raise BodyRefused (413 too large, 408 too slow, 503 no memory)."""
        declared = request.content_length
        limit = options.max_body_size
        if declared is not None and declared > limit:
            raise too_large(limit)
        if not request.body_exists:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.body_timeout
        waiting_for_memory = True
        try:
            async with asyncio.timeout_at(deadline):
                if declared is not None:
                    await self._hold(declared)
                waiting_for_memory = False
                chunks: list[bytes] = []
                received = 0
                stream = request.content
                while chunk := await stream.readany():
                    received += len(chunk)
                    if received > limit:
                        raise too_large(limit)
                    if declared is None:  # chunked: hold memory as it arrives
                        waiting_for_memory = True
                        await self._hold(len(chunk))
                        waiting_for_memory = False
                    chunks.append(chunk)
                self.data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except (ConnectionError, HttpProcessingError) as error:  # the client went away or sent garbage
            raise BodyRefused(400, f"the request body could not be read: {error}") from None
        except TimeoutError:
            if waiting_for_memory:
                raise BodyRefused(503, "request bodies held in memory are at the limit "
                                       "(host.json extensions.http.maxRequestBodyMemory); retry later") from None
            raise BodyRefused(408, f"the request body did not arrive within {options.body_timeout:g}s "
                                   "(host.json extensions.http.requestBodyTimeout)") from None


def too_large(limit: int) -> BodyRefused:
    return BodyRefused(413, f"the request body is larger than {limit} bytes "
                            "(host.json extensions.http.maxRequestBodySize)")
