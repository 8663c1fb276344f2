"""Managed worker config: declared site-extension paths, the default directory, disabled workers,
missing paths, and two versions of one language side by side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import BUNDLED_WORKERS, HOST_APPS, MASTER_KEY

BUNDLED_PYTHON = BUNDLED_WORKERS / "python"


def _site_extension(root: Path, name: str, versions: list[str]) -> Path:
    """A worker folder outside the default directory that runs the bundled Python worker."""
    folder = root / name
    folder.mkdir(parents=True)
    config = json.loads((BUNDLED_PYTHON / "worker.config.json").read_text())
    description = config["description"]
    description["defaultWorkerPath"] = str(BUNDLED_PYTHON / description["defaultWorkerPath"])
    description["supportedRuntimeVersions"] = versions
    description["defaultRuntimeVersion"] = versions[0]
    (folder / "worker.config.json").write_text(json.dumps(config))
    return folder


def _pool(host) -> dict:
    (pool,) = host.admin("/admin/host/status")["workers"]
    return pool


def test_undeclared_worker_loads_from_the_default_directory(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1", worker_config={"workers": {}})
    pool = _pool(host)
    assert (pool["source"], Path(pool["path"])) == ("default", BUNDLED_PYTHON)
    assert host.get("/api/fast").status == 200


def test_declared_enabled_worker_loads_from_its_site_extension_path(start_host, tmp_path) -> None:
    extension = _site_extension(tmp_path / "siteextensions", "python", ["3.11"])
    host = start_host(HOST_APPS / "routes-v1",
                      worker_config={"workers": {"python": {"path": str(extension), "enabled": True}}})
    pool = _pool(host)
    assert (pool["source"], Path(pool["path"])) == ("managed", extension)
    assert host.get("/api/fast").status == 200
    assert f"--workerId {pool['processes'][0]['workerId']}" in host.log()


def test_disabled_worker_is_never_started(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1", worker_config={"workers": {"python": {"enabled": False}}},
                      wait_ready=False)
    host.wait_until(lambda: host.get("/readyz").status == 503, "readiness to report the disabled worker")
    reasons = host.get("/readyz").json()["reasons"]
    assert any("disabled" in reason and "python" in reason for reason in reasons), reasons
    status = host.admin("/admin/host/status")
    assert status["workers"] == []
    assert status["registry"]["disabled"] == ["python"]
    fast = host.get("/api/fast")
    assert fast.status == 503 and "disabled" in fast.json()["error"]
    assert "starting worker" not in host.log()


def test_declared_path_that_does_not_exist_makes_the_host_unready(start_host, tmp_path) -> None:
    missing = tmp_path / "siteextensions" / "node"
    host = start_host(HOST_APPS / "routes-v1",
                      worker_config={"workers": {"node": {"path": str(missing), "enabled": True}}},
                      wait_ready=False)
    host.wait_until(lambda: host.get("/readyz").status == 503, "readiness false")
    message = f"worker 'node': declared path {missing}"
    assert any(message in reason for reason in host.get("/readyz").json()["reasons"])
    assert any(message in e["error"] for e in host.admin("/admin/host/status")["errors"])
    # The python functions still serve from the default directory.
    host.wait_until(lambda: host.get("/api/fast").status == 200, "python functions to serve")


def test_two_versions_side_by_side_app_picks_by_runtime_version(start_host, tmp_path) -> None:
    root = tmp_path / "siteextensions"
    old = _site_extension(root, "python-old", ["3.10"])
    new = _site_extension(root, "python-new", ["3.11", "3.12"])
    workers = {"workers": {"python-old": {"path": str(old), "enabled": True},
                           "python-new": {"path": str(new), "enabled": True}}}
    for version, expected in (("3.10", old), ("3.12", new)):
        host = start_host(HOST_APPS / "routes-v1", worker_config=workers,
                          env={"FUNCTIONS_WORKER_RUNTIME_VERSION": version})
        assert Path(_pool(host)["path"]) == expected
        assert host.get("/api/fast").status == 200
        host.stop()


def test_unsupported_runtime_version_is_a_clear_error(start_host) -> None:
    host = start_host(HOST_APPS / "routes-v1", env={"FUNCTIONS_WORKER_RUNTIME_VERSION": "2.7"}, wait_ready=False)
    host.wait_until(lambda: host.get("/readyz").status == 503, "readiness false")
    reasons = " ".join(host.get("/readyz").json()["reasons"])
    assert "FUNCTIONS_WORKER_RUNTIME_VERSION=2.7" in reasons and "3.11" in reasons


def test_only_needed_workers_start(start_host, tmp_path) -> None:
    workers_dir = tmp_path / "workers"
    shutil.copytree(BUNDLED_PYTHON, workers_dir / "python")
    node = workers_dir / "node"
    node.mkdir()
    (node / "worker.config.json").write_text(json.dumps({"description": {
        "language": "node", "extensions": [".js"], "defaultExecutablePath": "node-does-not-exist",
        "defaultWorkerPath": "dist/worker.js"}}))
    host = start_host(HOST_APPS / "routes-v1", workers_dir=workers_dir)
    status = host.admin("/admin/host/status")
    assert {w["language"] for w in status["registry"]["workers"]} == {"python", "node"}
    assert [w["language"] for w in status["workers"]] == ["python"]
    assert host.get("/api/fast", headers={"x-functions-key": MASTER_KEY}).status == 200


def _broken_worker(root: Path, name: str, shell: str, timeout: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "worker.config.json").write_text(json.dumps({
        "description": {"language": "python", "extensions": [".py"], "defaultExecutablePath": "/bin/sh",
                        "arguments": [f"-c '{shell}'"]},
        "processOptions": {"initializationTimeout": timeout},
    }))
    return root


def test_worker_that_never_connects_hits_the_startup_timeout_and_is_restarted(start_host, tmp_path) -> None:
    workers = _broken_worker(tmp_path / "workers", "python", "sleep 30", "00:00:01")
    host = start_host(HOST_APPS / "routes-v1", workers_dir=workers, wait_ready=False)

    def process() -> dict:
        return host.admin("/admin/host/status")["workers"][0]["processes"][0]

    host.wait_until(lambda: process()["restarts"] >= 1, "a restart after the start-up timeout")
    assert "did not finish start-up within 1s" in process()["lastError"]
    assert host.get("/readyz").status == 503


def test_worker_that_exits_at_start_is_reported_with_its_output(start_host, tmp_path) -> None:
    workers = _broken_worker(tmp_path / "workers", "python", "echo cannot import grpc >&2; exit 3", "00:00:02")
    host = start_host(HOST_APPS / "routes-v1", workers_dir=workers, wait_ready=False)

    def last_error() -> str:
        return host.admin("/admin/host/status")["workers"][0]["processes"][0]["lastError"] or ""

    host.wait_until(lambda: "exited with code 3" in last_error(), "the start-up failure to be reported")
    assert "cannot import grpc" in last_error() and "during start-up" in last_error()
    reply = host.get("/api/fast", timeout=60)
    assert reply.status == 503 and "no python worker is ready" in reply.json()["error"]
