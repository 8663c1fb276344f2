"""The swap engine as a work-queue key: `("swap", namespace, app)` runs one tick of the app's swap.

Slot and FunctionApp watch events and every app reconcile add the key; while the app has swap
work left (a swap in progress, a request not yet taken, a status not yet mirrored) the tick
re-adds its own key after `TICK_SECONDS`. The queue gives one tick per app at a time and backs
off after failures. An app with nothing to do costs no API call (the check reads the watched
store and the engine's cached journal).
"""

from __future__ import annotations

import logging

from funcplane.kube.client import Conflict

from .context import SWAP, Context
from .metrics import observe_reconcile

logger = logging.getLogger("funcplane.swap")

TICK_SECONDS = 0.5


async def reconcile_swap(ctx: Context, namespace: str, app: str) -> None:
    await ctx.prime(namespace)
    engine = ctx.swap_engine
    if ctx.store.get("FunctionApp", namespace, app) is None:
        engine.journals.forget(namespace, app)
        return
    if not engine.has_work(namespace, app):
        return
    try:
        with observe_reconcile("Swap"):
            await engine.tick(namespace, app)
    except Conflict:  # a reconciler wrote the app meanwhile: the next tick reads it again
        logger.debug("swap tick of %s/%s met a concurrent write; retrying", namespace, app)
    if engine.has_work(namespace, app):
        ctx.queue.add_after((SWAP, namespace, app), TICK_SECONDS)
