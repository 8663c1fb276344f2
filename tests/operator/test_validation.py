"""Invalid manifests are refused by the API server itself, with a message naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

APP: dict[str, Any] = {
    "apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": "bad"},
    "spec": {"runtime": {"name": "python"}, "code": {"image": {"reference": "code:1"}}, "plan": "premium"},
}
SLOT: dict[str, Any] = {
    "apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": "bad-slot"},
    "spec": {"appRef": "bad", "slotName": "staging"},
}
WORKERS: dict[str, Any] = {
    "apiVersion": "funcplane.io/v1alpha1", "kind": "WorkerConfig", "metadata": {"name": "bad-workers"},
    "spec": {"workers": [{"name": "py", "language": "python", "source": {"image": {"reference": "w:1"}}}]},
}


def variant(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = manifest
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return manifest


DELETE = object()
BOTH = {"value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}

CASES = [
    (variant(APP, "spec.settings", [{"name": "A", **BOTH}]), "spec.settings[0]", "exactly one of value or valueFrom"),
    (variant(APP, "spec.settings", [{"name": "A"}]), "spec.settings[0]", "exactly one of value or valueFrom"),
    (variant(APP, "spec.code", {"image": {"reference": "a"}, "configMap": {"name": "c"}}), "spec.code",
     "exactly one of image, persistentVolumeClaim or configMap"),
    (variant(APP, "spec.code", {}), "spec.code", "exactly one of image"),
    (variant(APP, "spec.scale", {"minReplicas": 5, "maxReplicas": 2}), "spec.scale.minReplicas",
     "minReplicas must be <= maxReplicas"),
    (variant(APP, "spec.plan", "flex"), "spec.plan", "Unsupported value"),
    (variant(APP, "spec.slotLimit", 5), "spec.slotLimit", "only allowed on the dedicated plan"),
    (variant(APP, "spec.durable", {"store": {"kind": "sqlite"}}), "spec.durable",
     "a sqlite durable store serves one pod"),
    (variant(APP, "spec.durable", {"store": {"kind": "postgresql"}}), "spec.durable.store.connection",
     "a postgresql store needs connection"),
    (variant(APP, "spec.scale", {"maxReplicas": 150}), "spec.scale.maxReplicas", "plan's ceiling"),
    (variant(APP, "spec.runtime", DELETE), "spec.runtime", "Required value"),
    (variant(APP, "spec.settings", [{"name": "1 bad", "value": "x"}]), "spec.settings[0].name", "should match"),
    (variant(APP, "metadata.name", "a" * 41), "metadata.name", "at most 40 characters"),
    (variant(SLOT, "spec.slotName", "Staging_1"), "spec.slotName", "should match"),
    (variant(SLOT, "spec.slotName", "production"), "spec.slotName", "is the FunctionApp itself"),
    (variant(SLOT, "spec.swap", {"requestId": "r1", "target": "staging"}), "spec.swap.target",
     "another slot"),
    (variant(SLOT, "spec.swap", {"requestId": "r1", "mode": "instant"}), "spec.swap.mode", "Unsupported value"),
    (variant(WORKERS, "spec.workers.0.rolloutFraction", 1.5), "spec.workers[0].rolloutFraction",
     "less than or equal to 1"),
]


@pytest.mark.parametrize("manifest, field, message", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_invalid_manifest_is_rejected_naming_the_field(crds, namespace, manifest, field, message) -> None:
    result = crds.kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-",
                          input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0, f"accepted: {manifest}"
    assert field in result.stderr and message in result.stderr, result.stderr


def test_valid_manifest_is_accepted_and_defaulted(crds, namespace) -> None:
    result = crds.kubectl("-n", namespace, "create", "--dry-run=server", "-o", "yaml", "-f", "-",
                          input=yaml.safe_dump(APP))
    spec = yaml.safe_load(result.stdout)["spec"]
    # Autoscaling is off unless asked for; its windows default to the scaler's documented values.
    assert spec["scale"] == {"minReplicas": 1, "maxReplicas": 10, "autoscale": {
        "enabled": False, "targetConcurrency": 100, "targetUtilizationPercent": 70, "stableWindowSeconds": 60,
        "panicWindowSeconds": 6, "panicThresholdPercent": 200, "scaleDownDelaySeconds": 60, "maxScaleDownRate": 2}}
    assert spec["replicas"] == 1 and spec["functionTimeoutSeconds"] == 300
    assert spec["code"]["image"]["pullPolicy"] == "IfNotPresent"


def test_app_ref_and_slot_name_are_immutable(crds, namespace) -> None:
    crds.kubectl("-n", namespace, "create", "-f", "-", input=yaml.safe_dump(SLOT))
    moved = variant(SLOT, "spec.appRef", "other")
    result = crds.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(moved), check=False)
    assert result.returncode != 0 and "spec.appRef" in result.stderr and "immutable" in result.stderr


@pytest.mark.parametrize("durable, scale", [
    ({"store": {"kind": "postgresql", "connection": {"name": "pg", "key": "dsn"}}}, {"maxReplicas": 10}),
    ({"hubName": "Orders", "store": {"kind": "sqlite", "volumeClaim": "state"}}, {"maxReplicas": 1}),
], ids=["postgresql-many-pods", "sqlite-one-pod"])
def test_durable_stores_are_accepted(crds, namespace, durable, scale) -> None:
    manifest = variant(variant(APP, "spec.durable", durable), "spec.scale", scale)
    result = crds.kubectl("-n", namespace, "create", "--dry-run=server", "-o", "yaml", "-f", "-",
                          input=yaml.safe_dump(manifest))
    store = yaml.safe_load(result.stdout)["spec"]["durable"]["store"]
    assert store["kind"] == durable["store"]["kind"] and store["leaseSeconds"] == 15
