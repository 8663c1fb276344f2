"""Host logging: host.json logging.logLevel by category, and RpcLog from workers carried in."""

from __future__ import annotations

import collections
import logging
import sys
from typing import Any
from collections.abc import Mapping

from funcplane_protocol import FunctionRpc_pb2 as rpc

TRACE = 5
_LEVEL_NAMES = {
    "trace": TRACE, "debug": logging.DEBUG, "information": logging.INFO, "info": logging.INFO,
    "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL, "none": 100,
}
_RPC_LEVELS = {
    rpc.RpcLog.Trace: TRACE, rpc.RpcLog.Debug: logging.DEBUG, rpc.RpcLog.Information: logging.INFO,
    rpc.RpcLog.Warning: logging.WARNING, rpc.RpcLog.Error: logging.ERROR, rpc.RpcLog.Critical: logging.CRITICAL,
    rpc.RpcLog.Level.Value("None"): 100,
}
function_logger = logging.getLogger("funcplane.function")
worker_logger = logging.getLogger("funcplane.worker")


class CategoryLevels:
    """Minimum level per log category, by longest matching prefix of host.json logging.logLevel."""

    def __init__(self, configured: Mapping[str, str]) -> None:
        self._levels: dict[str, int] = {}
        for category, name in configured.items():
            level = _LEVEL_NAMES.get(name.lower())
            if level is None:
                raise ValueError(
                    f"host.json logging.logLevel.{category}: {name!r} is not a level; use one of "
                    "Trace, Debug, Information, Warning, Error, Critical, None"
                )
            self._levels[category] = level
        self.default = self._levels.get("default", logging.INFO)
        self._cache: dict[str, int] = {}

    def level_for(self, category: str) -> int:
        cached = self._cache.get(category)
        if cached is not None:
            return cached
        best, best_length = self.default, -1
        for prefix, level in self._levels.items():
            if prefix == "default":
                continue
            if (category == prefix or category.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = level, len(prefix)
        self._cache[category] = best
        return best

    def enabled(self, category: str, level: int) -> bool:
        return level >= self.level_for(category)


def configure_logging(levels: CategoryLevels) -> None:
    logging.addLevelName(TRACE, "TRACE")
    root = logging.getLogger()
    if not any(getattr(handler, "_funcplane", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._funcplane = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(levels.default, levels.level_for("Function"), levels.level_for("Host"), logging.INFO))
    # Chatty libraries stay at WARNING unless asked.
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, levels.level_for("Host.Access")))
    logging.getLogger("funcplane.worker").setLevel(levels.level_for("Host.Worker"))
    logging.getLogger("azure").setLevel(logging.WARNING)  # the storage SDK logs every request at INFO


def emit_rpc_log(levels: CategoryLevels, log: Any, function_name: str | None, worker_id: str) -> None:
    """Carry one RpcLog into the host log, filtered by the category's configured level."""
    level = _RPC_LEVELS.get(log.level, logging.INFO)
    if log.log_category == rpc.RpcLog.System:
        function_name = None  # the worker's own diagnostics, even when tied to an invocation
    if function_name:
        category = f"Function.{function_name}.User"
    else:
        category = "Host.Worker" + (f".{log.category}" if log.category else "")
    if not levels.enabled(category, level):
        return
    suffix = f" (invocationId={log.invocation_id})" if log.invocation_id else ""
    if log.exception.message:
        suffix += f"; exception: {log.exception.message}"
    target = function_logger if function_name else worker_logger
    target.log(level, "[%s] %s%s", category, log.message, suffix,
               extra={"invocation_id": log.invocation_id, "worker_id": worker_id})


DROPPED_LOG_LINES_PROPERTY = "droppedLogLines"  # set by a worker on its report of dropped lines
RECENT_INVOCATIONS = 4096


def dropped_log_lines(log: Any) -> int:
    """How many lines a worker says it dropped (0 for an ordinary log line)."""
    if DROPPED_LOG_LINES_PROPERTY not in log.propertiesMap:
        return 0
    return max(0, log.propertiesMap[DROPPED_LOG_LINES_PROPERTY].int)


class RecentInvocations:
    """Function names of the last finished invocations, so that a line logged after its
    invocation ended (a thread the function started, a line that overtook nothing) keeps its
    function's category."""

    def __init__(self, limit: int = RECENT_INVOCATIONS) -> None:
        self._limit = limit
        self._names: collections.OrderedDict[str, str] = collections.OrderedDict()

    def add(self, invocation_id: str, function_name: str) -> None:
        self._names[invocation_id] = function_name
        if len(self._names) > self._limit:
            self._names.popitem(last=False)

    def get(self, invocation_id: str) -> str | None:
        return self._names.get(invocation_id)
