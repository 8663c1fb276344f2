"""Reconcile one FunctionApp with its Slots: admission, deployments, objects, status, events."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from pydantic import ValidationError

from funcplane.api import PRODUCTION
from funcplane.api.conditions import DEGRADED, READY
from funcplane.api.functionapp import FunctionApp, FunctionAppStatus
from funcplane.api.slot import Slot, SlotStatus
from funcplane.api.workerconfig import WorkerConfig
from funcplane.kube.status import write_status
from funcplane.render import names
from funcplane.render.app import SlotView, app_views, clone_settings, keys_secret, render_app, task_hubs
from funcplane.render.deploy import admit_slots, plan_deployments
from funcplane.render.readiness import deployment_rollout, pod_problems
from funcplane.render.workers import declared_workers, split, workers_for
from funcplane.swap.observe import instance_pods

from .context import APP, Context

logger = logging.getLogger(__name__)
# While an instance is not ready, its pods are looked at again this often: the kubelet reports why
# they fail (a missing Secret, an image, a probe) after the Deployment's status stopped changing.
NOT_READY_RECHECK_SECONDS = 5.0


def _slots_of(ctx: Context, namespace: str, app_name: str) -> list[dict[str, Any]]:
    return [s for s in ctx.store.list("Slot", namespace)
            if s.get("spec", {}).get("appRef") == app_name and not s["metadata"].get("deletionTimestamp")]


async def reconcile_app(ctx: Context, namespace: str, app_name: str) -> None:
    await ctx.prime(namespace)
    body = ctx.store.get("FunctionApp", namespace, app_name)
    slot_bodies = _slots_of(ctx, namespace, app_name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        for slot_body in slot_bodies:
            status = SlotStatus.model_validate(slot_body.get("status") or {})
            status.mark_app_not_found(app_name, namespace, slot_body["metadata"].get("generation"))
            await _write_slot_status(ctx, slot_body, status)
        return
    try:
        app = FunctionApp.model_validate(body)
        slots = [Slot.model_validate(s) for s in slot_bodies]
    except ValidationError as error:
        status = FunctionAppStatus.model_validate(body.get("status") or {})
        status.mark_invalid_spec(f"invalid spec: {error}", body["metadata"].get("generation"))
        await write_status(ctx.kube, ctx.store, body, status, announce=(READY, DEGRADED))
        return
    generation = body["metadata"].get("generation")
    admission = admit_slots(app_name, app.spec, slots)

    # A new slot clones the app's settings once, at creation (recorded in its status).
    admitted = {id(slot) for slot in admission.admitted}
    for slot, slot_body in zip(slots, slot_bodies):
        if id(slot) in admitted and slot.spec.clone_settings_from_app and slot.status.cloned_settings is None:
            slot.status.cloned_settings = clone_settings(app)
            await write_status(ctx.kube, ctx.store, slot_body, slot.status,
                               patch={"clonedSettings": [s.wire() for s in slot.status.cloned_settings]})

    views = app_views(app, admission.admitted)
    plan = plan_deployments(app_name, namespace, app.status, [view.request for view in views])
    # Record pointers and deployed content before touching any object: a crash after this point
    # resumes with the same instances, never duplicates them.
    if _pointers(plan.status) != _pointers(app.status):
        await write_status(ctx.kube, ctx.store, body, plan.status, locked=True)
    app.status = plan.status
    for deployment in plan.deployments:
        target = body if deployment.slot == PRODUCTION else next(
            s for s in slot_bodies if s["spec"]["slotName"] == deployment.slot)
        what = "new instance" if deployment.new_instance else "instance"
        await ctx.kube.event(target, "Deployed", f"slot {deployment.slot!r}: content {deployment.content_hash} "
                             f"deployed to {what} {deployment.instance}")

    workers = declared_workers(WorkerConfig.model_validate(w) for w in ctx.store.list("WorkerConfig", namespace))
    desired = render_app(app, views, workers, await ctx.volume_mode(), _live_replicas(ctx, app))
    await _ensure_keys(ctx, app, [view.name for view in views])  # before the pods that mount them
    await _apply_all(ctx, desired)
    await _prune(ctx, namespace, app_name, desired, [view.name for view in views])
    app.status = await _update_app_status(ctx, body, app, generation, workers, views)
    await _update_slot_statuses(ctx, app, slots, admission.refused)


def _live_replicas(ctx: Context, app: FunctionApp) -> dict[str, int]:
    """Autoscaled: each instance's main Deployment replicas as the scaler left them, so that
    re-rendering (a deploy, a re-applied manifest) keeps them."""
    if not app.spec.autoscaled:
        return {}
    live = {}
    for record in app.status.slots.values():
        deployment = ctx.store.get("Deployment", app.metadata["namespace"], record.instance)
        if deployment is not None and isinstance(deployment.get("spec", {}).get("replicas"), int):
            live[record.instance] = deployment["spec"]["replicas"]
    return live


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


async def _pod_problems(ctx: Context, namespace: str, app_name: str, instance: str) -> list[str]:
    """Why the instance's pods are not ready, read from the pods (not kept in the store: only a
    not-ready instance needs them)."""
    try:
        pods = await instance_pods(ctx.kube, namespace, app_name, instance)
    except Exception as error:  # noqa: BLE001 - the status says less, the reconcile goes on
        logger.warning("cannot read the pods of %s/%s: %s", namespace, instance, error)
        return []
    return pod_problems(pods, time.time())


async def _update_app_status(ctx: Context, body: dict[str, Any], app: FunctionApp, generation: int | None,
                             workers: list[Any], views: list[SlotView]) -> FunctionAppStatus:
    """Observed state into the app's status (written only if it changed); returns the new status."""
    namespace, app_name = app.metadata["namespace"], app.metadata["name"]
    status = app.status.model_copy(deep=True)
    not_ready, stalled, progressing, failing = [], [], [], []
    app_workers = workers_for(app.spec.runtime, workers)
    hubs = task_hubs(app, views)
    for slot_name, pointer in sorted(status.slots.items()):
        record = status.instances[pointer.instance]
        record.task_hub = hubs.get(pointer.instance)
        rollout = deployment_rollout(_instance_deployments(ctx, namespace, app_name, pointer.instance))
        slices = split(app_workers, app.spec.clamped_replicas())
        gray_only = {w.name for w in (slices.gray or [])} - {w.name for w in slices.main}
        record.replicas, record.ready_replicas = rollout.replicas, rollout.ready_replicas
        record.updated_replicas, record.ready = rollout.updated_replicas, rollout.ready
        record.workers = {w.name: (rollout.gray_ready if w.name in gray_only else rollout.ready_replicas)
                          for w in app_workers}
        if not rollout.ready:
            problems = await _pod_problems(ctx, namespace, app_name, pointer.instance)
            failing += problems
            not_ready.append(f"{slot_name} ({pointer.instance}: {rollout.ready_replicas}/{rollout.replicas} ready"
                             + (f"; {problems[0]}" if problems else "") + ")")
        if rollout.progressing:
            progressing.append(pointer.instance)
        if rollout.stalled:
            stalled.append(rollout.stalled)
    production = status.slots.get(PRODUCTION)
    status.replicas = status.instances[production.instance].ready_replicas if production else 0
    status.task_hub = hubs.get(production.instance) if production else None
    status.mark_rollout(not_ready, progressing, stalled, generation, failing)
    if not_ready:
        ctx.queue.add_after((APP, namespace, app_name), NOT_READY_RECHECK_SECONDS)
    current = ctx.store.get("FunctionApp", namespace, app_name) or body
    # The scaler writes its decisions meanwhile: they are its to change, not this reconcile's.
    stored = FunctionAppStatus.model_validate(current.get("status") or {}).instances
    for instance, record in status.instances.items():
        record.scale = stored[instance].scale if instance in stored else None
    # With the resourceVersion: a concurrent pointer change (a swap) fails this write, never lost.
    if await write_status(ctx.kube, ctx.store, current, status, locked=True, announce=(READY, DEGRADED)):
        ctx.queue_worker_status(namespace)
    return status


async def _update_slot_statuses(ctx: Context, app: FunctionApp, slots: list[Slot],
                                refused: dict[str, tuple[str, str]]) -> None:
    for slot in slots:
        name = slot.metadata["name"]
        body = ctx.store.get("Slot", app.metadata["namespace"], name) or slot.wire()
        generation = body["metadata"].get("generation")
        # Merged against the stored status, so its conditions keep their lastTransitionTime.
        status = slot.status.model_copy(update={"conditions": SlotStatus.model_validate(
            body.get("status") or {}).conditions}, deep=True)
        if name in refused:
            status.mark_refused(*refused[name], generation)
        else:
            pointer = app.status.slots[slot.spec.slot_name]
            record = app.status.instances[pointer.instance]
            status.mark_instance(pointer.instance, pointer.service, pointer.hostname, ready=record.ready,
                                 ready_replicas=record.ready_replicas, replicas=record.replicas, generation=generation)
        await _write_slot_status(ctx, body, status)


async def _write_slot_status(ctx: Context, body: dict[str, Any], status: SlotStatus) -> None:
    await write_status(ctx.kube, ctx.store, body, status, announce=(READY,))
