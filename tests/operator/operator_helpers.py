"""Helpers for the operator tests: run the real operator process and read the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from support import eventually

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
OPERATOR = Path(sys.executable).parent / "funcplane-operator"
# Kinds whose resourceVersions show writes (Leases excluded: renewing leadership is the runtime's job).
WATCHED_KINDS = ("functionapps", "slots", "workerconfigs", "deployments", "replicasets", "pods", "services",
                 "configmaps", "secrets", "serviceaccounts", "roles", "rolebindings", "events")


class OperatorProcess:
    """`funcplane-operator` scoped to one namespace, as a real process."""

    def __init__(self, cluster: Any, namespace: str, log_dir: Path) -> None:
        self.cluster, self.namespace, self.log_dir = cluster, namespace, log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> "OperatorProcess":
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [str(OPERATOR), "--namespace", self.namespace, "--kubeconfig", str(self.cluster.kubeconfig),
             "--metrics-port", "0", "--health-port", "0", "--log-format", "plain",
             "--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5"],
            stdout=log, stderr=subprocess.STDOUT, env=self.cluster.env)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log")))

    def assert_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, \
            f"the operator exited ({self.process.returncode if self.process else None}):\n{self.logs()[-4000:]}"


def kubectl_json(cluster: Any, namespace: str, *args: str) -> Any:
    return json.loads(cluster.kubectl("-n", namespace, *args, "-o", "json").stdout)


def get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def items(cluster: Any, namespace: str, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", kind] + (["-l", selector] if selector else [])
    return kubectl_json(cluster, namespace, *args)["items"]


def apply(cluster: Any, namespace: str, manifest: str | list[dict[str, Any]] | dict[str, Any]) -> str:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(
        manifest if isinstance(manifest, list) else [manifest])
    return cluster.kubectl("-n", namespace, "apply", "-f", "-", input=text).stdout


def apply_examples(cluster: Any, namespace: str, *names: str) -> None:
    for name in names:
        cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLES / name))


def condition(body: dict[str, Any] | None, kind: str = "Ready") -> dict[str, Any]:
    for entry in (body or {}).get("status", {}).get("conditions", []):
        if entry["type"] == kind:
            return entry
    return {}


def wait_app_ready(cluster: Any, namespace: str, app: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        body = get(cluster, namespace, "functionapp", app)
        ok = condition(body).get("status") == "True" and \
            body["status"].get("observedGeneration") == body["metadata"]["generation"]
        return body if ok else None
    return eventually(ready, timeout=timeout, interval=0.5, what=f"FunctionApp {app} Ready")


def pod_uids(cluster: Any, namespace: str, selector: str) -> set[str]:
    return {pod["metadata"]["uid"] for pod in items(cluster, namespace, "pods", selector)}


def resource_versions(cluster: Any, namespace: str) -> dict[str, str]:
    versions = {}
    for kind in WATCHED_KINDS:
        for item in items(cluster, namespace, kind):
            versions[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return versions


def settle(seconds: float = 4.0) -> None:
    """Give the operator time to act on what it has seen (used before asserting it did nothing)."""
    time.sleep(seconds)


