"""Route a queued key to its reconciler, counting it in the operator's metrics."""

from __future__ import annotations

from collections.abc import Hashable

from .apps import reconcile_app
from .context import APP, SCALE, SWAP, WORKERS, Context
from .metrics import observe_reconcile
from .scaler import queue_scalers, reconcile_scale
from .swap import reconcile_swap
from .workerstatus import reconcile_worker_status


async def dispatch(ctx: Context, key: Hashable) -> None:
    kind, namespace, name, *rest = key  # type: ignore[misc]
    if kind == APP:
        with observe_reconcile("FunctionApp"):
            await reconcile_app(ctx, namespace, name)
        # The app's status may now hold news for the swap engine (a new deployment to auto-swap)
        # and for the scaler (autoscaling turned on, a new instance).
        ctx.queue_swap(namespace, name)
        queue_scalers(ctx, namespace, name)
    elif kind == SCALE:
        await reconcile_scale(ctx, namespace, name, rest[0])
    elif kind == WORKERS:
        with observe_reconcile("WorkerConfig"):
            await reconcile_worker_status(ctx, namespace)
    elif kind == SWAP:
        await reconcile_swap(ctx, namespace, name)
