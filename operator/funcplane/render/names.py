"""Names, labels and hashes shared by every renderer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from funcplane.api import PRODUCTION

LABEL_APP = "funcplane.io/app"
CODE_VOLUME = "code"  # the app's code at the host's app root
WORKER_VOLUME_PREFIX = "worker-"  # + the worker's name: a WorkerConfig's worker files (site extension)
LABEL_INSTANCE = "funcplane.io/instance"
LABEL_SLICE = "funcplane.io/slice"
LABEL_SLOT = "funcplane.io/slot"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "funcplane"
ANNOTATION_APPLIED_HASH = "funcplane.io/applied-hash"
# On a Deployment whose replicas the scaler owns: its applied hash leaves spec.replicas out, so a
# scale decision never makes the app reconciler re-apply (or reset) it.
ANNOTATION_AUTOSCALED = "funcplane.io/autoscaled"
# Kubernetes' ReplicaSet controller deletes pods with the lowest cost first (best effort).
ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
ANNOTATION_CONFIG_HASH = "funcplane.io/config-hash"
FIELD_MANAGER = "funcplane-operator"

SLICE_MAIN = "main"
SLICE_GRAY = "gray"


def digest(value: Any, length: int = 16) -> str:
    """Stable short hash of any JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def instance_id(app: str, owner_uid: str, taken: set[str] = frozenset()) -> str:
    """A stable instance identity that is not a slot name: `<app>-<5 hex>` derived from the uid of
    the object the instance was created for, so a crash between creating and recording it cannot
    make a duplicate."""
    salt = 0
    while True:
        candidate = f"{app}-{digest(f'{owner_uid}:{salt}' if salt else owner_uid, 5)}"
        if candidate not in taken:
            return candidate
        salt += 1


def slot_service(app: str, slot: str) -> str:
    return app if slot == PRODUCTION else f"{app}-{slot}"


def host_id(app: str, slot: str) -> str:
    """The host id of a slot: trigger state (timers, leases, durable hubs) belongs to the slot, not
    to an instance, so it follows the slot through swaps. Azure limits host ids to 32 characters."""
    name = slot_service(app, slot)
    return name if len(name) <= 32 else f"{name[:23]}-{digest([name])[:8]}"


def timer_lease(app: str, slot: str) -> str:
    """The Lease whose holder runs a slot's timers: one per host id, shared by all its pods. The host
    derives the same name from its host id (funcplane_host.timers.scheduler)."""
    return f"{host_id(app, slot)}-timers"


def host_role(app: str) -> str:
    """The Role (and RoleBinding) that lets an app's hosts hold their slots' timer Leases."""
    return f"{app}-host"


def slot_keys_secret(app: str, slot: str) -> str:
    return f"{slot_service(app, slot)}-keys"


def hostname(app: str, slot: str, namespace: str) -> str:
    return f"{slot_service(app, slot)}.{namespace}.svc"


def app_labels(app: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_APP: app}


def instance_selector(app: str, instance: str) -> dict[str, str]:
    return {LABEL_APP: app, LABEL_INSTANCE: instance}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def owner_reference(app: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": app["apiVersion"], "kind": app["kind"], "name": app["metadata"]["name"],
        "uid": app["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }


def stamp(manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the hash of the desired manifest on it, so an unchanged object is never re-applied."""
    annotations = manifest.setdefault("metadata", {}).setdefault("annotations", {})
    hashed = manifest
    if ANNOTATION_AUTOSCALED in annotations:
        hashed = {**manifest, "spec": {k: v for k, v in manifest["spec"].items() if k != "replicas"}}
    annotations[ANNOTATION_APPLIED_HASH] = digest(hashed)
    return manifest
