"""FunctionHost: loads the app, starts the workers it needs, hands invocations to the dispatcher, drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any
from collections.abc import Coroutine, Mapping

from funcplane_host.app.catalog import FunctionCatalog
from funcplane_host.app.functions import FunctionDefinition, FunctionDefinitionError
from funcplane_host.app.host_json import HostConfig, HostJsonError, load_host_config
from funcplane_host.app.indexing import FunctionError, function_folders, index_function_folders
from funcplane_host.durable.extension import DurableExtension
from funcplane_host.concurrency.runtime import HostConcurrency
from funcplane_host.dispatch import InvocationDispatcher
from funcplane_host.grpc_server import GrpcServer
from funcplane_host.invocation import Invocation, InvocationFailed
from funcplane_host.keys import KeysError, KeyStore
from funcplane_host.limits import HttpThrottle
from funcplane_host.logs import CategoryLevels, configure_logging, dropped_log_lines, emit_rpc_log
from funcplane_host.metrics import HostMetrics
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_host.workers.metadata import definition_from_metadata
from funcplane_protocol.typed_data import HttpShape
from funcplane_host.readiness import Readiness, readiness_of
from funcplane_host.queues.listener import QueueTriggers
from funcplane_host.settings import HostSettings
from funcplane_host.timers.scheduler import TimerTriggers
from funcplane_host.workers.channel import WorkerChannel
from funcplane_host.workers.registry import WorkerRegistry, WorkerSelectionError
from funcplane_host.workers.supervisor import SupervisionPolicy, WorkerPool

logger = logging.getLogger("funcplane.host")


class FunctionHost:
    def __init__(self, settings: HostSettings, policy: SupervisionPolicy | None = None) -> None:
        self.settings = settings
        self.app_root: Path = settings.app_root
        self.environment: Mapping[str, str] = settings.environment
        self.runtime_version = settings.worker_runtime_version
        self.metrics = HostMetrics(settings.host_id, settings.slot_name)
        self.catalog = FunctionCatalog()
        self.config_errors: list[str] = []
        self.config = self._load_config()
        self.levels = self._load_levels()
        self.policy = policy or SupervisionPolicy.from_host_json(self.config.worker_health)
        self.keys = self._load_keys()
        self.registry = WorkerRegistry.load(settings.worker_config, settings.workers_dir)
        self.throttle = HttpThrottle(
            self.config.http.max_concurrent_requests, self.config.http.max_outstanding_requests, self.metrics
        )
        self.grpc = GrpcServer()
        self.grpc_port = 0
        self.pools: dict[str, WorkerPool] = {}
        self.state = "created"  # created -> starting -> running -> draining -> drained -> stopped
        # Set when a drain's grace period is over: from then on new HTTP requests are refused.
        self._refusing = asyncio.Event()
        self.dispatcher = InvocationDispatcher(self)
        self._shapes: dict[str, HttpShape] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.timers = TimerTriggers(self)
        self.concurrency = HostConcurrency(self)
        self.metrics.registry.register(self.concurrency)
        self.durable = DurableExtension(self, cores=self.concurrency.cores)
        self.concurrency.demand_sources.append(self.durable.demand)
        self.queues = QueueTriggers(self)

    # ---- configuration ----------------------------------------------------------------

    def _load_config(self) -> HostConfig:
        if not self.app_root.is_dir():
            self.config_errors.append(f"app directory {self.app_root} does not exist (--app or AzureWebJobsScriptRoot)")
            return HostConfig()
        try:
            return load_host_config(self.app_root, self.settings.host_json_override)
        except HostJsonError as error:
            self.config_errors.append(str(error))
            return HostConfig()

    def _load_levels(self) -> CategoryLevels:
        try:
            return CategoryLevels(self.config.log_levels)
        except ValueError as error:
            self.config_errors.append(str(error))
            return CategoryLevels({})

    def _load_keys(self) -> KeyStore:
        try:
            return KeyStore.load(self.settings.keys_file, self.settings.master_key)
        except KeysError as error:
            self.config_errors.append(str(error))
            return KeyStore()

    # ---- start-up -----------------------------------------------------------------------

    def _language_by_extension(self, definition: FunctionDefinition, extensions: dict[str, str]) -> str | None:
        if self.settings.worker_runtime:
            return self.settings.worker_runtime
        return extensions.get(Path(definition.script_file).suffix)

    def _index_app(self) -> set[str]:
        """Host indexing of function.json folders; returns the languages the app needs."""
        extensions = self.registry.extensions()
        definitions, errors = index_function_folders(self.app_root, extensions, self.config.functions)
        for error in errors:
            self.catalog.record_error(error)
        needed: set[str] = set()
        for definition in definitions:
            definition.language = self._language_by_extension(definition, extensions)
            if definition.language is None:
                self.catalog.add(definition)
                self.catalog.record_error(FunctionError(
                    definition.name,
                    f"no worker handles {Path(definition.script_file).suffix!r} files; "
                    "set FUNCTIONS_WORKER_RUNTIME or add a worker",
                    "index",
                ))
                continue
            self.catalog.add(definition)
            needed.add(definition.language)
        # Apps without function.json folders (e.g. a Python function_app.py) are indexed by the
        # worker of their runtime, named by FUNCTIONS_WORKER_RUNTIME or implied by their files.
        if not function_folders(self.app_root):
            runtime = self.settings.worker_runtime
            if runtime is None and self.app_root.is_dir():
                suffixes = {p.suffix for p in self.app_root.iterdir() if p.is_file()}
                found = sorted({lang for ext, lang in extensions.items() if ext in suffixes})
                runtime = found[0] if len(found) == 1 else None
            if runtime is not None:
                needed.add(runtime)
            elif not definitions:
                self.catalog.record_error(FunctionError(
                    "", f"no functions found in {self.app_root}: no function.json folders and no "
                    "FUNCTIONS_WORKER_RUNTIME to pick a worker that indexes the app", "index"))
        return needed

    async def start(self) -> None:
        self.state = "starting"
        configure_logging(self.levels)
        # An app whose configuration or directory is unusable runs no workers: nothing is served
        # with defaults in place of what the app asked for.
        needed = set() if self.config_errors else self._index_app()
        self.grpc_port = await self.grpc.start()
        for language in sorted(needed):
            try:
                description = self.registry.select(language, self.runtime_version)
            except WorkerSelectionError as error:
                self.config_errors.append(str(error))
                for definition in self.catalog.functions_for(language):
                    self.catalog.record_error(FunctionError(definition.name, str(error), "worker"))
                continue
            if description.worker_indexing:
                self.catalog.worker_indexed.add(language)
            pool = WorkerPool(description, self.settings.worker_process_count, self, self.policy)
            self.pools[language] = pool
            pool.start()
        self.state = "running"
        self.timers.start()
        self.durable.start()
        self.concurrency.start()
        self.queues.start()
        logger.info("host %s started: app %s, workers %s, gRPC on 127.0.0.1:%d",
                    self.settings.host_id, self.app_root, sorted(self.pools), self.grpc_port)

    # ---- HostServices for worker pools ----------------------------------------------------

    def register_channel(self, channel: WorkerChannel) -> None:
        self.grpc.register(channel)

    def unregister_channel(self, channel: WorkerChannel) -> None:
        self.grpc.unregister(channel)
        self._shapes.pop(channel.worker_id, None)

    def on_rpc_log(self, channel: WorkerChannel, log: Any) -> None:
        invocation_id = log.invocation_id
        function_name = None
        if invocation_id:
            function_name = self.dispatcher.active.get(invocation_id) or self.dispatcher.finished.get(invocation_id)
        if dropped := dropped_log_lines(log):
            self.metrics.worker_log_lines_dropped.labels(language=channel.language).inc(dropped)
        emit_rpc_log(self.levels, log, function_name, channel.worker_id)

    def on_worker_restart(self, language: str) -> None:
        self.metrics.worker_restarts.labels(language=language).inc()

    def on_worker_metadata(self, language: str, response: Any, channel: WorkerChannel) -> None:
        first = not self.catalog.is_indexed(language)
        if response.use_default_metadata_indexing:
            self.catalog.mark_indexed(language)
            return
        if response.result.status == rpc.StatusResult.Failure:
            reason = response.result.exception.message or response.result.result or "unknown error"
            reason = reason.replace(f"{self.app_root}/", "")  # "function_app.py", short enough to quote
            self.catalog.record_error(FunctionError("", f"worker indexing of the app failed: {reason}", "worker"))
        for metadata in response.function_metadata_results:
            if metadata.function_id:
                channel.function_ids[metadata.name] = metadata.function_id
            if not first:
                continue
            if metadata.HasField("status") and metadata.status.status == rpc.StatusResult.Failure:
                reason = metadata.status.exception.message or metadata.status.result
                self.catalog.record_error(FunctionError(metadata.name, f"indexing failed: {reason}", "worker"))
                continue
            try:
                self.catalog.add(definition_from_metadata(metadata, language))
            except FunctionDefinitionError as error:
                self.catalog.record_error(FunctionError(metadata.name, str(error), "worker"))
        self.catalog.mark_indexed(language)

    # ---- invocation ---------------------------------------------------------------------

    def http_shape(self, channel: WorkerChannel) -> HttpShape:
        shape = self._shapes.get(channel.worker_id)
        if shape is None:
            shape = self._shapes[channel.worker_id] = HttpShape.from_capabilities(channel.capabilities)
        return shape

    async def invoke(self, invocation: Invocation) -> Any:
        return await self.dispatcher.invoke(invocation)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background (admin-requested runs), keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run_logged(self, invocation: Invocation, what: str) -> InvocationFailed | None:
        """Invoke for work no caller waits on: a failure is logged and returned, never raised."""
        try:
            await self.invoke(invocation)
            return None
        except InvocationFailed as failure:
            logger.error("%s of %s failed: %s %s", what, invocation.definition.name, failure, failure.detail or "")
            return failure

    # ---- health, warm-up, drain ---------------------------------------------------------

    @property
    def refusing_requests(self) -> bool:
        return self._refusing.is_set()

    @property
    def draining(self) -> bool:
        return self.state in ("draining", "drained", "stopped")

    @property
    def registry_errors(self) -> list[str]:
        return self.registry.errors

    @property
    def extension_errors(self) -> list[str]:
        return self.durable.readiness_reasons()

    def readiness(self) -> Readiness:
        return readiness_of(self)

    async def warmup(self) -> tuple[bool, list[str]]:
        ready, reasons = self.readiness()
        if not ready:
            return False, reasons
        failures = []
        for definition in list(self.catalog.definitions.values()):
            if definition.trigger_type.lower() != "warmuptrigger" or definition.disabled:
                continue
            try:
                await self.invoke(Invocation.of_trigger(definition, rpc.TypedData(json="{}")))
            except InvocationFailed as error:
                failures.append(f"warmup function {definition.name!r}: {error} {error.detail or ''}".strip())
        return not failures, failures

    async def drain(self, timeout: float, grace: float = 0.0) -> dict[str, Any]:
        """Report not ready at once, keep serving HTTP requests for `grace` seconds (they still
        arrive until endpoints drop the pod), then refuse new work and wait (up to `timeout`)
        for in-flight invocations."""
        if self.state == "running" or self.state == "starting":
            self.state = "draining"
        if grace > 0:
            with contextlib.suppress(TimeoutError):  # a later drain without grace ends it early
                await asyncio.wait_for(self._refusing.wait(), grace)
        self._refusing.set()
        in_flight_at_start = len(self.dispatcher.active)
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.dispatcher.idle.wait(), timeout)
        except TimeoutError:
            pass
        if self.state == "draining":
            self.state = "drained"
        return {
            "draining": True,
            "graceSeconds": grace,
            "inFlightAtStart": in_flight_at_start,
            "stillRunning": len(self.dispatcher.active),
            "waitedSeconds": round(time.monotonic() - started, 3),
        }

    async def stop(self, grace: float = 5.0) -> None:
        self.state = "stopped"
        await self.timers.stop()
        await self.durable.stop()
        await self.queues.stop()
        await self.concurrency.stop()
        await asyncio.gather(*(pool.stop(grace) for pool in self.pools.values()))
        await self.grpc.stop(0)

    def status(self) -> dict[str, Any]:
        ready, reasons = self.readiness()
        return {
            "state": self.state,
            "ready": ready,
            "reasons": reasons,
            "hostId": self.settings.host_id,
            "slot": self.settings.slot_name,
            "appRoot": str(self.app_root),
            "functionTimeout": self.config.function_timeout,
            "workers": [pool.as_json() for pool in self.pools.values()],
            "registry": self.registry.as_json(),
            "errors": [*({"stage": "config", "error": e} for e in self.config_errors),
                       *({"stage": "workers", "error": e} for e in self.registry.errors),
                       *(e.as_json() for e in self.catalog.errors)],
            "inFlight": len(self.dispatcher.active),
            "nonHttpTriggers": self.timers.as_json(),
            "durable": self.durable.as_json(),
            "queueTriggers": self.queues.as_json(),
        }

