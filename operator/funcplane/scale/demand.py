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
          queue_lengths: dict[str, int] | None = None) -> list[FunctionLoad]:
    """Per-function load from the pods' reports. `queue_lengths` (function -> length) are read by
    the operator itself, with no pod to ask (scale from zero); a host's own figure wins."""
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
        limit = sum(known) / len(known) if known else float(target_concurrency)
        if name in queue_like:
            # Azure's target-based formula: the queue's length over what one instance runs at once;
            # the length counts messages being run (hidden) too, in-flight is a floor before it is read.
            result.append(FunctionLoad(name, QUEUE, max(backlog.get(name, 0.0), demand[name]), limit))
        else:
            result.append(FunctionLoad(name, HTTP, demand[name], limit * utilization))
    return result
