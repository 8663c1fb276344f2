"""Host hardening against real hosts and workers: timed-out sync functions do not wedge a worker,
readiness tells the truth about broken apps, worker start failures answer at once, logs stay
attributed and bounded, and an app's .python_packages are importable."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

from conftest import HOST_APPS, metric_value

HARDENING_APP = HOST_APPS / "hardening-v2"


def _with_host_json(copy_app, document: dict, name: str | None = None) -> Path:
    app = copy_app(HARDENING_APP, name)
    (app / "host.json").write_text(json.dumps({"version": "2.0", **document}))
    return app


def _worker_pids(host) -> list[int]:
    (pool,) = host.admin("/admin/host/status")["workers"]
    return [p["pid"] for p in pool["processes"] if p["state"] == "ready"]


def test_timed_out_sync_calls_restart_the_worker_instead_of_wedging_it(start_host, copy_app) -> None:
    app = _with_host_json(copy_app, {"functionTimeout": "00:00:02"})
    host = start_host(app, env={"PYTHON_THREADPOOL_THREAD_COUNT": "2"})
    (victim,) = _worker_pids(host)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        stuck = [pool.submit(host.get, "/api/sleep?seconds=600", timeout=60) for _ in range(4)]
        replies = [future.result() for future in stuck]
    assert {r.status for r in replies} <= {502, 504} and 504 in {r.status for r in replies}, \
        [(r.status, r.text) for r in replies]
    # Every thread of the old process is stuck for ten minutes; the replacement serves at once.
    reply = host.get("/api/pid", timeout=60)
    assert reply.status == 200, reply.text
    assert int(reply.text) != victim
    assert "timed out after 2s" in host.log() and f"restarting python worker" in host.log()
    assert metric_value(host.metrics(), "funcplane_worker_restarts_total", language="python") >= 1
    host.wait_ready()


def test_a_timeout_fails_the_workers_other_invocations_fast(start_host, copy_app) -> None:
    app = _with_host_json(copy_app, {"functionTimeout": "00:00:04"})
    host = start_host(app, env={"PYTHON_THREADPOOL_THREAD_COUNT": "4"})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(host.get, "/api/sleep?seconds=600", timeout=60)
        host.wait_until(lambda: metric_value(host.metrics(), "funcplane_invocations_in_flight",
                                             function="sleep_sync") == 1, "the first call to run")
        time.sleep(2)  # the second call's own timeout is well after the first's
        second = pool.submit(host.get, "/api/sleep?seconds=600", timeout=60)
        host.wait_until(lambda: metric_value(host.metrics(), "funcplane_invocations_in_flight",
                                             function="sleep_sync") == 2, "the second call to run")
        timed_out, failed_with_it = first.result(), second.result()
    assert timed_out.status == 504 and "timed out after 4s" in timed_out.json()["error"]
    # The second call had not reached its own timeout: it fails with the cause, not a 504 of its own.
    assert failed_with_it.status == 502, failed_with_it.text
    assert "timed out after 4s" in failed_with_it.json()["error"]
    assert metric_value(host.metrics(), "funcplane_invocations_total", function="sleep_sync",
                        outcome="worker_lost") == 1


def test_a_timeout_routes_calls_to_the_healthy_worker_meanwhile(start_host, copy_app) -> None:
    app = _with_host_json(copy_app, {"functionTimeout": "00:00:02"})
    host = start_host(app, env={"PYTHON_THREADPOOL_THREAD_COUNT": "1", "FUNCTIONS_WORKER_PROCESS_COUNT": "2"})
    host.wait_until(lambda: len(_worker_pids(host)) == 2, "both worker processes to be ready")
    assert host.get("/api/sleep?seconds=600", timeout=60).status == 504
    # The timed-out process's only thread is taken; without its replacement half of these would wait.
    replies = [host.get("/api/pid", timeout=60) for _ in range(6)]
    assert [r.status for r in replies] == [200] * 6, [r.text for r in replies]
