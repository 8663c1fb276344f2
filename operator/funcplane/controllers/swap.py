"""kopf wiring of the swap engine: one loop per leadership term ticks each app that has swap work.

Ticks of one app never overlap (one task per app); an app with nothing to do costs no API call
(the check reads the reconcilers' watched store and the engine's cached journal).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from funcplane.swap.engine import SwapEngine

from .handlers import context
from .kube import Conflict
from .metrics import observe_reconcile

logger = logging.getLogger("funcplane.swap")

TICK_SECONDS = 0.5
RETRY_SECONDS = 2.0

_loop_task: asyncio.Task[None] | None = None


async def _tick(engine: SwapEngine, namespace: str, app: str) -> None:
    try:
        with observe_reconcile("Swap"):
            await engine.tick(namespace, app)
    except asyncio.CancelledError:
        raise
    except Conflict:  # a reconciler wrote the app meanwhile: the next tick reads it again
        logger.debug("swap tick of %s/%s met a concurrent write; retrying", namespace, app)
    except Exception as error:  # one app's failure must not stop the others; the next tick retries
        logger.warning("swap tick of %s/%s failed (%s: %s)", namespace, app, type(error).__name__, error)
        await asyncio.sleep(RETRY_SECONDS)


async def run_swap_engine() -> None:
    engine = SwapEngine(context())
    running: dict[tuple[str, str], asyncio.Task[None]] = {}
    while True:
        apps = [body["metadata"] for body in list(engine.ctx.store.objects.values())
                if body.get("kind") == "FunctionApp"]
        for namespace, app in [(meta["namespace"], meta["name"]) for meta in apps]:
            task = running.get((namespace, app))
            if (task is None or task.done()) and engine.has_work(namespace, app):
                running[(namespace, app)] = asyncio.ensure_future(_tick(engine, namespace, app))
        await asyncio.sleep(TICK_SECONDS)


@kopf.on.startup()
async def start_swap_engine(**_: Any) -> None:
    global _loop_task
    _loop_task = asyncio.ensure_future(run_swap_engine())


@kopf.on.cleanup()
async def stop_swap_engine(**_: Any) -> None:
    global _loop_task
    if _loop_task is not None:
        _loop_task.cancel()
        await asyncio.gather(_loop_task, return_exceptions=True)
        _loop_task = None
