"""Worker supervision: N processes per language, start-up timeout, health checks, restart with
exponential backoff after a crash, and load spreading across the ready processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable, Mapping

from funcplane_host.app.catalog import FunctionCatalog
from funcplane_host.app.functions import FunctionDefinition
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_protocol import capabilities as caps
from funcplane_host.workers.metadata import load_request_for
from funcplane_host.workers.channel import WorkerChannel, WorkerUnavailable
from funcplane_host.workers.config import WorkerConfigError, WorkerDescription
from funcplane_host.workers.process import WorkerProcess

logger = logging.getLogger("funcplane.host.workers")
HOST_VERSION = "4.0.0-funcplane"


@dataclass(frozen=True)
class SupervisionPolicy:
    backoff_initial: float = 1.0
    # Short enough that a worker that crashes now and then is back within seconds.
    backoff_max: float = 10.0
    # A process that stayed ready this long resets the backoff: its next crash restarts it at once.
    healthy_reset_after: float = 30.0
    status_interval: float = 10.0
    status_timeout: float = 30.0
    terminate_grace: float = 5.0

    @classmethod
    def from_host_json(cls, options: dict[str, float]) -> SupervisionPolicy:
        """Apply host.json funcplane.workerHealth (already parsed to seconds)."""
        names = {"statusInterval": "status_interval", "statusTimeout": "status_timeout",
                 "restartBackoffInitial": "backoff_initial", "restartBackoffMax": "backoff_max"}
        return cls(**{names[key]: value for key, value in options.items()})



class RestartBackoff:
    """Delay before a process is restarted: doubling per crash in a row, capped, and counted
    afresh once a process stayed ready for `healthy_reset_after`."""

    def __init__(self, policy: SupervisionPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def delay(self, ready_for: float, deliberate: bool = False) -> float:
        """After a process that was ready for `ready_for` seconds (0 if never) ended; a
        deliberate replacement (the host recycled a healthy process) restarts at once."""
        policy = self.policy
        if ready_for >= policy.healthy_reset_after:
            self.failures = 0
        if deliberate:
            return 0.0
        self.failures += 1
        return min(policy.backoff_max, policy.backoff_initial * (2 ** (self.failures - 1)))


class HostServices(Protocol):
    """What a worker pool needs from the host."""

    grpc_port: int
    app_root: Path
    environment: Mapping[str, str]
    runtime_version: str | None
    catalog: FunctionCatalog

    def register_channel(self, channel: WorkerChannel) -> None: ...
    def unregister_channel(self, channel: WorkerChannel) -> None: ...
    def on_rpc_log(self, channel: WorkerChannel, log: Any) -> None: ...
    def on_worker_metadata(self, language: str, response: Any, channel: WorkerChannel) -> None: ...
    def on_worker_restart(self, language: str) -> None: ...


class WorkerStartError(RuntimeError):
    """A worker process failed to come up (exit, timeout, init failure)."""


@dataclass
class SlotStatus:
    worker_id: str = ""
    pid: int | None = None
    state: str = "starting"  # starting | ready | restarting | stopped | failed
    restarts: int = 0
    last_error: str | None = None
    ready_since: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class WorkerSlot:
    """Keeps one worker process of a pool alive across crashes."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.status = SlotStatus()
        self.channel: WorkerChannel | None = None
        self.process: WorkerProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Set when the host replaces a healthy process on purpose (a function timed out in it).
        self._recycling = False
        # Start-up attempts that failed since this slot last had a ready process.
        self.start_failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"worker-slot-{self.pool.description.name}-{self.index}")

    async def _run(self) -> None:
        backoff = RestartBackoff(self.pool.policy)
        while not self._stopping:
            self._recycling = False
            try:
                await self._run_once()
            except WorkerConfigError as error:
                # Configuration problems do not heal by restarting.
                self.status.state = "failed"
                self.status.last_error = str(error)
                self.start_failures += 1
                self.pool.notify_change()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any start-up or run failure: record, then restart
                self.status.last_error = str(error)
                logger.warning("worker %s failed: %s", self.status.worker_id, error)
            if self._stopping:
                break
            ready_since = self.status.ready_since
            if ready_since is None:
                self.start_failures += 1
            ready_for = time.monotonic() - ready_since if ready_since is not None else 0.0
            delay = backoff.delay(ready_for, deliberate=self._recycling)
            self.status.state = "restarting"
            self.status.restarts += 1
            self.status.ready_since = None
            self.pool.services.on_worker_restart(self.pool.description.language)
            self.pool.notify_change()
            logger.warning(
                "restarting %s worker slot %d in %.1fs (restart #%d): %s",
                self.pool.description.language, self.index, delay, self.status.restarts, self.status.last_error,
            )
            await asyncio.sleep(delay)
        self.status.state = "stopped"

    def recycle(self, channel: WorkerChannel, reason: str) -> bool:
        """Replace this slot's process now (as Azure does after a function timeout in an
        out-of-process worker): out of rotation at once, its other invocations fail fast, killed,
        restarted without back-off. False if `channel` is no longer this slot's process."""
        if self.channel is not channel or channel.failure is not None or self.process is None:
            return False
        self._recycling = True
        self.status.last_error = reason
        self.pool.remove_ready(channel)
        others = len(channel.pending_invocations())
        logger.error("restarting %s worker %s (pid %s): %s; failing its %d other in-flight invocation(s)",
                     self.pool.description.language, channel.worker_id, channel.pid, reason, others)
        channel.fail(reason)
        self.process.kill()
        return True

    async def _run_once(self) -> None:
        pool = self.pool
        services = pool.services
        worker_id = str(uuid.uuid4())
        channel = WorkerChannel(worker_id, pool.description.language, services.on_rpc_log)
        process = WorkerProcess(pool.description, worker_id)
        self.channel, self.process = channel, process
        self.status.worker_id, self.status.state = worker_id, "starting"
        services.register_channel(channel)
        exit_wait: asyncio.Task[int] | None = None
        try:
            await process.start(services.grpc_port, services.environment, services.runtime_version, services.app_root)
            channel.pid = process.pid
            self.status.pid = process.pid
            exit_wait = asyncio.create_task(process.wait())
            await self._race(exit_wait, self._bootstrap(channel), pool.description.init_timeout, "start-up")
            self.status.state = "ready"
            self.status.ready_since = time.monotonic()
            self.status.last_error = None
            self.start_failures = 0
            pool.add_ready(channel)
            await self._watch(channel, exit_wait)
        finally:
            pool.remove_ready(channel)
            if exit_wait is not None and not exit_wait.done():
                process.kill()
                try:
                    await asyncio.wait_for(asyncio.shield(exit_wait), 5.0)
                except TimeoutError:
                    pass
            reason = process.exit_summary() if process.process else (self.status.last_error or "worker stopped")
            if channel.failure is None:
                channel.fail(reason)
            services.unregister_channel(channel)

    async def _race(self, exit_wait: asyncio.Task[int], work: Any, timeout: float, what: str) -> None:
        work_task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({exit_wait, work_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if work_task in done:
                work_task.result()
                return
        finally:
            # Also when the slot itself is cancelled (the host stops): a start-up left running would
            # fail later with nobody to read its error.
            work_task.cancel()
        if exit_wait in done:
            raise WorkerStartError(f"{self.process.exit_summary()} during {what}")  # type: ignore[union-attr]
        raise WorkerStartError(
            f"worker {self.status.worker_id} did not finish {what} within {timeout:.0f}s"
            " (processOptions.initializationTimeout)"
        )

    async def _bootstrap(self, channel: WorkerChannel) -> None:
        pool = self.pool
        services = pool.services
        description = pool.description
        timeout = description.init_timeout
        await channel.wait_connected()
        init = await channel.request(
            rpc.StreamingMessage(
                request_id=channel.request_id,
                worker_init_request=rpc.WorkerInitRequest(
                    host_version=HOST_VERSION,
                    capabilities=caps.HOST_CAPABILITIES,
                    worker_directory=str(description.directory),
                    function_app_directory=str(services.app_root),
                ),
            ),
            "worker_init_response",
            timeout,
        )
        if init.result.status != rpc.StatusResult.Success:
            raise WorkerStartError(f"worker init failed: {_status_text(init.result)}")
        channel.capabilities = dict(init.capabilities)
        if description.worker_indexing:
            metadata = await channel.request(
                rpc.StreamingMessage(
                    request_id=channel.request_id,
                    functions_metadata_request=rpc.FunctionsMetadataRequest(
                        function_app_directory=str(services.app_root)
                    ),
                ),
                "function_metadata_response",
                timeout,
            )
            services.on_worker_metadata(description.language, metadata, channel)
        await self._load_functions(channel, timeout)

    async def _load_functions(self, channel: WorkerChannel, timeout: float) -> None:
        catalog = self.pool.services.catalog
        definitions = [
            d for d in catalog.functions_for(self.pool.description.language)
            if not d.disabled and catalog.states[d.name].status != "error"
        ]

        async def load_one(definition: FunctionDefinition) -> None:
            function_id = channel.function_ids.setdefault(definition.name, definition.function_id)
            response = await channel.load(load_request_for(definition, function_id), timeout)
            if response.result.status == rpc.StatusResult.Success:
                catalog.mark_loaded(definition.name)
            else:
                catalog.mark_load_failed(definition.name, f"load failed: {_status_text(response.result)}")

        await asyncio.gather(*(load_one(d) for d in definitions))

    async def _watch(self, channel: WorkerChannel, exit_wait: asyncio.Task[int]) -> None:
        """Return when the process exits, its stream closes, or it stops answering status checks."""
        policy = self.pool.policy
        stream_closed = asyncio.ensure_future(channel.wait_stream_closed())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {exit_wait, stream_closed}, timeout=policy.status_interval, return_when=asyncio.FIRST_COMPLETED
                )
                if exit_wait in done:
                    break
                if stream_closed in done:
                    # Give the process a moment to exit so the failure names the real cause.
                    await asyncio.wait({exit_wait}, timeout=1.0)
                    break
                if self._stopping:
                    await asyncio.wait({exit_wait}, timeout=policy.terminate_grace)
                    break
                if caps.is_enabled(channel.capabilities, caps.WORKER_STATUS):
                    try:
                        await channel.request(
                            rpc.StreamingMessage(request_id=channel.request_id,
                                                 worker_status_request=rpc.WorkerStatusRequest()),
                            "worker_status_response",
                            policy.status_timeout,
                        )
                    except TimeoutError:
                        self.status.last_error = (
                            f"worker {channel.worker_id} did not answer WorkerStatusRequest within "
                            f"{policy.status_timeout:.0f}s; killing it"
                        )
                        channel.fail(self.status.last_error)
                        break
                    except WorkerUnavailable:
                        continue
        finally:
            stream_closed.cancel()
        if exit_wait.done() and channel.failure is None:
            channel.fail(self.process.exit_summary())  # type: ignore[union-attr]
        if channel.failure is None:
            channel.fail(f"lost the gRPC stream to worker {channel.worker_id} (pid {channel.pid})")
        self.status.last_error = channel.failure

    async def stop(self, grace: float) -> None:
        """WorkerTerminate to workers that handle it (they get `grace` to finish), then signals."""
        self._stopping = True
        channel, process = self.channel, self.process
        running = process is not None and process.process is not None and process.process.returncode is None
        if running and channel is not None and channel.connected and caps.is_enabled(
            channel.capabilities, caps.HANDLES_WORKER_TERMINATE_MESSAGE
        ):
            with contextlib.suppress(WorkerUnavailable):
                channel.send(rpc.StreamingMessage(
                    request_id=channel.request_id,
                    worker_terminate=rpc.WorkerTerminate(grace_period={"seconds": int(grace)}),
                ))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.process.wait(), grace)  # type: ignore[union-attr]
        if process is not None and process.process is not None and process.process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.process.wait(), 2.0)
            except asyncio.TimeoutError:
                process.kill()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.status.state = "stopped"


