"""Host hardening against real hosts and workers: timed-out sync functions do not wedge a worker,
readiness tells the truth about broken apps, worker start failures answer at once, logs stay
attributed and bounded, an app's .python_packages are importable, and a local run (like
`func start`) has keys, lists its functions and can log each request."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from conftest import BUNDLED_WORKERS, HOST_APPS, HOST_COMMAND, MASTER_KEY, HostProcess, free_port, metric_value

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
    assert "timed out after 2s" in host.log() and "restarting python worker" in host.log()
    assert metric_value(host.metrics(), "funcplane_worker_restarts_total", language="python") >= 1
    host.wait_ready()


def test_a_timeout_fails_the_workers_other_invocations_fast(start_host, copy_app) -> None:
    app = _with_host_json(copy_app, {"functionTimeout": "00:00:08"})
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
    assert timed_out.status == 504 and "timed out after 8s" in timed_out.json()["error"]
    # The second call had not reached its own timeout: it fails with the cause, not a 504 of its own.
    assert failed_with_it.status == 502, failed_with_it.text
    assert "timed out after 8s" in failed_with_it.json()["error"]
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


IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "127.0.0.1"}  # a host in a pod stays up when it cannot serve


def _v2_app(root: Path, source: str) -> Path:
    root.mkdir(parents=True)
    (root / "host.json").write_text(json.dumps({"version": "2.0"}))
    (root / "function_app.py").write_text(source)
    return root


def _refusals(host) -> list:
    """/readyz, /admin/warmup and a route of a host that cannot serve its app."""
    return [host.get("/readyz"), host.get("/admin/warmup", headers={"x-functions-key": MASTER_KEY}), host.get("/api/anything")]


def test_a_missing_app_directory_is_not_ready_and_says_which(start_host, tmp_path) -> None:
    missing = tmp_path / "no-such-app"
    host = start_host(missing, env=IN_CLUSTER, wait_ready=False)
    for reply in _refusals(host):
        assert reply.status == 503, reply.text
        assert f"app directory {missing} does not exist" in reply.text
    assert host.admin("/admin/host/status")["ready"] is False


def test_an_app_with_no_loadable_function_is_not_ready(start_host, tmp_path) -> None:
    app = _v2_app(tmp_path / "empty-app", "import azure.functions as func\n\napp = func.FunctionApp()\n")
    host = start_host(app, wait_ready=False)
    host.wait_until(lambda: "no function that loaded" in host.get("/readyz").text, "the empty app to be reported")
    assert host.get("/readyz").status == 503
    warm = host.get("/admin/warmup", headers={"x-functions-key": MASTER_KEY})
    assert warm.status == 503 and "no function that loaded" in warm.text


def test_invalid_host_json_in_a_pod_is_not_ready_and_serves_nothing(start_host, copy_app) -> None:
    for document, field, problem in [
        ({"functionTimeout": "99:99:99"}, "functionTimeout", "out of range"),
        ({"functionTimeout": "00:00:00"}, "functionTimeout", "must be longer than zero"),
        ({"funcplane": {"workerHealth": {"statusInterval": "00:00:00"}}}, "funcplane.workerHealth.statusInterval",
         "must be longer than zero"),
        ({"extensions": {"http": {"maxConcurrentRequests": "8"}}}, "extensions.http.maxConcurrentRequests",
         "must be a positive integer"),
        ({"version": "3.0"}, "version", "is not supported"),
    ]:
        app = _with_host_json(copy_app, document, name=f"app-{field}-{len(problem)}")
        if "version" in document:
            (app / "host.json").write_text(json.dumps(document))
        host = start_host(app, env=IN_CLUSTER, wait_ready=False)
        for reply in _refusals(host):
            assert reply.status == 503, reply.text
            assert f"host.json {field}: " in reply.text and problem in reply.text, reply.text
        assert host.admin("/admin/host/status")["workers"] == [], "no worker runs an app with an invalid host.json"
        host.stop()


def test_invalid_host_json_ends_a_local_run_with_the_message(copy_app, tmp_path) -> None:
    app = _with_host_json(copy_app, {"functionTimeout": "soon"})
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"masterKey": MASTER_KEY}))
    finished = subprocess.run([str(HOST_COMMAND), "--app", str(app), "--port", str(free_port()),
                               "--keys-file", str(keys)],
                              capture_output=True, text=True, timeout=60, env=_local_environment())
    assert finished.returncode == 2, finished.stderr
    assert "funcplane-host: host.json functionTimeout: 'soon' is not a time span" in finished.stderr


def _local_environment(**extra: str) -> dict[str, str]:
    """A workstation's environment: no cluster, no funcplane or Functions settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNCPLANE_", "FUNCTIONS_", "KUBERNETES_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def test_late_log_lines_keep_their_function_category(start_host) -> None:
    host = start_host(HARDENING_APP)
    assert host.get("/api/late?marker=written-after-return").status == 200
    host.wait_until(lambda: "written-after-return" in host.log(), "the late line to arrive")
    (line,) = [line for line in host.log().splitlines() if "written-after-return" in line]
    assert "[Function.late_log.User]" in line, line


