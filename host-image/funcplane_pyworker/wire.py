"""The worker's one gRPC call, FunctionRpc.EventStream, as the client end of funcplane_protocol.http2.

A worker makes exactly one call for its whole life: a bidirectional stream to the host's gRPC
server. The host (or any gRPC server, such as the test peers built on grpcio) sees an ordinary
gRPC client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from funcplane_protocol.http2 import (
    DATA, END_STREAM, EVENT_STREAM_PATH, GRPC_STATUS_NAMES, PREFACE, RST_STREAM, CANCEL,
    CallEnded, GrpcConnection, GrpcStream, frame, grpc_message_text,
)

STREAM_ID = 1

__all__ = ["CallEnded", "EventStreamConnection", "open_event_stream"]


class EventStreamConnection(GrpcConnection):
    """The connection and its one call on stream 1.

    `on_message` gets each StreamingMessage from the host, in order, on the loop. `take` is
    asked for the next message to send whenever there is room (None: nothing waiting);
    `writes_closed` says whether the sender is done, after which the stream is half-closed once
    everything taken is out. `finished` resolves when the call ends: None for an OK status,
    CallEnded otherwise."""

    def __init__(self, authority: str, on_message: Callable[[Any], None],
                 take: Callable[[], Any | None], writes_closed: Callable[[], bool],
                 max_receive_length: int | None) -> None:
        super().__init__(max_receive_length)
        self._authority = authority
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self._headers_seen = False
        stream = self.stream = GrpcStream(self, STREAM_ID, take)
        stream.on_message = on_message
        stream.on_end = self._end
        stream.closing = writes_closed
        stream.final_frame = lambda: frame(DATA, END_STREAM, STREAM_ID)  # the worker's half of the call is done
        self.streams[STREAM_ID] = stream

    def _start(self) -> None:
        headers = self.header_frame(STREAM_ID, 0, [
            (":method", "POST"), (":scheme", "http"), (":path", EVENT_STREAM_PATH), (":authority", self._authority),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "funcplane-pyworker"),
        ])
        self.write(PREFACE + self._local_settings() + headers)
        self.flush()

    def _on_headers(self, stream_id: int, fields: list[tuple[str, str]], end_stream: bool) -> None:
        headers = dict(fields)
        if stream_id != STREAM_ID:
            return
        if not self._headers_seen:
            self._headers_seen = True
            status = headers.get(":status")
            if status is not None and status != "200":
                raise CallEnded(f"the host answered the call with HTTP status {status}")
        if not end_stream:
            return
        code_text = headers.get("grpc-status", "")
        code = int(code_text) if code_text.isdigit() else 2
        if code == 0:
            self.stream.end(None)
            return
        message = grpc_message_text(headers.get("grpc-message", ""))
        raise CallEnded(f"{GRPC_STATUS_NAMES.get(code, code)}: {message}")

    def _remote_closed(self, stream: GrpcStream) -> None:
        raise CallEnded("the host ended the stream without a gRPC status")

    def _end(self, error: CallEnded | None) -> None:
        if self.finished.done():
            return
        if error is None:
            self.finished.set_result(None)
        else:
            self.finished.set_exception(error)
            self.finished.exception()  # retrieved here: whoever awaits it sees it too

    def cancel(self) -> None:
        """Cancel the call (RST_STREAM) and close the connection."""
        self.write(frame(RST_STREAM, 0, STREAM_ID, CANCEL.to_bytes(4, "big")))
        self.abort(CallEnded("CANCELLED: the worker cancelled the call"))


async def open_event_stream(host: str, port: int, timeout: float, **connection: Any) -> EventStreamConnection:
    """Connect to the host's gRPC server (retrying until `timeout`, as a gRPC channel waits for
    its server) and start the EventStream call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    delay = 0.05
    while True:
        try:
            _transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: EventStreamConnection(authority, **connection), host, port),
                max(0.1, deadline - loop.time()),
            )
            return protocol
        except (OSError, TimeoutError) as error:
            if loop.time() + delay >= deadline:
                raise TimeoutError(f"{error}") from error
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)
