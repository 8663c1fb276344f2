"""Route a queued key to its reconciler, counting it in the operator's metrics."""

from __future__ import annotations

from collections.abc import Hashable

from .apps import reconcile_app
from .context import APP, SWAP, WORKERS, Context
from .metrics import observe_reconcile
from .swap import reconcile_swap
from .workerstatus import reconcile_worker_status


async def dispatch(ctx: Context, key: Hashable) -> None:
    kind, namespace, name = key  # type: ignore[misc]
    if kind == APP:
        with observe_reconcile("FunctionApp"):
            await reconcile_app(ctx, namespace, name)
        # The app's status may now hold news for the swap engine (a new deployment to auto-swap).
        ctx.queue_swap(namespace, name)
    elif kind == WORKERS:
        with observe_reconcile("WorkerConfig"):
            await reconcile_worker_status(ctx, namespace)
    elif kind == SWAP:
        await reconcile_swap(ctx, namespace, name)
