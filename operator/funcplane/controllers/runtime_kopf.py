"""kopf, embedded: its settings for this project and a thread of its own to run in.

kopf runs on its own event loop in its own thread. The main loop (Lease, HTTP endpoints, signals)
stays responsive whatever a handler does, and stopping kopf cannot cancel the main loop's tasks
(kopf cancels every task of its loop that it did not find there when it started).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import logging
import threading
import time
from collections.abc import Sequence

import kopf

logger = logging.getLogger("funcplane.runtime")

PREFIX = "funcplane.io"
DEFAULT_HANDLERS = "funcplane.controllers.handlers"
HEARTBEAT_INTERVAL = 1.0


def load_registry(module_name: str) -> kopf.OperatorRegistry:
    """Import the module that registers the handlers; use its `registry` if it has one."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise SystemExit(f"--handlers {module_name}: cannot import it ({error})") from error
    registry = getattr(module, "registry", None)
    return registry if isinstance(registry, kopf.OperatorRegistry) else kopf.get_default_registry()


def operator_settings(*, identity: str, clusterwide: bool, workers: int) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Who reconciles is decided by our Lease; kopf's priority-based peering must stay out of it.
    settings.peering.standalone = True
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX, v1=False)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration", v1=False)
    # Warnings and errors that handlers log about an object become Events on that object.
    settings.posting.enabled = True
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "funcplane-operator"
    settings.posting.reporting_instance = identity
    settings.posting.event_name_prefix = "funcplane-"
    # Watches end server-side every few minutes and are re-established; a stream silent for
    # longer than the server timeout plus slack is considered dead and reconnected.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.execution.executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="reconcile")
    # A namespaced operator needs no cluster-wide permission: it neither lists namespaces nor
    # watches CRDs (the chart installs the CRDs before the operator starts).
    settings.scanning.disabled = not clusterwide
    return settings


class KopfThread:
    """One run of kopf; `stop()` asks it to finish, `drained()` waits for its handler threads too."""

    def __init__(self, *, registry: kopf.OperatorRegistry, settings: kopf.OperatorSettings,
                 namespaces: Sequence[str], clusterwide: bool, on_exit: asyncio.Event) -> None:
        self.registry = registry
        self.settings = settings
        self.namespaces = list(namespaces)
        self.clusterwide = clusterwide
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.heartbeat: float | None = None
        self._stop = threading.Event()
        self._on_exit = on_exit
        self._main_loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="kopf", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def beating(self, within: float) -> bool:
        """kopf's loop ran a callback within the last `within` seconds."""
        return self.heartbeat is not None and time.monotonic() - self.heartbeat < within

    async def drained(self, timeout: float) -> bool:
        """Wait until kopf's thread and every handler thread have ended; False on timeout."""
        executor = self.settings.execution.executor

        def wait() -> None:
            self._thread.join()
            executor.shutdown(wait=True, cancel_futures=True)

        try:
            await asyncio.wait_for(asyncio.to_thread(wait), timeout=timeout)
        except TimeoutError:
            return False
        return True

    def _run(self) -> None:
        try:
            asyncio.run(self._operate())
        except BaseException as error:  # noqa: BLE001 - reported to the supervisor, which exits
            self.error = error
            logger.exception("the operator loop crashed")
        finally:
            self._main_loop.call_soon_threadsafe(self._on_exit.set)

    async def _operate(self) -> None:
        beat = asyncio.create_task(self._beat(), name="heartbeat")
        try:
            await kopf.operator(
                registry=self.registry, settings=self.settings, standalone=True,
                clusterwide=self.clusterwide, namespaces=self.namespaces,
                stop_flag=self._stop, ready_flag=self.ready)
        finally:
            beat.cancel()

    async def _beat(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_INTERVAL)
