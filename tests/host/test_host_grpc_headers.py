"""The host's gRPC server reads request headers as grpc-java, grpc-js and grpc-dotnet clients write
them: Huffman-coded, with repeats indexed from the dynamic table.

The host runs a stand-in worker that only records its arguments and waits; the test then plays that
worker over a raw socket speaking HTTP/2 itself, with an hpack.Encoder of its own, so every byte the
host reads is one the test chose.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest

from conftest import EXAMPLE_APPS
from funcplane_protocol import FunctionRpc_pb2 as pb
from funcplane_protocol.http2 import (
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, EVENT_STREAM_PATH, GOAWAY, HEADERS, PREFACE, RST_STREAM,
    SETTINGS, frame,
)

UNKNOWN_PATH = "/AzureFunctionsRpcMessages.FunctionRpc/NoSuchMethod"

STAND_IN_WORKER = """\
import json, sys, time
from pathlib import Path
Path(__file__).with_name("argv.json").write_text(json.dumps(sys.argv[1:]))
time.sleep(600)
"""


def grpc_message(message: pb.StreamingMessage) -> bytes:
    body = message.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


class RawClient:
    """An HTTP/2 client on a plain socket: writes what the test says, reads frames one by one."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.received: list[tuple[int, int, int, Any]] = []
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))

    def headers(self, stream: int, fields: list[tuple[str, str]], end_stream: bool = False) -> bytes:
        block = self.encoder.encode(fields, huffman=True)
        self.sock.sendall(frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block))
        return block

    def read_frame(self) -> tuple[int, int, int, bytes]:
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    head, self.buffer = self.buffer[:9 + length], self.buffer[9 + length:]
                    kind, flags = head[3], head[4]
                    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    if kind == SETTINGS and not flags & ACK:
                        self.sock.sendall(frame(SETTINGS, ACK, 0))
                    return kind, flags, stream, head[9:]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the host closed the connection")
            self.buffer += chunk

    def until(self, wanted: int, stream: int | None = None) -> tuple[int, int, Any]:
        """The first frame of kind `wanted` (on `stream`) not yet returned, header blocks decoded; every
        header block is decoded as it arrives, so the table stays in step, and frames read on the
        way are kept for later calls."""
        while True:
            for index, (kind, flags, on_stream, decoded) in enumerate(self.received):
                if kind == wanted and (stream is None or on_stream == stream):
                    del self.received[index]
                    return flags, on_stream, decoded
            kind, flags, on_stream, payload = self.read_frame()
            if kind == HEADERS:
                decoded = {name: value for name, value in self.decoder.decode(payload)}
            self.received.append((kind, flags, on_stream, decoded if kind == HEADERS else payload))


@pytest.fixture
def stand_in_workers(tmp_path: Path) -> Path:
    folder = tmp_path / "workers" / "python"
    folder.mkdir(parents=True)
    (folder / "stand_in.py").write_text(STAND_IN_WORKER)
    (folder / "worker.config.json").write_text(json.dumps({"description": {
        "language": "python", "extensions": [".py"], "defaultExecutablePath": sys.executable,
        "defaultWorkerPath": "stand_in.py", "arguments": [],
    }}))
    return folder


def worker_arguments(folder: Path) -> dict[str, str]:
    argv_file = folder / "argv.json"
    deadline = time.monotonic() + 30
    while not argv_file.exists() or not argv_file.read_text():
        assert time.monotonic() < deadline, "the host did not start the stand-in worker"
        time.sleep(0.05)
    argv = json.loads(argv_file.read_text())
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


def test_huffman_coded_requests_with_the_dynamic_table(start_host, stand_in_workers: Path) -> None:
    host = start_host(EXAMPLE_APPS / "hello-v2", workers_dir=stand_in_workers.parent, wait_ready=False)
    arguments = worker_arguments(stand_in_workers)
    port, worker_id = int(arguments["--port"]), arguments["--workerId"]
    client = RawClient(port)
    common = [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
              ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "grpc-java-netty/1.70.0")]
    first = client.headers(1, common + [(":path", UNKNOWN_PATH)])
    client.sock.sendall(frame(DATA, END_STREAM, 1, grpc_message(pb.StreamingMessage())))
    second = client.headers(3, common + [(":path", EVENT_STREAM_PATH)])
    assert len(second) < len(first) // 2  # the repeated fields are indexed from the dynamic table
    assert EVENT_STREAM_PATH.encode() not in second  # and the new one is Huffman-coded
    client.sock.sendall(frame(DATA, 0, 3, grpc_message(
        pb.StreamingMessage(start_stream=pb.StartStream(worker_id=worker_id)))))
    wrong = client.encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", EVENT_STREAM_PATH),
                                   ("content-type", "text/plain")], huffman=True)  # sent in two frames:
    client.sock.sendall(frame(HEADERS, END_STREAM, 5, wrong[:4]) + frame(CONTINUATION, END_HEADERS, 5, wrong[4:]))

    flags, _, refused = client.until(HEADERS, stream=1)  # one block: a trailers-only response
    assert flags & END_STREAM and refused[":status"] == "200", refused
    assert refused["grpc-status"] == "12" and "NoSuchMethod" in refused["grpc-message"], refused
    _, _, reset = client.until(RST_STREAM, stream=1)  # the client was still sending: told to stop
    assert int.from_bytes(reset, "big") == 0  # NO_ERROR: the response is complete

    _, _, response = client.until(HEADERS, stream=3)
    assert response[":status"] == "200" and response["content-type"].startswith("application/grpc")
    _, _, body = client.until(DATA, stream=3)
    message = pb.StreamingMessage.FromString(bytes(body[5:5 + int.from_bytes(body[1:5], "big")]))
    assert message.WhichOneof("content") == "worker_init_request", message

    flags, _, wrong_type = client.until(HEADERS, stream=5)
    assert flags & END_STREAM and wrong_type[":status"] == "415", wrong_type
    client.sock.close()
    assert host.process.poll() is None, host.log_tail()


def test_an_undecodable_header_block_closes_only_that_connection(start_host, stand_in_workers: Path) -> None:
    host = start_host(EXAMPLE_APPS / "hello-v2", workers_dir=stand_in_workers.parent, wait_ready=False)
    port = int(worker_arguments(stand_in_workers)["--port"])
    client = RawClient(port)
    client.sock.sendall(frame(HEADERS, END_HEADERS, 1, bytes([0x80 | 100])))  # index 100: no such entry
    _, _, payload = client.until(GOAWAY)
    assert int.from_bytes(payload[4:8], "big") == 0x9  # COMPRESSION_ERROR
    client.sock.close()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # the server still takes calls
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(UNKNOWN_PATH)(b"", timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "NoSuchMethod" in raised.value.details()
    assert host.process.poll() is None, host.log_tail()
