"""Small helpers shared by the test suites."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def eventually(probe: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> T:
    """Poll until `probe` returns a truthy value and return it; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def processes_inside(directory: Path) -> dict[int, str]:
    """Live processes (pid -> command line) whose working directory is inside `directory`: the
    hosts a pod runner starts in its pods' directories."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline and cwd.is_relative_to(directory):
            found[int(entry.name)] = cmdline
    return found


def isolated_cache(directory: Path) -> dict[str, str]:
    """An environment whose FUNCPLANE_CACHE_DIR keeps clusters under `directory` (away from the
    user's) while sharing the built binaries and the pod network leases of the real cache."""
    cache = Path.home() / ".cache" / "funcplane"
    (directory / "cache").mkdir()
    for entry in cache.iterdir():
        if entry.name != "clusters" and not entry.name.startswith("."):
            (directory / "cache" / entry.name).symlink_to(entry)
    return dict(os.environ, FUNCPLANE_CACHE_DIR=str(directory / "cache"))


def json_lines(path: Path) -> list[Any]:
    """The records of a JSON-lines file that test functions append to (none while it is missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hello_code_configmap(name: str) -> dict:
    """A ConfigMap with the code of examples/apps/hello-v2, for hosts the pod runner starts."""
    app = REPO / "examples" / "apps" / "hello-v2"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {f.name: f.read_text() for f in app.iterdir() if f.is_file()}}


def hello_host_deployment(replicas: int) -> dict:
    """A Deployment of `funcplane-host` pods serving hello-v2 from ConfigMap hello-code (the pod
    runner runs them; its GREETING comes from Secret hello-secret)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"funcplane.io/app": "hello"}},
            "template": {
                "metadata": {"labels": {"funcplane.io/app": "hello"}},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "host", "image": "funcplane/host:dev",
                        "env": [
                            {"name": "AzureWebJobsScriptRoot", "value": "/home/site/wwwroot"},
                            {"name": "FUNCTIONS_WORKER_RUNTIME", "value": "python"},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "hello-secret", "key": "greeting"}}},
                        ],
                        "volumeMounts": [{"name": "code", "mountPath": "/home/site/wwwroot", "readOnly": True}],
                    }],
                    "volumes": [{"name": "code", "configMap": {"name": "hello-code"}}],
                },
            },
        },
    }


class PeriodicSampler:
    """Calls `sample()` every `interval` seconds in a thread while a `with` block runs: invariants and
    time series observed beside a test's actions."""

    interval = 0.2

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)
