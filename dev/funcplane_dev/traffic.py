"""Steady HTTP traffic to a Service of the local cluster while its pods go away.

A client that follows the Service's EndpointSlices (as kube-proxy does) keeps sending requests from a
few threads; every answer that is not 2xx, every connection error and every answer `on_answer`
refuses is a failure, recorded with its time. The demo's swap and the drain test both use it. `pods_go_away`
runs the scenario that draining is for: under that traffic one pod is deleted directly and the app
is scaled down to one replica, and the traffic stops once only one pod is left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from .cluster import LocalCluster
from .endpoints import EndpointClient, ServiceEndpoints


@dataclass
class TrafficReport:
    sent: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, what went wrong)


class SteadyTraffic:
    """`threads` clients sending GET `path` to the Service, bounded in count and in time."""

    def __init__(self, endpoints: ServiceEndpoints | None, path: str, *, threads: int = 4, max_requests: int = 20000,
                 max_seconds: float = 120.0, pause: float = 0.01,
                 endpoint_wait: float = 5.0, on_answer: Callable[[float, bytes], None] | None = None,
                 client: Any = None) -> None:
        """`endpoint_wait`: how long a request waits for a ready endpoint before it fails;
        `on_answer(time, body)` sees each 2xx answer, and a ValueError or KeyError from it is a failure.
        `client` replaces the EndpointSlice client (e.g. realnode.VipClient: through a ClusterIP)."""
        self.client = client or EndpointClient(endpoints, timeout=10.0)
        self.path, self.max_requests, self.max_seconds, self.pause = path, max_requests, max_seconds, pause
        self.endpoint_wait, self.on_answer = endpoint_wait, on_answer
        self.report = TrafficReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, name=f"traffic-{n}", daemon=True)
                         for n in range(threads)]

    def start(self) -> "SteadyTraffic":
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> TrafficReport:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.report

    def sent(self) -> int:
        with self._lock:
            return self.report.sent

    def _send(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if self.report.sent >= self.max_requests:
                    return
                self.report.sent += 1
            at = time.monotonic()
            try:
                endpoint, status, body = self.client.get(self.path, wait=self.endpoint_wait)
                failure = None if 200 <= status < 300 else f"{endpoint.ip}: {status} {body[:120]!r}"
                if failure is None and self.on_answer is not None:
                    self.on_answer(at, body)
            except OSError as error:  # refused, reset, timed out, or no endpoint at all
                failure = f"{type(error).__name__}: {error}"
            except (ValueError, KeyError) as error:  # an answer on_answer cannot read
                failure = f"unreadable answer: {error}"
            if failure is not None:
                with self._lock:
                    self.report.failures.append((at, failure))
            self._stop.wait(self.pause)


def _live_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=selector).items


# How late the client applies endpoint changes: kube-proxy's default minimum sync period (1 s) plus
# the rule update. A client that learnt of a removal at once would hide a host that stops too soon.
PROXY_LAG_SECONDS = 1.5


def pods_go_away(cluster: LocalCluster, namespace: str, app: str, path: str, *, threads: int = 4,
                 timeout: float = 120.0, lag: float = PROXY_LAG_SECONDS) -> TrafficReport:
    """Traffic through the EndpointSlices of the app's Service (named like the app), applied `lag`
    seconds late as by a kube-proxy, while one pod is deleted and the app is scaled to one replica;
    returns once a single pod is left."""
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    selector = f"funcplane.io/app={app}"
    with ServiceEndpoints(api, namespace, app, lag=lag) as endpoints:
        pods = _live_pods(core, namespace, selector)
        _wait(lambda: len(endpoints.ready) >= len(pods), timeout, f"{len(pods)} ready endpoints of Service {app}")
        traffic = SteadyTraffic(endpoints, path, threads=threads, max_seconds=timeout).start()
        try:
            _wait(lambda: traffic.sent() >= 20 * threads, timeout, "traffic to be flowing")
            # Deleted first: its replacement is not ready yet, so the scale-down removes it first.
            cluster.kubectl("-n", namespace, "delete", "pod", pods[0].metadata.name, "--wait=false")
            cluster.kubectl("-n", namespace, "scale", "functionapp", app, "--replicas=1")
            _wait(lambda: len(_live_pods(core, namespace, selector)) == 1, timeout,
                  f"the pods of {app} to go away but one")
        finally:
            report = traffic.stop()
    api.close()
    return report


def _wait(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
