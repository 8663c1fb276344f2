"""Reach a Service of the local cluster from this machine, as kube-proxy would.

Nothing answers at a Service's ClusterIP here (there is no kube-proxy), so these follow the
Service's EndpointSlices instead: a watch keeps the set of ready endpoints current, and every
request or connection goes to one of them (round robin). `ServiceEndpoints` is the follower,
`EndpointClient` sends HTTP requests through it and `PortForward` is a TCP listener on 127.0.0.1
that relays each connection to one ready endpoint (`funcplane dev port-forward`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from kubernetes import client, watch

LOG = logging.getLogger("funcplane.endpoints")
SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


class ServiceEndpoints:
    """The ready endpoints of one Service, kept current by a watch on its EndpointSlices.

    `lag` applies each change that many seconds after the watch delivered it, as a kube-proxy (its
    minimum sync period, then the rule update) or a load balancer does: requests keep going to a
    removed endpoint meanwhile, which is what a pod's drain grace period is for."""

    def __init__(self, api: client.ApiClient, namespace: str, service: str, *, port_name: str | None = None,
                 lag: float = 0.0) -> None:
        self.namespace, self.service, self.port_name, self.lag = namespace, service, port_name, lag
        self._api = client.DiscoveryV1Api(api)
        self._slices: dict[str, list[Endpoint]] = {}
        self._pending: list[tuple[float, dict[str, list[Endpoint]]]] = []  # (when due, slices) under lag
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._turn = itertools.count()
        self._thread = threading.Thread(target=self._follow, name=f"endpoints-{service}", daemon=True)

    def start(self) -> "ServiceEndpoints":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> "ServiceEndpoints":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ready(self) -> list[Endpoint]:
        with self._changed:
            now = time.monotonic()
            while self._pending and self._pending[0][0] <= now:
                self._slices = self._pending.pop(0)[1]
            return sorted({e for endpoints in self._slices.values() for e in endpoints}, key=lambda e: (e.ip, e.port))

    def _publish(self, slices: dict[str, list[Endpoint]]) -> None:
        """Make `slices` the current state, at once or `lag` seconds from now (caller holds the lock)."""
        if self.lag > 0:
            self._pending.append((time.monotonic() + self.lag, slices))
        else:
            self._slices = slices
        self._changed.notify_all()

    def _latest(self) -> dict[str, list[Endpoint]]:
        return dict(self._pending[-1][1] if self._pending else self._slices)

    def pick(self, timeout: float = 0.0) -> Endpoint | None:
        """One ready endpoint (round robin), waiting up to `timeout` for the Service to have one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (ready := self.ready) and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(min(remaining, 0.1))  # a lagging change is due without a notify
        return ready[next(self._turn) % len(ready)] if ready else None

    def _endpoints(self, endpoint_slice: client.V1EndpointSlice) -> list[Endpoint]:
        ports = [p for p in endpoint_slice.ports or [] if self.port_name in (None, p.name)]
        if not ports:
            return []
        return [Endpoint(address, ports[0].port) for endpoint in endpoint_slice.endpoints or []
                if endpoint.conditions is None or endpoint.conditions.ready is not False
                for address in endpoint.addresses[:1]]

    def _follow(self) -> None:
        selector = f"{SERVICE_LABEL}={self.service}"
        while not self._stop.is_set():
            try:
                listed = self._api.list_namespaced_endpoint_slice(self.namespace, label_selector=selector)
                with self._changed:
                    self._publish({s.metadata.name: self._endpoints(s) for s in listed.items})
                version = listed.metadata.resource_version
                stream = watch.Watch().stream(self._api.list_namespaced_endpoint_slice, self.namespace,
                                              label_selector=selector, resource_version=version, timeout_seconds=30)
                for event in stream:
                    if self._stop.is_set():
                        return
                    endpoint_slice = event["object"]
                    with self._changed:
                        slices = self._latest()
                        if event["type"] == "DELETED":
                            slices.pop(endpoint_slice.metadata.name, None)
                        else:
                            slices[endpoint_slice.metadata.name] = self._endpoints(endpoint_slice)
                        self._publish(slices)
            except Exception as error:  # noqa: BLE001 - the follower outlives API hiccups: list again
                LOG.debug("following the EndpointSlices of %s failed: %s", self.service, error)
                self._stop.wait(0.5)


class EndpointClient:
    """HTTP GETs to a Service: each request goes to one of its ready endpoints."""

    def __init__(self, endpoints: ServiceEndpoints, *, timeout: float = 10.0) -> None:
        self.endpoints, self.timeout = endpoints, timeout

    def get(self, path: str, *, wait: float = 0.0) -> tuple[Endpoint, int, bytes]:
        """(the endpoint asked, its status, its body); OSError if none is ready or it cannot be reached."""
        endpoint = self.endpoints.pick(timeout=wait)
        if endpoint is None:
            raise ConnectionError(f"Service {self.endpoints.service} has no ready endpoint")
        try:
            with urllib.request.urlopen(endpoint.url + path, timeout=self.timeout) as response:
                return endpoint, response.status, response.read()
        except urllib.error.HTTPError as error:
            return endpoint, error.code, error.read()


class PortForward:
    """A TCP listener on 127.0.0.1 relaying each connection to one ready endpoint of a Service."""

    def __init__(self, endpoints: ServiceEndpoints, port: int = 0) -> None:
        self.endpoints = endpoints
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]

    def serve_forever(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(downstream,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _relay(self, downstream: socket.socket) -> None:
        endpoint = self.endpoints.pick(timeout=5.0)
        if endpoint is None:
            LOG.warning("Service %s has no ready endpoint; closing the connection", self.endpoints.service)
            downstream.close()
            return
        try:
            upstream = socket.create_connection((endpoint.ip, endpoint.port), timeout=10)
        except OSError as error:
            LOG.warning("cannot reach %s:%d: %s", endpoint.ip, endpoint.port, error)
            downstream.close()
            return
        upstream.settimeout(None)
        pipes = [threading.Thread(target=_pipe, args=(downstream, upstream), daemon=True),
                 threading.Thread(target=_pipe, args=(upstream, downstream), daemon=True)]
        for pipe in pipes:
            pipe.start()
        for pipe in pipes:
            pipe.join()
        upstream.close()
        downstream.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
