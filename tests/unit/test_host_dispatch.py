"""The invocation dispatcher behind its DispatchServices protocol, against a recording worker channel.

The stand-in channel records each InvocationRequest the dispatcher writes and answers it as the test
says (a response, none at all, or the worker going away); the catalog, host.json config and
metrics are the host's real ones. Real workers over gRPC are covered by tests/host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from funcplane_host.app.catalog import FunctionCatalog
from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.app.host_json import HostConfig
from funcplane_host.dispatch import InvocationDispatcher
from funcplane_host.invocation import Invocation, InvocationFailed
from funcplane_host.metrics import HostMetrics
from funcplane_host.workers.channel import WorkerUnavailable
from funcplane_protocol import FunctionRpc_pb2 as rpc

FUNCTION = FunctionDefinition(
    name="hello",
    bindings=[
        {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous"},
        {"type": "http", "direction": "out", "name": "$return"},
    ],
    language="python",
)

Answer = Callable[[Any, "asyncio.Future[Any]"], None]


def answer_with(status: int, message: str = "") -> Answer:
    def answer(request: Any, future: asyncio.Future[Any]) -> None:
        response = rpc.InvocationResponse(invocation_id=request.invocation_request.invocation_id)
        response.result.status = status
        response.result.exception.message = message
        asyncio.get_running_loop().call_soon(future.set_result, response)
    return answer


def never_answer(_request: Any, _future: asyncio.Future[Any]) -> None:
    pass


def worker_exits(_request: Any, future: asyncio.Future[Any]) -> None:
    error = WorkerUnavailable("worker process w-1 (pid 4242) was killed by SIGKILL")
    asyncio.get_running_loop().call_soon(future.set_exception, error)


class RecordingChannel:
    """What the dispatcher uses of a WorkerChannel; answers each request with `answer`."""

    def __init__(self, answer: Answer) -> None:
        self.worker_id = "w-1"
        self.request_id = "start-1"
        self.function_ids = {"hello": "id-of-hello-in-w-1"}
        self.capabilities: dict[str, str] = {}
        self.in_flight = 0
        self.answer = answer
        self.requests: list[Any] = []
        self.forgotten: list[str] = []
        self.in_flight_while_waiting: list[int] = []

    async def start_invocation(self, message: Any) -> asyncio.Future[Any]:
        self.requests.append(message)
        self.in_flight_while_waiting.append(self.in_flight)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.answer(message, future)
        return future

    def forget_invocation(self, invocation_id: str) -> None:
        self.forgotten.append(invocation_id)


@dataclass
class Description:
    init_timeout: float = 0.1


class RecordingPool:
    def __init__(self, channel: RecordingChannel | None) -> None:
        self.channel = channel
        self.description = Description()
        self.recycled: list[tuple[Any, str]] = []

    def pick(self) -> RecordingChannel | None:
        return self.channel

    async def acquire(self, timeout: float) -> RecordingChannel:
        raise WorkerUnavailable("no python worker is ready: worker process exited with code 3")

    def recycle(self, channel: Any, reason: str) -> bool:
        self.recycled.append((channel, reason))
        return True


@dataclass
class RecordingGate:
    entered: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    async def enter(self, definition: FunctionDefinition) -> None:
        self.entered.append(definition.name)

    def abandon(self, definition: FunctionDefinition) -> None:
        self.abandoned.append(definition.name)

    def completed(self, definition: FunctionDefinition, latency: float) -> None:
        self.finished.append(definition.name)


class NoDurableInputs:
    def input_bindings(self, definition: FunctionDefinition) -> list[Any]:
        return []


@dataclass
class RecordingOutputs:
    sent: list[str] = field(default_factory=list)

    async def send_outputs(self, definition: FunctionDefinition, response: Any) -> None:
        self.sent.append(response.invocation_id)


class Services:
    """DispatchServices with one python pool."""

    def __init__(self, channel: RecordingChannel | None, function_timeout: float | None = 5.0) -> None:
        self.pool = RecordingPool(channel)
        self.pools = {"python": self.pool}
        self.catalog = FunctionCatalog()
        self.catalog.add(FUNCTION)
        self.config = HostConfig(function_timeout=function_timeout)
        self.metrics = HostMetrics("host-1", "production")
        self.concurrency = RecordingGate()
        self.durable = NoDurableInputs()
        self.queues = RecordingOutputs()

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "funcplane_invocations_total", {"function": "hello", "outcome": outcome})
        return value or 0.0


def http_invocation() -> Invocation:
    def build(_channel: Any, request: Any) -> None:
        request.input_data.add(name="req").data.http.method = "GET"
    return Invocation(FUNCTION, build)


def assert_settled(dispatcher: InvocationDispatcher, services: Services, channel: RecordingChannel | None) -> None:
    """After any outcome: nothing is left in flight and a drain would not wait."""
    assert dispatcher.active == {}
    assert dispatcher.idle.is_set()
    if channel is not None:
        assert channel.in_flight == 0
    value = services.metrics.registry.get_sample_value("funcplane_invocations_in_flight", {"function": "hello"})
    assert not value


async def test_success_returns_the_response_and_writes_the_outputs() -> None:
    channel = RecordingChannel(answer_with(rpc.StatusResult.Success))
    services = Services(channel)
    dispatcher = InvocationDispatcher(services)

    response = await dispatcher.invoke(http_invocation())

    [sent] = channel.requests
    request = sent.invocation_request
    assert sent.request_id == "start-1"
    assert request.function_id == "id-of-hello-in-w-1"  # the id this worker knows the function by
    assert [(i.name, i.data.http.method) for i in request.input_data] == [("req", "GET")]
    assert response.invocation_id == request.invocation_id
    assert channel.in_flight_while_waiting == [1]
    assert services.queues.sent == [request.invocation_id]
    assert services.concurrency.entered == services.concurrency.finished == ["hello"]
    assert services.count("success") == 1
    assert dispatcher.finished.get(request.invocation_id) == "hello"
    assert_settled(dispatcher, services, channel)


async def test_failure_is_a_500_with_the_function_error_as_detail() -> None:
    channel = RecordingChannel(answer_with(rpc.StatusResult.Failure, "RuntimeError: db password=hunter2"))
    services = Services(channel)
    dispatcher = InvocationDispatcher(services)

    with pytest.raises(InvocationFailed) as failed:
        await dispatcher.invoke(http_invocation())

    assert failed.value.status == 500
    assert failed.value.invocation_id == channel.requests[0].invocation_request.invocation_id
    assert failed.value.detail == "RuntimeError: db password=hunter2"
    assert "hunter2" not in str(failed.value)  # the message a caller may see holds no function text
    assert services.queues.sent == []
    assert services.count("failure") == 1
    assert_settled(dispatcher, services, channel)


async def test_cancelled_is_a_500_counted_as_cancelled() -> None:
    channel = RecordingChannel(answer_with(rpc.StatusResult.Cancelled))
    services = Services(channel)
    dispatcher = InvocationDispatcher(services)

    with pytest.raises(InvocationFailed, match="was cancelled") as failed:
        await dispatcher.invoke(http_invocation())

    assert failed.value.status == 500
    assert services.count("cancelled") == 1
    assert_settled(dispatcher, services, channel)


async def test_timeout_is_a_504_and_recycles_the_worker() -> None:
    channel = RecordingChannel(never_answer)
    services = Services(channel, function_timeout=0.05)
    dispatcher = InvocationDispatcher(services)

    with pytest.raises(InvocationFailed, match="timed out after 0.05s") as failed:
        await dispatcher.invoke(http_invocation())

    invocation_id = channel.requests[0].invocation_request.invocation_id
    assert failed.value.status == 504
    assert failed.value.invocation_id == invocation_id
    assert channel.forgotten == [invocation_id]
    [(recycled, reason)] = services.pool.recycled
    assert recycled is channel
    assert invocation_id in reason and "functionTimeout" in reason
    assert services.count("timeout") == 1
    assert services.concurrency.finished == ["hello"]
    assert_settled(dispatcher, services, channel)


async def test_worker_gone_mid_invocation_is_a_502() -> None:
    channel = RecordingChannel(worker_exits)
    services = Services(channel)
    dispatcher = InvocationDispatcher(services)

    with pytest.raises(InvocationFailed, match="went away mid-invocation.*SIGKILL") as failed:
        await dispatcher.invoke(http_invocation())

    assert failed.value.status == 502
    assert failed.value.invocation_id == channel.requests[0].invocation_request.invocation_id
    assert services.pool.recycled == []  # the supervisor restarts it; nothing to recycle
    assert services.count("worker_lost") == 1
    assert_settled(dispatcher, services, channel)


async def test_no_worker_to_pick_is_a_503_and_leaves_the_concurrency_slot() -> None:
    services = Services(channel=None)
    dispatcher = InvocationDispatcher(services)

    with pytest.raises(InvocationFailed, match="no python worker is ready.*code 3") as failed:
        await dispatcher.invoke(http_invocation())

    assert failed.value.status == 503
    assert services.concurrency.entered == services.concurrency.abandoned == ["hello"]
    assert services.concurrency.finished == []
    assert services.count("unavailable") == 1
    assert_settled(dispatcher, services, None)


async def test_a_language_without_a_pool_is_a_503_naming_the_reason() -> None:
    services = Services(RecordingChannel(never_answer))
    services.pools = {}
    dispatcher = InvocationDispatcher(services)

    with pytest.raises(InvocationFailed, match="'hello' cannot run") as failed:
        await dispatcher.invoke(http_invocation())

    assert failed.value.status == 503
    assert services.concurrency.entered == []
