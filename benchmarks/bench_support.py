"""What the cluster benchmarks share: a local cluster with the CRDs, namespaces with their default
ServiceAccount, and the real operator process watching them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from funcplane_dev.cluster import LocalCluster

CRDS = Path(__file__).resolve().parents[1] / "crds"


def wait(probe: Callable[[], Any], what: str, timeout: float, interval: float = 0.2) -> Any:
    """The first truthy value of `probe`; a benchmark that waits longer than `timeout` stops, naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def create_namespace(cluster: LocalCluster, namespace: str, timeout: float = 120.0) -> None:
    """Create `namespace` and wait for its default ServiceAccount (pods need it)."""
    cluster.kubectl("create", "namespace", namespace)
    deadline = time.monotonic() + timeout
    while cluster.kubectl("-n", namespace, "get", "sa", "default", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"no default ServiceAccount in namespace {namespace} within {timeout:.0f}s")
        time.sleep(0.2)


@contextlib.contextmanager
def operated_cluster(name: str, namespaces: list[str], lease_namespace: str,
                     real_nodes: int = 0) -> Iterator[tuple[LocalCluster, Path]]:
    """A fresh local cluster with the CRDs and `namespaces`, the real `funcplane-operator` watching
    them (its Lease in `lease_namespace`); yields the cluster and a work directory, removes both.
    With real nodes, the cluster's env makes the operator render the copying init container."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cluster = LocalCluster.named(name, directory=workdir / "cluster", real_nodes=real_nodes).up(reuse=False)
        operator = None
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
            cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            for namespace in [lease_namespace, *namespaces]:
                create_namespace(cluster, namespace)
            command = [str(Path(sys.executable).with_name("funcplane-operator")), "--kubeconfig",
                       str(cluster.kubeconfig), "--metrics-port", "0", "--health-port", "0",
                       "--bind-address", "127.0.0.1", "--log-format", "plain", "--log-level", "warning",
                       "--lease-namespace", lease_namespace]
            for namespace in namespaces:
                command += ["--namespace", namespace]
            operator = subprocess.Popen(command, env=cluster.env, stdout=(workdir / "operator.log").open("wb"),
                                        stderr=subprocess.STDOUT)
            yield cluster, workdir
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=30)
            cluster.down()
