"""Helpers for the operator tests: run the real operator process and read the cluster."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import yaml

import diagnostics
from funcplane.controllers.leader import EXIT_LEASE_LOST
from funcplane_dev.services import Supervisor
from support import eventually

LOG = logging.getLogger("tests.operator")

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
OPERATOR = Path(sys.executable).parent / "funcplane-operator"
# Kinds whose resourceVersions show writes (Leases excluded: renewing leadership is the runtime's job).
WATCHED_KINDS = ("functionapps", "slots", "workerconfigs", "deployments", "replicasets", "pods", "services",
                 "configmaps", "secrets", "serviceaccounts", "roles", "rolebindings", "events")


class OperatorProcess:
    """`funcplane-operator` scoped to one namespace, as a real process kept running as a kubelet would.

    An exit the test did not cause (a Lease lost on a loaded machine ends the process with status
    3 by design) is logged and the operator started again, so a test fails only on a real defect;
    `unexpected_exits` lists the other statuses for the fixture to report."""

    def __init__(self, cluster: Any, namespace: str, log_dir: Path) -> None:
        self.cluster, self.namespace, self.log_dir = cluster, namespace, log_dir
        self.supervisors: list[Supervisor] = []
        self.starts = 0
        self.restarts: list[str] = []
        diagnostics.register(f"operator ({namespace})", self.logs)

    @property
    def supervisor(self) -> Supervisor | None:
        return self.supervisors[-1] if self.supervisors else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.supervisor.process if self.supervisor else None

    @property
    def unexpected_exits(self) -> list[int]:
        return [code for supervisor in self.supervisors for code in supervisor.exits if code != EXIT_LEASE_LOST]

    def _open_log(self, _: int) -> IO[bytes]:
        self.starts += 1
        return (self.log_dir / f"operator-{self.starts}.log").open("wb")

    def _restarted(self, line: str) -> None:
        self.restarts.append(line)
        LOG.warning("operator for %s: %s", self.namespace, line)

    def start(self) -> "OperatorProcess":
        argv = [str(OPERATOR), "--namespace", self.namespace, "--kubeconfig", str(self.cluster.kubeconfig),
                "--metrics-port", "0", "--health-port", "0", "--log-format", "plain",
                "--lease-duration", "6", "--renew-deadline", "4", "--retry-period", "1"]
        self.supervisors.append(Supervisor(argv, open_log=self._open_log, report=self._restarted,
                                           env=self.cluster.env).start())
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would; not restarted (the test starts it again)."""
        assert self.supervisor is not None
        self.supervisor.kill()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log"),
                                                                       key=lambda p: int(p.stem.rsplit("-", 1)[1])))

    def assert_alive(self) -> None:
        process = self.process
        assert process is not None and process.poll() is None, \
            f"the operator exited ({process.returncode if process else None}):\n{self.logs()[-4000:]}"


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


# Manifests of the slot tests' app and its slots.
def app(name: str = "shop", plan: str = "premium", **spec: Any) -> dict[str, Any]:
    body = {"runtime": {"name": "python", "version": "3.12"}, "code": {"image": {"reference": "shop:1"}},
            "plan": plan, "settings": [{"name": "MODE", "value": "live", "sticky": True},
                                       {"name": "COLOR", "value": "blue"}]}
    body.update(spec)
    return {"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": name}, "spec": body}


def slot(slot_name: str, app_name: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": f"{app_name}-{slot_name}"},
            "spec": {"appRef": app_name, "slotName": slot_name, **spec}}
