"""The examples on the real control plane: Ready instances, status, columns, and no idle writes."""

from __future__ import annotations

from operator_helpers import (
    apply_examples,
    condition,
    get,
    items,
    resource_versions,
    settle,
    wait_app_ready,
)
from support import eventually

EXAMPLES = ("functionapp.yaml", "slot-staging.yaml", "workerconfig.yaml")


def test_examples_become_ready_with_the_slot_map(cluster, namespace, operator) -> None:
    apply_examples(cluster, namespace, *EXAMPLES)
    app = wait_app_ready(cluster, namespace, "hello")
    slots = app["status"]["slots"]
    assert set(slots) == {"production", "staging"}
    production, staging = slots["production"]["instance"], slots["staging"]["instance"]
    assert production != staging and production.startswith("hello-") and "staging" not in staging
    assert app["status"]["activeInstance"] == production
    assert app["status"]["instances"][production]["ready"] is True
    assert app["status"]["instances"][staging]["content"]["code"]["image"]["reference"].endswith("hello:1.1.0")
    for condition_type, status in (("Ready", "True"), ("Progressing", "False"), ("Degraded", "False")):
        entry = condition(app, condition_type)
        assert entry["status"] == status and entry["observedGeneration"] == app["metadata"]["generation"]
        assert entry["reason"] and entry["lastTransitionTime"]

    for instance in (production, staging):
        pods = items(cluster, namespace, "pods", f"funcplane.io/instance={instance}")
        assert len(pods) == 2, f"{instance}: {len(pods)} pods"
        for pod in pods:
            assert pod["spec"]["nodeName"].startswith("kwok-node-")
            ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True", pod["metadata"]["name"]

    service = get(cluster, namespace, "service", "hello-staging")
    assert service["spec"]["selector"]["funcplane.io/instance"] == staging
    assert get(cluster, namespace, "service", "hello")["spec"]["selector"]["funcplane.io/instance"] == production
    slot = get(cluster, namespace, "slot", "hello-staging")
    assert slot["status"]["hostname"] == f"hello-staging.{namespace}.svc"
    assert slot["status"]["instance"] == staging
    cloned = {s["name"]: s for s in slot["status"]["clonedSettings"]}
    assert cloned["ENVIRONMENT"]["sticky"] is True and "GREETING" in cloned
    assert get(cluster, namespace, "secret", "hello-staging-keys") is not None

    table = cluster.kubectl("-n", namespace, "get", "fa").stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "READY", "SLOTS", "ACTIVE", "INSTANCE", "REPLICAS"]
    assert table[1].split()[:5] == ["hello", "True", "2", production, "2"]
    wide = cluster.kubectl("-n", namespace, "get", "fa", "-o", "wide").stdout.splitlines()
    assert "TASK HUB" in wide[0] and "taskHub" not in app["status"]  # no spec.durable: no task hub
    short = cluster.kubectl("-n", namespace, "get", "fslot,wcfg").stdout
    assert "hello-staging" in short and "workers" in short

    reasons = {e["reason"] for e in items(cluster, namespace, "events")
               if e["involvedObject"]["kind"] in ("FunctionApp", "Slot")}
    assert {"Deployed", "AllInstancesReady", "InstanceReady"} <= reasons

    config = eventually(lambda: (body := get(cluster, namespace, "workerconfig", "workers"))
                        and body.get("status", {}).get("workers") and body, what="WorkerConfig status")
    python = next(w for w in config["status"]["workers"] if w["name"] == "python-worker")
    assert python["apps"] == ["hello"]


def test_reapply_and_restart_make_no_writes(cluster, namespace, operator) -> None:
    apply_examples(cluster, namespace, *EXAMPLES)
    wait_app_ready(cluster, namespace, "hello")
    settle()
    before = resource_versions(cluster, namespace)
    apply_examples(cluster, namespace, *EXAMPLES)
    settle()
    after_reapply = resource_versions(cluster, namespace)
    assert after_reapply == before, _changed(before, after_reapply)

    operator.stop()
    operator.start()
    eventually(lambda: "became leader" in operator.logs(), timeout=30, what="the restarted operator to lead")
    settle(6)
    operator.assert_alive()
    after_restart = resource_versions(cluster, namespace)
    assert after_restart == before, _changed(before, after_restart)


def test_scale_subresource_drives_every_instance(cluster, namespace, operator) -> None:
    apply_examples(cluster, namespace, "functionapp.yaml")
    app = wait_app_ready(cluster, namespace, "hello")
    cluster.kubectl("-n", namespace, "scale", "fa", "hello", "--replicas=3")
    app = eventually(lambda: (body := wait_app_ready(cluster, namespace, "hello"))["status"]["replicas"] == 3
                     and body, what="3 ready replicas")
    deployment = get(cluster, namespace, "deployment", app["status"]["activeInstance"])
    assert deployment["spec"]["replicas"] == 3
    scale = cluster.kubectl("-n", namespace, "get", "--raw",
                            f"/apis/funcplane.io/v1alpha1/namespaces/{namespace}/functionapps/hello/scale").stdout
    assert '"replicas":3' in scale.replace(" ", "") and "funcplane.io/instance" in scale


def _changed(before: dict[str, str], after: dict[str, str]) -> str:
    keys = sorted(set(before) | set(after))
    return "written: " + ", ".join(k for k in keys if before.get(k) != after.get(k))
