"""Running one invocation: convert inputs, call the function, convert outputs.

Async functions run on the event loop; sync ones on a thread pool so the stream keeps flowing.
Both run with the invocation id in `current_invocation_id`, which is how their log lines are
attributed. Any exception (including SystemExit from user code) becomes a failed response.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


def new_executor() -> ThreadPoolExecutor:
    """The pool for sync functions, sized by PYTHON_THREADPOOL_THREAD_COUNT as on Azure."""
    return ThreadPoolExecutor(max_workers=thread_count(os.environ.get(THREAD_COUNT_SETTING)),
                              thread_name_prefix="funcplane-function")


def _run_in_thread(user_function: Callable[..., Any], arguments: dict[str, Any], invocation_id: str) -> Any:
    thread_local_storage.invocation_id = invocation_id
    try:
        return user_function(**arguments)
    finally:
        thread_local_storage.invocation_id = None


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


async def invoke(
    function: LoadedFunction,
    request: pb.InvocationRequest,
    executor: ThreadPoolExecutor,
    response: pb.InvocationResponse | None = None,
) -> pb.InvocationResponse:
    """Run the function for `request`; never raises except for cancellation of the worker itself.
    Fills `response` when given (the one inside the message to send: outputs are copied once)."""
    if response is None:
        response = pb.InvocationResponse()
    response.invocation_id = request.invocation_id
    current_invocation_id.set(request.invocation_id)
    outputs: dict[str, OutValue[Any]] = {name: OutValue() for name in function.outputs}
    try:
        arguments = _arguments(function, request, outputs)
        if function.is_async:
            result = await function.user_function(**arguments)
        else:
            context = contextvars.copy_context()
            result = await asyncio.get_running_loop().run_in_executor(
                executor, context.run, _run_in_thread, function.user_function, arguments,
                request.invocation_id,
            )
        for name, value in outputs.items():
            if value.was_set:
                response.output_data.add(name=name, data=function.outputs[name](value.get()))
        if function.return_encoder is not None and result is not None:
            response.return_value.CopyFrom(function.return_encoder(result))
        response.result.CopyFrom(status.success())
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
