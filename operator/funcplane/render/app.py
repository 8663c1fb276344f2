"""Everything one FunctionApp reconciles into, from its spec, its admitted slots and its status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from funcplane.api import PRODUCTION
from funcplane.api.base import Setting
from funcplane.api.functionapp import FunctionApp
from funcplane.api.slot import Slot
from funcplane.api.workerconfig import WorkerSpec

from . import names
from .content import merge_settings, running_settings, slot_content
from .deploy import SlotRequest
from .instance import HTTP_PORT, InstanceRequest, render_instance, task_hub
from .volumes import VolumeMode
from .workers import workers_for


@dataclass(frozen=True)
class SlotView:
    """A slot of the app as the renderer needs it: production or an admitted Slot."""

    name: str
    owner_uid: str
    settings: list[Setting]  # effective settings (cloned + own)
    request: SlotRequest
    non_http_triggers: bool


def production_view(app: FunctionApp) -> SlotView:
    content = slot_content(app.spec)
    return SlotView(PRODUCTION, app.metadata["uid"], content.settings,
                    SlotRequest(PRODUCTION, app.metadata["uid"], content), True)


def slot_view(slot: Slot) -> SlotView:
    content = slot_content(slot.spec, slot.status.cloned_settings or [])
    uid = slot.metadata["uid"]
    return SlotView(slot.spec.slot_name, uid, content.settings, SlotRequest(slot.spec.slot_name, uid, content),
                    slot.spec.non_http_triggers)


def app_views(app: FunctionApp, admitted: list[Slot]) -> list[SlotView]:
    """Production first, then the admitted Slots: what render_app and the swap engine both render."""
    return [production_view(app)] + [slot_view(slot) for slot in admitted]


def clone_settings(app: FunctionApp) -> list[Setting]:
    """A new slot's copy of the app's settings (sticky ones included, as Azure does on creation)."""
    return merge_settings(app.spec.settings, [])


def service(app: FunctionApp, slot: str, instance: str) -> dict[str, Any]:
    app_name = app.metadata["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": names.slot_service(app_name, slot), "namespace": app.metadata["namespace"],
                     "labels": names.app_labels(app_name) | {names.LABEL_SLOT: slot},
                     "ownerReferences": [names.owner_reference(app.wire())]},
        "spec": {"type": "ClusterIP", "selector": names.instance_selector(app_name, instance),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def service_account(app: FunctionApp) -> dict[str, Any]:
    app_name = app.metadata["name"]
    return {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
            "metadata": {"name": app_name, "namespace": app.metadata["namespace"],
                         "labels": names.app_labels(app_name), "ownerReferences": [names.owner_reference(app.wire())]}}


def host_access(app: FunctionApp, views: list[SlotView]) -> list[dict[str, Any]]:
    """A Role and RoleBinding for the app's ServiceAccount: its hosts may hold (get, update) their
    slots' timer Leases and nothing else; `create` cannot be limited by name."""
    app_name = app.metadata["name"]
    metadata = {"name": names.host_role(app_name), "namespace": app.metadata["namespace"],
                "labels": names.app_labels(app_name), "ownerReferences": [names.owner_reference(app.wire())]}
    leases = sorted(names.timer_lease(app_name, view.name) for view in views)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata,
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                      {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": leases,
                       "verbs": ["get", "update"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(metadata),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.host_role(app_name)},
               "subjects": [{"kind": "ServiceAccount", "name": app_name, "namespace": app.metadata["namespace"]}]}
    return [role, binding]


def keys_secret(app: FunctionApp, slot: str, master_key: str, function_key: str) -> dict[str, Any]:
    """A slot's keys (its own, as in Azure); created once, never rewritten."""
    app_name = app.metadata["name"]
    keys = {"masterKey": master_key, "functionKeys": {"default": function_key}, "functions": {}}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": names.slot_keys_secret(app_name, slot), "namespace": app.metadata["namespace"],
                         "labels": names.app_labels(app_name) | {names.LABEL_SLOT: slot},
                         "ownerReferences": [names.owner_reference(app.wire())]},
            "stringData": {"keys.json": json.dumps(keys)}}


def _instance_requests(app: FunctionApp, views: list[SlotView], workers: list[WorkerSpec],
                       volume_mode: VolumeMode, live_replicas: dict[str, int] | None = None,
                       ) -> list[tuple[str, str, InstanceRequest]]:
    """(slot, instance, what to render) for every slot whose status already holds its pointer."""
    app_name, namespace = app.metadata["name"], app.metadata["namespace"]
    owner = names.owner_reference(app.wire())
    by_name = {view.name: view for view in views}
    app_workers = workers_for(app.spec.runtime, workers)
    requests = []
    for slot_name, pointer in sorted(app.status.slots.items()):
        view = by_name.get(slot_name)
        instance = app.status.instances.get(pointer.instance)
        if view is None or instance is None:
            continue
        sticky_from = by_name.get(instance.sticky_settings_from or slot_name, view)
        # The instance acts as the slot whose sticky settings it runs: its keys, slot name, host
        # id and trigger switch follow them, so a swap's flip changes no pod template (warm pods
        # keep serving). While a swap warms the source up as the target, both instances share the
        # target's host id, and its timer Lease lets only one pod run the target's timers.
        identity = sticky_from.name
        requests.append((slot_name, pointer.instance, InstanceRequest(
            app_name=app_name, namespace=namespace, owner=owner, spec=app.spec, instance=pointer.instance,
            content=instance.content, settings=running_settings(instance.content, sticky_from.settings),
            slot=identity, non_http_triggers=sticky_from.non_http_triggers, workers=app_workers,
            volume_mode=volume_mode, live_replicas=(live_replicas or {}).get(pointer.instance))))
    return requests


def render_app(app: FunctionApp, views: list[SlotView], workers: list[WorkerSpec],
               volume_mode: VolumeMode, live_replicas: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Desired objects (keys Secrets excepted) for an app whose status already holds the pointers.
    `live_replicas` (instance -> its main Deployment's replicas now) keeps an autoscaled instance's
    count as the scaler left it."""
    objects: list[dict[str, Any]] = [service_account(app), *host_access(app, views)]
    for slot_name, instance, request in _instance_requests(app, views, workers, volume_mode, live_replicas):
        objects += render_instance(request)
        objects.append(service(app, slot_name, instance))
    return [names.stamp(obj) for obj in objects]


def task_hubs(app: FunctionApp, views: list[SlotView]) -> dict[str, str]:
    """Instance -> the durable task hub its hosts use (instances whose hub is known; see task_hub)."""
    hubs = {}
    for _, instance, request in _instance_requests(app, views, [], VolumeMode.IMAGE):
        hub = task_hub(request)
        if hub is not None:
            hubs[instance] = hub
    return hubs


__all__ = ["HTTP_PORT", "SlotView", "app_views", "clone_settings", "host_access", "keys_secret", "production_view",
           "render_app", "service", "service_account", "slot_view", "task_hubs"]
