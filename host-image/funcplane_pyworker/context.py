"""What a running function sees besides its bindings: its Context and its Out parameters."""

from __future__ import annotations

import logging
import threading
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions import _abc as function_abc

from funcplane_pyworker.protocol import pb

T = TypeVar("T")

# Shared by every invocation: user code copies the invocation id into it on threads it starts,
# so logs from those threads still carry the invocation (the same contract as on Azure).
thread_local_storage = threading.local()


def function_logger_name(function_name: str) -> str:
    """The logger (and so the RpcLog category) of a function's own log lines."""
    return f"Function.{function_name}.User"


class OutValue(func.Out[T], Generic[T]):
    """An output binding parameter: the function calls set(), the worker reads it afterwards."""

    __slots__ = ("_value", "was_set")

    def __init__(self) -> None:
        self._value: T | None = None
        self.was_set = False

    def set(self, val: T) -> None:
        self._value = val
        self.was_set = True

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


class TraceContext(function_abc.TraceContext):
    def __init__(self, trace: pb.RpcTraceContext) -> None:
        self._trace = trace

    @property
    def trace_parent(self) -> str:
        return self._trace.trace_parent

    @property
    def trace_state(self) -> str:
        return self._trace.trace_state

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self._trace.attributes)

    # Azure's worker exposes these spellings too; keep apps that use them working.
    Traceparent = trace_parent
    Tracestate = trace_state
    Attributes = attributes


class RetryContext(function_abc.RetryContext):
    def __init__(self, retry: pb.RetryContext) -> None:
        self._retry = retry

    @property
    def retry_count(self) -> int:
        return self._retry.retry_count

    @property
    def max_retry_count(self) -> int:
        return self._retry.max_retry_count

    @property
    def exception(self) -> Any:
        return self._retry.exception if self._retry.HasField("exception") else None


class InvocationContext(func.Context):
    """The `context` argument of a function invocation."""

    def __init__(
        self,
        invocation_id: str,
        function_name: str,
        function_directory: str,
        request: pb.InvocationRequest,
    ) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._request = request

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return thread_local_storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> TraceContext:
        return TraceContext(self._request.trace_context)

    @property
    def retry_context(self) -> RetryContext:
        return RetryContext(self._request.retry_context)

    @property
    def logger(self) -> logging.Logger:
        """The function's own logger; its lines reach the host as this invocation's logs."""
        return logging.getLogger(function_logger_name(self._function_name))
