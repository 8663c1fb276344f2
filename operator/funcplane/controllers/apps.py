"""Reconcile one FunctionApp with its Slots: admission, deployments, objects, status, events."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from pydantic import ValidationError

from funcplane.api import PRODUCTION
from funcplane.api.functionapp import FunctionApp, FunctionAppStatus
from funcplane.api.slot import Slot, SlotStatus
from funcplane.api.workerconfig import WorkerConfig
from funcplane.render import names
from funcplane.render.app import app_views, clone_settings, keys_secret, render_app
from funcplane.render.deploy import admit_slots, plan_deployments
from funcplane.render.workers import declared_workers, split, workers_for

from funcplane.api import conditions
from funcplane.api.conditions import condition
from .context import Context
from funcplane.render.readiness import deployment_rollout

logger = logging.getLogger(__name__)


def _slots_of(ctx: Context, namespace: str, app_name: str) -> list[dict[str, Any]]:
    return [s for s in ctx.store.list("Slot", namespace)
            if s.get("spec", {}).get("appRef") == app_name and not s["metadata"].get("deletionTimestamp")]


async def reconcile_app(ctx: Context, namespace: str, app_name: str) -> None:
    await ctx.prime(namespace)
    body = ctx.store.get("FunctionApp", namespace, app_name)
    slot_bodies = _slots_of(ctx, namespace, app_name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        for slot_body in slot_bodies:
            await _set_slot_status(ctx, slot_body, SlotStatus.model_validate(slot_body.get("status") or {}), [
                condition("Ready", False, "AppNotFound",
                          f"FunctionApp {app_name!r} does not exist in namespace {namespace!r}; "
                          "waiting for it to be created", slot_body["metadata"].get("generation"))])
        return
    try:
        app = FunctionApp.model_validate(body)
        slots = [Slot.model_validate(s) for s in slot_bodies]
    except ValidationError as error:
        await _degraded(ctx, body, f"invalid spec: {error}")
        return
    generation = body["metadata"].get("generation")
    admission = admit_slots(app_name, app.spec, slots)

    # A new slot clones the app's settings once, at creation (recorded in its status).
    for slot in admission.admitted:
        if slot.spec.clone_settings_from_app and slot.status.cloned_settings is None:
            slot.status.cloned_settings = clone_settings(app)
            updated = await ctx.kube.patch_status("Slot", namespace, slot.metadata["name"], {
                "clonedSettings": [s.wire() for s in slot.status.cloned_settings]})
            if updated:
                ctx.store.put(updated)

    views = app_views(app, admission.admitted)
    plan = plan_deployments(app_name, namespace, app.status, [view.request for view in views])
    # Record pointers and deployed content before touching any object: a crash after this point
    # resumes with the same instances, never duplicates them.
    if _pointers(plan.status) != _pointers(app.status):
        stored = await ctx.kube.patch_status("FunctionApp", namespace, app_name, _full_status(plan.status, app.status),
                                             resource_version=body["metadata"]["resourceVersion"])
        if stored:
            ctx.store.put(stored)
    app.status = plan.status
    for deployment in plan.deployments:
        target = body if deployment.slot == PRODUCTION else next(
            s for s in slot_bodies if s["spec"]["slotName"] == deployment.slot)
        what = "new instance" if deployment.new_instance else "instance"
        await ctx.kube.event(target, "Deployed", f"slot {deployment.slot!r}: content {deployment.content_hash} "
                             f"deployed to {what} {deployment.instance}")

    workers = declared_workers(WorkerConfig.model_validate(w) for w in ctx.store.list("WorkerConfig", namespace))
    desired = render_app(app, views, workers, await ctx.volume_mode())
    await _ensure_keys(ctx, app, [view.name for view in views])  # before the pods that mount them
    await _apply_all(ctx, desired)
    await _prune(ctx, namespace, app_name, desired, [view.name for view in views])
    app.status = await _update_app_status(ctx, body, app, generation, workers)
    await _update_slot_statuses(ctx, app, slots, admission.refused)


def _pointers(status: FunctionAppStatus) -> Any:
    return ({k: v.wire() for k, v in status.slots.items()},
            {k: (v.content_hash, v.deployed_from, v.content.wire()) for k, v in status.instances.items()})


async def _apply_all(ctx: Context, desired: list[dict[str, Any]]) -> None:
    for manifest in desired:
        meta = manifest["metadata"]
        current = ctx.store.get(manifest["kind"], meta["namespace"], meta["name"])
        wanted_hash = meta["annotations"][names.ANNOTATION_APPLIED_HASH]
        if current is not None and current["metadata"].get("annotations", {}).get(
                names.ANNOTATION_APPLIED_HASH) == wanted_hash:
            continue  # unchanged: no write
        ctx.store.put(await ctx.kube.apply(manifest))


async def _ensure_keys(ctx: Context, app: FunctionApp, slot_names: list[str]) -> None:
    for slot in slot_names:
        name = names.slot_keys_secret(app.metadata["name"], slot)
        if ctx.store.get("Secret", app.metadata["namespace"], name) is None:
            manifest = keys_secret(app, slot, secrets.token_urlsafe(32), secrets.token_urlsafe(32))
            created = await ctx.kube.create(manifest) or await ctx.kube.get("Secret", app.metadata["namespace"], name)
            if created:
                created.setdefault("kind", "Secret")
                ctx.store.put(created)


async def _prune(ctx: Context, namespace: str, app_name: str, desired: list[dict[str, Any]],
                 slot_names: list[str]) -> None:
    keep = {(m["kind"], m["metadata"]["name"]) for m in desired}
    keep |= {("Secret", names.slot_keys_secret(app_name, slot)) for slot in slot_names}
    for body in list(ctx.store.owned_by(app_name, namespace)):
        key = (body["kind"], body["metadata"]["name"])
        if key not in keep and not body["metadata"].get("deletionTimestamp"):
            await ctx.kube.delete(body["kind"], namespace, body["metadata"]["name"])
            ctx.store.forget(body["kind"], namespace, body["metadata"]["name"])


def _instance_deployments(ctx: Context, namespace: str, app_name: str, instance: str) -> list[dict[str, Any]]:
    return [d for d in ctx.store.owned_by(app_name, namespace)
            if d["kind"] == "Deployment" and d["metadata"].get("labels", {}).get(names.LABEL_INSTANCE) == instance]


async def _update_app_status(ctx: Context, body: dict[str, Any], app: FunctionApp, generation: int | None,
                             workers: list[Any]) -> FunctionAppStatus:
    """Observed state into the app's status (written only if it changed); returns the new status."""
    namespace, app_name = app.metadata["namespace"], app.metadata["name"]
    status = app.status.model_copy(deep=True)
    not_ready, stalled, progressing = [], [], []
    app_workers = workers_for(app.spec.runtime, workers)
    for slot_name, pointer in sorted(status.slots.items()):
        record = status.instances[pointer.instance]
        rollout = deployment_rollout(_instance_deployments(ctx, namespace, app_name, pointer.instance))
        slices = split(app_workers, app.spec.clamped_replicas())
        gray_only = {w.name for w in (slices.gray or [])} - {w.name for w in slices.main}
        record.replicas, record.ready_replicas = rollout.replicas, rollout.ready_replicas
        record.updated_replicas, record.ready = rollout.updated_replicas, rollout.ready
        record.workers = {w.name: (rollout.gray_ready if w.name in gray_only else rollout.ready_replicas)
                          for w in app_workers}
        if not rollout.ready:
            not_ready.append(f"{slot_name} ({pointer.instance}: {rollout.ready_replicas}/{rollout.replicas} ready)")
        if rollout.progressing:
            progressing.append(pointer.instance)
        if rollout.stalled:
            stalled.append(rollout.stalled)
    production = status.slots.get(PRODUCTION)
    status.replicas = status.instances[production.instance].ready_replicas if production else 0
    status.observed_generation = generation
    wanted = [
        condition("Ready", not not_ready, "AllInstancesReady" if not not_ready else "InstancesNotReady",
                  "every slot's instance is ready" if not not_ready else "not ready: " + ", ".join(not_ready),
                  generation),
        condition("Progressing", bool(progressing), "RollingOut" if progressing else "Stable",
                  ("rolling out: " + ", ".join(progressing)) if progressing else "no rollout in progress", generation),
        condition("Degraded", bool(stalled), "RolloutStalled" if stalled else "AsExpected",
                  "; ".join(stalled) if stalled else "", generation),
    ]
    status.conditions = conditions.merge(app.status.conditions, wanted)
    current = ctx.store.get("FunctionApp", namespace, app_name) or body
    before = FunctionAppStatus.model_validate(current.get("status") or {})
    if status.wire() == before.wire():
        return status
    # With the resourceVersion: a concurrent pointer change (a swap) fails this write, never lost.
    stored = await ctx.kube.patch_status("FunctionApp", namespace, app_name, _full_status(status, before),
                                         resource_version=current["metadata"]["resourceVersion"])
    if stored:
        ctx.store.put(stored)
    for type_ in ("Ready", "Degraded"):
        old, new = conditions.find(before.conditions, type_), conditions.find(status.conditions, type_)
        if new and (old is None or old.status != new.status) and (type_ == "Ready" or new.status == "True"):
            await ctx.kube.event(current, new.reason, new.message,
                                 warning=(type_ == "Ready") != (new.status == "True"))
    ctx.queue_worker_status(namespace)
    return status


