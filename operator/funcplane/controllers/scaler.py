"""The scaler as a work-queue key: `("scale", namespace, app, instance)` runs one tick for one
instance of an autoscaled app (spec.scale.autoscale.enabled).

Every `TICK_SECONDS` the tick reads each Ready pod's `GET /admin/concurrency` (at the pod, with
the master key, as the swap's warm-up does), records the demand in the instance's windows
(funcplane.scale) and, only when the decision differs from the Deployment's replicas, writes them.
Before lowering them it marks the pods with the least work with the lowest pod-deletion-cost, so
that the ReplicaSet controller removes those (their hosts then drain). The FunctionApp's spec is
never written; the decision goes to status.instances[instance].scale with an Event. The key lives
in the leader's queue only and stops requeueing once the app is no longer autoscaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp

from funcplane.api.functionapp import FunctionApp, FunctionAppStatus, ScaleStatus
from funcplane.kube.status import write_status
from funcplane.render.names import ANNOTATION_DELETION_COST
from funcplane.scale.decide import Autoscaler, Decision, settings_for
from funcplane.scale.demand import loads
from funcplane.swap.observe import instance_pods, keys_secret_of, master_key_in, pod_readiness, read_concurrency

from .context import SCALE, Context
from .metrics import SCALE_DECISIONS, SCALE_DESIRED, SCALE_UNREAD_PODS, observe_reconcile

logger = logging.getLogger("funcplane.scale")

TICK_SECONDS = 2.0
READ_TIMEOUT = 1.5  # a host slower than this to say how busy it is counts as unread this tick
VICTIM_COST = "-1000"
# For the control runs of tests and benchmarks only: scale in without marking victims.
DELETION_COST_ENV = "FUNCPLANE_SCALER_DELETION_COST"


def autoscaled_app(ctx: Context, namespace: str, name: str) -> FunctionApp | None:
    body = ctx.store.get("FunctionApp", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    try:
        app = FunctionApp.model_validate(body)
    except ValueError:
        return None  # the app reconciler reports the invalid spec
    return app if app.spec.autoscaled else None


def queue_scalers(ctx: Context, namespace: str, name: str) -> None:
    """Start the ticks of an autoscaled app's instances that have none running."""
    app = autoscaled_app(ctx, namespace, name)
    if app is None:
        return
    for pointer in app.status.slots.values():
        if (namespace, name, pointer.instance) not in ctx.scalers:
            ctx.queue.add((SCALE, namespace, name, pointer.instance))


async def reconcile_scale(ctx: Context, namespace: str, name: str, instance: str) -> None:
    await ctx.prime(namespace)
    key = (namespace, name, instance)
    app = autoscaled_app(ctx, namespace, name)
    if app is None or instance not in {p.instance for p in app.status.slots.values()}:
        if ctx.scalers.pop(key, None) is not None:
            for gauge in (SCALE_DESIRED, SCALE_UNREAD_PODS):
                with contextlib.suppress(KeyError):  # never set for this instance
                    gauge.remove(namespace, name, instance)
        return
    try:
        with observe_reconcile("Scale"):
            await _tick(ctx, app, instance)
    finally:
        ctx.queue.add_after((SCALE, namespace, name, instance), TICK_SECONDS)


async def _tick(ctx: Context, app: FunctionApp, instance: str) -> None:
    namespace, name = app.metadata["namespace"], app.metadata["name"]
    deployment = ctx.store.get("Deployment", namespace, instance)
    if deployment is None or deployment["metadata"].get("deletionTimestamp"):
        return  # the app reconciler has not made it yet
    current = int(deployment.get("spec", {}).get("replicas", 1))
    settings = settings_for(app.spec)
    scaler = ctx.scalers.get((namespace, name, instance))
    if scaler is None:
        scaler = ctx.scalers[(namespace, name, instance)] = Autoscaler(settings, started=time.monotonic())
    scaler.settings = settings

    pods = await instance_pods(ctx.kube, namespace, name, instance)
    reports = await _read_hosts(ctx, namespace, pods)
    SCALE_UNREAD_PODS.labels(namespace, name, instance).set(sum(1 for r in reports.values() if r is None))
    read = {pod: report for pod, report in reports.items() if report is not None and not report.get("draining")}
    auto = app.spec.scale.autoscale
    found = loads(read.values(), target_concurrency=app.spec.concurrency.http_per_instance or auto.target_concurrency,
                  utilization=auto.target_utilization_percent / 100.0)
    now = time.monotonic()
    scaler.record(now, found)
    decision = scaler.decide(now, current, len(read))
    SCALE_DESIRED.labels(namespace, name, instance).set(decision.desired)
    if decision.desired == current:
        return
    if decision.desired < current and os.environ.get(DELETION_COST_ENV, "true").lower() != "false":
        await _mark_victims(ctx, namespace, pods, read, decision.desired)
    stored = await ctx.kube.scale("Deployment", namespace, instance, decision.desired)
    if stored:
        stored.setdefault("kind", "Deployment")
        ctx.store.put(stored)
    SCALE_DECISIONS.labels("out" if decision.desired > current else "in", decision.mode).inc()
    logger.info("scaled %s/%s instance %s from %d to %d: %s", namespace, name, instance, current,
                decision.desired, decision.reason)
    await _record(ctx, namespace, name, instance, current, decision)


