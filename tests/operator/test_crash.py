"""Kill the operator in the middle of reconciling; a new one converges with no duplicates."""

from __future__ import annotations

from operator_helpers import OperatorProcess, apply, get, items, wait_app_ready
from support import eventually
from operator_helpers import app, slot

APPS = 12


def test_killed_mid_reconcile_converges_without_duplicates(cluster, namespace, crds, tmp_path) -> None:
    manifests = []
    for index in range(APPS):
        manifests += [app(f"app{index}"), slot("staging", f"app{index}")]
    apply(cluster, namespace, manifests)
    operator = OperatorProcess(crds, namespace, tmp_path).start()
    try:
        # Kill it as soon as it has started creating objects, long before it can finish all apps.
        eventually(lambda: len(items(cluster, namespace, "deployments")) >= 1, timeout=60, interval=0.05,
                   what="the first Deployment")
        operator.kill()
        partial = len(items(cluster, namespace, "deployments"))
        assert partial < 2 * APPS, "the operator finished before it was killed; the test proves nothing"

        operator.start()
        for index in range(APPS):
            wait_app_ready(cluster, namespace, f"app{index}", timeout=180)
        operator.assert_alive()
    finally:
        operator.stop()

    deployments = sorted(d["metadata"]["name"] for d in items(cluster, namespace, "deployments"))
    assert len(deployments) == 2 * APPS, deployments
    expected = []
    for index in range(APPS):
        status = get(cluster, namespace, "functionapp", f"app{index}")["status"]
        assert set(status["slots"]) == {"production", "staging"}
        assert set(status["instances"]) == {p["instance"] for p in status["slots"].values()}
        expected += [p["instance"] for p in status["slots"].values()]
    assert deployments == sorted(expected)
    config_maps = items(cluster, namespace, "configmaps", "app.kubernetes.io/managed-by=funcplane")
    assert len(config_maps) == 3 * 2 * APPS
    for index in range(APPS):
        assert len(items(cluster, namespace, "pods", f"funcplane.io/app=app{index}")) == 2
