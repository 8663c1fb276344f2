"""WorkerConfig: changes roll only the apps of that language; disable removes; gray release."""

from __future__ import annotations

from typing import Any

from operator_helpers import apply, get, items, pod_uids, wait_app_ready
from support import eventually
from operator_helpers import app


def workers(python_image: str = "py-worker:1", enabled: bool = True, fraction: float = 1.0) -> dict[str, Any]:
    return {"apiVersion": "funcplane.io/v1alpha1", "kind": "WorkerConfig", "metadata": {"name": "workers"},
            "spec": {"workers": [
                {"name": "python-worker", "language": "python", "source": {"image": {"reference": python_image}},
                 "enabled": enabled, "rolloutFraction": fraction},
                {"name": "node-worker", "language": "node", "source": {"image": {"reference": "node-worker:1"}}},
            ]}}


def pod_volumes(cluster, namespace: str, instance: str) -> list[dict[str, Any]]:
    return [v for pod in items(cluster, namespace, "pods", f"funcplane.io/instance={instance}")
            for v in pod["spec"]["volumes"] if v["name"].startswith("worker-") and "image" in v]


def rolled(cluster, namespace: str, app_name: str, reference: str | None):
    """The app is Ready and every pod of it mounts exactly `reference` as its python worker."""
    body = wait_app_ready(cluster, namespace, app_name)
    instance = body["status"]["activeInstance"]
    pods = items(cluster, namespace, "pods", f"funcplane.io/instance={instance}")
    if len(pods) != body["spec"]["replicas"]:
        return None
    images = [{v["image"]["reference"] for v in pod["spec"]["volumes"] if v["name"] == "worker-python-worker"}
              for pod in pods]
    return body if all(found == ({reference} if reference else set()) for found in images) else None


def test_worker_change_rolls_only_apps_of_that_language(cluster, namespace, operator) -> None:
    apply(cluster, namespace, [workers(), app("py-app", replicas=2), app("js-app", runtime={"name": "node"})])
    py_app = eventually(lambda: rolled(cluster, namespace, "py-app", "py-worker:1"), timeout=90,
                        what="py-app pods with py-worker:1")
    js_app = wait_app_ready(cluster, namespace, "js-app")
    js_instance = js_app["status"]["activeInstance"]
    assert [v["name"] for v in pod_volumes(cluster, namespace, js_instance)] == ["worker-node-worker"]
    js_pods = pod_uids(cluster, namespace, "funcplane.io/app=js-app")
    js_version = get(cluster, namespace, "deployment", js_instance)["metadata"]["resourceVersion"]
    py_pods = pod_uids(cluster, namespace, "funcplane.io/app=py-app")

    apply(cluster, namespace, workers(python_image="py-worker:2"))
    eventually(lambda: rolled(cluster, namespace, "py-app", "py-worker:2"), timeout=90,
               what="py-app rolled to py-worker:2")
    assert not pod_uids(cluster, namespace, "funcplane.io/app=py-app") & py_pods  # every python pod replaced
    assert pod_uids(cluster, namespace, "funcplane.io/app=js-app") == js_pods  # node pods untouched
    assert get(cluster, namespace, "deployment", js_instance)["metadata"]["resourceVersion"] == js_version
    assert py_app["status"]["activeInstance"] == wait_app_ready(cluster, namespace, "py-app")["status"]["activeInstance"]

    apply(cluster, namespace, workers(python_image="py-worker:2", enabled=False))
    eventually(lambda: rolled(cluster, namespace, "py-app", None), timeout=90, what="python worker removed")
    config = get(cluster, namespace, "configmap", f"{py_app['status']['activeInstance']}-workers")
    assert '"python-worker"' not in config["data"]["main.json"]
    assert pod_uids(cluster, namespace, "funcplane.io/app=js-app") == js_pods


def test_rollout_fraction_gives_the_worker_to_a_share_of_pods(cluster, namespace, operator) -> None:
    apply(cluster, namespace, [workers(fraction=0.5), app("py-app", replicas=4)])
    body = wait_app_ready(cluster, namespace, "py-app")
    instance = body["status"]["activeInstance"]
    gray = get(cluster, namespace, "deployment", f"{instance}-gray")
    main = get(cluster, namespace, "deployment", instance)
    assert (main["spec"]["replicas"], gray["spec"]["replicas"]) == (2, 2)
    assert body["status"]["instances"][instance]["workers"]["python-worker"] == 2

    def reported():
        config = get(cluster, namespace, "workerconfig", "workers")
        rows = {w["name"]: w for w in config.get("status", {}).get("workers", [])}
        row = rows.get("python-worker", {})
        return row if (row.get("podsWithWorker"), row.get("podsTotal")) == (2, 4) else None
    row = eventually(reported, timeout=60, what="WorkerConfig status reporting 2 of 4 pods")
    assert row["apps"] == ["py-app"] and row["rolloutFraction"] == 0.5

    apply(cluster, namespace, workers(fraction=1.0))
    eventually(lambda: get(cluster, namespace, "deployment", f"{instance}-gray") is None, what="gray slice removed")
    eventually(lambda: rolled(cluster, namespace, "py-app", "py-worker:1"), timeout=90, what="all pods with worker")
