"""The worker's one gRPC call, FunctionRpc.EventStream, spoken over HTTP/2 on the event loop.

A worker makes exactly one call for its whole life: a bidirectional stream to the host's gRPC
server. grpc.aio hands every message across two threads (a core thread reads the socket, a poller
thread wakes the loop) and spends 100-200 µs of CPU per message on each side; here a message is
framed and written, or cut out of `data_received`, on the loop itself, and everything waiting to
be sent goes out in one write. The wire is unchanged: HTTP/2 with gRPC's length-prefixed
messages, so the host (or any gRPC server) sees an ordinary client.

What a gRPC server sends on such a connection is handled: SETTINGS, PING, WINDOW_UPDATE,
HEADERS and CONTINUATION (response headers and trailers, HPACK-decoded), DATA, RST_STREAM and
GOAWAY; flow control applies both ways. Only what gRPC clients need of HPACK is decoded: the
dynamic table is set to zero size in our SETTINGS, and Huffman-coded strings (gRPC servers code
only binary `-bin` values that way) are kept undecoded.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Callable
from typing import Any

from funcplane_pyworker.protocol import pb

EVENT_STREAM_PATH = f"/{pb.DESCRIPTOR.services_by_name['FunctionRpc'].full_name}/EventStream"
STREAM_ID = 1
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 1, 2, 4, 5
CANCEL = 0x8

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
RECEIVE_FRAME_SIZE = 1 << 20  # what we accept per frame: fewer frames for large bodies
# Window credit is returned once this much was consumed (the window itself is MAX_WINDOW).
WINDOW_REFILL = 1 << 24

GRPC_STATUS_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


class CallEnded(ConnectionError):
    """The call is over with an error: reset, refused, lost connection or a non-OK gRPC status."""


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


# ---- HPACK (RFC 7541): the encoding of our request headers, the decoding of the server's -------

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


def _hpack_integer(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte_flags | value,))
    out = bytearray((first_byte_flags | limit,))
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
        block += b"\x00" + _hpack_integer(len(raw_name), 7, 0) + raw_name
        block += _hpack_integer(len(raw_value), 7, 0) + raw_value
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

    def _add(self, name: str, value: str) -> None:
        self._table.appendleft((name, value))
        self._size += len(name) + len(value) + 32
        self._evict()

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
                self._add(name, value)
            headers.append((name, value))
        return headers


# ---- the connection ---------------------------------------------------------------------------

class EventStreamConnection(asyncio.Protocol):
    """An HTTP/2 connection carrying one gRPC call on stream 1.

    `on_message` gets each StreamingMessage from the server, in order, on the loop. `take` is
    asked for the next message to send whenever there is room (None: nothing waiting);
    `writes_closed` says whether the sender is done, after which the stream is half-closed once
    everything taken is out. `finished` resolves when the call ends: None for an OK status,
    CallEnded otherwise."""

    def __init__(self, authority: str, on_message: Callable[[Any], None],
                 take: Callable[[], Any | None], writes_closed: Callable[[], bool],
                 max_receive_length: int | None) -> None:
        self._authority = authority
        self._on_message = on_message
        self._take = take
        self._writes_closed = writes_closed
        self._max_receive = max_receive_length
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.finished: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._inbound = bytearray()  # bytes of an incomplete frame
        self._message = bytearray()  # bytes of an incomplete gRPC message
        self._header_block: bytearray | None = None  # HEADERS waiting for its CONTINUATION frames
        self._header_end_stream = False
        self._headers_seen = False
        self._decoder = HeaderDecoder()
        self._unacknowledged = 0  # received bytes not yet returned as window credit
        # What the server lets us send.
        self._connection_window = DEFAULT_WINDOW
        self._stream_window = DEFAULT_WINDOW
        self._initial_window = DEFAULT_WINDOW
        self._max_frame = 16_384
        self._pending: memoryview | None = None  # a taken message not yet fully framed
        self._paused = False
        self._local_closed = False
        self._flush_scheduled = False

    # -- asyncio.Protocol

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio.Transport
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a message is not held back
        settings = b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in (
            (SETTINGS_HEADER_TABLE_SIZE, 0), (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW), (SETTINGS_MAX_FRAME_SIZE, RECEIVE_FRAME_SIZE)))
        headers = encode_headers([
            (":method", "POST"), (":scheme", "http"), (":path", EVENT_STREAM_PATH), (":authority", self._authority),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "funcplane-pyworker"),
        ])
        transport.write(b"".join((
            _PREFACE,
            _frame(SETTINGS, 0, 0, settings),
            _frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")),
            _frame(HEADERS, END_HEADERS, STREAM_ID, headers),
        )))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(CallEnded(f"the connection to the host was lost: {exc or 'closed by the host'}"))

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
        except Exception as error:  # a malformed frame or message: the call cannot go on
            self.abort(CallEnded(f"the host sent something this worker cannot read: {error!r}"))

    # -- reading

    def _receive(self, data: bytes) -> None:
        inbound = self._inbound
        if inbound:
            inbound += data
            buffer: bytes | bytearray = inbound
        else:
            buffer = data
        position, end = 0, len(buffer)
        while end - position >= 9 and not self.finished.done():
            length = int.from_bytes(buffer[position:position + 3], "big")
            frame_end = position + 9 + length
            if frame_end > end:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream = int.from_bytes(buffer[position + 5:position + 9], "big") & 0x7FFFFFFF
            payload = buffer[position + 9:frame_end]
            position = frame_end
            if kind == DATA:
                self._data(flags, stream, payload, length)
            else:
                self._control(kind, flags, stream, payload)
        if buffer is inbound:
            del inbound[:position]
        elif position < end:
            inbound += buffer[position:]

    def _data(self, flags: int, stream: int, payload: bytes, length: int) -> None:
        self._unacknowledged += length  # padding counts against the window too
        if self._unacknowledged >= WINDOW_REFILL:
            credit = self._unacknowledged.to_bytes(4, "big")
            self._unacknowledged = 0
            self._write(_frame(WINDOW_UPDATE, 0, 0, credit) + _frame(WINDOW_UPDATE, 0, STREAM_ID, credit))
        if stream != STREAM_ID:
            return
        if flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        message = self._message
        if message:
            message += payload
            view: bytes | bytearray = message
        else:
            view = payload
        position, end = 0, len(view)
        parse = pb.StreamingMessage.FromString
        while end - position >= 5:
            size = int.from_bytes(view[position + 1:position + 5], "big")
            if self._max_receive is not None and size > self._max_receive:
                raise CallEnded(f"the host sent a {size}-byte message; the limit is {self._max_receive} bytes")
            if position + 5 + size > end:
                break
            if view[position]:
                raise CallEnded("the host sent a compressed message; this worker asked for none")
            body = view[position + 5:position + 5 + size]
            position += 5 + size
            self._on_message(parse(bytes(body) if isinstance(body, bytearray) else body))
            if self.finished.done():
                return
        if view is message:
            del message[:position]
        elif position < end:
            message += view[position:]
        if flags & END_STREAM:
            raise CallEnded("the host ended the stream without a gRPC status")

    def _control(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._header_block is not None and kind != CONTINUATION:
            raise CallEnded("the host interrupted a header block")
        if kind == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._header_block = bytearray(payload)
            self._header_end_stream = bool(flags & END_STREAM)
            if flags & END_HEADERS:
                self._headers_done(stream)
        elif kind == CONTINUATION:
            if self._header_block is None:
                raise CallEnded("the host sent CONTINUATION without HEADERS")
            self._header_block += payload
            if flags & END_HEADERS:
                self._headers_done(stream)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == PING:
            if not flags & ACK:
                self._write(_frame(PING, ACK, 0, bytes(payload)))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self._connection_window += increment
            elif stream == STREAM_ID:
                self._stream_window += increment
            self.flush()
        elif kind == RST_STREAM:
            if stream == STREAM_ID:
                code = int.from_bytes(payload[:4], "big")
                raise CallEnded(f"the host reset the stream (HTTP/2 error code {code})")
        elif kind == GOAWAY:
            last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            if code or last_stream < STREAM_ID:
                detail = bytes(payload[8:]).decode("utf-8", "replace")
                raise CallEnded(f"the host closed the connection (HTTP/2 error code {code}{': ' + detail if detail else ''})")
        elif kind == PUSH_PROMISE:
            raise CallEnded("the host pushed a stream although push was disabled")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key = int.from_bytes(payload[offset:offset + 2], "big")
            value = int.from_bytes(payload[offset + 2:offset + 6], "big")
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                self._stream_window += value - self._initial_window
                self._initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value
        self._write(_frame(SETTINGS, ACK, 0))
        self.flush()

    def _headers_done(self, stream: int) -> None:
        block, self._header_block = bytes(self._header_block or b""), None
        headers = dict(self._decoder.decode(block))  # decoded even for other streams: the table is shared
        if stream != STREAM_ID:
            return
        if not self._headers_seen:
            self._headers_seen = True
            status = headers.get(":status")
            if status is not None and status != "200":
                raise CallEnded(f"the host answered the call with HTTP status {status}")
        if not self._header_end_stream:
            return
        code_text = headers.get("grpc-status", "")
        code = int(code_text) if code_text.isdigit() else 2
        if code == 0:
            self._end(None)
            return
        message = headers.get("grpc-message", "")
        raise CallEnded(f"{GRPC_STATUS_NAMES.get(code, code)}: {_percent_decoded(message)}")

    # -- writing

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def flush(self) -> None:
        """Frame and write whatever is waiting, as far as the server's windows allow: one write."""
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing() or self._local_closed:
            return
        out: list[bytes | memoryview] = []
        while not self._paused:
            if self._pending is None:
                message = self._take()
                if message is None:
                    break
                body = message.SerializeToString()
                self._pending = memoryview(b"\x00" + len(body).to_bytes(4, "big") + body)
            pending = self._pending
            room = min(self._connection_window, self._stream_window)
            if room <= 0:
                break
            chunk_size = min(len(pending), room, self._max_frame)
            out.append(chunk_size.to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01")  # DATA, stream 1
            out.append(pending[:chunk_size])
            self._connection_window -= chunk_size
            self._stream_window -= chunk_size
            self._pending = pending[chunk_size:] if chunk_size < len(pending) else None
        if self._pending is None and self._writes_closed() and not self._paused:
            out.append(_frame(DATA, END_STREAM, STREAM_ID))  # the worker's half of the call is done
            self._local_closed = True
        if out:
            transport.write(b"".join(out))

    def schedule_flush(self) -> None:
        """Flush at the end of this loop turn, so messages sent in one turn share one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    # -- ending

    def _end(self, error: CallEnded | None) -> None:
        if self.finished.done():
            return
        if error is None:
            self.finished.set_result(None)
        else:
            self.finished.set_exception(error)
            self.finished.exception()  # retrieved here: whoever awaits it sees it too

    def abort(self, error: CallEnded) -> None:
        self._end(error)
        if self.transport is not None:
            self.transport.close()

    def cancel(self) -> None:
        """Cancel the call (RST_STREAM) and close the connection."""
        self._write(_frame(RST_STREAM, 0, STREAM_ID, CANCEL.to_bytes(4, "big")))
        self.abort(CallEnded("CANCELLED: the worker cancelled the call"))


def _percent_decoded(text: str) -> str:
    """grpc-message is percent-encoded UTF-8."""
    if "%" not in text:
        return text
    from urllib.parse import unquote

    return unquote(text)


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