def _full_status(status: FunctionAppStatus, before: FunctionAppStatus) -> dict[str, Any]:
    """A merge patch that also removes slots/instances that are gone."""
    wire = status.wire()
    for key in ("slots", "instances"):
        for gone in set(getattr(before, key)) - set(getattr(status, key)):
            wire.setdefault(key, {})[gone] = None
    return wire


async def _update_slot_statuses(ctx: Context, app: FunctionApp, slots: list[Slot],
                                refused: dict[str, tuple[str, str]]) -> None:
    for slot in slots:
        name = slot.metadata["name"]
        generation = slot.metadata.get("generation")
        status = slot.status.model_copy(deep=True)
        if name in refused:
            reason, message = refused[name]
            wanted = [condition("Ready", False, reason, message, generation)]
            status.instance = status.service = status.hostname = None
        else:
            pointer = app.status.slots[slot.spec.slot_name]
            record = app.status.instances[pointer.instance]
            status.instance, status.service, status.hostname = pointer.instance, pointer.service, pointer.hostname
            message = (f"instance {pointer.instance} ready ({record.ready_replicas}/{record.replicas})" if record.ready
                       else f"instance {pointer.instance}: {record.ready_replicas}/{record.replicas} pods ready")
            wanted = [condition("Ready", record.ready, "InstanceReady" if record.ready else "InstanceNotReady",
                                message, generation)]
        body = ctx.store.get("Slot", app.metadata["namespace"], name) or slot.wire()
        await _set_slot_status(ctx, body, status, wanted)