async def _read_hosts(ctx: Context, namespace: str, pods: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Pod name -> its host's report, None when it did not answer; only Ready pods are asked."""
    ready = [(body, pod_readiness(body)) for body in pods]
    ready = [(body, pod) for body, pod in ready if pod.ready and pod.ip]
    if not ready:
        return {}
    async with aiohttp.ClientSession() as session:
        async def read(body: dict[str, Any], ip: str) -> dict[str, Any] | None:
            secret = keys_secret_of(body)
            key = master_key_in(ctx.store.get("Secret", namespace, secret)) if secret else None
            return await read_concurrency(session, ip, key, READ_TIMEOUT)
        answers = await asyncio.gather(*(read(body, pod.ip) for body, pod in ready if pod.ip))
    return {pod.pod: answer for (_, pod), answer in zip(ready, answers)}


def _work(report: dict[str, Any] | None) -> float:
    """In-flight + queued invocations of one host (0 for a host that did not answer)."""
    total = 0.0
    for entry in ((report or {}).get("functions") or {}).values():
        if isinstance(entry, dict):
            for field in ("inFlight", "queued"):
                value = entry.get(field)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    total += max(value, 0)
    return total


async def _mark_victims(ctx: Context, namespace: str, pods: list[dict[str, Any]],
                        read: dict[str, dict[str, Any]], desired: int) -> None:
    """Lowest deletion cost on the Ready pods with the least work, as many as the ReplicaSet will
    remove after the pods it removes first anyway (not Ready ones); a stale mark elsewhere goes."""
    ready = [pod for pod in pods if pod_readiness(pod).ready]
    leaving = max(0, len(pods) - desired - (len(pods) - len(ready)))
    ranked = sorted(ready, key=lambda pod: (_work(read.get(pod["metadata"]["name"])), pod["metadata"]["name"]))
    victims = {pod["metadata"]["name"] for pod in ranked[:leaving]}
    for pod in ready:
        meta = pod["metadata"]
        marked = (meta.get("annotations") or {}).get(ANNOTATION_DELETION_COST)
        if meta["name"] in victims and marked != VICTIM_COST:
            await ctx.kube.annotate_pod(namespace, meta["name"], {ANNOTATION_DELETION_COST: VICTIM_COST})
        elif meta["name"] not in victims and marked is not None:
            await ctx.kube.annotate_pod(namespace, meta["name"], {ANNOTATION_DELETION_COST: None})
    if victims:
        logger.info("scale-in of %s: marked %s (least in-flight work)", namespace, ", ".join(sorted(victims)))


async def _record(ctx: Context, namespace: str, name: str, instance: str, current: int, decision: Decision) -> None:
    body = ctx.store.get("FunctionApp", namespace, name)
    if body is None:
        return
    status = FunctionAppStatus.model_validate(body.get("status") or {})
    if instance not in status.instances:
        return
    scale = ScaleStatus(desired_replicas=decision.desired, current_replicas=current, function=decision.function,
                        metric=decision.metric, value=decision.value, mode=decision.mode, reason=decision.reason[:500],
                        last_decision_time=datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                        .replace("+00:00", "Z"))
    status.instances[instance].scale = scale
    await write_status(ctx.kube, ctx.store, body, status, patch={"instances": {instance: {"scale": scale.wire()}}})
    verb = "ScaledOut" if decision.desired > current else "ScaledIn"
    await ctx.kube.event(body, verb, f"instance {instance}: {current} -> {decision.desired} replicas ({decision.mode}): "
                                     f"{decision.reason}")
