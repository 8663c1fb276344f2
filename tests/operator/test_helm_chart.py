"""The Helm chart, checked by the real `helm`: lint, rendering, values validation, CRD identity."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from funcplane.kube.client import KINDS, OWNED_KINDS
from funcplane_dev.binaries import ensure

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "funcplane"


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure("helm")


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def render(helm: Path, *sets: str, crds: bool = False) -> list[dict[str, Any]]:
    args = ["template", "fp", str(CHART), "--namespace", "funcplane-system"]
    args += [arg for value in sets for arg in ("--set", value)]
    if crds:
        args.append("--include-crds")
    return [doc for doc in yaml.safe_load_all(run_helm(helm, *args).stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(docs, "Deployment")
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    return operator


def test_lint_is_clean(helm: Path) -> None:
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), "--set", "scope=namespace", "--set", "watchNamespaces={a,b}")


def test_the_chart_ships_exactly_the_generated_crds(helm: Path) -> None:
    generated = sorted((REPO / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty"
    # The chart's crds/ is the repository's crds/ (a link), so the two cannot drift apart.
    assert (CHART / "crds").resolve() == (REPO / "crds").resolve()
    rendered = [d for d in render(helm, crds=True) if d["kind"] == "CustomResourceDefinition"]
    expected = [yaml.safe_load(path.read_text()) for path in generated]
    key = lambda crd: crd["metadata"]["name"]  # noqa: E731
    assert sorted(rendered, key=key) == sorted(expected, key=key)


def test_cluster_scope_renders_an_ha_operator_with_cluster_rbac(helm: Path) -> None:
    docs = render(helm)
    (deployment,) = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (account,) = find(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    operator = container(docs)
    assert operator["command"] == ["funcplane-operator"]
    assert "--all-namespaces" in operator["args"]
    assert "--lease-namespace=funcplane-system" in operator["args"]
    # The operator binds loopback by default; in a pod the probes and scrapes come to the pod IP.
    assert "--bind-address=0.0.0.0" in operator["args"]
    assert {e["name"] for e in operator["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True

    (cluster_role,) = find(docs, "ClusterRole")
    (binding,) = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "funcplane-system"}]
    verbs = {(group, resource): set(rule["verbs"]) for rule in cluster_role["rules"]
             for group in rule["apiGroups"] for resource in rule["resources"]}
    assert verbs[("funcplane.io", "functionapps")] == {"get", "list", "watch"}
    assert verbs[("funcplane.io", "functionapps/status")] == {"patch"}
    assert verbs[("apps", "deployments")] == {"get", "list", "watch", "create", "patch", "delete"}
    assert verbs[("", "events")] == {"create"}
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in cluster_role["rules"])
    # Leases: only what the apps' host Roles grant (RBAC lets the operator grant no more than it holds).
    assert verbs[("coordination.k8s.io", "leases")] == {"create", "get", "update"}
    assert verbs[("rbac.authorization.k8s.io", "roles")] == {"get", "list", "watch", "create", "patch", "delete"}

    (lease_role,) = find(docs, "Role")
    assert lease_role["metadata"]["namespace"] == "funcplane-system"
    named = [rule for rule in lease_role["rules"] if rule.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": ["funcplane-operator"], "verbs": ["get", "update"]}]

    (service,) = find(docs, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_namespace_scope_needs_no_cluster_permission(helm: Path) -> None:
    docs = render(helm, "scope=namespace", "watchNamespaces={team-a,team-b}")
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in find(docs, "Role")}
    assert roles == {("team-a", "fp-funcplane"), ("team-b", "fp-funcplane"),
                     ("funcplane-system", "fp-funcplane-leader-election")}
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in find(docs, "RoleBinding")}
    assert bindings == roles
    args = container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args

    default = render(helm, "scope=namespace")
    assert {r["metadata"]["namespace"] for r in find(default, "Role")} == {"funcplane-system"}
    assert "--namespace=funcplane-system" in container(default)["args"]


def test_values_select_image_resources_and_lease_timing(helm: Path) -> None:
    docs = render(helm, "image.repository=registry.example/fp", "image.tag=1.2.3", "replicaCount=3",
                  "resources.requests.cpu=250m", "leaderElection.leaseDuration=15", "metrics.service.enabled=false")
    operator = container(docs)
    assert operator["image"] == "registry.example/fp:1.2.3"
    assert operator["resources"]["requests"]["cpu"] == "250m"
    assert "--lease-duration=15" in operator["args"]
    assert find(docs, "Deployment")[0]["spec"]["replicas"] == 3
    assert not find(docs, "Service")


@pytest.mark.parametrize(("value", "message"), [
    ("scope=everywhere", "/scope"),
    ("leaderElection.renewDeadline=30", "retryPeriod < renewDeadline < leaseDuration"),
    ("watchNamespaces={Bad_Name}", "/watchNamespaces/0"),
    ("log.format=xml", "/log/format"),
])
def test_bad_values_are_refused_naming_the_value(helm: Path, value: str, message: str) -> None:
    result = run_helm(helm, "template", "fp", str(CHART), "--set", value, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_cluster_scope_with_watch_namespaces_is_refused(helm: Path) -> None:
    result = run_helm(helm, "template", "fp", str(CHART), "--set", "watchNamespaces={a}", check=False)
    assert result.returncode != 0 and "scope=namespace" in result.stderr, result.stderr


def test_every_kind_the_reconcilers_call_is_granted(helm: Path) -> None:
    """A kind added to the API façade without a chart rule fails here, before any cluster run."""
    (cluster_role,) = find(render(helm), "ClusterRole")
    granted = {(group, resource): set(rule["verbs"]) for rule in cluster_role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    for kind in KINDS.values():
        parts = kind.prefix.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        needed = {"get", "list", "watch"} | ({"create", "patch", "delete"} if kind.name in OWNED_KINDS else set())
        missing = needed - granted.get((group, kind.plural), set())
        assert not missing, f"the chart does not grant {sorted(missing)} on {kind.plural} ({group or 'core'}); " \
                            "add them in charts/funcplane/templates/_helpers.tpl (funcplane.operatorRules)"
