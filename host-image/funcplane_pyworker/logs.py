"""Python `logging` -> RpcLog messages on the stream.

Every record becomes an RpcLog whose category is the logger's name. Records emitted while an
invocation runs carry its invocation id: the id travels in a ContextVar (async code and
sync functions run with a copy of the invocation's context) or, for threads the user starts
themselves, in ``context.thread_local_storage.invocation_id``.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable

from funcplane_pyworker.context import thread_local_storage
from funcplane_pyworker.protocol import pb
from funcplane_pyworker.status import rpc_exception

WORKER_LOGGER_NAME = "funcplane_pyworker"
worker_logger = logging.getLogger(WORKER_LOGGER_NAME)

current_invocation_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_invocation_id", default=""
)

# Loggers of the worker's own machinery; their records are System logs, not the app's.
_SYSTEM_LOGGER_PREFIXES = (WORKER_LOGGER_NAME, "grpc", "asyncio", "funcplane.http2")

_LEVELS = (
    (logging.CRITICAL, pb.RpcLog.Critical),
    (logging.ERROR, pb.RpcLog.Error),
    (logging.WARNING, pb.RpcLog.Warning),
    (logging.INFO, pb.RpcLog.Information),
    (logging.DEBUG, pb.RpcLog.Debug),
)


def rpc_level(levelno: int) -> int:
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return pb.RpcLog.Trace


def invocation_id_of_caller() -> str:
    return current_invocation_id.get() or getattr(thread_local_storage, "invocation_id", "") or ""


class RpcLogHandler(logging.Handler):
    """Sends each record to the host through `send`, which must be safe to call from any thread."""

    def __init__(self, send: Callable[[pb.StreamingMessage], None]) -> None:
        super().__init__(logging.NOTSET)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            is_system = record.name.startswith(_SYSTEM_LOGGER_PREFIXES)
            log = pb.RpcLog(
                invocation_id=invocation_id_of_caller(),
                category=record.name,
                level=rpc_level(record.levelno),
                message=record.getMessage(),
                log_category=pb.RpcLog.System if is_system else pb.RpcLog.User,
            )
            if record.exc_info and record.exc_info[1] is not None:
                log.exception.CopyFrom(rpc_exception(record.exc_info[1], user_code=not is_system))
            self._send(pb.StreamingMessage(rpc_log=log))
        except Exception:  # a log line must never break the code that wrote it
            self.handleError(record)


def install(send: Callable[[pb.StreamingMessage], None]) -> RpcLogHandler:
    """Route the root logger to the host. Level INFO, or DEBUG with PYTHON_ENABLE_DEBUG_LOGGING=1."""
    handler = RpcLogHandler(send)
    root = logging.getLogger()
    root.addHandler(handler)
    debug = os.environ.get("PYTHON_ENABLE_DEBUG_LOGGING", "").lower() in ("1", "true")
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return handler


def remove(handler: RpcLogHandler) -> None:
    logging.getLogger().removeHandler(handler)
