"""Route a queued key to its reconciler, counting it in the operator's metrics."""

from __future__ import annotations

from collections.abc import Hashable

from .apps import reconcile_app
from .context import APP, WORKERS, Context
from .metrics import observe_reconcile
from .workerstatus import reconcile_worker_status


async def dispatch(ctx: Context, key: Hashable) -> None:
    kind, namespace, name = key  # type: ignore[misc]
    if kind == APP:
        with observe_reconcile("FunctionApp"):
            await reconcile_app(ctx, namespace, name)
    elif kind == WORKERS:
        with observe_reconcile("WorkerConfig"):
            await reconcile_worker_status(ctx, namespace)
