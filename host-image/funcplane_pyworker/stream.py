"""The worker's end of FunctionRpc.EventStream, as a message pipe for the dispatcher.

Outgoing messages go through one buffer that feeds the gRPC call (wire.py), so sending is cheap
and safe from any thread (log lines written on function threads); incoming messages are handed
to the dispatcher in order, on the event loop.
Log lines are bounded: beyond LOG_BUFFER_LIMIT waiting lines new ones are dropped and counted
(the count goes to the host, which exposes it as a metric), and while more than
LOG_BACKLOG_BYPASS lines wait, responses go ahead of them, so one function's log flood neither
exhausts memory nor stalls other invocations.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable

from funcplane_pyworker.options import WorkerOptions
from funcplane_pyworker.protocol import pb
from funcplane_pyworker.wire import CallEnded, EventStreamConnection, open_event_stream


LOG_BUFFER_LIMIT = 10_000
LOG_BACKLOG_BYPASS = 100
DROPPED_LOG_LINES_PROPERTY = "droppedLogLines"
DROP_REPORT_CATEGORY = "funcplane_pyworker.logs"


def _is_log(message: pb.StreamingMessage) -> bool:
    return message.WhichOneof("content") == "rpc_log"


class OutgoingBuffer:
    """Messages waiting for the stream, fed from any thread, taken on the event loop.

    The first message put after the buffer was emptied asks for `flush` to run on the loop (at
    the end of the current turn, or woken from another thread), so messages put close together
    leave in one write."""

    def __init__(self, loop: asyncio.AbstractEventLoop, flush: Callable[[], None]) -> None:
        self._loop = loop
        self._flush = flush
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._in_order: collections.deque[pb.StreamingMessage] = collections.deque()
        self._ahead: collections.deque[pb.StreamingMessage] = collections.deque()  # passing a log backlog
        self._waiting_logs = 0
        self.dropped_logs = 0
        self.closing = False
        self._flush_pending = False

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
            if self._flush_pending:
                return
            self._flush_pending = True
        try:
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._flush)
            else:
                self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:
            pass  # the loop is gone: the worker is exiting and the message has nowhere to go

    def close(self) -> None:
        self.closing = True
        self._loop.call_soon(self._flush)

    def take(self) -> pb.StreamingMessage | None:
        """The next message to send; None when the buffer is empty (the next put asks for a flush)."""
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
            self._flush_pending = False
            return None

    def drained(self) -> bool:
        """Closed and nothing left to send."""
        with self._lock:
            return self.closing and not self._ahead and not self._in_order and not self.dropped_logs


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
    """The EventStream call to the host: `send` from any thread, messages in through `on_message`
    on the loop (wire.py)."""

    def __init__(self, options: WorkerOptions) -> None:
        self._options = options
        self._outgoing = OutgoingBuffer(asyncio.get_running_loop(), self._flush)
        self._connection: EventStreamConnection | None = None

    def _flush(self) -> None:
        if self._connection is not None:
            self._connection.flush()

    async def connect(self, timeout_seconds: float, on_message: Callable[[pb.StreamingMessage], None]) -> None:
        """Open the connection and start the call; each message from the host goes to `on_message`."""
        try:
            self._connection = await open_event_stream(
                self._options.host, self._options.port, timeout_seconds, on_message=on_message,
                take=self._outgoing.take, writes_closed=self._outgoing.drained,
                max_receive_length=self._options.max_message_length,
            )
        except TimeoutError as error:
            raise HostUnreachable(
                f"cannot reach the host at {self._options.target} within {timeout_seconds:.0f}s: {error}"
            ) from error

    def send(self, message: pb.StreamingMessage) -> None:
        """Queue a message for the host; safe from any thread, never blocks."""
        self._outgoing.put(message)

    async def close_writes(self) -> None:
        """Send everything queued so far, then half-close the worker's side."""
        self._outgoing.close()

    async def finished(self) -> None:
        """Until the host ends the call; raises StreamBroken if it ended in error."""
        assert self._connection is not None, "connect() first"
        try:
            await self._connection.finished
        except CallEnded as error:
            raise StreamBroken(str(error)) from error

    def cancel(self) -> None:
        if self._connection is not None:
            self._connection.cancel()

    async def close(self) -> None:
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
