"""Running one invocation: convert inputs, call the function, convert outputs.

Async functions run on the event loop; sync ones, with their input and output conversions, on a
thread of the pool, so the stream keeps flowing. Both run with the invocation id in
`current_invocation_id`, which is how their log lines are attributed. Any exception (including SystemExit from user code) becomes a failed response.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from funcplane_pyworker import status
from funcplane_pyworker.context import InvocationContext, OutValue, thread_local_storage
from funcplane_pyworker.functions import LoadedFunction
from funcplane_pyworker.logs import current_invocation_id, worker_logger
from funcplane_pyworker.protocol import pb

THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"


def thread_count(setting: str | None) -> int | None:
    """The sync-function pool size PYTHON_THREADPOOL_THREAD_COUNT asks for; None for Python's default,
    min(32, CPUs + 4), which is Azure's default on Python 3.9 and later. Any whole number from 1 up
    is honoured, as Azure's worker does on those versions; anything else is reported and ignored."""
    text = (setting or "").strip()
    if not text:
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    worker_logger.warning("%s=%r is not a whole number of at least 1; using the default thread count",
                          THREAD_COUNT_SETTING, setting)
    return None


class FunctionThreads:
    """The threads that run sync functions, at most PYTHON_THREADPOOL_THREAD_COUNT as on Azure.

    Threads start as work arrives, up to the limit, then stay and take work from one queue.
    Lighter than a ThreadPoolExecutor: no Future per call, since a sync invocation sends its own
    response from its thread."""

    def __init__(self, max_threads: int | None = None) -> None:
        self.max_threads = max_threads or min(32, (os.cpu_count() or 1) + 4)
        self._work: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for work and not yet promised to a submitted call

    def submit(self, work: Callable[..., None], *args: Any) -> None:
        """Run `work(*args)` on a pool thread; it waits in the queue while every thread is busy."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                start = False
            else:
                start = self._threads < self.max_threads
                if start:
                    self._threads += 1
        self._work.put((work, args))
        if start:
            threading.Thread(target=self._serve, name=f"funcplane-function_{self._threads}", daemon=True).start()

    def _serve(self) -> None:
        take = self._work.get
        while True:
            work, args = take()
            try:
                work(*args)
            except BaseException:  # work reports its own errors; this keeps the thread alive
                worker_logger.exception("a sync function's thread failed")
            with self._lock:
                self._idle += 1


def new_function_threads() -> FunctionThreads:
    """The pool for sync functions, sized by PYTHON_THREADPOOL_THREAD_COUNT as on Azure."""
    return FunctionThreads(thread_count(os.environ.get(THREAD_COUNT_SETTING)))


def _arguments(
    function: LoadedFunction, request: pb.InvocationRequest, outputs: dict[str, OutValue[Any]]
) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for binding in request.input_data:
        decoder = function.inputs.get(binding.name)
        if decoder is not None:
            arguments[binding.name] = decoder(binding.data, request.trigger_metadata)
    missing = set(function.inputs) - set(arguments)
    for name in missing:
        # The host sent no value for this input (e.g. an optional input binding): pass None.
        arguments[name] = None
    arguments.update(outputs)
    if function.context_parameter is not None:
        arguments[function.context_parameter] = InvocationContext(
            request.invocation_id, function.name, function.directory, request
        )
    return arguments


def _fill_outputs(function: LoadedFunction, outputs: dict[str, OutValue[Any]], result: Any,
                  response: pb.InvocationResponse) -> None:
    for name, value in outputs.items():
        if value.was_set:
            response.output_data.add(name=name, data=function.outputs[name](value.get()))
    if function.return_encoder is not None and result is not None:
        response.return_value.CopyFrom(function.return_encoder(result))
    response.result.CopyFrom(status.success())


def invoke_in_thread(function: LoadedFunction, request: pb.InvocationRequest, response: pb.InvocationResponse) -> None:
    """A sync function's whole invocation (inputs, call, outputs) on the calling thread, in a
    context of its own; fills `response`, never raises."""
    contextvars.Context().run(_invoke_sync, function, request, response)


def _invoke_sync(function: LoadedFunction, request: pb.InvocationRequest, response: pb.InvocationResponse) -> None:
    invocation_id = request.invocation_id
    response.invocation_id = invocation_id
    current_invocation_id.set(invocation_id)
    thread_local_storage.invocation_id = invocation_id
    outputs: dict[str, OutValue[Any]] = {name: OutValue() for name in function.outputs}
    try:
        result = function.user_function(**_arguments(function, request, outputs))
        _fill_outputs(function, outputs, result, response)
    except (Exception, SystemExit) as error:
        _discard_outputs(response)
        response.result.CopyFrom(status.failure(error))
    finally:
        thread_local_storage.invocation_id = None


async def invoke(
    function: LoadedFunction,
    request: pb.InvocationRequest,
    threads: FunctionThreads,
    response: pb.InvocationResponse | None = None,
) -> pb.InvocationResponse:
    """Run the function for `request`; never raises except for cancellation of the worker itself.
    Fills `response` when given (the one inside the message to send: outputs are copied once)."""
    if response is None:
        response = pb.InvocationResponse()
    response.invocation_id = request.invocation_id
    if not function.is_async:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[pb.InvocationResponse] = loop.create_future()

        def run() -> None:
            result = pb.InvocationResponse()
            invoke_in_thread(function, request, result)
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        threads.submit(run)
        try:
            response.CopyFrom(await done)
        except asyncio.CancelledError:  # the thread runs on; its result is dropped
            response.result.CopyFrom(status.cancelled())
        return response
    current_invocation_id.set(request.invocation_id)
    outputs: dict[str, OutValue[Any]] = {name: OutValue() for name in function.outputs}
    try:
        result = await function.user_function(**_arguments(function, request, outputs))
        _fill_outputs(function, outputs, result, response)
    except asyncio.CancelledError:
        _discard_outputs(response)
        response.result.CopyFrom(status.cancelled())
    except (Exception, SystemExit) as error:
        _discard_outputs(response)
        response.result.CopyFrom(status.failure(error))
    return response


def _discard_outputs(response: pb.InvocationResponse) -> None:
    """A failed or cancelled invocation reports no partial outputs."""
    del response.output_data[:]
    response.ClearField("return_value")
