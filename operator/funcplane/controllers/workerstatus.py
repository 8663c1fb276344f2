"""WorkerConfig status: per declared worker, the apps it serves and how far its rollout got."""

from __future__ import annotations

from funcplane.api.functionapp import FunctionApp
from funcplane.api.workerconfig import WorkerConfig, WorkerConfigStatus, WorkerRollout
from funcplane.kube.status import write_status
from funcplane.render.workers import declared_workers

from .context import Context


async def reconcile_worker_status(ctx: Context, namespace: str) -> None:
    await ctx.prime(namespace)
    apps = [FunctionApp.model_validate(body) for body in ctx.store.list("FunctionApp", namespace)]
    bodies = ctx.store.list("WorkerConfig", namespace)
    configs = [WorkerConfig.model_validate(body) for body in bodies]
    winners = {id(worker) for worker in declared_workers(configs)}
    for body, config in zip(bodies, configs):
        rows, shadowed = [], []
        for worker in config.spec.workers:
            row = WorkerRollout(name=worker.name, language=worker.language, enabled=worker.enabled,
                                rollout_fraction=worker.rollout_fraction)
            for app in apps:
                if not worker.enabled or not worker.serves(app.spec.runtime.name, app.spec.runtime.version):
                    continue
                row.apps.append(app.metadata["name"])
                for instance in app.status.instances.values():
                    row.pods_total += instance.ready_replicas
                    row.pods_with_worker += instance.workers.get(worker.name, 0)
            rows.append(row)
            if id(worker) not in winners:
                shadowed.append(worker.name)
        before = WorkerConfigStatus.model_validate(body.get("status") or {})
        status = WorkerConfigStatus(conditions=before.conditions, workers=rows)
        status.mark_applied(shadowed, body["metadata"].get("generation"))
        await write_status(ctx.kube, ctx.store, body, status)
