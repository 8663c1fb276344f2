"""The host side of FunctionRpc.EventStream on 127.0.0.1: each call is routed to its worker's
channel by the worker id in the StartStream message.

The server end of funcplane_protocol.http2: gRPC over HTTP/2 handled on the event loop, so a
message from a worker reaches its channel within `data_received` and an InvocationRequest is
written without leaving the loop (grpc.aio cost two thread hand-offs per message). Any gRPC
client connects as to a grpcio server. Request headers are read as a gRPC server reads them: a
POST with content-type application/grpc[+proto] (else HTTP 415), to the one method served,
EventStream; any other method gets a trailers-only UNIMPLEMENTED, and the connection's other
streams go on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from funcplane_protocol.http2 import (
    END_STREAM, EVENT_STREAM_PATH, GOAWAY, NO_ERROR, PREFACE, RST_STREAM, CallEnded, GrpcConnection, GrpcStream,
    frame, trailers,
)
from funcplane_host.workers.channel import WorkerChannel

logger = logging.getLogger("funcplane.host.grpc")

_RESPONSE_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
NOT_FOUND, FAILED_PRECONDITION, UNIMPLEMENTED, ALREADY_EXISTS, INTERNAL = 5, 9, 12, 6, 13


class EventStreamServerConnection(GrpcConnection):
    """One worker's connection; its calls are EventStreams."""

    def __init__(self, server: GrpcServer) -> None:
        super().__init__()
        self._server = server
        self._preface = bytearray()
        self._preface_done = False

    def _start(self) -> None:
        self._server.connections.add(self)
        self.write(self._local_settings())

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._preface_done:
            self._preface += data
            if len(self._preface) < len(PREFACE):
                return
            if bytes(self._preface[:len(PREFACE)]) != PREFACE:
                self.abort(CallEnded("not an HTTP/2 client: the connection preface is missing"))
                return
            self._preface_done = True
            data = bytes(self._preface[len(PREFACE):])
            self._preface = bytearray()
            if not data:
                return
        super().data_received(data)

    def _on_headers(self, stream_id: int, fields: list[tuple[str, str]], end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from a client: the end of its side
            if end_stream:
                self._remote_closed(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self.last_peer_stream:
            return  # not a new client stream; nothing of ours to answer
        self.last_peer_stream = stream_id
        headers = dict(fields)
        method, path = headers.get(":method", ""), headers.get(":path", "")
        content_type = headers.get("content-type", "")
        if method != "POST":
            self._refuse(stream_id, end_stream, [(":status", "405"), ("allow", "POST")],
                         f"gRPC calls are POST requests, not {method or 'a request without :method'}")
        elif not content_type.startswith("application/grpc"):
            self._refuse(stream_id, end_stream, [(":status", "415")],
                         f"content-type {content_type or '(none)'} is not application/grpc")
        elif path != EVENT_STREAM_PATH:
            self._refuse(stream_id, end_stream, _RESPONSE_HEADERS, f"method {path or '(no :path)'} is not "
                         f"served here; only {EVENT_STREAM_PATH}", UNIMPLEMENTED)
        else:
            self._event_stream(stream_id, end_stream)

    def _refuse(self, stream_id: int, end_stream: bool, response: list[tuple[str, str]], message: str,
                status: int = INTERNAL) -> None:
        """Answer a call that is not taken up with one header block (gRPC's trailers-only response),
        and stop the client's side if it is still sending; the connection's other calls go on."""
        self.write(self.header_frame(stream_id, END_STREAM, response + trailers(status, message)))
        if not end_stream:
            self.write(frame(RST_STREAM, 0, stream_id, NO_ERROR.to_bytes(4, "big")))

    def _event_stream(self, stream_id: int, end_stream: bool) -> None:
        stream = GrpcStream(self, stream_id, None)
        stream.closing = lambda: True  # the final frame (trailers) is set when the call ends
        self.streams[stream_id] = stream
        self.write(self.header_frame(stream_id, 0, _RESPONSE_HEADERS))
        stream.on_message = lambda message: self._first_message(stream, message)
        if end_stream:
            self._remote_closed(stream)

    def _first_message(self, stream: GrpcStream, message: Any) -> None:
        stream.on_message = None
        if message.WhichOneof("content") != "start_stream":
            finish(stream, FAILED_PRECONDITION, "the first message must be StartStream")
            return
        worker_id = message.start_stream.worker_id
        channel = self._server.channels.get(worker_id)
        if channel is None:
            logger.warning("stream from unknown worker id %r refused", worker_id)
            finish(stream, NOT_FOUND, f"no worker with id {worker_id!r} was started by this host")
            return
        if not channel.attach(stream):
            finish(stream, ALREADY_EXISTS, f"worker {worker_id} opened a second stream")

    def _remote_closed(self, stream: GrpcStream) -> None:
        # The worker closed its side: the call ends with OK, as when a servicer returns.
        if stream.final_frame is None:
            finish(stream, 0)

    def _local_closed(self, stream: GrpcStream) -> None:
        stream.end(None)  # trailers are out: the call is over for both sides

    def goaway(self) -> None:
        self.write(frame(GOAWAY, 0, 0, self.last_peer_stream.to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")))


def finish(stream: GrpcStream, status: int, message: str = "") -> None:
    """End the call with trailers carrying `status`, once what is queued for it is written."""
    if stream.final_frame is None:
        fields = trailers(status, message)
        connection = stream.connection
        stream.final_frame = lambda: connection.header_frame(stream.stream_id, END_STREAM, fields)
        connection.schedule_flush()


class GrpcServer:
    def __init__(self) -> None:
        self.channels: dict[str, WorkerChannel] = {}
        self.connections: set[EventStreamServerConnection] = set()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: EventStreamServerConnection(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def register(self, channel: WorkerChannel) -> None:
        self.channels[channel.worker_id] = channel

    def unregister(self, channel: WorkerChannel) -> None:
        self.channels.pop(channel.worker_id, None)

    async def stop(self, grace: float) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.goaway()
            for stream in list(connection.streams.values()):
                finish(stream, 0)
            connection.flush()
        if grace > 0 and self.connections:
            await asyncio.sleep(min(grace, 0.1))
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
