"""The worker's side of FunctionRpc.EventStream: one handler per message the host sends.

Reading and writing are decoupled: incoming messages are dispatched in order, invocations of
async functions run as tasks and those of sync functions on the pool's threads, which send their
own responses; everything the worker sends (responses, logs from any thread) goes through one
outbound queue that feeds the stream.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import platform
from collections.abc import Awaitable, Callable
from pathlib import Path

from funcplane_pyworker import RUNTIME_NAME, WORKER_VERSION, logs, status
from funcplane_pyworker.bindings import BindingSpec
from funcplane_pyworker.functions import FunctionLoadError, LoadedFunction, build_function
from funcplane_pyworker.indexing import WORKER_INDEXED_PROPERTY, IndexedFunction, app_script_path, index_app
from funcplane_pyworker.invoker import invoke, invoke_in_thread, new_function_threads
from funcplane_pyworker.loader import add_script_root, load_entry_point
from funcplane_pyworker.logs import worker_logger
from funcplane_pyworker.options import WorkerOptions
from funcplane_pyworker.protocol import capabilities, pb
from funcplane_pyworker.stream import HostStream, HostUnreachable, StreamBroken

CONNECT_TIMEOUT_SECONDS = 30.0
# After a WorkerTerminate the worker closes its side and gives the host this long to close its own.
HOST_CLOSE_GRACE_SECONDS = 5.0

WORKER_CAPABILITIES: dict[str, str] = {
    name: "true"
    for name in (
        capabilities.RAW_HTTP_BODY_BYTES,
        capabilities.TYPED_DATA_COLLECTION,
        capabilities.RPC_HTTP_BODY_ONLY,
        capabilities.RPC_HTTP_TRIGGER_METADATA_REMOVED,
        capabilities.USE_NULLABLE_VALUE_DICTIONARY_FOR_HTTP,
        capabilities.WORKER_STATUS,
        capabilities.HANDLES_WORKER_TERMINATE_MESSAGE,
        capabilities.HANDLES_INVOCATION_CANCEL_MESSAGE,
        capabilities.HANDLES_WORKER_WARMUP_MESSAGE,
        capabilities.ACCEPTS_LIST_OF_FUNCTION_LOAD_REQUESTS,
        capabilities.SUPPORTS_LOAD_RESPONSE_COLLECTION,
    )
}

_ARCHITECTURES = {"x86_64": "X64", "amd64": "X64", "aarch64": "Arm64", "arm64": "Arm64", "i686": "X86"}


def worker_metadata() -> pb.WorkerMetadata:
    return pb.WorkerMetadata(
        runtime_name=RUNTIME_NAME,
        runtime_version=platform.python_version(),
        worker_version=WORKER_VERSION,
        worker_bitness=_ARCHITECTURES.get(platform.machine().lower(), platform.machine()),
        custom_properties={"worker.implementation": "funcplane_pyworker"},
    )


Handler = Callable[[object], Awaitable[pb.StreamingMessage | None]]


class Dispatcher:
    def __init__(self, options: WorkerOptions) -> None:
        self._options = options
        self._stream = HostStream(options)
        self._loop = asyncio.get_running_loop()
        self._threads = new_function_threads()
        self._script_root: Path | None = None
        self._indexed: dict[str, IndexedFunction] = {}
        self._functions: dict[str, LoadedFunction] = {}
        # invocation id -> its task, or the request id of a sync invocation, whose entry is
        # removed by whoever sends its response (the invocation when it ends, or a cancel).
        self._in_flight: dict[str, asyncio.Task[None] | str] = {}
        self._settled = asyncio.Event()  # set when an invocation ends while terminating
        self._control: collections.deque[pb.StreamingMessage] = collections.deque()
        self._control_ready = asyncio.Event()
        self._terminating = False
        self._drain: asyncio.Task[None] | None = None
        self._handlers: dict[str, Handler] = {
            "worker_init_request": self._on_worker_init,
            "worker_status_request": self._on_worker_status,
            "worker_warmup_request": self._on_worker_warmup,
            "functions_metadata_request": self._on_functions_metadata,
            "function_load_request": self._on_function_load,
            "function_load_request_collection": self._on_function_load_collection,
            "function_environment_reload_request": self._on_environment_reload,
            "worker_terminate": self._on_worker_terminate,
        }

    # ---- stream ------------------------------------------------------------------------------

    def send(self, message: pb.StreamingMessage) -> None:
        """Queue a message for the host; safe from any thread."""
        self._stream.send(message)

    async def run(self) -> int:
        """Serve the host until it closes the stream or terminates the worker; the exit code."""
        log_handler = logs.install(self._stream.send)
        control: asyncio.Task[None] | None = None
        # StartStream is queued first, so it is the first message on the call.
        self.send(
            pb.StreamingMessage(
                request_id=self._options.request_id,
                start_stream=pb.StartStream(worker_id=self._options.worker_id),
            )
        )
        try:
            try:
                await self._stream.connect(CONNECT_TIMEOUT_SECONDS, self._receive)
            except HostUnreachable as error:
                worker_logger.critical("%s", error)
                return 1
            control = self._loop.create_task(self._serve_control())
            try:
                await self._stream.finished()
            except StreamBroken as error:
                if self._terminating:
                    return 0
                worker_logger.error("the stream to the host broke: %s", error)
                return 1
            return 0
        finally:
            if control is not None:
                control.cancel()
            logs.remove(log_handler)
            await self._stream.close()

    def _receive(self, message: pb.StreamingMessage) -> None:
        """Each message from the host, in order, on the loop. Invocations and cancels start at
        once unless a control message is still being handled: then they wait behind it."""
        if not self._control and self._start_work(message, message.WhichOneof("content")):
            return
        self._control.append(message)
        self._control_ready.set()

    def _start_work(self, message: pb.StreamingMessage, kind: str | None) -> bool:
        """Start an invocation or a cancel (neither waits for an answer on the loop); False for the rest."""
        if kind == "invocation_request":
            self._start_invocation(message.request_id, message.invocation_request)
            return True
        if kind == "invocation_cancel":
            self._cancel_invocation(message.invocation_cancel.invocation_id)
            return True
        return False

    async def _serve_control(self) -> None:
        control = self._control
        while True:
            while control:
                await self._dispatch(control[0])
                control.popleft()
            self._control_ready.clear()
            await self._control_ready.wait()

    async def _dispatch(self, message: pb.StreamingMessage) -> None:
        kind = message.WhichOneof("content")
        if self._start_work(message, kind):
            return
        handler = self._handlers.get(kind or "")
        if handler is None:
            worker_logger.debug("ignoring a %s message", kind)
            return
        try:
            reply = await handler(getattr(message, kind))
        except Exception:
            worker_logger.exception("handling %s failed", kind)
            return
        if reply is not None:
            reply.request_id = message.request_id
            self.send(reply)

    # ---- lifecycle ---------------------------------------------------------------------------

    def _set_script_root(self, directory: str) -> None:
        if directory:
            self._script_root = Path(directory)
            add_script_root(self._script_root)

    async def _on_worker_init(self, request: pb.WorkerInitRequest) -> pb.StreamingMessage:
        self._set_script_root(request.function_app_directory)
        return pb.StreamingMessage(
            worker_init_response=pb.WorkerInitResponse(
                worker_version=WORKER_VERSION,
                capabilities=WORKER_CAPABILITIES,
                worker_metadata=worker_metadata(),
                result=status.success(),
            )
        )

    async def _on_worker_status(self, _request: pb.WorkerStatusRequest) -> pb.StreamingMessage:
        return pb.StreamingMessage(worker_status_response=pb.WorkerStatusResponse())

    async def _on_worker_warmup(self, _request: pb.WorkerWarmupRequest) -> pb.StreamingMessage:
        return pb.StreamingMessage(worker_warmup_response=pb.WorkerWarmupResponse(result=status.success()))

    async def _on_environment_reload(
        self, request: pb.FunctionEnvironmentReloadRequest
    ) -> pb.StreamingMessage:
        # The host sends the full environment of the specialized app; an empty map means "unchanged".
        if request.environment_variables:
            os.environ.clear()
            os.environ.update(request.environment_variables)
        self._set_script_root(request.function_app_directory)
        return pb.StreamingMessage(
            function_environment_reload_response=pb.FunctionEnvironmentReloadResponse(
                worker_metadata=worker_metadata(),
                capabilities=WORKER_CAPABILITIES,
                result=status.success(),
            )
        )

    async def _on_worker_terminate(self, request: pb.WorkerTerminate) -> None:
        """Stop taking invocations, let running ones finish (within the grace period), close."""
        if self._terminating:
            return None
        self._terminating = True
        grace = request.grace_period.ToTimedelta().total_seconds() if request.HasField("grace_period") else 0
        # Drain in the background so that cancels and status requests are still answered meanwhile.
        self._drain = self._loop.create_task(self._drain_and_close(grace or None))
        return None

    async def _drain_and_close(self, grace_seconds: float | None) -> None:
        if self._in_flight:
            worker_logger.info("terminating after %d running invocation(s)", len(self._in_flight))
            deadline = None if grace_seconds is None else self._loop.time() + grace_seconds
            while self._in_flight:
                self._settled.clear()
                if not self._in_flight:  # one ended on its thread just now
                    break
                remaining = None if deadline is None else deadline - self._loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._settled.wait(), remaining)
                except TimeoutError:
                    break
            still_running = list(self._in_flight.items())
            for invocation_id, _running in still_running:
                self._cancel_invocation(invocation_id)
            tasks = [running for _id, running in still_running if isinstance(running, asyncio.Task)]
            if tasks:
                await asyncio.wait(tasks)  # each sends its Cancelled response
        await self._stream.close_writes()
        self._loop.call_later(HOST_CLOSE_GRACE_SECONDS, self._stream.cancel)

    # ---- indexing and loading ---------------------------------------------------------------

    def _index(self, app_directory: Path) -> list[IndexedFunction] | None:
        indexed = index_app(app_directory)
        self._indexed = {function.metadata.function_id: function for function in indexed or []}
        return indexed

    async def _on_functions_metadata(self, request: pb.FunctionsMetadataRequest) -> pb.StreamingMessage:
        self._set_script_root(request.function_app_directory)
        app_directory = self._script_root or Path.cwd()
        response = pb.FunctionMetadataResponse()
        try:
            indexed = self._index(app_directory)
        except (Exception, SystemExit) as error:
            response.result.CopyFrom(
                status.failure(error, context=f"indexing {app_script_path(app_directory)} failed")
            )
            return pb.StreamingMessage(function_metadata_response=response)
        if indexed is None:
            response.use_default_metadata_indexing = True
        else:
            response.function_metadata_results.extend(function.metadata for function in indexed)
        response.result.CopyFrom(status.success())
        return pb.StreamingMessage(function_metadata_response=response)

    async def _on_function_load(self, request: pb.FunctionLoadRequest) -> pb.StreamingMessage:
        return pb.StreamingMessage(function_load_response=self._load(request))

    async def _on_function_load_collection(
        self, request: pb.FunctionLoadRequestCollection
    ) -> pb.StreamingMessage:
        responses = [self._load(load) for load in request.function_load_requests]
        return pb.StreamingMessage(
            function_load_response_collection=pb.FunctionLoadResponseCollection(
                function_load_responses=responses
            )
        )

    def _indexed_function_for(self, request: pb.FunctionLoadRequest) -> IndexedFunction | None:
        function_id = request.function_id or request.metadata.function_id
        if function_id in self._indexed:
            return self._indexed[function_id]
        if request.metadata.properties.get(WORKER_INDEXED_PROPERTY):
            if not self._indexed:
                # A host that kept metadata from an earlier worker process loads without asking.
                self._index(Path(request.metadata.directory or self._script_root or Path.cwd()))
            # The host may have assigned its own id to a function the worker indexed: match by name.
            found = next(
                (f for f in self._indexed.values() if f.metadata.name == request.metadata.name), None
            )
            if found is None:
                declared = ", ".join(sorted(f.metadata.name for f in self._indexed.values())) or "none"
                raise FunctionLoadError(
                    f"the app declares no function named {request.metadata.name!r} "
                    f"(declared: {declared})"
                )
            return found
        return None

    def _load(self, request: pb.FunctionLoadRequest) -> pb.FunctionLoadResponse:
        metadata = request.metadata
        function_id = request.function_id or metadata.function_id
        response = pb.FunctionLoadResponse(function_id=function_id)
        name = metadata.name or function_id
        try:
            indexed = self._indexed_function_for(request)
            if indexed is not None:
                if indexed.loaded is None:
                    response.result.CopyFrom(indexed.metadata.status)
                    return response
                loaded = dataclasses.replace(indexed.loaded, function_id=function_id)
            else:
                loaded = self._load_from_metadata(function_id, metadata)
        except (Exception, SystemExit) as error:
            worker_logger.error("function %r failed to load: %s: %s", name, type(error).__name__, error)
            response.result.CopyFrom(status.failure(error, context=f"function {name!r} failed to load"))
            return response
        self._functions[function_id] = loaded
        response.result.CopyFrom(status.success())
        return response

    def _load_from_metadata(self, function_id: str, metadata: pb.RpcFunctionMetadata) -> LoadedFunction:
        """A function.json function: import its script and match its entry point to its bindings."""
        script_root = self._script_root or Path(metadata.directory).parent
        user_function = load_entry_point(
            script_root=script_root,
            directory=metadata.directory,
            script_file=metadata.script_file,
            entry_point=metadata.entry_point,
        )
        return build_function(
            function_id=function_id,
            name=metadata.name,
            directory=metadata.directory,
            user_function=user_function,
            bindings=[BindingSpec.from_binding_info(n, info) for n, info in metadata.bindings.items()],
        )

    # ---- invocations -----------------------------------------------------------------------

    def _start_invocation(self, request_id: str, request: pb.InvocationRequest) -> None:
        function = self._functions.get(request.function_id)
        if function is None or self._terminating:
            reason = (
                "the worker is terminating"
                if self._terminating
                else f"no function with id {request.function_id!r} is loaded in this worker"
            )
            self.send(
                pb.StreamingMessage(
                    request_id=request_id,
                    invocation_response=pb.InvocationResponse(
                        invocation_id=request.invocation_id,
                        result=status.failure(RuntimeError(reason), user_code=False),
                    ),
                )
            )
            return
        if function.is_async:
            self._in_flight[request.invocation_id] = self._loop.create_task(
                self._run_invocation(request_id, function, request)
            )
        else:
            self._in_flight[request.invocation_id] = request_id
            self._threads.submit(self._run_in_thread, request_id, function, request)

    def _run_in_thread(self, request_id: str, function: LoadedFunction, request: pb.InvocationRequest) -> None:
        """A sync invocation, on a pool thread: run it and send its response from here."""
        message = pb.StreamingMessage(request_id=request_id)
        invoke_in_thread(function, request, message.invocation_response)
        if self._in_flight.pop(request.invocation_id, None) is not None:  # else a cancel answered
            self.send(message)
        if self._terminating:
            self._loop.call_soon_threadsafe(self._settled.set)

    async def _run_invocation(
        self, request_id: str, function: LoadedFunction, request: pb.InvocationRequest
    ) -> None:
        message = pb.StreamingMessage(request_id=request_id)
        try:
            try:
                await invoke(function, request, self._threads, message.invocation_response)
            except asyncio.CancelledError:  # cancelled before the invocation even started
                message.invocation_response.invocation_id = request.invocation_id
                message.invocation_response.result.CopyFrom(status.cancelled())
            self.send(message)
        finally:
            self._in_flight.pop(request.invocation_id, None)
            self._settled.set()

    def _cancel_invocation(self, invocation_id: str) -> None:
        running = self._in_flight.get(invocation_id)
        if running is None:
            worker_logger.debug("cancel for %s: not running (already finished or unknown)", invocation_id)
            return
        if isinstance(running, asyncio.Task):
            running.cancel()
            return
        # A sync function cannot be stopped: answer Cancelled now and drop its result later.
        request_id = self._in_flight.pop(invocation_id, None)
        if isinstance(request_id, str):
            self.send(
                pb.StreamingMessage(
                    request_id=request_id,
                    invocation_response=pb.InvocationResponse(
                        invocation_id=invocation_id, result=status.cancelled()
                    )
                )
            )
            self._settled.set()
