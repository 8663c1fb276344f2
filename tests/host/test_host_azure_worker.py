"""Azure's own Python language worker (azure-functions-worker 1.1.9 from PyPI) as a real peer.

1.1.9 pins grpcio~=1.33, which has no Python 3.11 wheel; it runs here with a modern grpcio and
protobuf 3.20.3 (its generated code is the old descriptor style that protobuf 4+ rejects). The
virtualenv is built once and cached under ~/.cache/funcplane/azure-functions-worker-1.1.9/.
It predates the --functions-* arguments and rejects unknown ones, so its worker.config.json
asks for the legacy argument form ("hostArguments": "legacy").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLE_APPS, HOST_APPS, echo_at_once, queue
from support import json_lines

AZURE_WORKER_VERSION = "1.1.9"
CACHE = Path.home() / ".cache" / "funcplane" / f"azure-functions-worker-{AZURE_WORKER_VERSION}"
REQUIREMENTS = ["grpcio>=1.60", "protobuf==3.20.3", "azure-functions"]


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"building the Azure worker venv failed: {' '.join(command)}\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def azure_worker_python() -> Path:
    python = CACHE / "bin" / "python"
    marker = CACHE / ".funcplane-installed"
    if not marker.exists():
        _run([sys.executable, "-m", "venv", "--clear", str(CACHE)])
        _run([str(python), "-m", "pip", "install", "-q", "--no-deps", f"azure-functions-worker=={AZURE_WORKER_VERSION}"])
        _run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS])
        marker.write_text(json.dumps(REQUIREMENTS))
    return python


@pytest.fixture
def azure_workers_dir(tmp_path: Path, azure_worker_python: Path) -> Path:
    folder = tmp_path / "workers" / "python"
    folder.mkdir(parents=True)
    (folder / "worker.config.json").write_text(json.dumps({
        "description": {
            "language": "python",
            "extensions": [".py"],
            "defaultExecutablePath": str(azure_worker_python),
            "arguments": ["-m azure_functions_worker"],
            "hostArguments": "legacy",
        }
    }))
    return folder.parent


def test_azure_python_worker_serves_a_function_json_app(start_host, azure_workers_dir) -> None:
    host = start_host(EXAMPLE_APPS / "hello-v1", workers_dir=azure_workers_dir)
    assert host.get("/api/HttpTrigger?name=azure").text == "Hello, azure!"
    posted = host.request("POST", "/api/HttpTrigger", body=json.dumps({"name": "json"}),
                          headers={"Content-Type": "application/json"})
    assert (posted.status, posted.text) == (200, "Hello, json!")
    (pool,) = host.admin("/admin/host/status")["workers"]
    assert pool["processes"][0]["capabilities"].get("RawHttpBodyBytes") == "true"
    log = host.log()
    assert "-m azure_functions_worker --host 127.0.0.1" in log and "--functions-uri" not in log
    assert "Starting Azure Functions Python Worker" in log
    assert "[Function.HttpTrigger.User] greeting azure" in log  # RpcLog carried into host logs


def test_azure_python_worker_route_params_async_and_errors(start_host, azure_workers_dir) -> None:
    host = start_host(HOST_APPS / "routes-v1", workers_dir=azure_workers_dir)
    assert host.get("/api/products/7").json() == {"id": "7"}
    assert host.get("/api/slow?seconds=0").status == 200  # async def function
    failed = host.get("/api/fails")
    assert failed.status == 500 and failed.json()["invocationId"] and "boom" not in failed.text
    assert host.get("/api/fast").status == 200


def test_azure_python_worker_large_bodies_both_ways(start_host, azure_workers_dir) -> None:
    """grpcio's client against the host's gRPC server with bodies far beyond the initial 64 KiB
    HTTP/2 windows, two at once: flow control and reassembly on both ends."""
    host = start_host(HOST_APPS / "echo-v1", workers_dir=azure_workers_dir)
    bodies = [bytes([index]) * 64 + os.urandom(2 * 1024 * 1024 + index) for index in range(2)]
    assert echo_at_once(host, bodies) == bodies


def test_azure_python_worker_runs_a_queue_trigger_with_a_return_output(
        start_host, azure_workers_dir, azurite, tmp_path: Path) -> None:
    suffix = tmp_path.name[-8:].replace("_", "").lower() or "q"
    env = {"AzureWebJobsStorage": azurite.connection_string, "RUNS_FILE": str(tmp_path / "runs.jsonl"),
           "WORK_QUEUE": f"azw-work-{suffix}", "DONE_QUEUE": f"azw-done-{suffix}"}
    clients = {name: queue(azurite, env[name]) for name in ("WORK_QUEUE", "DONE_QUEUE")}
    for key, fail_until in (("ok", 0), ("flaky", 1)):
        clients["WORK_QUEUE"].send_message(json.dumps({"key": key, "fail_until": fail_until}))
    host = start_host(HOST_APPS / "queues-v1", env=env, workers_dir=azure_workers_dir)
    done = clients["DONE_QUEUE"]
    host.wait_until(lambda: done.get_queue_properties().approximate_message_count == 2, "both outputs", 60)
    outputs = sorted(json.loads(m.content)["done"] for m in done.receive_messages(max_messages=32))
    assert outputs == ["flaky", "ok"]
    runs = json_lines(Path(env["RUNS_FILE"]))
    # Azure's worker built a QueueMessage from the host's trigger metadata: id and dequeue count.
    assert sorted((r["key"], r["dequeueCount"]) for r in runs) == [("flaky", 1), ("flaky", 2), ("ok", 1)]
    assert all(r["id"] for r in runs)
