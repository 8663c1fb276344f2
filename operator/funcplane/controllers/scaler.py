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
import base64
import contextlib
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp
from azure.storage.queue.aio import QueueClient

from funcplane.api.base import Setting
from funcplane.api.functionapp import FunctionApp, FunctionAppStatus, QueueRef, ScaleStatus
from funcplane.kube.status import write_status
from funcplane.render.names import ANNOTATION_DELETION_COST, LABEL_SLICE, SLICE_MAIN
from funcplane.scale.decide import Autoscaler, Decision, settings_for
from funcplane.scale.demand import QueueSource, loads, queue_sources, resolve_setting_references
from funcplane.swap.journal import PRE_FLIP
from funcplane.swap.observe import instance_pods, keys_secret_of, master_key_in, pod_readiness, read_concurrency

from .context import SCALE, Context
from .metrics import SCALE_DECISIONS, SCALE_DESIRED, SCALE_QUEUE_READ_FAILURES, SCALE_UNREAD_PODS, observe_reconcile

logger = logging.getLogger("funcplane.scale")
# The storage SDK logs every HTTP exchange at INFO; the scaler reports what matters itself.
logging.getLogger("azure").setLevel(logging.WARNING)

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
    role = next((slot for slot, pointer in app.status.slots.items() if pointer.instance == instance), "")
    if role != scaler.role:
        scaler.restart(time.monotonic(), role)

    pods = await instance_pods(ctx.kube, namespace, name, instance)
    reports = await _read_hosts(ctx, namespace, pods)
    SCALE_UNREAD_PODS.labels(namespace, name, instance).set(sum(1 for r in reports.values() if r is None))
    read = {pod: report for pod, report in reports.items() if report is not None and not report.get("draining")}
    scaler.queues.update(queue_sources(read.values()))
    if not scaler.queues:  # a new leader with no pod to ask: the last decision recorded them
        recorded = app.status.instances[instance].scale if instance in app.status.instances else None
        scaler.queues = {function: QueueSource(ref.queue_name, ref.connection)
                         for function, ref in (recorded.queues if recorded else {}).items()}
    lengths = await _queue_lengths(ctx, app, instance, scaler.queues) if not read and scaler.queues else None
    auto = app.spec.scale.autoscale
    found = loads(read.values(), target_concurrency=app.spec.concurrency.http_per_instance or auto.target_concurrency,
                  utilization=auto.target_utilization_percent / 100.0, queue_lengths=lengths,
                  known_limits=scaler.last_per_pod())
    now = time.monotonic()
    scaler.record(now, found)
    decision = scaler.decide(now, current, len(read))
    SCALE_DESIRED.labels(namespace, name, instance).set(decision.desired)
    if decision.desired == current:
        return
    if decision.desired < current and _swap_source(ctx, namespace, name, instance):
        return  # the swap engine matched it to the target's capacity for the flip: no scale-in now
    if decision.desired < current and os.environ.get(DELETION_COST_ENV, "true").lower() != "false":
        await _mark_victims(ctx, namespace, pods, read, decision.desired)
    stored = await ctx.kube.scale("Deployment", namespace, instance, decision.desired)
    if stored:
        stored.setdefault("kind", "Deployment")
        ctx.store.put(stored)
    SCALE_DECISIONS.labels("out" if decision.desired > current else "in", decision.mode).inc()
    logger.info("scaled %s/%s instance %s from %d to %d: %s", namespace, name, instance, current,
                decision.desired, decision.reason)
    await _record(ctx, namespace, name, instance, current, decision, scaler.queues)


def _swap_source(ctx: Context, namespace: str, name: str, instance: str) -> bool:
    """The instance is the source of a swap that has not flipped yet."""
    journal = ctx.swap_engine.journals.cached(namespace, name)
    record = journal.current if journal is not None else None
    return record is not None and record.source_instance == instance and record.phase in PRE_FLIP


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


async def _setting_values(ctx: Context, namespace: str, settings: list[Setting]) -> dict[str, str]:
    """Values of app settings, Secret and ConfigMap references read (a missing one is left out)."""
    values: dict[str, str] = {}
    for setting in settings:
        if setting.value is not None:
            values[setting.name] = setting.value
        elif setting.value_from is not None:
            ref = setting.value_from.secret_key_ref or setting.value_from.config_map_key_ref
            kind = "Secret" if setting.value_from.secret_key_ref else "ConfigMap"
            body = await ctx.kube.get(kind, namespace, ref.name) if ref else None
            if body is not None and ref is not None:
                if kind == "Secret" and ref.key in (body.get("data") or {}):
                    values[setting.name] = base64.b64decode(body["data"][ref.key]).decode()
                elif kind == "ConfigMap" and ref.key in (body.get("data") or {}):
                    values[setting.name] = body["data"][ref.key]
    return values


async def _queue_lengths(ctx: Context, app: FunctionApp, instance: str,
                         queues: dict[str, QueueSource]) -> dict[str, int]:
    """With no host to ask (scaled to zero): each queue's approximate length, read by the operator
    with the connection setting the instance runs with (the app's settings, then the instance's)."""
    record = app.status.instances.get(instance)
    settings = [*app.spec.settings, *(record.content.settings if record else [])]
    values = await _setting_values(ctx, app.metadata["namespace"], settings)
    lengths: dict[str, int] = {}
    for function, source in queues.items():
        connection = values.get(source.connection) or values.get(f"AzureWebJobs{source.connection}")
        try:
            if not connection:
                raise ValueError(f"app setting {source.connection!r} is not set")
            queue = resolve_setting_references(source.queue_name, values)
            async with QueueClient.from_connection_string(connection, queue) as client:
                properties = await client.get_queue_properties()
            lengths[function] = int(properties.approximate_message_count or 0)
        except Exception as error:  # noqa: BLE001 - an unreadable queue must not stop the other instances
            SCALE_QUEUE_READ_FAILURES.labels(app.metadata["namespace"], app.metadata["name"], function).inc()
            logger.warning("scaler: cannot read queue of %s/%s function %s: %s: %s", app.metadata["namespace"],
                           app.metadata["name"], function, type(error).__name__, str(error)[:300])
    return lengths


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
    # Only the main slice's ReplicaSet shrinks (a gray slice keeps its share of spec.replicas).
    pods = [pod for pod in pods if (pod["metadata"].get("labels") or {}).get(LABEL_SLICE, SLICE_MAIN) == SLICE_MAIN]
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


async def _record(ctx: Context, namespace: str, name: str, instance: str, current: int, decision: Decision,
                  queues: dict[str, QueueSource]) -> None:
    body = ctx.store.get("FunctionApp", namespace, name)
    if body is None:
        return
    status = FunctionAppStatus.model_validate(body.get("status") or {})
    if instance not in status.instances:
        return
    scale = ScaleStatus(desired_replicas=decision.desired, current_replicas=current, function=decision.function,
                        metric=decision.metric, value=decision.value, mode=decision.mode, reason=decision.reason[:500],
                        last_decision_time=datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                        .replace("+00:00", "Z"),
                        queues={function: QueueRef(queue_name=source.queue_name, connection=source.connection)
                                for function, source in queues.items()})
    status.instances[instance].scale = scale
    await write_status(ctx.kube, ctx.store, body, status,
                       patch={"instances": {instance: {"scale": scale.wire()}}})
    verb = "ScaledOut" if decision.desired > current else "ScaledIn"
    await ctx.kube.event(body, verb, f"instance {instance}: {current} -> {decision.desired} replicas "
                                     f"({decision.mode}): {decision.reason}")
