"""HPACK pieces of funcplane_protocol.http2: what the host and the worker write and read in header blocks.
The streams themselves run against grpcio peers and a raw HTTP/2 client in tests/host
(test_pyworker_protocol.py, test_host_azure_worker.py, test_host_grpc_headers.py)."""

from __future__ import annotations

import hpack
import pytest

from funcplane_protocol.http2 import (
    EVENT_STREAM_PATH, CompressionError, HeaderCodec, grpc_message_text, trailers,
)

# Response headers and trailers exactly as a grpcio server sent them to the worker: a dynamic table
# size update, an indexed :status 200, literals with incremental indexing.
GRPCIO_RESPONSE_HEADERS = (b" \x88@\x0ccontent-type\x10application/grpc"
                           b"@\x14grpc-accept-encoding\x17identity, deflate, gzip")
GRPCIO_TRAILERS = b"@\x0bgrpc-status\x010\x00\x0cgrpc-message\x00"
# The request headers of a grpcio client's call, captured off the socket.
GRPCIO_REQUEST_HEADERS = (
    b"@\x05:path2/AzureFunctionsRpcMessages.FunctionRpc/EventStream@\n:authority\x0f127.0.0.1:57485\x83\x86"
    b"@\x0ccontent-type\x10application/grpc@\x02te\x08trailers"
    b"@\x14grpc-accept-encoding\x17identity, deflate, gzip@\x0cgrpc-timeout\x022S"
    b"@\nuser-agent0grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)")

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", EVENT_STREAM_PATH),
           (":authority", "127.0.0.1:5000"), ("content-type", "application/grpc"), ("te", "trailers"),
           ("x-" + "long" * 40, "v" * 300)]


def test_grpcio_server_header_blocks_decode() -> None:
    codec = HeaderCodec()
    assert codec.decode(GRPCIO_RESPONSE_HEADERS) == [
        (":status", "200"), ("content-type", "application/grpc"),
        ("grpc-accept-encoding", "identity, deflate, gzip"),
    ]
    assert dict(codec.decode(GRPCIO_TRAILERS)) == {"grpc-status": "0", "grpc-message": ""}


def test_grpcio_client_request_block_decodes() -> None:
    headers = dict(HeaderCodec().decode(GRPCIO_REQUEST_HEADERS))
    assert headers[":method"] == "POST" and headers[":scheme"] == "http"
    assert headers[":path"] == EVENT_STREAM_PATH
    assert headers["content-type"] == "application/grpc"


@pytest.mark.parametrize("huffman", [True, False], ids=["huffman", "plain"])
def test_blocks_round_trip_and_the_second_uses_the_dynamic_table(huffman: bool) -> None:
    sender, receiver = HeaderCodec(huffman=huffman), HeaderCodec()
    first, second = sender.encode(REQUEST), sender.encode(REQUEST)
    assert receiver.decode(first) == REQUEST
    assert receiver.decode(second) == REQUEST
    assert len(second) < 20 < len(first)  # indexed fields only: each one byte
    assert (EVENT_STREAM_PATH.encode() in first) is not huffman  # Huffman-coded strings are not plain text


def test_a_huffman_coding_peer_with_a_dynamic_table_is_read() -> None:
    """What grpc-java, grpc-js and grpc-dotnet send: Huffman strings, indexed repeats."""
    peer, codec = hpack.Encoder(), HeaderCodec()
    assert codec.decode(peer.encode(REQUEST, huffman=True)) == REQUEST
    second = [(":method", "POST"), (":path", "/other.Service/Call"), ("content-type", "application/grpc")]
    assert codec.decode(peer.encode(second, huffman=True)) == second


def test_a_block_that_needs_a_missed_table_entry_is_a_compression_error() -> None:
    peer = hpack.Encoder()
    peer.encode(REQUEST)  # the receiver never sees this block
    with pytest.raises(CompressionError, match="did not decode") as raised:
        HeaderCodec().decode(peer.encode(REQUEST))
    assert raised.value.http2_error == 0x9


def test_a_table_size_update_above_what_we_announced_is_refused() -> None:
    with pytest.raises(CompressionError):
        HeaderCodec().decode(b"\x3f\xe1\x3f")  # size update to 8192 > 4096


def test_the_peers_table_size_is_followed_with_a_size_update() -> None:
    sender, receiver = HeaderCodec(), hpack.Decoder()
    sender.peer_table_size(0)
    block = sender.encode(REQUEST)
    assert block[0] == 0x20  # a size update to 0 comes first
    assert [tuple(field) for field in receiver.decode(block)] == REQUEST
    assert receiver.header_table_size == 0
    assert [tuple(field) for field in receiver.decode(sender.encode(REQUEST))] == REQUEST  # nothing indexed


def test_trailers_carry_status_and_a_percent_encoded_message() -> None:
    sender, receiver = HeaderCodec(), HeaderCodec()
    decoded = dict(receiver.decode(sender.encode(trailers(5, "no worker with id 'w-1' \u2013 100%"))))
    assert decoded["grpc-status"] == "5"
    assert "%" in decoded["grpc-message"] and "\u2013" not in decoded["grpc-message"]
    assert grpc_message_text(decoded["grpc-message"]) == "no worker with id 'w-1' \u2013 100%"
