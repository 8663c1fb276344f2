"""Apps served end to end: funcplane-host process -> gRPC -> the bundled Python worker -> user code."""

from __future__ import annotations

import concurrent.futures
import json
import os

from conftest import EXAMPLE_APPS, HOST_APPS, MASTER_KEY, echo_at_once, metric_value


def test_v2_app_is_indexed_by_the_worker_and_served(start_host) -> None:
    host = start_host(EXAMPLE_APPS / "hello-v2")
    reply = host.get("/api/hello?name=v2")
    assert (reply.status, reply.text) == (200, "Hello, v2!")
    posted = host.request("POST", "/api/hello", body=json.dumps({"name": "body"}),
                          headers={"Content-Type": "application/json"})
    assert (posted.status, posted.text) == (200, "Hello, body!")
    item = host.get("/api/items/42")
    assert item.status == 200 and item.json() == {"id": "42", "name": "item 42"}
    echo = host.request("POST", "/api/echo", body=b"\x00\x01binary", headers={"Content-Type": "application/octet-stream"})
    assert echo.status == 200 and echo.body == b"\x00\x01binary"
    assert echo.headers["x-invocation-id"]
    functions = {f["name"]: f for f in host.admin("/admin/functions")}
    assert functions["hello"]["indexedBy"] == "worker"
    assert functions["hello"]["status"] == "loaded"
    assert functions["stats"]["authLevel"] == "function"


def test_large_bodies_cross_the_worker_stream_both_ways_at_once(start_host) -> None:
    """Bodies far beyond HTTP/2's initial 64 KiB windows, several at once on the one stream, go to
    the worker and back intact (flow control and message reassembly on both ends)."""
    host = start_host(EXAMPLE_APPS / "hello-v2")
    bodies = [bytes([index]) * 64 + os.urandom(3 * 1024 * 1024 + index) for index in range(4)]
    assert echo_at_once(host, bodies) == bodies


def test_v2_app_with_two_worker_processes_spreads_load(start_host) -> None:
    host = start_host(EXAMPLE_APPS / "hello-v2", env={"FUNCTIONS_WORKER_PROCESS_COUNT": "2"})
    # Ready means one process per language can serve; wait for the second one too.
    host.wait_until(lambda: [p["state"] for p in host.admin("/admin/host/status")["workers"][0]["processes"]]
                    == ["ready", "ready"], "both worker processes to be ready")
    with concurrent.futures.ThreadPoolExecutor(8) as callers:
        replies = list(callers.map(lambda i: host.get(f"/api/items/{i}"), range(40)))
    assert [r.json()["id"] for r in replies] == [str(i) for i in range(40)]


def test_v1_app_is_indexed_by_the_host_and_served(start_host) -> None:
    host = start_host(EXAMPLE_APPS / "hello-v1")
    reply = host.get("/api/HttpTrigger?name=v1")
    assert (reply.status, reply.text) == (200, "Hello, v1!")
    # Routes are case-insensitive, like Azure's.
    assert host.get("/api/httptrigger?name=x").text == "Hello, x!"
    functions = host.admin("/admin/functions")
    assert [(f["name"], f["indexedBy"], f["status"]) for f in functions] == [("HttpTrigger", "host", "loaded")]
    assert "[Function.HttpTrigger.User] greeting v1" in host.log()


def test_route_templates_and_methods(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1")
    assert host.get("/api/products/12").json() == {"id": "12"}
    assert host.get("/api/products/abc").status == 404  # {id:int} does not match
    assert host.get("/api/files").text == "GET file (none)"
    assert host.get("/api/files/report.txt").text == "GET file report.txt"
    assert host.request("DELETE", "/api/files/a").text == "DELETE file a"
    not_allowed = host.request("POST", "/api/fast")
    assert not_allowed.status == 405 and "POST" in not_allowed.json()["error"]
    assert host.get("/api/nowhere").status == 404
    assert host.get("/fast").status == 404  # outside the route prefix


def test_route_prefix_from_host_json(start_host, copy_app) -> None:
    app = copy_app(HOST_APPS / "routes-v1")
    (app / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}}))
    host = start_host(app)
    assert host.get("/v1/fast").status == 200
    assert host.get("/api/fast").status == 404


def test_auth_levels_and_keys(start_host) -> None:
    keys = {"masterKey": MASTER_KEY, "functionKeys": {"default": "host-key"},
            "functions": {"keyed": {"default": "keyed-key"}}}
    host = start_host(HOST_APPS / "routes-v1", keys=keys)
    assert host.get("/api/fast").status == 200  # anonymous
    assert host.get("/api/keyed").status == 401
    assert host.get("/api/keyed", headers={"x-functions-key": "wrong"}).status == 401
    assert host.get("/api/keyed", headers={"x-functions-key": "keyed-key"}).text == "keyed ok"
    assert host.get("/api/keyed?code=host-key").text == "keyed ok"
    assert host.get(f"/api/keyed?code={MASTER_KEY}").text == "keyed ok"
    # admin level: only the master key
    assert host.get("/api/adminonly?code=host-key").status == 401
    assert host.get("/api/adminonly?code=keyed-key").status == 401
    assert host.get("/api/adminonly", headers={"x-functions-key": MASTER_KEY}).text == "admin ok"
    # the admin API needs the master key too
    assert host.get("/admin/host/status?code=host-key").status == 401
    assert host.get(f"/admin/host/status?code={MASTER_KEY}").status == 200


def test_without_any_keys_function_level_routes_answer_401(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1", keys={})
    assert host.get("/api/keyed").status == 401
    assert host.get("/api/keyed?code=anything").status == 401
    assert host.get("/api/fast").status == 200


def test_user_exception_is_a_500_naming_the_function(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1")
    reply = host.get("/api/fails")
    assert reply.status == 500
    body = reply.json()
    assert body["error"] == "function 'fails' failed" and body["invocationId"]
    assert "boom" not in reply.text  # the exception text is logged, not returned
    assert host.get("/api/fast").status == 200


def test_metrics_count_invocations_by_function_and_outcome(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1")
    for _ in range(3):
        assert host.get("/api/fast").status == 200
    assert host.get("/api/fails").status == 500
    text = host.metrics()
    assert metric_value(text, "funcplane_invocations_total", function="fast", outcome="success") == 3
    assert metric_value(text, "funcplane_invocations_total", function="fails", outcome="failure") == 1
    assert metric_value(text, "funcplane_invocation_duration_seconds_count", function="fast") == 3
    assert "funcplane_invocations_in_flight" in text
    assert metric_value(text, "funcplane_invocations_in_flight", function="fast") == 0
    assert "# TYPE funcplane_worker_restarts_total counter" in text
    assert metric_value(text, "funcplane_host_info", host_id=f"test-{host.port}", slot="production") == 1


def test_health_endpoints(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1")
    assert host.get("/livez").json()["alive"] is True
    assert host.get("/readyz").json() == {"ready": True, "reasons": []}
    warm = host.get("/admin/warmup", headers={"x-functions-key": MASTER_KEY})
    assert warm.status == 200 and warm.json()["warm"] is True
    status = host.admin("/admin/host/status")
    assert status["state"] == "running" and status["ready"] is True
    (pool,) = status["workers"]
    assert pool["language"] == "python" and pool["processes"][0]["state"] == "ready"
    assert pool["processes"][0]["capabilities"]
