"""HPACK pieces of funcplane_protocol.http2: what the host and the worker write and read in header blocks.
The streams themselves run against grpcio peers in tests/host (test_pyworker_protocol.py,
test_host_azure_worker.py)."""

from __future__ import annotations

import pytest

from funcplane_protocol.http2 import (
    EVENT_STREAM_PATH, HUFFMAN_CODED, HeaderDecoder, encode_headers, grpc_message_text, trailers,
)

# Response headers and trailers exactly as a grpcio server sent them to the worker: a dynamic table
# size update, an indexed :status 200, literals with incremental indexing.
GRPCIO_RESPONSE_HEADERS = (b" \x88@\x0ccontent-type\x10application/grpc"
                           b"@\x14grpc-accept-encoding\x17identity, deflate, gzip")
GRPCIO_TRAILERS = b"@\x0bgrpc-status\x010\x00\x0cgrpc-message\x00"


def test_grpcio_server_header_blocks_decode() -> None:
    decoder = HeaderDecoder()
    assert decoder.decode(GRPCIO_RESPONSE_HEADERS) == [
        (":status", "200"), ("content-type", "application/grpc"),
        ("grpc-accept-encoding", "identity, deflate, gzip"),
    ]
    assert dict(decoder.decode(GRPCIO_TRAILERS)) == {"grpc-status": "0", "grpc-message": ""}


def test_dynamic_table_entries_are_found_by_index_newest_first() -> None:
    decoder = HeaderDecoder()
    decoder.decode(b"@\x01a\x011@\x01b\x012")  # two literals with incremental indexing
    assert decoder.decode(bytes([0x80 | 62, 0x80 | 63])) == [("b", "2"), ("a", "1")]
    with pytest.raises(ValueError, match="index 64"):
        decoder.decode(bytes([0x80 | 64]))


def test_table_size_zero_evicts_everything() -> None:
    decoder = HeaderDecoder()
    decoder.decode(b"@\x01a\x011")
    decoder.decode(b"\x20")  # size update to 0
    with pytest.raises(ValueError):
        decoder.decode(bytes([0x80 | 62]))


def test_our_header_blocks_decode_to_what_was_encoded() -> None:
    headers = [(":method", "POST"), (":path", EVENT_STREAM_PATH), ("x-" + "long" * 40, "v" * 300)]
    assert HeaderDecoder().decode(encode_headers(headers)) == headers


def test_huffman_coded_strings_are_marked_not_misread() -> None:
    block = b"\x00\x01x" + bytes([0x80 | 2]) + b"\xff\xff"  # literal; value flagged as Huffman coded
    assert HeaderDecoder().decode(block) == [("x", HUFFMAN_CODED)]


def test_trailers_carry_status_and_a_percent_encoded_message() -> None:
    decoded = dict(HeaderDecoder().decode(trailers(5, "no worker with id 'w-1' \u2013 100%")))
    assert decoded["grpc-status"] == "5"
    assert "%" in decoded["grpc-message"] and "\u2013" not in decoded["grpc-message"]
    assert grpc_message_text(decoded["grpc-message"]) == "no worker with id 'w-1' \u2013 100%"
