"""The host's concurrency control: static limits (Azure's default) or dynamic concurrency.

Every invocation is reported here (`started` / `completed`) whatever its trigger, so per-function
in-flight counts, completions and latency exist in both modes and are published on
`GET /admin/concurrency` and `/metrics`. Queue listeners ask `available()` how many messages to
fetch; HTTP invocations wait in `admit()` for a slot of their function (dynamic concurrency, or a
static per-function `maximumConcurrency`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily

from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.app.scaling_options import ScalingOptions
from funcplane_host.concurrency.manager import (
    ConcurrencyManager,
    FunctionConcurrency,
    ThrottleManager,
    ThrottleState,
)
from funcplane_host.concurrency.snapshot import WRITE_INTERVAL, BlobSnapshotStore
from funcplane_host.concurrency.throttles import (
    CHANNEL_SAMPLE_INTERVAL,
    CPU_SAMPLE_INTERVAL,
    LOOP_TICK,
    ChannelLatencyThrottle,
    CpuThrottle,
    LoopLagThrottle,
    effective_cores,
    run_every,
)
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_protocol import capabilities as caps

if TYPE_CHECKING:
    from funcplane_host.services import ExtensionServices

logger = logging.getLogger("Host.Concurrency")
# /admin/concurrency field -> the Prometheus gauge that carries it, labelled by function.
FUNCTION_GAUGES = {
    "concurrency": ("funcplane_function_concurrency_limit", "Current concurrency limit (-1: unbounded)"),
    "inFlight": ("funcplane_function_in_flight", "Invocations executing"),
    "queued": ("funcplane_function_queued", "Invocations waiting for a concurrency slot"),
    "completionsPerSecond": ("funcplane_function_completions_per_second", "Completions per second over 10 s"),
    "avgLatencyMs": ("funcplane_function_latency_milliseconds", "Mean latency over 10 s"),
    "saturated": ("funcplane_function_saturated", "1 when the saturation signal is on"),
    "backlog": ("funcplane_queue_length", "Approximate messages in the function's queue"),
}
ADMISSION_RECHECK = 0.25  # a waiting caller re-reads a limit that may have grown meanwhile


def queue_lookahead(limit: int) -> int:
    """Messages a dynamic queue listener holds beyond the limit: half of it (Azure's
    newBatchThreshold ratio), at least 1, at most a receive's 32."""
    return min(32, max(1, limit // 2))
UNBOUNDED = -1


class HostConcurrency:
    def __init__(self, host: ExtensionServices, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.options: ScalingOptions = host.config.scaling
        self.dynamic = self.options.concurrency.dynamic_concurrency_enabled
        self.cores = effective_cores()
        self.clock = clock
        self.cpu = CpuThrottle(self._pids, self.options.concurrency.cpu_threshold, self.cores)
        self.loop_lag = LoopLagThrottle()
        self.channels = ChannelLatencyThrottle()
        saturation = self.options.concurrency.saturation_throttle_enabled
        self.throttles = ThrottleManager(
            {"cpu": self.cpu.state, "eventLoop": self.loop_lag.state, "workerChannel": self.channels.state}, clock,
            # With the saturation signal, full CPU and slow worker channels (a GIL-bound worker
            # answers late because it is busy) say "no headroom", not "overloaded": latency
            # decides decreases. A starved host event loop stays an overload.
            busy_only=frozenset({"cpu", "workerChannel"}) if saturation else frozenset())
        self.manager = ConcurrencyManager(
            self.throttles, clock, maximum=self.options.concurrency.maximum_function_concurrency,
            saturation_enabled=saturation)
        self._static: dict[str, FunctionConcurrency] = {}
        self._freed: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.queue_lengths: dict[str, int] = {}  # function -> approximate backlog (queue listeners)
        # Demand that is no single function's (a durable task hub's pending work): each source gives
        # entries shaped like a queue function's, published beside the functions for the scaler.
        self.demand_sources: list[Callable[[], dict[str, dict[str, Any]]]] = []
        self.snapshots: BlobSnapshotStore | None = None
        self.snapshot_info: dict[str, Any] = {"enabled": False, "applied": {}, "lastWritten": None}
        concurrency = self.options.concurrency
        connection = host.environment.get("AzureWebJobsStorage")
        if self.dynamic and concurrency.snapshot_persistence_enabled:
            if connection:
                self.snapshots = BlobSnapshotStore(connection, host.settings.host_id)
                self.snapshot_info.update(enabled=True, **self.snapshots.as_json())
            else:
                self.snapshot_info["reason"] = "AzureWebJobsStorage is not set: learned levels are not kept"

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if not self.dynamic:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(run_every(CPU_SAMPLE_INTERVAL, self.cpu.sample)),
            loop.create_task(run_every(LOOP_TICK, self.loop_lag.tick)),
            loop.create_task(run_every(CHANNEL_SAMPLE_INTERVAL, self._probe_channels)),
        ]
        if self.snapshots is not None:
            self._tasks.append(loop.create_task(self._keep_snapshots()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.snapshots is not None:
            await self._write_snapshot()  # what this pod learned last survives it
            await self.snapshots.close()

    async def _keep_snapshots(self) -> None:
        """Apply the slot's snapshot once, then write the learned levels every 10 s when changed."""
        assert self.snapshots is not None
        found = await self.snapshots.read()
        if found is not None:
            levels, snapshot_cores = found
            for name in levels:
                definition = self.host.catalog.find(name)
                if definition is not None:
                    self.status_of(definition)  # its per-function maximum applies to the snapshot too
            applied = self.manager.apply_snapshot(levels, snapshot_cores, self.cores)
            self.snapshot_info.update(applied=applied, snapshotCores=snapshot_cores)
            logger.info("applied concurrency snapshot %s: %s", self.snapshots.location, applied)
        while True:
            await asyncio.sleep(WRITE_INTERVAL)
            await self._write_snapshot()

    async def _write_snapshot(self) -> None:
        assert self.snapshots is not None
        try:
            if await self.snapshots.write(self.manager.snapshot(), self.cores):
                self.snapshot_info["lastWritten"] = time.time()
        except Exception as error:  # storage trouble must not stop the host; the next round retries
            logger.warning("writing concurrency snapshot %s failed: %s", self.snapshots.location, error)
        self.snapshot_info["writer"] = self.snapshots.as_json()["writer"]

    def _pids(self) -> Iterator[int]:
        yield os.getpid()
        for pool in self.host.pools.values():
            for slot in pool.slots:
                if slot.status.pid is not None:
                    yield slot.status.pid

    async def _probe_channels(self) -> None:
        live = set()
        for pool in list(self.host.pools.values()):
            for channel in list(pool.ready):
                if not caps.is_enabled(channel.capabilities, caps.WORKER_STATUS):
                    continue
                live.add(channel.worker_id)
                started = time.perf_counter()
                try:
                    await channel.request(
                        rpc.StreamingMessage(request_id=channel.request_id,
                                             worker_status_request=rpc.WorkerStatusRequest()),
                        "worker_status_response", 5.0)
                except Exception:  # a worker that does not answer is the supervisor's business
                    continue
                self.channels.record(channel.worker_id, time.perf_counter() - started)
        self.channels.forget_others(live)

    # ---- limits --------------------------------------------------------------------------

    def _overrides(self, name: str) -> Any:
        return self.options.for_function(name)

    def static_limit(self, definition: FunctionDefinition) -> int:
        """The most invocations the function may run at once without dynamic concurrency."""
        overrides = self._overrides(definition.name)
        if definition.trigger_type.lower() == "queuetrigger":
            batch, threshold = self.queue_batch(definition.name)
            limit = batch + threshold
            return min(limit, overrides.maximum_concurrency) if overrides.maximum_concurrency else limit
        return overrides.maximum_concurrency or UNBOUNDED

    def queue_batch(self, name: str) -> tuple[int, int]:
        """(batchSize, newBatchThreshold) of one queue function, overrides applied."""
        queues, overrides = self.options.queues, self._overrides(name)
        batch = overrides.batch_size or queues.batch_size
        threshold = overrides.new_batch_threshold
        if threshold is None:
            threshold = queues.new_batch_threshold
        if threshold is None:
            threshold = batch // 2 * self.host.settings.worker_process_count
        return batch, threshold

    def status_of(self, definition: FunctionDefinition) -> FunctionConcurrency:
        name = definition.name
        if self.dynamic:
            known = self.manager.functions.get(name)
            if known is None:
                known = self.manager.function(name, self._overrides(name).maximum_concurrency)
            return known
        status = self._static.get(name)
        if status is None:
            status = self._static[name] = FunctionConcurrency(name, self.clock, UNBOUNDED, False)
            status.current = self.static_limit(definition)
        return status

    def available(self, definition: FunctionDefinition, pending: int) -> int:
        """Messages a queue listener may fetch now; 0 while the host is throttled.

        With dynamic concurrency the listener holds up to `lookahead` messages beyond the learned
        limit, waiting in `admit` for a slot, and fetches once that many are free: a freed slot
        takes a message already in hand instead of waiting out a receive round trip (on a
        CPU-bound function that idles a core per completion), and receives come in batches.
        """
        status = self.status_of(definition)
        if self.dynamic:
            self.manager.get_status(definition.name)
            if self.manager.throttled():
                return 0
            ahead = queue_lookahead(status.current)
            room = status.current + ahead - max(pending, status.outstanding)
            return room if room >= ahead else 0
        batch, threshold = self.queue_batch(definition.name)
        pending = max(pending, status.outstanding)
        # Azure: fetch a batch, then fetch again once the in-flight count falls to the threshold.
        return min(batch, status.current - pending) if pending <= threshold else 0

    async def admit(self, definition: FunctionDefinition) -> None:
        """Wait for a slot of an HTTP function (dynamic limit, or a static per-function one), or of
        a queue function whose listener fetched ahead (dynamic)."""
        status = self.status_of(definition)
        if not self.dynamic and status.current == UNBOUNDED:
            return
        if self._may_start(definition, status):
            return
        freed = self._freed.setdefault(definition.name, asyncio.Event())
        status.queued += 1
        try:
            while not self._may_start(definition, status):
                freed.clear()
                try:
                    await asyncio.wait_for(freed.wait(), ADMISSION_RECHECK)
                except TimeoutError:
                    pass
        finally:
            status.queued -= 1

    def _may_start(self, definition: FunctionDefinition, status: FunctionConcurrency) -> bool:
        if self.dynamic:
            self.manager.get_status(definition.name)
            # While throttled, admission waits (bounded by maxOutstandingRequests) rather than fails.
            return not self.manager.throttled() and status.outstanding < status.current
        return status.outstanding < status.current

    # ---- invocation events ---------------------------------------------------------------

    async def enter(self, definition: FunctionDefinition) -> None:
        """Count an invocation as started; HTTP ones (and, with dynamic concurrency, queue
        messages fetched ahead) first wait in `admit` for a slot."""
        if definition.http is not None or (self.dynamic and definition.trigger_type.lower() == "queuetrigger"):
            await self.admit(definition)
        self.status_of(definition).started()

    def abandon(self, definition: FunctionDefinition) -> None:
        """An entered invocation that never ran (no worker): free its slot without a completion."""
        self.status_of(definition).outstanding -= 1
        self._wake(definition.name)

    def completed(self, definition: FunctionDefinition, latency: float) -> None:
        self.status_of(definition).completed_one(latency)
        self._wake(definition.name)

    def _wake(self, name: str) -> None:
        freed = self._freed.get(name)
        if freed is not None:
            freed.set()

    # ---- what the scaler reads -----------------------------------------------------------

    def functions_json(self) -> dict[str, Any]:
        functions = {}
        for definition in self.host.catalog.definitions.values():
            if definition.disabled or definition.trigger_type.lower() not in ("httptrigger", "queuetrigger"):
                continue
            status = self.status_of(definition)
            entry = {
                "trigger": "queue" if definition.http is None else "http",
                "concurrency": status.current,
                "inFlight": status.outstanding,
                "queued": status.queued,
                "completed": status.completed,
                "completionsPerSecond": round(status.completions_per_second(), 3),
                "avgLatencyMs": round(status.recent_latency() * 1000, 3),
                "p99LatencyMs": round(status.recent_latency(0.99) * 1000, 3),
                "saturated": status.saturated,
                "queueEstimate": round(status.queue_estimate, 3),
                "adjustments": status.adjustments,
            }
            if entry["trigger"] == "queue":
                entry["backlog"] = self.queue_lengths.get(definition.name)
                # Where the backlog is, for a scaler that reads it while no host runs (scale from
                # zero): the binding's queueName as written (%Setting% unresolved) and the name of
                # the connection setting (never its value).
                entry["queueName"] = definition.trigger.get("queueName")
                entry["connection"] = definition.trigger.get("connection") or "AzureWebJobsStorage"
            functions[definition.name] = entry
        for source in self.demand_sources:
            functions.update(source())
        return functions

    def as_json(self) -> dict[str, Any]:
        throttle = self.throttles.status
        return {
            "hostId": self.host.settings.host_id,
            "cores": self.cores,
            "dynamic": self.dynamic,
            "maximumFunctionConcurrency": self.options.concurrency.maximum_function_concurrency,
            "throttles": {
                "state": throttle.state.value if self.dynamic else ThrottleState.DISABLED.value,
                "enabled": list(throttle.enabled),
                "busy": throttle.busy if self.dynamic else False,
                "consecutive": throttle.consecutive,
                "cpuPercent": None if self.cpu.load is None else round(self.cpu.load, 1),
                "eventLoopMissedShare": round(self.loop_lag.missed_share, 3),
            },
            "snapshot": self.snapshot_info,
            "functions": self.functions_json(),
            "draining": self.host.draining,
        }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Prometheus collector: the same per-function figures as /admin/concurrency."""
        families = {key: GaugeMetricFamily(name, description, labels=["function"])
                    for key, (name, description) in FUNCTION_GAUGES.items()}
        for name, entry in self.functions_json().items():
            for key, family in families.items():
                value = entry.get(key)
                if value is not None:
                    family.add_metric([name], float(value))
        throttled = GaugeMetricFamily(
            "funcplane_host_throttled", "1 while a host throttle (CPU, event loop, worker channel) is on")
        throttled.add_metric([], 1.0 if self.dynamic and self.throttles.status.state is ThrottleState.ENABLED else 0.0)
        yield from families.values()
        yield throttled
