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

Of HPACK (RFC 7541) only what is needed is here: header blocks are sent as literals without
Huffman coding (always valid), and a decoder for what a gRPC server sends a client (the status
in its trailers); Huffman-coded strings are left undecoded (grpc servers use them only for
binary `-bin` values). The server end does not need to read request headers at all: the only
method served is EventStream.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from funcplane_protocol import FunctionRpc_pb2 as pb

logger = logging.getLogger("funcplane.http2")
EVENT_STREAM_PATH = f"/{pb.DESCRIPTOR.services_by_name['FunctionRpc'].full_name}/EventStream"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 1, 2, 4, 5
NO_ERROR, PROTOCOL_ERROR, CANCEL = 0x0, 0x1, 0x8

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


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items()))


# ---- HPACK ------------------------------------------------------------------------------------

_STATIC_TABLE: tuple[tuple[str, str], ...] = (
    ("", ""),  # index 0 is unused
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)
HUFFMAN_CODED = "<huffman-coded>"  # the value of a string this decoder does not expand


def _hpack_integer(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """Each header as a literal without indexing and without Huffman coding: simple and valid."""
    block = bytearray()
    for name, value in headers:
        raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
        block += b"\x00" + _hpack_integer(len(raw_name), 7) + raw_name
        block += _hpack_integer(len(raw_value), 7) + raw_value
    return bytes(block)


class HeaderDecoder:
    """HPACK decoding with a dynamic table, for the header blocks of one connection."""

    def __init__(self) -> None:
        self._table: collections.deque[tuple[str, str]] = collections.deque()
        self._size = 0
        self._max_size = 4096

    def _entry(self, index: int) -> tuple[str, str]:
        if 0 < index < len(_STATIC_TABLE):
            return _STATIC_TABLE[index]
        position = index - len(_STATIC_TABLE)
        if 0 <= position < len(self._table):
            return self._table[position]
        raise ValueError(f"HPACK index {index} is not in the table")

    def _evict(self) -> None:
        while self._size > self._max_size and self._table:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + 32

    @staticmethod
    def _integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = block[position] & limit
        position += 1
        if value < limit:
            return value, position
        shift = 0
        while True:
            byte = block[position]
            position += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, position

    def _string(self, block: bytes, position: int) -> tuple[str, int]:
        huffman = block[position] & 0x80
        length, position = self._integer(block, position, 7)
        raw = block[position:position + length]
        if len(raw) != length:
            raise ValueError("HPACK string runs past the end of the header block")
        return (HUFFMAN_CODED if huffman else raw.decode("latin-1")), position + length

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        position = 0
        while position < len(block):
            byte = block[position]
            if byte & 0x80:  # indexed field
                index, position = self._integer(block, position, 7)
                headers.append(self._entry(index))
                continue
            if byte & 0xE0 == 0x20:  # dynamic table size update
                self._max_size, position = self._integer(block, position, 5)
                self._evict()
                continue
            indexing = bool(byte & 0x40)
            index, position = self._integer(block, position, 6 if indexing else 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, position = self._string(block, position)
            value, position = self._string(block, position)
            if indexing:
                self._table.appendleft((name, value))
                self._size += len(name) + len(value) + 32
                self._evict()
            headers.append((name, value))
        return headers


def grpc_message_text(text: str) -> str:
    """grpc-message is percent-encoded UTF-8."""
    return unquote(text) if "%" in text else text


def trailers(status: int, message: str = "") -> bytes:
    """The trailers ending a call; the message is cut so that they fit one frame."""
    fields = [("grpc-status", str(status))]
    message = message[:2000]
    if message:
        fields.append(("grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
    return encode_headers(fields)


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
        self.final_frame: bytes | None = None  # END_STREAM DATA (client) or trailers (server)
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
        return settings_frame({SETTINGS_HEADER_TABLE_SIZE: 0, SETTINGS_ENABLE_PUSH: 0,
                               SETTINGS_INITIAL_WINDOW_SIZE: MAX_WINDOW, SETTINGS_MAX_FRAME_SIZE: RECEIVE_FRAME_SIZE}) \
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
            self.abort(error)
        except Exception as error:  # a malformed frame or message, or a failing handler of one
            logger.exception("HTTP/2 connection aborted")
            self.abort(CallEnded(f"the peer sent something unreadable: {error!r}"))

    # -- reading

    def _receive(self, data: bytes) -> None:
        inbound = self._inbound
        if inbound:
            inbound += data
            buffer: bytes | bytearray = inbound
        else:
            buffer = data
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
        if buffer is inbound:
            del inbound[:position]
        elif position < end:
            inbound += buffer[position:]

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
        if inbound:
            inbound += payload
            view: bytes | bytearray = inbound
        else:
            view = payload
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
        if view is inbound:
            del inbound[:position]
        elif position < end:
            inbound += view[position:]
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
        self._on_headers(self._header_stream, block, self._header_end_stream)

    def _on_headers(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        raise NotImplementedError

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
            out.append(stream.final_frame)
            stream.local_closed = True
            self._local_closed(stream)

    def _local_closed(self, stream: GrpcStream) -> None:
        """Our side of `stream` is done (its final frame is written)."""

    def abort(self, error: CallEnded) -> None:
        for stream in list(self.streams.values()):
            stream.end(error)
        self.closed = True
        if self.transport is not None:
            self.transport.close()
