"""gRPC calls carrying StreamingMessages over HTTP/2, on the asyncio event loop.

The host and its workers exchange one bidirectional call each, FunctionRpc.EventStream. grpc.aio
hands every message across two threads (a core thread on the socket, a poller thread waking the
loop) and spends 100-200 µs of CPU per message on each side; here a message is framed and
written, or cut out of `data_received`, on the loop itself, and what is waiting goes out in one
write. The wire is plain gRPC: HTTP/2 (RFC 9113) with gRPC's 5-byte message prefix, so grpcio
peers (Azure's own Python worker, the test peers) see an ordinary peer.

`GrpcConnection` holds what both ends share: frames, SETTINGS, PING, flow control both ways,
message reassembly per stream. The client end (the worker) is funcplane_pyworker/wire.py; the
server end (the host) is funcplane_host/grpc_server.py.

Header blocks are HPACK (RFC 7541) through the `hpack` package, complete with Huffman coding,
the dynamic table and its size updates, as grpc-java, grpc-js and grpc-dotnet peers use them. A
connection has one encoder and one decoder: every block is decoded in arrival order, including
blocks of streams nobody reads, and every block is encoded when it is written, so both tables stay
in step with the peer's. A block that does not decode is a connection error (COMPRESSION_ERROR).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import hpack

from funcplane_protocol import FunctionRpc_pb2 as pb

logger = logging.getLogger("funcplane.http2")
EVENT_STREAM_PATH = f"/{pb.DESCRIPTOR.services_by_name['FunctionRpc'].full_name}/EventStream"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 1, 2, 4, 5
SETTINGS_MAX_HEADER_LIST_SIZE = 6
NO_ERROR, PROTOCOL_ERROR, CANCEL, COMPRESSION_ERROR = 0x0, 0x1, 0x8, 0x9

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
RECEIVE_FRAME_SIZE = 1 << 20  # what we accept per frame: fewer frames for large bodies
WINDOW_REFILL = 1 << 24  # window credit is returned once this much was consumed

GRPC_STATUS_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


class CallEnded(ConnectionError):
    """A call is over with an error: reset, refused, lost connection or a non-OK gRPC status."""

    http2_error: int | None = None  # set: the connection is closed with a GOAWAY carrying this code


class CompressionError(CallEnded):
    """A header block did not decode: the HPACK state shared with the peer is lost."""

    http2_error = COMPRESSION_ERROR


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items()))


def _joined(inbound: bytearray, data: bytes) -> bytes | bytearray:
    """What is there to read: `data` itself when nothing was left over, else appended to the rest."""
    if inbound:
        inbound += data
        return inbound
    return data


def _keep_rest(inbound: bytearray, buffer: bytes | bytearray, position: int) -> None:
    """Keep the unread part of `buffer` (from `position`) in `inbound` for the next read."""
    if buffer is inbound:
        del inbound[:position]
    elif position < len(buffer):
        inbound += buffer[position:]


# ---- HPACK ------------------------------------------------------------------------------------

# What the peer may make our decoder hold: its dynamic table (the RFC default size) and one header list.
HEADER_TABLE_SIZE = 4096
MAX_HEADER_LIST_SIZE = 1 << 16
MAX_HEADER_BLOCK = 1 << 20  # compressed, over HEADERS and its CONTINUATION frames


class HeaderCodec:
    """One connection's HPACK state: an encoder for the blocks it sends, a decoder for those it
    receives. Blocks must be encoded in the order they are written and decoded in the order they
    arrive, every one of them, or the dynamic tables drift from the peer's."""

    def __init__(self, huffman: bool = True) -> None:
        self.huffman = huffman
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST_SIZE)
        self._decoder.max_allowed_table_size = HEADER_TABLE_SIZE  # what our SETTINGS announce

    def encode(self, headers: list[tuple[str, str]]) -> bytes:
        return self._encoder.encode(headers, huffman=self.huffman)

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The fields of `block`; CompressionError if it does not decode."""
        try:
            decoded = self._decoder.decode(block, raw=True)  # raw: values are bytes on the wire
        except (hpack.HPACKError, ValueError, IndexError) as error:
            raise CompressionError(f"a header block did not decode: {error}") from error
        # latin-1 maps each byte to one character, so no value is refused for its bytes.
        return [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in decoded]

    def peer_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: the next block we send starts with a size update."""
        self._encoder.header_table_size = size


