"""The worker's end of FunctionRpc.EventStream, as a message pipe for the dispatcher.

Outgoing messages go through one buffer that feeds the gRPC call, so sending is cheap and safe
from any thread (log lines written on function threads); incoming messages are read in order.
Log lines are bounded: beyond LOG_BUFFER_LIMIT waiting lines new ones are dropped and counted
(the count goes to the host, which exposes it as a metric), and while more than
LOG_BACKLOG_BYPASS lines wait, responses go ahead of them, so one function's log flood neither
exhausts memory nor stalls other invocations.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator

import grpc

from funcplane_pyworker.options import WorkerOptions
from funcplane_pyworker.protocol import pb, pb_grpc


LOG_BUFFER_LIMIT = 10_000
LOG_BACKLOG_BYPASS = 100
DROPPED_LOG_LINES_PROPERTY = "droppedLogLines"
DROP_REPORT_CATEGORY = "funcplane_pyworker.logs"


def _is_log(message: pb.StreamingMessage) -> bool:
    return message.WhichOneof("content") == "rpc_log"


class OutgoingBuffer:
    """Messages waiting for the stream, fed from any thread, taken on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._in_order: collections.deque[pb.StreamingMessage] = collections.deque()
        self._ahead: collections.deque[pb.StreamingMessage] = collections.deque()  # passing a log backlog
        self._waiting_logs = 0
        self.dropped_logs = 0
        self._closing = False
        self._wake_pending = False
        self._ready = asyncio.Event()

    def put(self, message: pb.StreamingMessage) -> None:
        with self._lock:
            if _is_log(message):
                if self._waiting_logs >= LOG_BUFFER_LIMIT:
                    self.dropped_logs += 1
                    return
                self._waiting_logs += 1
                self._in_order.append(message)
            elif self._waiting_logs > LOG_BACKLOG_BYPASS:
                self._ahead.append(message)
            else:
                self._in_order.append(message)
            if threading.get_ident() == self._loop_thread:
                self._ready.set()
                return
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            pass  # the loop is gone: the worker is exiting and the message has nowhere to go

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    def close(self) -> None:
        self._closing = True
        self._ready.set()

    def _take(self) -> pb.StreamingMessage | None:
        with self._lock:
            if self._ahead:
                return self._ahead.popleft()
            if self.dropped_logs and self._waiting_logs < LOG_BUFFER_LIMIT // 2:
                dropped, self.dropped_logs = self.dropped_logs, 0
                return _drop_report(dropped)
            if self._in_order:
                message = self._in_order.popleft()
                if _is_log(message):
                    self._waiting_logs -= 1
                return message
            return None

    async def messages(self) -> AsyncIterator[pb.StreamingMessage]:
        """Everything put so far and from now on, until close() and the buffer is empty."""
        while True:
            message = self._take()
            if message is not None:
                yield message
                continue
            if self._closing:
                return
            self._ready.clear()
            message = self._take()
            if message is not None:
                yield message
                continue
            await self._ready.wait()


def _drop_report(dropped: int) -> pb.StreamingMessage:
    log = pb.RpcLog(
        category=DROP_REPORT_CATEGORY,
        level=pb.RpcLog.Warning,
        message=f"dropped {dropped} log line(s): more than {LOG_BUFFER_LIMIT} were waiting to be sent",
        log_category=pb.RpcLog.System,
    )
    log.propertiesMap[DROPPED_LOG_LINES_PROPERTY].int = dropped
    return pb.StreamingMessage(rpc_log=log)


class HostUnreachable(ConnectionError):
    pass


class StreamBroken(ConnectionError):
    pass


class HostStream:
    def __init__(self, options: WorkerOptions) -> None:
        self._options = options
        self._outgoing = OutgoingBuffer(asyncio.get_running_loop())
        self._writes_done = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None

    async def connect(self, timeout_seconds: float) -> None:
        channel_options: list[tuple[str, int]] = [("grpc.http2.bdp_probe", 0)]
        if self._options.max_message_length:
            channel_options += [
                ("grpc.max_send_message_length", self._options.max_message_length),
                ("grpc.max_receive_message_length", self._options.max_message_length),
            ]
        self._channel = grpc.aio.insecure_channel(self._options.target, options=channel_options)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_seconds)
        except TimeoutError as error:
            raise HostUnreachable(
                f"cannot reach the host at {self._options.target} within {timeout_seconds:.0f}s"
            ) from error

    def send(self, message: pb.StreamingMessage) -> None:
        """Queue a message for the host; safe from any thread, never blocks."""
        self._outgoing.put(message)

    async def close_writes(self) -> None:
        """Send everything queued so far, then half-close the worker's side."""
        self._outgoing.close()
        await self._writes_done.wait()

    async def _outgoing_messages(self) -> AsyncIterator[pb.StreamingMessage]:
        try:
            async for message in self._outgoing.messages():
                yield message
        finally:
            self._writes_done.set()

    async def incoming(self) -> AsyncIterator[pb.StreamingMessage]:
        """The host's messages in order; ends when the host closes, raises StreamBroken on error."""
        assert self._channel is not None, "connect() first"
        self._call = pb_grpc.FunctionRpcStub(self._channel).EventStream(self._outgoing_messages())
        try:
            async for message in self._call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise StreamBroken(f"{error.code()}: {error.details()}") from error

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
