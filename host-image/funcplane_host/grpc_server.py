"""The host side of FunctionRpc.EventStream on 127.0.0.1: each stream is routed to its worker's
channel by the worker id in the StartStream message."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from funcplane_protocol import FunctionRpc_pb2_grpc as rpc_grpc
from funcplane_host.workers.channel import WorkerChannel

logger = logging.getLogger("funcplane.host.grpc")
_UNLIMITED = -1


class EventStreamServicer(rpc_grpc.FunctionRpcServicer):
    def __init__(self) -> None:
        self.channels: dict[str, WorkerChannel] = {}

    async def EventStream(self, request_iterator: Any, context: Any) -> None:  # noqa: N802 (gRPC name)
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("content") != "start_stream":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be StartStream")
        worker_id = first.start_stream.worker_id
        channel = self.channels.get(worker_id)
        if channel is None:
            logger.warning("stream from unknown worker id %r refused", worker_id)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no worker with id {worker_id!r} was started by this host")
        await channel.serve(context)


class GrpcServer:
    def __init__(self) -> None:
        self.servicer = EventStreamServicer()
        self.port = 0
        self._server: Any = None

    async def start(self) -> int:
        self._server = grpc.aio.server(options=[
            ("grpc.max_send_message_length", _UNLIMITED),
            ("grpc.max_receive_message_length", _UNLIMITED),
            ("grpc.http2.bdp_probe", 0),
        ])
        rpc_grpc.add_FunctionRpcServicer_to_server(self.servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self.port

    def register(self, channel: WorkerChannel) -> None:
        self.servicer.channels[channel.worker_id] = channel

    def unregister(self, channel: WorkerChannel) -> None:
        self.servicer.channels.pop(channel.worker_id, None)

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