def test_a_log_flood_is_bounded_and_counted_while_other_calls_are_served(start_host, tmp_path) -> None:
    host = start_host(HARDENING_APP, env={"FUNCTIONS_WORKER_PROCESS_COUNT": "1"})
    started, gate, done = (tmp_path / name for name in ("started", "gate", "done"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        flood = pool.submit(host.get, f"/api/flood?lines=300000&started={started}&gate={gate}&done={done}",
                            timeout=120)
        host.wait_until(started.exists, "the flood to start")
        # A host that keeps up drops nothing; stalled (as a CPU-throttled or paused host would be)
        # while the function logs all its lines, it cannot read them: the worker's bounded buffer
        # fills and the rest are dropped, whatever this machine's speed.
        os.kill(host.process.pid, signal.SIGSTOP)
        try:
            gate.touch()
            deadline = time.monotonic() + 60
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            os.kill(host.process.pid, signal.SIGCONT)
        assert done.exists(), "the function did not log its lines within 60 s while the host was stalled"
        others = [host.get("/api/pid", timeout=60) for _ in range(3)]
        assert flood.result().status == 200
    assert [r.status for r in others] == [200] * 3
    host.wait_until(lambda: metric_value(host.metrics(), "funcplane_worker_log_lines_dropped_total",
                                         language="python") > 0, "the dropped lines to be counted")
    assert "dropped" in host.log() and "log line(s)" in host.log()


def test_routes_answer_503_while_the_app_is_being_indexed(start_host, tmp_path) -> None:
    gate = tmp_path / "gate"
    app = _v2_app(tmp_path / "slow-import", f"""
import os, time
import azure.functions as func

while not os.path.exists({str(gate)!r}):  # indexing waits until the test opens the gate
    time.sleep(0.05)

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello")
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello")
""")
    host = start_host(app, wait_ready=False)
    early = host.get("/api/hello")
    assert early.status == 503 and "starting" in early.json()["error"], early.text
    gate.write_text("open")
    host.wait_ready(timeout=60)
    assert host.get("/api/hello").text == "hello"
    assert host.get("/api/nothing-here").status == 404


def test_with_no_worker_able_to_start_requests_fail_at_once(start_host, tmp_path) -> None:
    workers = tmp_path / "workers" / "python"
    workers.mkdir(parents=True)
    (workers / "worker.sh").write_text("echo cannot start >&2; exit 3\n")
    config = json.loads((BUNDLED_WORKERS / "python" / "worker.config.json").read_text())
    config["description"].update({"defaultExecutablePath": "/bin/sh", "defaultWorkerPath": "worker.sh"})
    (workers / "worker.config.json").write_text(json.dumps(config))
    # A function.json app (routes known to the host) and a decorator app (routes the worker would report).
    for app, path in ((HOST_APPS / "routes-v1", "/api/fast"), (HARDENING_APP, "/api/pid")):
        host = start_host(app, workers_dir=workers.parent, wait_ready=False)
        host.wait_until(lambda: host.admin("/admin/host/status")["workers"][0]["processes"][0]["restarts"] >= 1,
                        "the first start-up failure")
        # A client that gives up after 10 s gets the answer: before, requests waited up to 30 s.
        reply = host.get(path, timeout=10)
        assert reply.status == 503 and "exited with code 3" in reply.json()["error"], reply.text
        host.stop()


def _tiny_wheel(folder: Path, module_source: str) -> Path:
    """A one-module wheel built by hand, so that installing it needs no network and no build backend."""
    files = {
        "tinypkg/__init__.py": module_source,
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "tinypkg-1.0.dist-info/RECORD,,\n"
    wheel = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**files, "tinypkg-1.0.dist-info/RECORD": record}.items():
            archive.writestr(name, text)
    return wheel


def test_the_worker_imports_the_apps_python_packages(start_host, tmp_path) -> None:
    wheel = _tiny_wheel(tmp_path, "def greeting() -> str:\n    return 'hello from .python_packages'\n")
    app = _v2_app(tmp_path / "packaged-app", """
import azure.functions as func
import tinypkg

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="greet")
def greet(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(tinypkg.greeting() + " at " + tinypkg.__file__)
""")
    target = app / ".python_packages" / "lib" / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, timeout=300)
    host = start_host(app)
    reply = host.get("/api/greet")
    assert reply.status == 200, reply.text
    assert reply.text.startswith("hello from .python_packages at " + str(target)), reply.text


def test_a_local_run_generates_keys_prints_urls_and_logs_each_request(tmp_path) -> None:
    port = free_port()
    log_path = tmp_path / "local-host.log"
    state = tmp_path / "state"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(HOST_COMMAND), "--app", str(HOST_APPS / "routes-v1"), "--bind", "127.0.0.1", "--port", str(port),
             "--access-log"],
            stdout=log, stderr=subprocess.STDOUT, env=_local_environment(XDG_STATE_HOME=str(state)), cwd=tmp_path)
    host = HostProcess(process, port, log_path, HOST_APPS / "routes-v1")
    try:
        host.wait_ready(timeout=60)
        (keys_file,) = (state / "funcplane" / "keys").glob("routes-v1-*.json")
        keys = json.loads(keys_file.read_text())
        function_key = keys["functionKeys"]["default"]
        assert "no keys configured" in host.log() and str(keys_file) in host.log()
        host.wait_until(lambda: "Functions:" in host.log(), "the functions to be listed")
        base = f"http://127.0.0.1:{port}/api"
        assert f"  fast: [GET] {base}/fast\n" in host.log()
        assert f"  keyed: [GET] {base}/keyed?code={function_key}\n" in host.log()
        assert host.log().count("Functions:") == 1
        refused = host.get("/api/keyed")
        assert refused.status == 401 and str(keys_file) in refused.json()["error"]
        assert host.get(f"/api/keyed?code={function_key}").status == 200
        assert host.get("/api/fast").status == 200
        host.wait_until(lambda: "GET /api/fast 200 " in host.log(), "the access log line")
        (line,) = [line for line in host.log().splitlines() if "GET /api/fast 200 " in line]
        assert re.search(r"GET /api/fast 200 \d+\.\dms invocationId=[0-9a-f-]{36}$", line), line
        assert re.search(r"GET /api/keyed 401 \d+\.\dms invocationId=-$", host.log(), re.MULTILINE)
    finally:
        host.stop()
