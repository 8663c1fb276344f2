"""kopf registrations (thin): every watch event updates the store and queues a reconcile.

No kopf progress storage is used: watch events drive a level-triggered work queue, so the
operator converges from whatever it finds (on start, kopf's initial listing queues everything)
and never writes bookkeeping onto the objects it watches.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from funcplane.api.base import GROUP, VERSION
from funcplane.render.names import LABEL_APP, LABEL_MANAGED_BY, MANAGED_BY

from .context import Context
from .dispatch import dispatch

_context: Context | None = None
_context_loop: asyncio.AbstractEventLoop | None = None


def context() -> Context:
    """The reconcilers' shared state, one per event loop (a new leadership term runs kopf in a
    new loop, and asyncio queues cannot cross loops)."""
    global _context, _context_loop
    loop = asyncio.get_running_loop()
    if _context is None or _context_loop is not loop:
        _context, _context_loop = Context(dispatch), loop
    return _context


def _observe(kind: str, event: dict[str, Any], body: Any) -> dict[str, Any] | None:
    """Update the store; returns the object if the event is news (not the echo of a write whose
    response the store already holds), else None."""
    ctx = context()
    raw = dict(event.get("object") or body)
    raw.setdefault("kind", kind)
    meta = raw["metadata"]
    if event.get("type") == "DELETED":
        ctx.store.forget(kind, meta["namespace"], meta["name"])
        return raw
    known = ctx.store.get(kind, meta["namespace"], meta["name"])
    if known is not None and known["metadata"].get("resourceVersion") == meta.get("resourceVersion"):
        return None
    ctx.store.put(raw)
    return raw


@kopf.on.event(GROUP, VERSION, "functionapps")
async def function_app_event(event: dict[str, Any], body: Any, namespace: str, name: str, **_: Any) -> None:
    if _observe("FunctionApp", event, body) is not None:
        context().queue_app(namespace, name)
        context().queue_worker_status(namespace)
        context().queue_swap(namespace, name)


@kopf.on.event(GROUP, VERSION, "slots")
async def slot_event(event: dict[str, Any], body: Any, namespace: str, **_: Any) -> None:
    raw = _observe("Slot", event, body)
    app = (raw or {}).get("spec", {}).get("appRef")
    if app:
        context().queue_app(namespace, app)
        context().queue_swap(namespace, app)


@kopf.on.event(GROUP, VERSION, "workerconfigs")
async def worker_config_event(event: dict[str, Any], body: Any, namespace: str, **_: Any) -> None:
    if _observe("WorkerConfig", event, body) is not None:
        context().queue_apps_of(namespace)
        context().queue_worker_status(namespace)


def _owned(kind: str, group: str, version: str, plural: str) -> None:
    """Objects the operator made: keep the store current and re-reconcile their app (readiness
    changes of Deployments, and repairs when someone deletes or edits one)."""

    async def owned_event(event: dict[str, Any], body: Any, namespace: str, **_: Any) -> None:
        raw = _observe(kind, event, body)
        app = (raw or {}).get("metadata", {}).get("labels", {}).get(LABEL_APP)
        if app:
            context().queue_app(namespace, app)

    owned_event.__name__ = owned_event.__qualname__ = f"{kind.lower()}_event"
    selector = (group, version, plural) if group else (version, plural)
    kopf.on.event(*selector, labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_APP: kopf.PRESENT},
                  id=f"owned-{plural}")(owned_event)


_owned("Deployment", "apps", "v1", "deployments")
_owned("Service", "", "v1", "services")
_owned("ConfigMap", "", "v1", "configmaps")
_owned("Secret", "", "v1", "secrets")
_owned("ServiceAccount", "", "v1", "serviceaccounts")
_owned("Role", "rbac.authorization.k8s.io", "v1", "roles")
_owned("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings")


@kopf.on.cleanup()
async def stop_reconcilers(**_: Any) -> None:
    global _context
    if _context is not None:
        await _context.queue.stop()
        _context = None

