"""Failure semantics: a killed worker, a function timeout, throttling, draining, broken apps."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from pathlib import Path

from conftest import EXAMPLE_APPS, HOST_APPS, MASTER_KEY, metric_value


def _wait_for_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout}s")


def test_killing_a_worker_mid_request_fails_that_request_and_the_worker_comes_back(start_host, tmp_path) -> None:
    host = start_host(HOST_APPS / "routes-v1", env={"FUNCTIONS_WORKER_PROCESS_COUNT": "2"})
    pidfile = tmp_path / "pid"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = pool.submit(host.get, f"/api/slow?seconds=30&pidfile={pidfile}")
        victim = int(_wait_for_file(pidfile))
        os.kill(victim, signal.SIGKILL)
        reply = slow.result(timeout=15)
    assert reply.status == 502, reply.text
    body = reply.json()
    assert "went away mid-invocation" in body["error"]
    assert f"pid {victim}" in body["error"] and "SIGKILL" in body["error"]
    # The other process keeps serving while the killed one restarts.
    other = host.get("/api/fast")
    assert other.status == 200 and str(victim) not in other.text
    def processes() -> list[dict]:
        return host.admin("/admin/host/status")["workers"][0]["processes"]

    host.wait_until(lambda: all(p["state"] == "ready" for p in processes()), "both workers to be ready again")
    assert sum(p["restarts"] for p in processes()) == 1
    assert victim not in [p["pid"] for p in processes()]
    assert host.get("/api/slow?seconds=0").status == 200
    assert metric_value(host.metrics(), "funcplane_worker_restarts_total", language="python") == 1
    assert metric_value(host.metrics(), "funcplane_invocations_total", function="slow", outcome="worker_lost") == 1


def test_single_worker_crash_then_next_request_succeeds(start_host, tmp_path) -> None:
    host = start_host(HOST_APPS / "routes-v1")
    pidfile = tmp_path / "pid"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(host.get, f"/api/slow?seconds=30&pidfile={pidfile}")
        os.kill(int(_wait_for_file(pidfile)), signal.SIGKILL)
        assert slow.result(timeout=15).status == 502
    # The next request waits for the restarted worker rather than failing.
    reply = host.get("/api/fast", timeout=60)
    assert reply.status == 200, reply.text


def test_function_timeout_cancels_and_fails_the_invocation(start_host, copy_app) -> None:
    app = copy_app(HOST_APPS / "routes-v1")
    (app / "host.json").write_text(json.dumps({"version": "2.0", "functionTimeout": "00:00:01"}))
    host = start_host(app)
    reply = host.get("/api/slow?seconds=20")
    assert reply.status == 504
    assert "timed out after 1s" in reply.json()["error"] and "functionTimeout" in reply.json()["error"]
    assert host.get("/api/fast").status == 200
    assert metric_value(host.metrics(), "funcplane_invocations_total", function="slow", outcome="timeout") == 1


def test_max_outstanding_requests_answers_429_beyond_the_queue(start_host, copy_app) -> None:
    app = copy_app(HOST_APPS / "routes-v1")
    (app / "host.json").write_text(json.dumps({
        "version": "2.0",
        "extensions": {"http": {"maxConcurrentRequests": 1, "maxOutstandingRequests": 2}},
    }))
    host = start_host(app)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(host.get, "/api/slow?seconds=8")  # runs through the checks below
        host.wait_until(lambda: metric_value(host.metrics(), "funcplane_invocations_in_flight", function="slow") == 1,
                        "the first request to run")
        second = pool.submit(host.get, "/api/slow?seconds=0")
        host.wait_until(lambda: metric_value(host.metrics(), "funcplane_http_requests_queued") == 1,
                        "the second request to queue")
        rejected = [host.get("/api/fast") for _ in range(2)]
        assert [r.status for r in rejected] == [429, 429]
        assert "maxOutstandingRequests" in rejected[0].json()["error"]
        assert first.result(timeout=20).status == 200
        assert second.result(timeout=20).status == 200
    assert metric_value(host.metrics(), "funcplane_http_throttled_total") == 2
    assert host.get("/api/fast").status == 200


def test_drain_waits_for_in_flight_work_and_refuses_new_work(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(host.get, "/api/slow?seconds=5")
        host.wait_until(lambda: metric_value(host.metrics(), "funcplane_invocations_in_flight", function="slow") == 1,
                        "the slow request to run")
        drained = host.request("POST", "/admin/drain?timeout=20&grace=0")
        assert drained.status == 200
        assert drained.json()["inFlightAtStart"] == 1 and drained.json()["stillRunning"] == 0
        assert slow.result(timeout=10).status == 200
    refused = host.get("/api/fast")
    assert refused.status == 503 and "draining" in refused.json()["error"]
    ready = host.get("/readyz")
    assert ready.status == 503 and "host is drained" in ready.json()["reasons"]


def test_sigterm_drains_before_exit(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(host.get, "/api/slow?seconds=5")
        host.wait_until(lambda: metric_value(host.metrics(), "funcplane_invocations_in_flight", function="slow") == 1,
                        "the slow request to run")
        host.process.send_signal(signal.SIGTERM)
        assert slow.result(timeout=20).status == 200
    assert host.process.wait(timeout=30) == 0
    assert "'inFlightAtStart': 1" in host.log()


def test_malformed_function_json_is_reported_and_the_rest_serve(start_host, copy_app) -> None:
    app = copy_app(HOST_APPS / "routes-v1")
    (app / "products" / "function.json").write_text('{"bindings": [ {"type": "httpTrigger",, }')
    (app / "files" / "function.json").write_text(json.dumps({"bindings": [{"type": "httpTrigger", "name": "req"}]}))
    host = start_host(app)
    assert host.get("/api/fast").status == 200
    assert host.get("/api/products/1").status == 404
    by_name = {f["name"]: f for f in host.admin("/admin/functions")}
    assert by_name["products"]["status"] == "error"
    assert "function.json is not valid JSON" in by_name["products"]["error"]
    assert by_name["files"]["status"] == "error"
    assert "bindings[0].direction" in by_name["files"]["error"]
    errors = host.admin("/admin/host/status")["errors"]
    assert {e["function"] for e in errors} == {"products", "files"}


def test_syntax_error_in_function_app_keeps_the_host_up(start_host, copy_app) -> None:
    app = copy_app(EXAMPLE_APPS / "hello-v2")
    source = app / "function_app.py"
    source.write_text(source.read_text() + "\ndef broken(:\n")
    host = start_host(app, wait_ready=False)
    host.wait_until(lambda: host.admin("/admin/host/status")["errors"], "the import failure to be reported")
    assert host.get("/livez").status == 200
    # Not ready, not warm, and its routes say why: the reason names the file and the error.
    for reply in (host.get("/readyz"), host.get("/admin/warmup", headers={"x-functions-key": MASTER_KEY}), host.get("/api/hello")):
        assert reply.status == 503, reply.text
        assert "function_app.py" in reply.text and "SyntaxError" in reply.text
    errors = host.admin("/admin/host/status")["errors"]
    assert any("SyntaxError" in e["error"] and "function_app.py" in e["error"] for e in errors), errors
    listed = host.admin("/admin/functions")
    assert any(entry["status"] == "error" and "SyntaxError" in entry["error"] for entry in listed)


def test_hung_worker_fails_status_checks_and_is_replaced(start_host, copy_app, tmp_path) -> None:
    app = copy_app(HOST_APPS / "routes-v1")
    (app / "host.json").write_text(json.dumps({
        "version": "2.0",
        "funcplane": {"workerHealth": {"statusInterval": "00:00:01", "statusTimeout": "00:00:02"}},
    }))
    host = start_host(app)
    pidfile = tmp_path / "pid"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(host.get, f"/api/slow?seconds=30&pidfile={pidfile}")
        victim = int(_wait_for_file(pidfile))
        os.kill(victim, signal.SIGSTOP)  # alive but unresponsive
        reply = slow.result(timeout=20)
    assert reply.status == 502, reply.text
    assert "did not answer WorkerStatusRequest within 2s" in reply.json()["error"]
    host.wait_ready()
    assert host.get("/api/fast").status == 200
    assert metric_value(host.metrics(), "funcplane_worker_restarts_total", language="python") == 1
