"""One worker's bidirectional gRPC stream: outbound queue, responses matched to their requests.

Workers answer with their own start-up request id, not the id of the request, so responses are
matched by kind (init, metadata, status), by function id (loads) and by invocation id.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any
from collections.abc import Callable

from funcplane_protocol import FunctionRpc_pb2 as rpc

StreamingMessage = rpc.StreamingMessage
logger = logging.getLogger("funcplane.host.worker")


class WorkerUnavailable(RuntimeError):
    """The worker went away (crash, exit, lost stream) before answering."""


_RESPONSE_KINDS = {
    "worker_init_response",
    "function_metadata_response",
    "worker_status_response",
    "function_environment_reload_response",
    "worker_warmup_response",
    "close_shared_memory_resources_response",
}


class WorkerChannel:
    def __init__(self, worker_id: str, language: str, on_log: Callable[[WorkerChannel, Any], None]) -> None:
        self.worker_id = worker_id
        self.language = language
        self.request_id = worker_id  # the start-up request id passed on the command line
        self.capabilities: dict[str, str] = {}
        self.function_ids: dict[str, str] = {}  # function name -> id known to this worker
        self.in_flight = 0
        self.pid: int | None = None
        self._loop = asyncio.get_running_loop()
        self._backlog: list[StreamingMessage] = []  # sent before the worker's stream attached
        self._writes_closed = False
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._stream_done: asyncio.Future[None] = self._loop.create_future()
        self._by_kind: dict[str, collections.deque[asyncio.Future[Any]]] = collections.defaultdict(collections.deque)
        self._loads: dict[str, asyncio.Future[Any]] = {}
        self._invocations: dict[str, asyncio.Future[Any]] = {}
        self._on_log = on_log
        self._stream: Any = None  # the call's GrpcStream (funcplane_protocol.http2)
        self.failure: str | None = None

    # ---- stream side (called by the gRPC servicer) --------------------------------------

    def attach(self, stream: Any) -> bool:
        """Take the worker's call (a GrpcStream): its messages come to `dispatch`, ours go out on
        it. False if the worker already has one."""
        if self._connected.done():
            return False
        self._stream = stream
        stream.on_message = self.dispatch
        stream.on_end = self._stream_ended
        self._connected.set_result(None)
        for message in self._backlog:
            stream.send(message)
        self._backlog.clear()
        return True

    def _stream_ended(self, error: Exception | None) -> None:
        logger.debug("stream of worker %s ended: %r", self.worker_id, error)
        self._writes_closed = True
        if not self._stream_done.done():
            self._stream_done.set_result(None)

    def dispatch(self, message: StreamingMessage) -> None:
        kind = message.WhichOneof("content")
        if kind == "invocation_response":
            response = message.invocation_response
            future = self._invocations.pop(response.invocation_id, None)
            if future is not None and not future.done():
                future.set_result(response)
        elif kind == "rpc_log":
            self._on_log(self, message.rpc_log)
        elif kind == "function_load_response":
            self._resolve_load(message.function_load_response)
        elif kind == "function_load_response_collection":
            for response in message.function_load_response_collection.function_load_responses:
                self._resolve_load(response)
        elif kind in _RESPONSE_KINDS:
            waiting = self._by_kind.get(kind)
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(getattr(message, kind))
                    break
        elif kind in ("worker_heartbeat", "worker_action_response"):
            logger.debug("worker %s sent %s", self.worker_id, kind)
        else:
            logger.warning("worker %s sent unexpected message %s", self.worker_id, kind)

    def _resolve_load(self, response: Any) -> None:
        future = self._loads.pop(response.function_id, None)
        if future is not None and not future.done():
            future.set_result(response)

    # ---- host side ----------------------------------------------------------------------

    async def wait_connected(self) -> None:
        await asyncio.shield(self._connected)

    async def wait_stream_closed(self) -> None:
        await asyncio.shield(self._stream_done)

    @property
    def connected(self) -> bool:
        return self._connected.done() and not self._stream_done.done()

    def send(self, message: StreamingMessage) -> None:
        if self.failure is not None:
            raise WorkerUnavailable(self.failure)
        if self._writes_closed:
            return
        if self._stream is None:
            self._backlog.append(message)
        else:
            self._stream.send(message)

    async def request(self, message: StreamingMessage, response_kind: str, timeout: float) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._by_kind[response_kind].append(future)
        self.send(message)
        return await asyncio.wait_for(future, timeout)

    async def load(self, request: Any, timeout: float) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._loads[request.function_id] = future
        self.send(StreamingMessage(request_id=self.request_id, function_load_request=request))
        return await asyncio.wait_for(future, timeout)

    async def start_invocation(self, message: StreamingMessage) -> asyncio.Future[Any]:
        """Send a StreamingMessage holding an InvocationRequest; the returned future resolves with
        the InvocationResponse, or fails with WorkerUnavailable when the worker goes away first.
        The message is written at the end of this loop turn, with whatever else was sent in it."""
        if self.failure is not None or self._stream is None or self._writes_closed:
            raise WorkerUnavailable(self.failure or f"worker {self.worker_id} has no stream")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._invocations[message.invocation_request.invocation_id] = future
        self._stream.send(message)
        return future

    def pending_invocations(self) -> list[str]:
        return list(self._invocations)

    def forget_invocation(self, invocation_id: str) -> None:
        self._invocations.pop(invocation_id, None)

    def fail(self, reason: str) -> None:
        """Mark the worker gone and fail everything still waiting on it with `reason`."""
        if self.failure is None:
            self.failure = reason
        error = WorkerUnavailable(self.failure)
        waiting: list[asyncio.Future[Any]] = [*self._invocations.values(), *self._loads.values()]
        for queue in self._by_kind.values():
            waiting.extend(queue)
        self._invocations.clear()
        self._loads.clear()
        self._by_kind.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
        self.close_stream()

    def close_stream(self) -> None:
        """Write nothing more (what waits is dropped)."""
        self._writes_closed = True
        self._backlog.clear()
        if self._stream is not None:
            self._stream.discard_queued()
