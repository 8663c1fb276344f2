"""`helm install` on a real control plane, and the chart's RBAC exercised by the real operator.

The chart installs CRDs, so it gets a control plane of its own where no CRD exists beforehand.
The operator pods the chart creates run on kwok nodes as simulated pods (they execute nothing), so
the RBAC is proven by running `funcplane-operator` here with a token of the chart's
ServiceAccount and reconciling real resources: any missing permission shows up as a 403.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from funcplane_dev.binaries import ensure
from funcplane_dev.cluster import LocalCluster
from operator_helpers import EXAMPLES, condition, wait_app_ready
from support import eventually
from ha_support import Replica, holder

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "funcplane"
CRDS = ("functionapps.funcplane.io", "slots.funcplane.io", "workerconfigs.funcplane.io")
RELEASE = "fp"
ACCOUNT = "fp-funcplane"
FORBIDDEN = re.compile(r"forbidden|\b403\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def helm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster.named(f"helm-{os.getpid()}", directory=tmp_path_factory.mktemp("helm-cluster") / "c")
    local.up(reuse=False)
    try:
        yield local
    finally:
        local.down()


def helm(cluster: LocalCluster, *args: str) -> str:
    result = subprocess.run([str(ensure("helm")), "--kubeconfig", str(cluster.kubeconfig), *args],
                            capture_output=True, text=True, env=cluster.env, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def get_json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def installed(helm_cluster: LocalCluster) -> LocalCluster:
    """The chart, cluster scope, in funcplane-system; the CRDs did not exist before."""
    existing = helm_cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "funcplane.io" not in existing, "the CRDs must not exist before the chart installs them"
    helm(helm_cluster, "install", RELEASE, str(CHART), "--namespace", "funcplane-system", "--create-namespace",
         "--wait", "--timeout", "180s")
    return helm_cluster


def service_account_kubeconfig(cluster: LocalCluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest-issued token."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster_entry}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }))
    path.chmod(0o600)
    return path


def test_install_creates_crds_rbac_and_two_operator_replicas(installed: LocalCluster) -> None:
    cluster = installed
    for name in CRDS:
        crd = get_json(cluster, "crd", name)
        assert condition(crd, "Established").get("status") == "True"
    deployment = get_json(cluster, "deployment", ACCOUNT, "-n", "funcplane-system")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"].get("readyReplicas") == 2
    pods = get_json(cluster, "pods", "-n", "funcplane-system",
                    "-l", "app.kubernetes.io/name=funcplane,app.kubernetes.io/instance=fp")["items"]
    assert len(pods) == 2
    assert all(pod["spec"]["nodeName"].startswith("kwok-node-") for pod in pods)
    assert all(pod["spec"]["serviceAccountName"] == ACCOUNT for pod in pods)
    binding = get_json(cluster, "clusterrolebinding", ACCOUNT)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": "funcplane-system"}]
    assert get_json(cluster, "role", f"{ACCOUNT}-leader-election", "-n", "funcplane-system")["rules"]
    assert get_json(cluster, "service", f"{ACCOUNT}-metrics", "-n", "funcplane-system")["spec"]["ports"][0]["port"] == 8080


def test_rbac_claims_only_what_it_grants(installed: LocalCluster) -> None:
    cluster = installed
    who = f"system:serviceaccount:funcplane-system:{ACCOUNT}"

    def can(*args: str) -> bool:
        result = cluster.kubectl("auth", "can-i", *args, f"--as={who}", check=False)
        return result.stdout.strip() == "yes"

    assert can("patch", "deployments.apps", "-n", "anywhere")
    assert can("watch", "functionapps.funcplane.io", "--all-namespaces")
    assert can("patch", "functionapps.funcplane.io", "--subresource=status", "-n", "anywhere")
    assert can("update", "leases.coordination.k8s.io/funcplane-operator", "-n", "funcplane-system")
    # The apps' host Roles grant their timer Leases, so the operator holds those verbs (RBAC lets
    # it grant no more than it holds), and nothing else on Leases.
    assert can("update", "leases.coordination.k8s.io/shop-timers", "-n", "anywhere")
    assert not can("delete", "leases.coordination.k8s.io", "-n", "anywhere")
    assert not can("list", "leases.coordination.k8s.io", "-n", "anywhere")
    assert can("create", "roles.rbac.authorization.k8s.io", "-n", "anywhere")
    assert not can("escalate", "roles.rbac.authorization.k8s.io", "-n", "anywhere")
    assert not can("bind", "clusterroles.rbac.authorization.k8s.io")
    assert not can("delete", "functionapps.funcplane.io", "-n", "anywhere")
    assert not can("create", "pods", "-n", "anywhere")
    assert not can("create", "clusterrolebindings.rbac.authorization.k8s.io")


def run_as_service_account(cluster: LocalCluster, tmp_path: Path, scope: list[str], release_namespace: str,
                           account: str) -> Replica:
    kubeconfig = service_account_kubeconfig(cluster, release_namespace, account, tmp_path / f"{account}.kubeconfig")
    whoami = json.loads(subprocess.run(
        [str(ensure("kubectl")), "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json"],
        capture_output=True, text=True, check=True).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{release_namespace}:{account}"
    return Replica(f"{account}-replica", kubeconfig=kubeconfig, env=cluster.env, log_dir=tmp_path,
                   scope=scope, lease_namespace=release_namespace)


def create_namespace(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "namespace", namespace)
    eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0,
               timeout=30, what=f"the default ServiceAccount of {namespace}")


def reconcile_examples(cluster: LocalCluster, namespace: str, replica: Replica) -> None:
    for example in ("workerconfig.yaml", "functionapp.yaml", "slot-staging.yaml"):
        cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLES / example))
    wait_app_ready(cluster, namespace, "hello", timeout=120)
    eventually(lambda: condition(get_json(cluster, "slot", "hello-staging", "-n", namespace)).get("status") == "True",
               timeout=90, what="Slot hello-staging Ready")
    eventually(lambda: replica.metrics() and replica.reconciles(replica.metrics() or {}) > 0, timeout=30,
               what="reconciles counted in the operator's metrics")
    # Deleting the slot exercises the delete permissions on what it owned.
    cluster.kubectl("-n", namespace, "delete", "slot", "hello-staging", "--wait=true", "--timeout=60s")


def assert_never_forbidden(replica: Replica) -> None:
    texts = [f"{e.get('message')} {e.get('exception', '')}" for e in replica.log()]
    texts += [line for line in replica.log_path.read_text(errors="replace").splitlines() if not line.startswith("{")]
    denied = [text for text in texts if FORBIDDEN.search(text)]
    assert not denied, "the operator was refused by RBAC:\n" + "\n".join(denied[:10])
    status, body = replica.health() or (0, {})
    assert status == 200 and body.get("leader") is True, body


def test_operator_with_the_charts_service_account_reconciles_cluster_wide(installed: LocalCluster,
                                                                           tmp_path: Path) -> None:
    cluster = installed
    replica = run_as_service_account(cluster, tmp_path, ["--all-namespaces"], "funcplane-system", ACCOUNT)
    try:
        eventually(lambda: holder(cluster, "funcplane-system") == replica.identity, timeout=60,
                   what="the service-account operator to take the lease")
        create_namespace(cluster, "apps-cluster-scope")
        reconcile_examples(cluster, "apps-cluster-scope", replica)
        assert_never_forbidden(replica)
    finally:
        replica.close()


def test_namespace_scoped_release_reconciles_its_namespace_only(installed: LocalCluster, tmp_path: Path) -> None:
    cluster = installed
    create_namespace(cluster, "team-apps")
    helm(cluster, "install", "team", str(CHART), "--namespace", "team-system", "--create-namespace",
         "--set", "scope=namespace", "--set", "watchNamespaces={team-apps}",
         "--skip-crds", "--wait", "--timeout", "120s")
    assert not cluster.kubectl("get", "clusterrole", "team-funcplane", check=False).returncode == 0
    replica = run_as_service_account(cluster, tmp_path, ["--namespace", "team-apps"], "team-system", "team-funcplane")
    try:
        eventually(lambda: holder(cluster, "team-system") == replica.identity, timeout=60,
                   what="the namespaced operator to take the lease")
        reconcile_examples(cluster, "team-apps", replica)
        assert_never_forbidden(replica)
    finally:
        replica.close()
