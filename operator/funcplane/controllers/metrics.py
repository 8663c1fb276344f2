"""The operator's Prometheus metrics and the context manager that handlers wrap reconciles in.

Handlers call ``with observe_reconcile("FunctionApp"): ...`` (inside sync or async handlers alike);
the block is counted by kind and result, timed, and its exceptions are counted by type and
re-raised untouched so that kopf's retry semantics are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import kopf
from aiohttp import web
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, disable_created_metrics,
                               generate_latest)

logger = logging.getLogger("funcplane.reconcile")
# The *_created series double every counter's output and no dashboard of ours reads them.
disable_created_metrics()

NAMESPACE = "funcplane"

RECONCILES = Counter(
    "reconciles", "Reconciles finished, by kind and result (success, retry, error, cancelled).",
    ["kind", "result"], namespace=NAMESPACE)
RECONCILE_ERRORS = Counter(
    "reconcile_errors", "Reconciles that raised, by kind and exception type.",
    ["kind", "error"], namespace=NAMESPACE)
RECONCILE_DURATION = Histogram(
    "reconcile_duration_seconds", "Wall time of one reconcile, by kind.", ["kind"], namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
RECONCILES_IN_PROGRESS = Gauge(
    "reconciles_in_progress", "Reconciles running right now, by kind.", ["kind"], namespace=NAMESPACE)
LEADER = Gauge(
    "leader", "1 while this process holds the leader Lease and may reconcile, else 0.", namespace=NAMESPACE)
LEASE_RENEW_FAILURES = Counter(
    "lease_renew_failures", "Lease renewals that failed (the API refused, timed out or the lease moved).",
    namespace=NAMESPACE)

SCALE_DECISIONS = Counter(
    "scale_decisions", "Replica changes the scaler wrote, by direction (out, in) and mode (stable, panic).",
    ["direction", "mode"], namespace=NAMESPACE)
SCALE_DESIRED = Gauge(
    "scale_desired_replicas", "Replicas the scaler last decided, per autoscaled instance.",
    ["namespace", "app", "instance"], namespace=NAMESPACE)
SCALE_UNREAD_PODS = Gauge(
    "scale_unread_pods", "Ready pods whose host did not report its concurrency in the last tick.",
    ["namespace", "app", "instance"], namespace=NAMESPACE)

SCALE_QUEUE_READ_FAILURES = Counter(
    "scale_queue_read_failures", "Queue lengths the scaler could not read itself (no pod to ask), by function.",
    ["namespace", "app", "function"], namespace=NAMESPACE)


def result_of(error: BaseException | None) -> str:
    """The `result` label for a reconcile that ended with `error` (None: it succeeded)."""
    if error is None:
        return "success"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, kopf.TemporaryError):
        return "retry"
    return "error"


class observe_reconcile:  # noqa: N801 - used like a function: `with observe_reconcile(kind):`
    """Count, time and classify one reconcile of `kind`; exceptions propagate unchanged."""

    def __init__(self, kind: str) -> None:
        if not kind:
            raise ValueError("observe_reconcile(kind): kind must be a non-empty resource kind, e.g. 'FunctionApp'")
        self.kind = kind
        self._started = 0.0
        self._started_wall = 0.0

    def __enter__(self) -> observe_reconcile:
        RECONCILES_IN_PROGRESS.labels(self.kind).inc()
        self._started = time.perf_counter()
        self._started_wall = time.time()
        return self

    def __exit__(self, error_type: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        seconds = time.perf_counter() - self._started
        result = result_of(error)
        RECONCILE_DURATION.labels(self.kind).observe(seconds)
        RECONCILES_IN_PROGRESS.labels(self.kind).dec()
        RECONCILES.labels(self.kind, result).inc()
        logger.debug("reconcile finished", extra={
            "kind": self.kind, "result": result, "started": self._started_wall, "seconds": round(seconds, 4)})
        if error is not None and not isinstance(error, asyncio.CancelledError):
            RECONCILE_ERRORS.labels(self.kind, type(error).__name__).inc()


# A health check returns (healthy, details); details are served as the JSON body.
HealthCheck = Callable[[], tuple[bool, dict[str, object]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _health(check: HealthCheck) -> Handler:
    async def respond(_: web.Request) -> web.Response:
        healthy, details = check()
        return web.json_response({"healthy": healthy, **details}, status=200 if healthy else 503)
    return respond


async def serve(routes: dict[str, Handler], *, host: str, port: int) -> web.AppRunner:
    """Serve `routes` (GET path -> handler) on host:port from this event loop; returns the runner to close."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        await runner.cleanup()
        raise SystemExit(f"cannot listen on {host}:{port} for {', '.join(routes)}: {error.strerror}; "
                         "choose another port (--metrics-port / --health-port)") from error
    return runner


async def serve_endpoints(*, host: str, metrics_port: int, health_port: int, health: HealthCheck) -> list[web.AppRunner]:
    """/metrics on `metrics_port`, /healthz on `health_port` (the same port may serve both)."""
    metrics_routes: dict[str, Handler] = {"/metrics": _metrics}
    health_routes: dict[str, Handler] = {"/healthz": _health(health)}
    if metrics_port == health_port:
        return [await serve({**metrics_routes, **health_routes}, host=host, port=metrics_port)]
    return [await serve(metrics_routes, host=host, port=metrics_port),
            await serve(health_routes, host=host, port=health_port)]