async def _set_slot_status(ctx: Context, body: dict[str, Any], status: SlotStatus,
                           wanted: list[Any]) -> None:
    before = SlotStatus.model_validate(body.get("status") or {})
    status.conditions = conditions.merge(before.conditions, wanted)
    status.observed_generation = body["metadata"].get("generation")
    if status.wire() == before.wire():
        return
    patch = status.wire()
    patch.pop("swap", None)  # owned by the swap engine
    for field in ("instance", "service", "hostname"):
        patch.setdefault(field, None)
    stored = await ctx.kube.patch_status("Slot", body["metadata"]["namespace"], body["metadata"]["name"], patch)
    if stored:
        ctx.store.put(stored)
    new_ready, old_ready = conditions.find(status.conditions, "Ready"), conditions.find(before.conditions, "Ready")
    changed = new_ready and (old_ready is None or (old_ready.status, old_ready.reason) !=
                             (new_ready.status, new_ready.reason))
    if changed and new_ready.reason != "InstanceNotReady":  # a rollout in progress is not news
        await ctx.kube.event(body, new_ready.reason, new_ready.message, warning=new_ready.status != "True")


async def _degraded(ctx: Context, body: dict[str, Any], message: str) -> None:
    status = FunctionAppStatus.model_validate(body.get("status") or {})
    generation = body["metadata"].get("generation")
    status.conditions = conditions.merge(status.conditions, [
        condition("Degraded", True, "InvalidSpec", message[:1000], generation)])
    stored = await ctx.kube.patch_status("FunctionApp", body["metadata"]["namespace"], body["metadata"]["name"],
                                         status.wire())
    if stored:
        ctx.store.put(stored)
