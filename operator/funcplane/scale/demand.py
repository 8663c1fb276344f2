"""Demand per function from the hosts' `GET /admin/concurrency` reports (README "Queues and concurrency").

Generic on purpose: any entry that carries a `backlog` (a queue's length, or any other pending
work a host reports that way) is queue-like demand, shared by every pod, so it is read once (the
largest report) and divided by the per-pod concurrency; any other entry is HTTP-like demand,
in-flight + queued summed over pods, divided by the per-pod limit at the target utilization.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

HTTP = "http"
QUEUE = "queue"


@dataclass(frozen=True)
class FunctionLoad:
    """One function in one tick, over all the pods read."""

    name: str
    metric: str  # HTTP or QUEUE
    demand: float  # HTTP: in-flight + queued over all pods; QUEUE: the queue's length
    per_pod: float  # what one pod takes at the target (the limit x utilization for HTTP)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def loads(reports: Iterable[dict[str, Any]], *, target_concurrency: int, utilization: float,
          queue_lengths: dict[str, int] | None = None,
          known_limits: dict[str, float] | None = None) -> list[FunctionLoad]:
    """Per-function load from the pods' reports. `queue_lengths` (function -> length) are read by
    the operator itself, with no pod to ask (scale from zero); a host's own figure wins.
    `known_limits` (function -> per-pod limit last reported) stand in for a function no pod reports."""
    demand: dict[str, float] = {}
    backlog: dict[str, float] = {}
    limits: dict[str, list[float]] = {}
    queue_like: set[str] = set()
    for report in reports:
        for name, entry in ((report or {}).get("functions") or {}).items():
            if not isinstance(entry, dict):
                continue
            running = (_number(entry.get("inFlight")) or 0.0) + (_number(entry.get("queued")) or 0.0)
            demand[name] = demand.get(name, 0.0) + max(running, 0.0)
            if "backlog" in entry or entry.get("trigger") == QUEUE:
                queue_like.add(name)
                length = _number(entry.get("backlog"))
                if length is not None:
                    backlog[name] = max(backlog.get(name, 0.0), length)
            limit = _number(entry.get("concurrency"))
            if limit is not None and limit > 0:
                limits.setdefault(name, []).append(limit)
    for name, length in (queue_lengths or {}).items():
        if name not in backlog:
            queue_like.add(name)
            backlog[name] = float(length)
            demand.setdefault(name, 0.0)
    result = []
    for name in sorted(demand):
        known = limits.get(name)
        limit = sum(known) / len(known) if known else (known_limits or {}).get(name, float(target_concurrency))
        if name in queue_like:
            # Azure's target-based formula: the queue's length over what one instance runs at once;
            # the length counts messages being run (hidden) too, in-flight is a floor before it is read.
            result.append(FunctionLoad(name, QUEUE, max(backlog.get(name, 0.0), demand[name]), limit))
        else:
            result.append(FunctionLoad(name, HTTP, demand[name], limit * utilization))
    return result


@dataclass(frozen=True)
class QueueSource:
    """Where a queue function's backlog is: the binding's queueName (may hold %Setting%) and the
    name of the app setting with the connection string."""

    queue_name: str
    connection: str


def queue_sources(reports: Iterable[dict[str, Any]]) -> dict[str, QueueSource]:
    """Function -> its queue, from the hosts' reports (entries that name a queue)."""
    found = {}
    for report in reports:
        for name, entry in ((report or {}).get("functions") or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("queueName"), str) and entry["queueName"]:
                connection = entry.get("connection")
                found[name] = QueueSource(entry["queueName"], connection if isinstance(connection, str) and
                                          connection else "AzureWebJobsStorage")
    return found


def resolve_setting_references(text: str, settings: dict[str, str]) -> str:
    """`%NAME%` replaced by the app setting NAME, as the host resolves a binding's queueName."""
    parts = text.split("%")
    if len(parts) % 2 == 0:
        raise ValueError(f"{text!r}: unbalanced % in a setting reference")
    resolved = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            resolved.append(part)
        elif part not in settings:
            raise ValueError(f"{text!r}: app setting {part!r} is not set")
        else:
            resolved.append(settings[part])
    return "".join(resolved).lower()
