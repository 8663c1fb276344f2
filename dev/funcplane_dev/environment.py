"""The local environment of `funcplane dev up`: the cluster, the CRDs, the operator, the pod runner.

`up` is idempotent and quick on a machine that already ran it: a healthy cluster is reused, the
CRDs are applied server-side (no change, no rollout), and a service is started only when it is
not running. Everything stays up after the command returns, so `kubectl apply -f examples/...`
and `kubectl funcplane swap ...` work against it; `down` stops it all with the cluster.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cluster import DEFAULT_NAME, DEFAULT_NODES, ClusterError, LocalCluster, free_port

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
SYSTEM_NAMESPACE = "funcplane-system"
LEASE_NAME = "funcplane-operator"
SERVICES = ("operator", "pods")
OPERATOR_START_TIMEOUT = 120.0


@dataclass
class Environment:
    cluster: LocalCluster
    # Seconds each step of `up` took, in order (printed by the CLI and the demo).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def operator_identity(self) -> str:
        return f"{self.cluster.name}-dev-operator"


def _timed(timings: dict[str, float], step: str, started: float) -> float:
    now = time.monotonic()
    timings[step] = now - started
    return now


def up(name: str = DEFAULT_NAME, nodes: int = DEFAULT_NODES, *, fresh: bool = False,
       directory: Path | None = None, real_nodes: int = 0) -> Environment:
    timings: dict[str, float] = {}
    started = time.monotonic()
    cluster = LocalCluster.named(name, nodes, directory=directory, real_nodes=real_nodes).up(reuse=not fresh)
    environment = Environment(cluster, timings)
    started = _timed(timings, "cluster", started)
    install_crds(cluster)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}))
    started = _timed(timings, "CRDs", started)
    cluster.ensure_pod_network()
    running = {p.name for p in cluster.services.values()} - {p.name for p in cluster.crashed_services()}
    if "operator" not in running:
        cluster.stop_service("operator")  # a crashed record is replaced, not doubled
        cluster.start_service("operator", operator_service_command(cluster, environment.operator_identity))
    if "pods" not in running:
        cluster.stop_service("pods")
        cluster.start_service("pods", [sys.executable, "-m", "funcplane_dev.services", "pods",
                                       "--directory", str(cluster.directory)])
    wait_for_leader(cluster, environment.operator_identity)
    _timed(timings, "services", started)
    return environment


def install_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=70)


def operator_service_command(cluster: LocalCluster, identity: str) -> list[str]:
    # Loopback only and ports nobody else chose: on this machine the pod CIDR is local, and an
    # operator listening on 0.0.0.0:8080 would answer for every pod's IP.
    return [sys.executable, "-m", "funcplane_dev.services", "operator", "--directory", str(cluster.directory),
            "--", "--all-namespaces", "--kubeconfig", str(cluster.kubeconfig),
            "--lease-namespace", SYSTEM_NAMESPACE, "--lease-name", LEASE_NAME, "--identity", identity,
            "--bind-address", "127.0.0.1", "--metrics-port", str(free_port()), "--health-port", str(free_port()),
            "--log-format", "plain"]


def wait_for_leader(cluster: LocalCluster, identity: str, timeout: float = OPERATOR_START_TIMEOUT) -> None:
    """Until the operator holds its Lease, i.e. reconciles; fails with the operator's log tail."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        holder = cluster.kubectl("get", "lease", LEASE_NAME, "-n", SYSTEM_NAMESPACE, "-o",
                                 "jsonpath={.spec.holderIdentity}", check=False).stdout.strip()
        if holder == identity:
            return
        if "operator" in {p.name for p in cluster.crashed_services()}:
            break
        time.sleep(0.3)
    raise ClusterError(f"the operator did not take its Lease {SYSTEM_NAMESPACE}/{LEASE_NAME} "
                       f"(waited {time.monotonic() - started:.0f}s); "
                       f"last lines of {log_path(cluster, 'operator')}:\n{log_tail(cluster, 'operator', 20)}")


def log_path(cluster: LocalCluster, service: str) -> Path:
    return cluster.directory / "logs" / f"{service}.log"


def log_tail(cluster: LocalCluster, service: str, lines: int) -> str:
    path = log_path(cluster, service)
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
