"""The HTTP front door under hostile or broken traffic: body limits and memory, slow clients,
internals kept from callers, bad headers and statuses, warm-up and drain."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import select
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HOST_APPS, MASTER_KEY, HostProcess, metric_value

APP = HOST_APPS / "frontdoor-v1"
BODY_LIMIT = 1024 * 1024
ADMIN = {"x-functions-key": MASTER_KEY}


def app_with(target: Path, http: dict) -> Path:
    """A copy of the test app at `target` whose host.json sets extensions.http to `http`."""
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"http": http}}))
    return target


@pytest.fixture(scope="module")
def module_apps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apps")


@pytest.fixture(scope="module")
def tight(start_module_host, module_apps: Path) -> HostProcess:
    """Short deadlines and a 1 MB body limit (body memory: one such body)."""
    app = app_with(module_apps / "tight", {"maxRequestBodySize": BODY_LIMIT, "requestHeadersTimeout": "00:00:01",
                                           "requestBodyTimeout": "00:00:02"})
    return start_module_host(app, env={"WARMUP_LOG": str(module_apps / "tight-warmup.log")})


@pytest.fixture(scope="module")
def roomy(start_module_host, module_apps: Path) -> HostProcess:
    """Default deadlines, a small concurrency throttle."""
    app = app_with(module_apps / "roomy", {"maxConcurrentRequests": 2, "maxOutstandingRequests": 4})
    return start_module_host(app, env={"WARMUP_LOG": str(module_apps / "roomy-warmup.log")})


@contextlib.contextmanager
def raw(host: HostProcess, timeout: float = 10.0) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", host.port), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def read_status(sock: socket.socket) -> int:
    """The status of the response on `sock` (fails the test if none arrives in time)."""
    received = b""
    try:
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pytest.fail(f"no response within {sock.gettimeout()}s (got {received!r})")
    assert received.startswith(b"HTTP/1.1 "), received
    return int(received.split(b" ", 2)[1])


def head(path: str, *lines: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: localhost", *lines, "", ""]).encode()


# ---- item: memory is bounded -------------------------------------------------------------


def test_body_over_the_limit_is_refused_from_content_length_before_it_is_read(tight: HostProcess) -> None:
    with raw(tight) as sock:
        sock.sendall(head("/api/upload", f"Content-Length: {50 * BODY_LIMIT}"))  # and no body at all
        assert read_status(sock) == 413
    assert tight.request("POST", "/api/upload", body=b"x" * (BODY_LIMIT // 2)).text == str(BODY_LIMIT // 2)


def test_chunked_body_stops_at_the_limit(tight: HostProcess) -> None:
    chunk = b"y" * 65536
    with raw(tight) as sock:
        sock.sendall(head("/api/upload", "Transfer-Encoding: chunked"))
        for _ in range(BODY_LIMIT // len(chunk) + 2):  # past the limit, never terminated
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        assert read_status(sock) == 413
    with raw(tight) as sock:  # a chunked body within the limit is served
        sock.sendall(head("/api/upload", "Transfer-Encoding: chunked") + b"3e8\r\n" + b"z" * 1000 + b"\r\n0\r\n\r\n")
        assert read_status(sock) == 200


def test_bodies_wait_for_body_memory_and_give_up_with_503(tight: HostProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        # One request holds all body memory (1 MB) while its function waits for the gate ...
        holder = background.submit(tight.request, "POST", f"/api/upload?gate={gate}", body=b"h" * BODY_LIMIT)
        tight.wait_until(lambda: metric_value(tight.metrics(), "funcplane_invocations_in_flight",
                                              function="upload") == 1, "the holder to run")
        # ... so another 1 MB body waits for memory until its deadline.
        waiting = tight.request("POST", "/api/upload", body=b"w" * BODY_LIMIT)
        assert waiting.status == 503 and "maxRequestBodyMemory" in waiting.json()["error"]
        gate.touch()
        assert holder.result(timeout=30).text == str(BODY_LIMIT)
    # Memory is back once the holder is done.
    assert tight.request("POST", "/api/upload", body=b"w" * BODY_LIMIT).text == str(BODY_LIMIT)


# ---- item: slow clients cannot hold capacity -----------------------------------------------


def test_slow_headers_are_answered_408_at_the_deadline(tight: HostProcess) -> None:
    with raw(tight) as sock:
        sock.sendall(b"GET /api/hello HTTP/1.1\r\nHost: localhost\r\n")
        # Keep trickling header lines (each one resets no clock) until the host answers.
        for _ in range(30):
            readable, _, _ = select.select([sock], [], [], 0.3)
            if readable:
                break
            sock.sendall(b"X-Slow: 1\r\n")
        assert read_status(sock) == 408


def test_slow_body_is_answered_408(tight: HostProcess) -> None:
    with raw(tight) as sock:
        sock.sendall(head("/api/upload", "Content-Length: 1000") + b"only ten b")
        assert read_status(sock) == 408


def test_200_slow_connections_hold_no_throttle_slot(roomy: HostProcess) -> None:
    slow: list[socket.socket] = []
    try:
        for index in range(200):
            sock = socket.create_connection(("127.0.0.1", roomy.port), timeout=10)
            slow.append(sock)
            if index % 2:  # headers complete, body trickling
                sock.sendall(head("/api/upload", "Content-Length: 100") + b"x")
            else:  # headers never finished
                sock.sendall(b"POST /api/upload HTTP/1.1\r\nHost: localhost\r\n")
        # As many callers as maxOutstandingRequests: all are served only if no slow one holds a slot.
        with concurrent.futures.ThreadPoolExecutor(4) as callers:
            replies = list(callers.map(lambda _: roomy.get("/api/hello"), range(24)))
        assert [r.status for r in replies] == [200] * 24, {r.status: r.text for r in replies}
        metrics = roomy.metrics()
        assert metric_value(metrics, "funcplane_http_throttled_total") == 0
        assert metric_value(metrics, "funcplane_http_requests_queued") == 0
    finally:
        for sock in slow:
            sock.close()


# ---- items: no internals to callers; bad headers and statuses ------------------------------


def test_function_exception_text_goes_to_the_log_not_to_the_caller(roomy: HostProcess) -> None:
    reply = roomy.get("/api/leaky")
    assert reply.status == 500
    body = reply.json()
    assert "hunter2" not in reply.text and "RuntimeError" not in reply.text
    assert body["error"] == "function 'leaky' failed" and body["invocationId"]
    roomy.wait_until(lambda: body["invocationId"] in roomy.log() and "db password=hunter2" in roomy.log(),
                     "the failure to be logged with its invocation id")


def test_development_environment_shows_exception_details(start_host) -> None:
    host = start_host(APP, env={"AZURE_FUNCTIONS_ENVIRONMENT": "Development", "WARMUP_LOG": "/dev/null"})
    reply = host.get("/api/leaky")
    assert reply.status == 500 and "db password=hunter2" in reply.json()["detail"]


def test_non_utf8_header_byte_is_a_400(roomy: HostProcess) -> None:
    with raw(roomy) as sock:
        sock.sendall(b"GET /api/hello HTTP/1.1\r\nHost: localhost\r\nX-Name: caf\xe9\r\n\r\n")
        assert read_status(sock) == 400
    assert "Traceback" not in roomy.log()
    assert roomy.get("/api/hello").status == 200


@pytest.mark.parametrize("code", [0, 99, 1000])
def test_invalid_status_from_a_function_is_a_logged_500(roomy: HostProcess, code: int) -> None:
    reply = roomy.get(f"/api/status?code={code}")
    assert reply.status == 500 and "unusable HTTP response" in reply.json()["error"]
    roomy.wait_until(lambda: f"status code {code} is not an HTTP status" in roomy.log(), "the error to be logged")
    assert roomy.get("/api/status?code=201").status == 201


# ---- item: warm-up and drain ---------------------------------------------------------------


def test_warmup_needs_the_master_key_and_runs_warmup_functions_once(roomy: HostProcess, module_apps: Path) -> None:
    assert roomy.get("/admin/warmup").status == 401
    assert roomy.get("/admin/warmup", headers={"x-functions-key": "wrong"}).status == 401
    for _ in range(3):
        reply = roomy.get("/admin/warmup", headers=ADMIN)
        assert reply.status == 200 and reply.json()["warm"] is True
    assert (module_apps / "roomy-warmup.log").read_text() == "warmed\n"


def test_warmup_counts_against_the_throttle(roomy: HostProcess) -> None:
    # maxConcurrentRequests 2, maxOutstandingRequests 4: four slow requests fill the host.
    with concurrent.futures.ThreadPoolExecutor(4) as callers:
        slow = [callers.submit(roomy.get, "/api/slow?seconds=3") for _ in range(4)]
        roomy.wait_until(lambda: metric_value(roomy.metrics(), "funcplane_http_requests_queued") == 2,
                         "two requests to queue behind two running ones")
        refused = roomy.get("/admin/warmup", headers=ADMIN)
        assert refused.status == 429, refused.text
        assert [f.result(timeout=30).status for f in slow] == [200] * 4


@pytest.mark.parametrize("query", ["timeout=nan", "timeout=-1", "timeout=1e9", "timeout=inf", "grace=abc",
                                   "grace=-5"])
def test_drain_rejects_bad_input_before_draining(roomy: HostProcess, query: str) -> None:
    reply = roomy.request("POST", f"/admin/drain?{query}", headers=ADMIN)
    assert reply.status == 400 and query.split("=")[0] in reply.json()["error"]
    assert roomy.get("/readyz").status == 200
    assert roomy.get("/api/hello").status == 200


def test_drain_keeps_serving_through_the_grace_period_then_refuses_and_fails_liveness(start_host,
                                                                                       tmp_path: Path) -> None:
    app = app_with(tmp_path / "graceful", {"drainGracePeriod": "00:10:00"})
    host = start_host(app, env={"WARMUP_LOG": "/dev/null"})
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        # From loopback, no key needed (the preStop hook); the host.json grace applies.
        draining = background.submit(host.request, "POST", "/admin/drain?timeout=5", timeout=60)
        host.wait_until(lambda: host.get("/readyz").status == 503, "readiness to turn false")
        assert "host is draining" in host.get("/readyz").json()["reasons"]
        assert not draining.done()
        # Requests still on their way while endpoints drop the pod are served.
        assert [host.get("/api/hello").status for _ in range(5)] == [200] * 5
        assert host.get("/livez").status == 200
        # A drain without grace ends the grace period now.
        assert host.request("POST", "/admin/drain?grace=0").status == 200
        summary = draining.result(timeout=30).json()
    assert summary["graceSeconds"] == 600
    refused = host.get("/api/hello")
    assert refused.status == 503 and "draining" in refused.json()["error"]
    live = host.get("/livez")
    assert live.status == 503 and live.json()["state"] == "drained"
