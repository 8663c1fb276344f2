"""Prometheus metrics of one host (own registry, so several hosts in one process stay apart)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HostMetrics:
    def __init__(self, host_id: str, slot: str) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "funcplane_invocations", "Function invocations by outcome",
            ["function", "outcome"], registry=self.registry,
        )
        self.duration = Histogram(
            "funcplane_invocation_duration_seconds", "Invocation duration in seconds",
            ["function"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.in_flight = Gauge(
            "funcplane_invocations_in_flight", "Invocations currently executing",
            ["function"], registry=self.registry,
        )
        self.http_queued = Gauge(
            "funcplane_http_requests_queued", "HTTP requests waiting for a concurrency slot",
            registry=self.registry,
        )
        self.http_throttled = Counter(
            "funcplane_http_throttled", "HTTP requests rejected with 429", registry=self.registry,
        )
        self.worker_restarts = Counter(
            "funcplane_worker_restarts", "Worker process restarts", ["language"], registry=self.registry,
        )
        self.worker_log_lines_dropped = Counter(
            "funcplane_worker_log_lines_dropped", "Log lines a worker dropped because its log buffer was full",
            ["language"], registry=self.registry,
        )
        info = Gauge("funcplane_host_info", "Host identity", ["host_id", "slot"], registry=self.registry)
        info.labels(host_id=host_id, slot=slot).set(1)

        self._children: dict[tuple[str, str], Any] = {}

    def child(self, metric: str, function: str, outcome: str = "") -> Any:
        """A labelled child, cached: label lookups are off the invocation hot path."""
        key = (metric, function + "\0" + outcome)
        found = self._children.get(key)
        if found is None:
            if metric == "invocations":
                found = self.invocations.labels(function=function, outcome=outcome)
            else:
                found = getattr(self, metric).labels(function=function)
            self._children[key] = found
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
