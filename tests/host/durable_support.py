"""Durable Functions test support: the real SDK installed into an app's .python_packages, as a
published app carries it, and small clients for the orchestration status API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import HOST_APPS, HostProcess, free_port

SDK_VERSION = os.environ.get("FUNCPLANE_DURABLE_SDK_VERSION", "1.7.0")
SDK_CACHE = Path.home() / ".cache" / "funcplane" / "durable-sdk"
DURABLE_V2 = HOST_APPS / "durable-v2"
DURABLE_V1 = HOST_APPS / "durable-v1"
APP_PACKAGES = Path(".python_packages") / "lib" / "site-packages"


def durable_sdk() -> Path:
    """azure-functions-durable (with its dependencies) installed once per version, then cached."""
    target = SDK_CACHE / SDK_VERSION
    if (target / ".complete").exists():
        return target
    staging = SDK_CACHE / f"{SDK_VERSION}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--target", str(staging), f"azure-functions-durable=={SDK_VERSION}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"installing azure-functions-durable=={SDK_VERSION} from PyPI failed "
                    f"(needs network access to the package index):\n{done.stderr[-2000:]}")
    (staging / ".complete").write_text(SDK_VERSION)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def durable_app(source: Path, destination: Path) -> Path:
    """A copy of `source` whose .python_packages holds the SDK, as `func pack` would build it."""
    app = destination / source.name
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("__pycache__", ".python_packages"))
    packages = app / APP_PACKAGES
    packages.parent.mkdir(parents=True)
    packages.symlink_to(durable_sdk(), target_is_directory=True)
    return app


def use_postgres(app: Path, lease_seconds: float = 15) -> None:
    """Point the app's task hub at PostgreSQL (the DSN comes from the app setting DurablePostgres)."""
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["durableTask"]["storageProvider"] = {
        "type": "postgresql", "connectionStringName": "DurablePostgres", "leaseSeconds": lease_seconds}
    (app / "host.json").write_text(json.dumps(host_json))


def start_orchestration(host: HostProcess, name: str, payload: Any = None) -> str:
    """Start through the app's own HTTP starter (the SDK's client.start_new); returns the instance id."""
    reply = host.request("POST", f"/api/orchestrators/{name}",
                         body=json.dumps(payload) if payload is not None else None,
                         headers={"Content-Type": "application/json"})
    assert reply.status == 202, f"starting {name}: {reply.status} {reply.text}\n{host.log_tail()}"
    return reply.json()["id"]


def status(host: HostProcess, instance_id: str, query: str = "") -> dict[str, Any]:
    reply = host.get(f"/runtime/webhooks/durabletask/instances/{instance_id}?{query}",
                     headers={"x-functions-key": "test-master-key"})
    assert reply.status in (200, 202, 500), f"status of {instance_id}: {reply.status} {reply.text}"
    return reply.json()


def wait_for(host: HostProcess, instance_id: str, timeout: float = 60.0,
             statuses: tuple[str, ...] = ("Completed", "Failed", "Terminated")) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    current: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            pytest.fail(f"host exited with {host.process.returncode}:\n{host.log_tail(60)}")
        current = status(host, instance_id)
        if current["runtimeStatus"] in statuses:
            return current
        time.sleep(0.05)
    pytest.fail(f"instance {instance_id} did not reach {statuses} in {timeout}s; last status {current}\n"
                f"{host.log_tail(60)}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Debian's PostgreSQL server on a loopback port with its data in a temp dir; yields a DSN."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql: install Debian's "
                    "postgresql package (`make test` does)")
    bin_dir = found[-1].parent
    root = Path(tempfile.mkdtemp(prefix="funcplane-pg-"))
    data = root / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_postgres, *command], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.extend(process_tree(int(child)))
    return found