class WorkerPool:
    """FUNCTIONS_WORKER_PROCESS_COUNT processes of one worker; invocations go to the least busy."""

    def __init__(self, description: WorkerDescription, count: int, services: HostServices,
                 policy: SupervisionPolicy | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.description = description
        self.services = services
        self.policy = policy or SupervisionPolicy()
        self.slots = [WorkerSlot(self, index) for index in range(count)]
        self.ready: list[WorkerChannel] = []
        self._ready_event = asyncio.Event()
        self._on_change = on_change

    def start(self) -> None:
        for slot in self.slots:
            slot.start()

    def notify_change(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def add_ready(self, channel: WorkerChannel) -> None:
        self.ready.append(channel)
        self._ready_event.set()
        self.notify_change()

    def remove_ready(self, channel: WorkerChannel) -> None:
        if channel in self.ready:
            self.ready.remove(channel)
            if not self.ready:
                self._ready_event.clear()
            self.notify_change()

    @property
    def is_ready(self) -> bool:
        return bool(self.ready)

    def pick(self) -> WorkerChannel | None:
        ready = self.ready
        if not ready:
            return None
        if len(ready) == 1:
            return ready[0]
        return min(ready, key=lambda channel: channel.in_flight)

    async def acquire(self, timeout: float) -> WorkerChannel:
        channel = self.pick()
        if channel is not None:
            return channel
        if self.broken:
            raise WorkerUnavailable(self.unavailable_reason())
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerUnavailable(self.unavailable_reason())
            try:
                await asyncio.wait_for(self._ready_event.wait(), remaining)
            except TimeoutError:
                raise WorkerUnavailable(self.unavailable_reason()) from None
            channel = self.pick()
            if channel is not None:
                return channel

    @property
    def broken(self) -> bool:
        """No process can be expected soon: each failed its configuration, or failed to start
        since it was last ready (a request then gets 503 at once, not after a long wait)."""
        return all(slot.start_failures > 0 for slot in self.slots)

    def recycle(self, channel: WorkerChannel, reason: str) -> bool:
        """Replace the process behind `channel` (see WorkerSlot.recycle)."""
        return any(slot.recycle(channel, reason) for slot in self.slots)

    def unavailable_reason(self) -> str:
        errors = [slot.status.last_error for slot in self.slots if slot.status.last_error]
        reason = f"no {self.description.language} worker is ready"
        return reason + (f": {errors[-1]}" if errors else "")

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(slot.stop(grace) for slot in self.slots))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.description.name,
            "language": self.description.language,
            "path": str(self.description.directory),
            "source": self.description.source,
            "processes": [
                {
                    "workerId": slot.status.worker_id,
                    "pid": slot.status.pid,
                    "state": slot.status.state,
                    "restarts": slot.status.restarts,
                    "lastError": slot.status.last_error,
                    "capabilities": dict(slot.channel.capabilities) if slot.channel else {},
                }
                for slot in self.slots
            ],
        }


def _status_text(result: Any) -> str:
    if result.exception.message:
        return result.exception.message
    return result.result or rpc.StatusResult.Status.Name(result.status)


__all__ = ["WorkerPool", "SupervisionPolicy", "HostServices", "WorkerStartError"]
