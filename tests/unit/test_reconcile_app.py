"""Table tests of `reconcile_app`: stored objects in, wanted writes, status and events out.

`RecordingKube` stands in for `funcplane.kube.client.Kube`, the seam every read and write of the
reconcilers goes through: it keeps the objects as an API server would (resourceVersions,
generations bumped by spec changes, status merge patches, optimistic locking) and records each
write and Event. A row may first reconcile its objects and change them after each pass (the
Deployment controller reporting ready pods, a user editing a spec), so that the reconcile under
test starts from the state earlier ones left. The same paths run against a real API server and a
real operator in `tests/operator/`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest

from funcplane.controllers.apps import reconcile_app
from funcplane.controllers.context import Context
from funcplane.kube.client import Conflict
from funcplane.kube.status import merged
from funcplane.render import names

Key = tuple[str, str]  # kind, name
Objects = dict[Key, dict[str, Any]]
Manifest = Callable[..., dict[str, Any]]

NAMESPACE = "ns"  # where the shared factories put their objects

PRODUCTION_INSTANCE = names.instance_id("shop", "uid-app")
STAGING_INSTANCE = names.instance_id("shop", "uid-staging")


def instance_objects(instance: str) -> list[tuple[str, str, str]]:
    return [("apply", "ConfigMap", f"{instance}-settings"), ("apply", "ConfigMap", f"{instance}-host"),
            ("apply", "ConfigMap", f"{instance}-workers"), ("apply", "Deployment", instance)]


class RecordingKube:
    """The reconcilers' API façade, played in memory; `writes` and `events` are what it was asked to do."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 0
        self.writes: list[tuple[Any, ...]] = []
        self.events: list[tuple[str, str, str, str]] = []
        for body in objects:
            self._keep(copy.deepcopy(body))

    def _keep(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        body["metadata"].setdefault("namespace", NAMESPACE)
        body["metadata"].setdefault("uid", f"uid-{body['kind']}-{body['metadata']['name']}".lower())
        self.objects[(body["kind"], body["metadata"]["namespace"], body["metadata"]["name"])] = body
        return copy.deepcopy(body)

    def forget_records(self) -> None:
        self.writes.clear()
        self.events.clear()

    def by_name(self) -> Objects:
        return {(kind, name): body for (kind, _, name), body in self.objects.items()}

    # ---- the façade's calls -----------------------------------------------------------------------
    async def list(self, kind: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in label_selector.split(",")) if label_selector else {}
        return [copy.deepcopy(body) for (k, ns, _), body in self.objects.items()
                if k == kind and ns == namespace
                and wanted.items() <= body["metadata"].get("labels", {}).items()]

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        body = self.objects.get((kind, namespace, name))
        return copy.deepcopy(body) if body else None

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        self.writes.append(("apply", manifest["kind"], meta["name"]))
        current = self.objects.get((manifest["kind"], meta["namespace"], meta["name"]))
        body = copy.deepcopy(manifest)
        generation = (current or {}).get("metadata", {}).get("generation", 0)
        changed = current is None or {k: v for k, v in current.items() if k not in ("metadata", "status")} != \
            {k: v for k, v in body.items() if k != "metadata"}
        body["metadata"]["generation"] = generation + 1 if changed else generation
        if current is not None and "status" in current:
            body["status"] = current["status"]  # applying the object leaves its status alone
        return self._keep(body)

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        meta = manifest["metadata"]
        self.writes.append(("create", manifest["kind"], meta["name"]))
        if (manifest["kind"], meta["namespace"], meta["name"]) in self.objects:
            return None
        return self._keep(copy.deepcopy(manifest))

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.writes.append(("delete", kind, name))
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any],
                           resource_version: str | None = None) -> dict[str, Any] | None:
        self.writes.append(("status", kind, name, "locked" if resource_version else "merged"))
        current = self.objects.get((kind, namespace, name))
        if current is None:
            return None
        if resource_version and resource_version != current["metadata"]["resourceVersion"]:
            raise Conflict(f"{kind} {name} changed since resourceVersion {resource_version}")
        current["status"] = merged(current.get("status") or {}, status)
        return self._keep(current)

    async def server_version(self) -> tuple[int, int]:
        return (1, 36)

    async def event(self, involved: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        self.events.append((involved["kind"], involved["metadata"]["name"], "Warning" if warning else "Normal", reason))


# ---- what a row may do between a first reconcile and the one under test -------------------------------
def deployments_ready(objects: Objects) -> None:
    """The Deployment controller's part: every Deployment observed, updated and ready."""
    for (kind, _), body in objects.items():
        if kind == "Deployment":
            replicas = body["spec"].get("replicas", 1)
            body["status"] = {"observedGeneration": body["metadata"]["generation"], "replicas": replicas,
                              "readyReplicas": replicas, "updatedReplicas": replicas}


def nothing(objects: Objects) -> None:
    """Time passes: the next reconcile starts from what the previous one left."""


def edit_spec(kind: str, name: str, **changes: Any) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        body = objects[(kind, name)]
        body["spec"].update(changes)
        body["metadata"]["generation"] += 1
    return edit


def deleted(kind: str, name: str) -> Callable[[Objects], None]:
    def delete(objects: Objects) -> None:
        objects[(kind, name)]["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    return delete


@dataclass
class Row:
    id: str
    given: Callable[[Manifest, Manifest], list[dict[str, Any]]]  # (app_manifest, slot_manifest) -> objects
    writes: list[tuple[Any, ...]]
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    conditions: dict[Key, dict[str, tuple[str, str]]] = field(default_factory=dict)  # type -> (status, reason)
    before: list[Callable[[Objects], None]] = field(default_factory=list)  # each after a reconcile


NEW_APP_WRITES = [
    ("status", "FunctionApp", "shop", "locked"),  # pointers first: a crash later re-plans the same instance
    ("create", "Secret", "shop-keys"),  # keys before the pods that mount them
    ("apply", "ServiceAccount", "shop"), ("apply", "Role", "shop-host"), ("apply", "RoleBinding", "shop-host"),
    *instance_objects(PRODUCTION_INSTANCE), ("apply", "Service", "shop"),
    ("status", "FunctionApp", "shop", "locked"),
]

ROWS = [
    Row("create", given=lambda app, slot: [app()], writes=NEW_APP_WRITES,
        events=[("FunctionApp", "shop", "Normal", "Deployed"),
                ("FunctionApp", "shop", "Warning", "InstancesNotReady")],
        conditions={("FunctionApp", "shop"): {"Ready": ("False", "InstancesNotReady"),
                                              "Progressing": ("True", "RollingOut"),
                                              "Degraded": ("False", "AsExpected")}}),
    Row("rollout done", given=lambda app, slot: [app()], before=[deployments_ready],
        writes=[("status", "FunctionApp", "shop", "locked")],
        events=[("FunctionApp", "shop", "Normal", "AllInstancesReady")],
        conditions={("FunctionApp", "shop"): {"Ready": ("True", "AllInstancesReady"),
                                              "Progressing": ("False", "Stable")}}),
    Row("unchanged", given=lambda app, slot: [app()], before=[deployments_ready, nothing], writes=[]),
    Row("update", given=lambda app, slot: [app()],
        before=[deployments_ready, nothing,
                edit_spec("FunctionApp", "shop", settings=[{"name": "GREETING", "value": "hi"}])],
        writes=[("status", "FunctionApp", "shop", "locked"),  # the new content, recorded for the same instance
                ("apply", "ConfigMap", f"{PRODUCTION_INSTANCE}-settings"),
                ("apply", "Deployment", PRODUCTION_INSTANCE),
                ("status", "FunctionApp", "shop", "locked")],
        events=[("FunctionApp", "shop", "Normal", "Deployed"),
                ("FunctionApp", "shop", "Warning", "InstancesNotReady")],
        conditions={("FunctionApp", "shop"): {"Ready": ("False", "InstancesNotReady"),
                                              "Progressing": ("True", "RollingOut")}}),
    Row("scale", given=lambda app, slot: [app(replicas=2)],
        before=[deployments_ready, nothing, edit_spec("FunctionApp", "shop", replicas=3)],
        writes=[("apply", "Deployment", PRODUCTION_INSTANCE), ("status", "FunctionApp", "shop", "locked")],
        events=[("FunctionApp", "shop", "Warning", "InstancesNotReady")]),
    Row("slot limit", given=lambda app, slot: [app(plan="consumption"), slot("staging", "2026-01-01T00:00:01Z"),
                                               slot("qa", "2026-01-01T00:00:02Z")],
        writes=[("status", "Slot", "shop-staging", "merged"),  # the app's settings cloned once, at creation
                ("status", "FunctionApp", "shop", "locked"),
                ("create", "Secret", "shop-keys"), ("create", "Secret", "shop-staging-keys"),
                ("apply", "ServiceAccount", "shop"), ("apply", "Role", "shop-host"),
                ("apply", "RoleBinding", "shop-host"),
                *instance_objects(PRODUCTION_INSTANCE), ("apply", "Service", "shop"),
                *instance_objects(STAGING_INSTANCE), ("apply", "Service", "shop-staging"),
                ("status", "FunctionApp", "shop", "locked"),
                ("status", "Slot", "shop-staging", "merged"), ("status", "Slot", "shop-qa", "merged")],
        events=[("FunctionApp", "shop", "Normal", "Deployed"), ("Slot", "shop-staging", "Normal", "Deployed"),
                ("FunctionApp", "shop", "Warning", "InstancesNotReady"),
                ("Slot", "shop-qa", "Warning", "SlotLimitExceeded")],
        conditions={("Slot", "shop-qa"): {"Ready": ("False", "SlotLimitExceeded")},
                    ("Slot", "shop-staging"): {"Ready": ("False", "InstanceNotReady")}}),
    Row("missing app", given=lambda app, slot: [slot("staging", "2026-01-01T00:00:01Z")],
        writes=[("status", "Slot", "shop-staging", "merged")],
        events=[("Slot", "shop-staging", "Warning", "AppNotFound")],
        conditions={("Slot", "shop-staging"): {"Ready": ("False", "AppNotFound")}}),
    Row("delete slot", given=lambda app, slot: [app(), slot("staging", "2026-01-01T00:00:01Z")],
        before=[deployments_ready, nothing, deleted("Slot", "shop-staging")],
        writes=[("status", "FunctionApp", "shop", "locked"),  # the slot's pointer and instance dropped
                ("apply", "Role", "shop-host"),  # its timer Lease is no longer granted
                *[("delete", kind, name) for kind, name in sorted(
                    [("ConfigMap", f"{STAGING_INSTANCE}-{suffix}") for suffix in ("host", "settings", "workers")]
                    + [("Deployment", STAGING_INSTANCE), ("Secret", "shop-staging-keys"),
                       ("Service", "shop-staging")])]],
        conditions={("FunctionApp", "shop"): {"Ready": ("True", "AllInstancesReady")}}),
    Row("invalid spec", given=lambda app, slot: [app(replicas=-1)],
        writes=[("status", "FunctionApp", "shop", "merged")],
        events=[("FunctionApp", "shop", "Warning", "InvalidSpec")],
        conditions={("FunctionApp", "shop"): {"Degraded": ("True", "InvalidSpec")}}),
]


async def ignore(ctx: Context, key: Hashable) -> None:
    """Queued keys (the WorkerConfig status, the swap engine) are other reconcilers' work."""


async def reconcile(kube: RecordingKube) -> None:
    ctx = Context(ignore, kube=kube)  # type: ignore[arg-type]  (the stand-in plays Kube)
    try:
        await reconcile_app(ctx, NAMESPACE, "shop")
    finally:
        await ctx.queue.stop()


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_reconcile_app(row: Row, app_manifest: Manifest, slot_manifest: Manifest) -> None:
    kube = RecordingKube(row.given(app_manifest, slot_manifest))
    for change in row.before:
        await reconcile(kube)
        change(kube.by_name())
    kube.forget_records()
    await reconcile(kube)
    assert _ordered(kube.writes) == _ordered(row.writes)
    assert kube.events == row.events
    for key, wanted in row.conditions.items():
        conditions = {c["type"]: (c["status"], c["reason"])
                      for c in kube.by_name()[key].get("status", {}).get("conditions", [])}
        assert {type_: conditions.get(type_) for type_ in wanted} == wanted, key


def _ordered(writes: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Deletes (pruning walks the store, whose order is not part of the contract) sorted; the rest as made."""
    return [w for w in writes if w[0] != "delete"] + sorted(w for w in writes if w[0] == "delete")


async def test_status_shows_each_instance_task_hub(app_manifest: Manifest, slot_manifest: Manifest) -> None:
    kube = RecordingKube([app_manifest(durable={"store": {"kind": "sqlite"}}, scale={"maxReplicas": 1}),
                          slot_manifest("staging", "2026-01-01T00:00:01Z")])
    await reconcile(kube)
    status = kube.by_name()[("FunctionApp", "shop")]["status"]
    assert status["taskHub"] == "shop"
    assert {instance: record.get("taskHub") for instance, record in status["instances"].items()} == {
        PRODUCTION_INSTANCE: "shop", STAGING_INSTANCE: "shopstaging"}
