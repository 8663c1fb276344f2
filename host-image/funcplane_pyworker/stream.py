"""The worker's end of FunctionRpc.EventStream, as a message pipe for the dispatcher.

Outgoing messages go through one queue that feeds the gRPC call, so sending is cheap and safe
from any thread (log lines written on function threads); incoming messages are read in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import grpc

from funcplane_pyworker.options import WorkerOptions
from funcplane_pyworker.protocol import pb, pb_grpc


class HostUnreachable(ConnectionError):
    pass


class StreamBroken(ConnectionError):
    pass


class HostStream:
    def __init__(self, options: WorkerOptions) -> None:
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._outgoing: asyncio.Queue[pb.StreamingMessage | None] = asyncio.Queue()
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
        if threading.get_ident() == self._loop_thread:
            self._outgoing.put_nowait(message)
            return
        try:
            self._loop.call_soon_threadsafe(self._outgoing.put_nowait, message)
        except RuntimeError:
            pass  # the loop is gone: the worker is exiting and the message has nowhere to go

    async def close_writes(self) -> None:
        """Send everything queued so far, then half-close the worker's side."""
        self._outgoing.put_nowait(None)
        await self._writes_done.wait()

    async def _outgoing_messages(self) -> AsyncIterator[pb.StreamingMessage]:
        try:
            while (message := await self._outgoing.get()) is not None:
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
