"""InvocationDispatcher: runs one invocation on a worker of its function's language.

It picks a worker (waiting for a starting one), sends the InvocationRequest, applies host.json's
functionTimeout (a timed-out worker is recycled), counts the outcome and keeps the in-flight
bookkeeping a drain waits on. What it needs from the host is the small `DispatchServices` protocol,
so it imports neither the host nor the extensions whose bindings it fills in.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from funcplane_host.app.catalog import FunctionCatalog
from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.app.host_json import HostConfig
from funcplane_host.invocation import Invocation, InvocationFailed
from funcplane_host.local_run import current_invocation_id
from funcplane_host.logs import RecentInvocations
from funcplane_host.metrics import HostMetrics
from funcplane_host.workers.channel import WorkerChannel, WorkerUnavailable
from funcplane_host.workers.supervisor import WorkerPool
from funcplane_protocol import FunctionRpc_pb2 as rpc

WORKER_WAIT_LIMIT = 30.0  # longest an invocation waits for a (re)starting worker


class ConcurrencyGate(Protocol):
    """Admission of invocations under the app's dynamic concurrency limits."""

    async def enter(self, definition: FunctionDefinition) -> None: ...
    def abandon(self, definition: FunctionDefinition) -> None: ...
    def completed(self, definition: FunctionDefinition, latency: float) -> None: ...


class InputBindingSource(Protocol):
    """An extension that adds input values to a function's invocation (durable clients)."""

    def input_bindings(self, definition: FunctionDefinition) -> list[Any]: ...


class OutputBindingSink(Protocol):
    """An extension that writes what a successful invocation set on its output bindings (queues)."""

    async def send_outputs(self, definition: FunctionDefinition, response: Any) -> None: ...


class DispatchServices(Protocol):
    """What the dispatcher needs from the host."""

    @property
    def pools(self) -> Mapping[str, WorkerPool]: ...
    @property
    def catalog(self) -> FunctionCatalog: ...
    @property
    def config(self) -> HostConfig: ...
    @property
    def metrics(self) -> HostMetrics: ...
    @property
    def concurrency(self) -> ConcurrencyGate: ...
    @property
    def durable(self) -> InputBindingSource: ...
    @property
    def queues(self) -> OutputBindingSink: ...


class InvocationDispatcher:
    def __init__(self, services: DispatchServices) -> None:
        self.services = services
        self.active: dict[str, str] = {}  # invocation id -> function name
        self.finished = RecentInvocations()
        self.idle = asyncio.Event()
        self.idle.set()

    async def invoke(self, invocation: Invocation) -> Any:
        services = self.services
        definition = invocation.definition
        name = definition.name
        pool = services.pools.get(definition.language or "")
        if pool is None:
            state = services.catalog.states.get(name)
            raise InvocationFailed(503, f"function {name!r} cannot run: {state.error if state else 'no worker'}")
        await services.concurrency.enter(definition)  # an HTTP function waits for a slot; counted as started
        channel = pool.pick()
        if channel is None:
            try:
                channel = await pool.acquire(min(WORKER_WAIT_LIMIT, pool.description.init_timeout))
            except WorkerUnavailable as error:
                services.concurrency.abandon(definition)
                services.metrics.invocations.labels(function=name, outcome="unavailable").inc()
                raise InvocationFailed(503, str(error)) from None
        # A version-4 UUID from the process's PRNG: no system call per invocation (ids are not secrets).
        invocation_id = str(uuid.UUID(int=random.getrandbits(128), version=4))
        current_invocation_id.set(invocation_id)
        message = _request_message(channel, invocation, invocation_id)
        message.invocation_request.input_data.extend(services.durable.input_bindings(definition))
        metrics = services.metrics
        in_flight = metrics.child("in_flight", name)
        self.active[invocation_id] = name
        self.idle.clear()
        channel.in_flight += 1
        in_flight.inc()
        started = time.perf_counter()
        outcome = "failure"
        timer = None
        try:
            timeout = services.config.function_timeout
            try:
                future = await channel.start_invocation(message)
                del message  # the worker has it now; a large body need not stay in memory
                if timeout is not None:
                    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
                response = await future
            except WorkerUnavailable as error:
                outcome = "worker_lost"
                raise InvocationFailed(
                    502, f"function {name!r} failed: the worker went away mid-invocation: {error}", invocation_id
                ) from None
            except TimeoutError:
                outcome = "timeout"
                channel.forget_invocation(invocation_id)
                message = f"function {name!r} timed out after {timeout:g}s (host.json functionTimeout)"
                # As on Azure, an out-of-process worker with a timed-out invocation is replaced: the
                # invocation may hold a thread of its pool for good, and cancelling cannot free it.
                pool.recycle(channel, f"{message}; invocation {invocation_id}")
                raise InvocationFailed(504, message, invocation_id) from None
            status = response.result.status
            if status == rpc.StatusResult.Success:
                await services.queues.send_outputs(definition, response)  # queue output bindings, any trigger
                outcome = "success"
                return response
            outcome = "cancelled" if status == rpc.StatusResult.Cancelled else "failure"
            exception = response.result.exception
            raise InvocationFailed(
                500,
                f"function {name!r} {'was cancelled' if outcome == 'cancelled' else 'failed'}",
                invocation_id,
                detail=exception.message or response.result.result or None,
            )
        finally:
            if timer is not None:
                timer.cancel()
            channel.in_flight -= 1
            in_flight.dec()
            metrics.child("invocations", name, outcome).inc()
            duration = time.perf_counter() - started
            metrics.child("duration", name).observe(duration)
            services.concurrency.completed(definition, duration)
            del self.active[invocation_id]
            self.finished.add(invocation_id, name)
            if not self.active:
                self.idle.set()


def _request_message(channel: WorkerChannel, invocation: Invocation, invocation_id: str) -> Any:
    """The StreamingMessage of an InvocationRequest, its inputs filled in place for `channel`."""
    message = rpc.StreamingMessage(request_id=channel.request_id)
    request = message.invocation_request
    request.invocation_id = invocation_id
    request.function_id = channel.function_ids.get(invocation.definition.name, invocation.definition.function_id)
    invocation.build(channel, request)
    return message


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