def grpc_message_text(text: str) -> str:
    """grpc-message is percent-encoded UTF-8."""
    return unquote(text) if "%" in text else text


def trailers(status: int, message: str = "") -> list[tuple[str, str]]:
    """The fields ending a call; the message is cut so that the block fits one frame."""
    fields = [("grpc-status", str(status))]
    message = message[:2000]
    if message:
        fields.append(("grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
    return fields


# ---- streams and the connection -----------------------------------------------------------------

class GrpcStream:
    """One call on a connection: messages in (to `on_message`), messages out (from `take`, or
    from `send`), its own send window, and how its sending side ends."""

    def __init__(self, connection: GrpcConnection, stream_id: int, take: Callable[[], Any | None] | None) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.on_message: Callable[[Any], None] | None = None
        self.on_end: Callable[[CallEnded | None], None] | None = None
        self._queued: collections.deque[Any] = collections.deque()
        self.take: Callable[[], Any | None] = take or self._take_queued
        self.send_window = connection.peer_initial_window
        self.pending: memoryview | None = None  # a taken message not yet fully framed
        self.inbound = bytearray()  # bytes of an incomplete message
        self.unacknowledged = 0  # received bytes not yet returned as window credit
        self.closing: Callable[[], bool] = lambda: False  # True once nothing more will be taken
        # Makes the last frame, END_STREAM DATA (client) or trailers (server), when it is written:
        # a header block must be encoded in the order the blocks go out.
        self.final_frame: Callable[[], bytes] | None = None
        self.local_closed = False
        self.remote_closed = False
        self.ended = False

    def _take_queued(self) -> Any | None:
        return self._queued.popleft() if self._queued else None

    def send(self, message: Any) -> None:
        """Queue `message`; it goes out at the end of this loop turn, with whatever else is queued."""
        self._queued.append(message)
        self.connection.schedule_flush()

    def discard_queued(self) -> None:
        """Drop what `send` queued and was not yet written."""
        self._queued.clear()

    def end(self, error: CallEnded | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.connection.streams.pop(self.stream_id, None)
        if self.on_end is not None:
            self.on_end(error)


class GrpcConnection(asyncio.Protocol):
    """An HTTP/2 connection carrying gRPC calls of StreamingMessages (see the module docstring).
    Subclasses handle header blocks (`_on_headers`) and say what to do first (`_start`)."""

    def __init__(self, max_receive_length: int | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.streams: dict[int, GrpcStream] = {}
        self.peer_initial_window = DEFAULT_WINDOW
        self._max_receive = max_receive_length
        self._inbound = bytearray()  # bytes of an incomplete frame
        self._header_block: bytearray | None = None  # HEADERS waiting for its CONTINUATION frames
        self._header_stream = 0
        self._header_end_stream = False
        self.headers = HeaderCodec()
        self.last_peer_stream = 0  # the highest stream id the peer opened and we took up
        self._unacknowledged = 0  # received bytes not yet returned as connection window credit
        self._connection_window = DEFAULT_WINDOW
        self._max_frame = 16_384
        self._paused = False
        self._flush_scheduled = False
        self.closed = False

    # -- asyncio.Protocol

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio.Transport
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a message is not held back
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def _local_settings(self) -> bytes:
        return settings_frame({SETTINGS_HEADER_TABLE_SIZE: HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH: 0,
                               SETTINGS_INITIAL_WINDOW_SIZE: MAX_WINDOW, SETTINGS_MAX_FRAME_SIZE: RECEIVE_FRAME_SIZE,
                               SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE}) \
            + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = CallEnded(f"the connection was lost: {exc or 'closed by the peer'}")
        for stream in list(self.streams.values()):
            stream.end(error)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except CallEnded as error:
            if error.http2_error is not None:
                logger.warning("HTTP/2 connection closed: %s", error)
            self.abort(error)
        except Exception as error:  # a malformed frame or message, or a failing handler of one
            logger.exception("HTTP/2 connection aborted")
            self.abort(CallEnded(f"the peer sent something unreadable: {error!r}"))

    # -- reading

    def _receive(self, data: bytes) -> None:
        inbound = self._inbound
        buffer = _joined(inbound, data)
        position, end = 0, len(buffer)
        while end - position >= 9 and not self.closed:
            length = int.from_bytes(buffer[position:position + 3], "big")
            frame_end = position + 9 + length
            if frame_end > end:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream_id = int.from_bytes(buffer[position + 5:position + 9], "big") & 0x7FFFFFFF
            payload = buffer[position + 9:frame_end]
            position = frame_end
            if kind == DATA:
                self._data(flags, stream_id, payload, length)
            else:
                self._control(kind, flags, stream_id, payload)
        _keep_rest(inbound, buffer, position)

    def _data(self, flags: int, stream_id: int, payload: bytes, length: int) -> None:
        self._unacknowledged += length  # padding counts against the windows too
        if self._unacknowledged >= WINDOW_REFILL:
            self.write(frame(WINDOW_UPDATE, 0, 0, self._unacknowledged.to_bytes(4, "big")))
            self._unacknowledged = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.unacknowledged += length
        if stream.unacknowledged >= WINDOW_REFILL:
            self.write(frame(WINDOW_UPDATE, 0, stream_id, stream.unacknowledged.to_bytes(4, "big")))
            stream.unacknowledged = 0
        if flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        inbound = stream.inbound
        view = _joined(inbound, payload)
        position, end = 0, len(view)
        parse = pb.StreamingMessage.FromString
        while end - position >= 5:
            size = int.from_bytes(view[position + 1:position + 5], "big")
            if self._max_receive is not None and size > self._max_receive:
                raise CallEnded(f"a {size}-byte message arrived; the limit is {self._max_receive} bytes")
            if position + 5 + size > end:
                break
            if view[position]:
                raise CallEnded("a compressed message arrived; none was asked for")
            body = view[position + 5:position + 5 + size]
            position += 5 + size
            if stream.on_message is not None:
                stream.on_message(parse(bytes(body) if isinstance(body, bytearray) else body))
            if stream.ended:
                return
        _keep_rest(inbound, view, position)
        if flags & END_STREAM:
            stream.remote_closed = True
            self._remote_closed(stream)

    def _remote_closed(self, stream: GrpcStream) -> None:
        """The peer sent END_STREAM on `stream` (after its last message or with its trailers)."""

    def _control(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._header_block is not None and kind != CONTINUATION:
            raise CallEnded("a header block was interrupted")
        if kind == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._header_block = bytearray(payload)
            self._header_stream = stream_id
            self._header_end_stream = bool(flags & END_STREAM)
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == CONTINUATION:
            if self._header_block is None:
                raise CallEnded("CONTINUATION arrived without HEADERS")
            self._header_block += payload
            if len(self._header_block) > MAX_HEADER_BLOCK:
                raise CallEnded(f"a header block grew past {MAX_HEADER_BLOCK} bytes")
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == PING:
            if not flags & ACK:
                self.write(frame(PING, ACK, 0, bytes(payload)))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream_id == 0:
                self._connection_window += increment
            elif (stream := self.streams.get(stream_id)) is not None:
                stream.send_window += increment
            self.flush()
        elif kind == RST_STREAM:
            if (stream := self.streams.get(stream_id)) is not None:
                code = int.from_bytes(payload[:4], "big")
                stream.end(CallEnded(f"the peer reset the stream (HTTP/2 error code {code})"))
        elif kind == GOAWAY:
            self._goaway(int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big"),
                         bytes(payload[8:]).decode("utf-8", "replace"))
        elif kind == PUSH_PROMISE:
            raise CallEnded("the peer pushed a stream although push was disabled")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.

    def _headers_done(self) -> None:
        block, self._header_block = bytes(self._header_block or b""), None
        headers = self.headers.decode(block)  # whichever stream it is for: the table is the connection's
        self._on_headers(self._header_stream, headers, self._header_end_stream)

    def _on_headers(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        raise NotImplementedError

    def header_frame(self, stream_id: int, flags: int, headers: list[tuple[str, str]]) -> bytes:
        """A HEADERS frame carrying `headers`, encoded against this connection's table: call it only
        when the frame is written at once, behind every block encoded before it."""
        block = self.headers.encode(headers)
        if len(block) <= self._max_frame:
            return frame(HEADERS, flags | END_HEADERS, stream_id, block)
        pieces = [block[offset:offset + self._max_frame] for offset in range(0, len(block), self._max_frame)]
        frames = [frame(HEADERS, flags, stream_id, pieces[0])]
        frames += [frame(CONTINUATION, 0, stream_id, piece) for piece in pieces[1:-1]]
        frames.append(frame(CONTINUATION, END_HEADERS, stream_id, pieces[-1]))
        return b"".join(frames)

    def _goaway(self, last_stream: int, code: int, detail: str) -> None:
        error = CallEnded(f"the peer closed the connection (HTTP/2 error code {code}{': ' + detail if detail else ''})")
        for stream_id, stream in list(self.streams.items()):
            if code or stream_id > last_stream:
                stream.end(error)

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key = int.from_bytes(payload[offset:offset + 2], "big")
            value = int.from_bytes(payload[offset + 2:offset + 6], "big")
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                for stream in self.streams.values():
                    stream.send_window += value - self.peer_initial_window
                self.peer_initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value
            elif key == SETTINGS_HEADER_TABLE_SIZE:
                self.headers.peer_table_size(value)
        self.write(frame(SETTINGS, ACK, 0))
        self.flush()

    # -- writing

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def schedule_flush(self) -> None:
        """Flush at the end of this loop turn, so messages queued in one turn share one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Frame and write what the streams have waiting, as far as the peer's windows allow."""
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        out: list[bytes | memoryview] = []
        for stream in list(self.streams.values()):
            if not stream.local_closed:
                self._frame_stream(stream, out)
        if out:
            transport.write(b"".join(out))

    def _frame_stream(self, stream: GrpcStream, out: list[bytes | memoryview]) -> None:
        header_tail = b"\x00\x00" + stream.stream_id.to_bytes(4, "big")  # DATA, no flags
        while not self._paused:
            pending = stream.pending
            if pending is None:
                message = stream.take()
                if message is None:
                    break
                body = message.SerializeToString()
                pending = stream.pending = memoryview(b"\x00" + len(body).to_bytes(4, "big") + body)
            room = min(self._connection_window, stream.send_window, self._max_frame)
            if room <= 0:
                return
            size = min(len(pending), room)
            out.append(size.to_bytes(3, "big") + header_tail)
            out.append(pending[:size])
            self._connection_window -= size
            stream.send_window -= size
            stream.pending = pending[size:] if size < len(pending) else None
        if stream.pending is None and stream.final_frame is not None and stream.closing() and not self._paused:
            out.append(stream.final_frame())
            stream.local_closed = True
            self._local_closed(stream)

    def _local_closed(self, stream: GrpcStream) -> None:
        """Our side of `stream` is done (its final frame is written)."""

    def abort(self, error: CallEnded) -> None:
        if error.http2_error is not None and not self.closed:
            self.write(frame(GOAWAY, 0, 0, self.last_peer_stream.to_bytes(4, "big")
                             + error.http2_error.to_bytes(4, "big") + str(error).encode()[:512]))
        for stream in list(self.streams.values()):
            stream.end(error)
        self.closed = True
        if self.transport is not None:
            self.transport.close()
