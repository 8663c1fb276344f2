"""High availability of the operator: two real `funcplane-operator` processes, one Lease.

Both replicas run with the default lease timing (client-go's: duration 15 s, renew deadline 10 s,
retry 2 s) and debug logs, in which every reconcile is logged with its start time and duration. A
sampler polls both replicas' /metrics throughout. The tests assert who may reconcile when, and print the
measured takeover times (no timing asserts; the timeouts are generous).
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

import diagnostics
from funcplane.render.names import LABEL_APP
from operator_helpers import apply_examples, wait_app_ready
from funcplane.controllers.leader import EXIT_LEASE_LOST
from ha_support import Replica, holder, lease
from support import eventually

@dataclass
class Sample:
    at: float
    identity: str
    leader: float
    reconciles: float


@dataclass
class Sampler:
    """Polls every replica's /metrics in the background; the record proves who was leader when."""

    replicas: list[Replica]
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for replica in self.replicas:
                values = replica.metrics()
                if values is not None:
                    self.samples.append(Sample(time.time(), replica.identity, values.get("funcplane_leader", 0.0),
                                               replica.reconciles(values)))

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        return self.samples


def deployment_replicas(cluster: Any, namespace: str, app: str) -> str:
    return cluster.kubectl("-n", namespace, "get", "deployments", "-l", f"{LABEL_APP}={app}",
                           "-o", "jsonpath={.items[*].spec.replicas}").stdout.strip()


def scale_app(cluster: Any, namespace: str, app: str, replicas: int) -> None:
    cluster.kubectl("-n", namespace, "patch", "functionapp", app, "--type=merge",
                    "-p", json.dumps({"spec": {"replicas": replicas}}))


@pytest.fixture
def replicas(crds: Any, namespace: str, tmp_path: Path):
    started: list[Replica] = []

    def start(identity: str, *, kubeconfig: Path | None = None, extra: tuple[str, ...] = ()) -> Replica:
        replica = Replica(identity, kubeconfig=kubeconfig or crds.kubeconfig, env=crds.env, log_dir=tmp_path,
                          scope=["--namespace", namespace], lease_namespace=namespace, extra=extra)
        started.append(replica)
        diagnostics.register(f"operator {identity}", replica.log_path.read_text)
        return replica

    yield start
    for replica in started:
        replica.close()


def assert_one_leader_at_a_time(samples: list[Sample]) -> None:
    """No two replicas reported leader=1 in overlapping sampling rounds (0.2 s apart)."""
    leaders = sorted((s.at, s.identity) for s in samples if s.leader == 1)
    for (t1, a), (t2, b) in zip(leaders, leaders[1:]):
        assert a == b or t2 - t1 > 0.1, f"{a} and {b} were both leader within {t2 - t1:.3f}s"


def assert_standby_never_reconciled(samples: list[Sample], identity: str) -> None:
    """While `identity` was a standby, its reconcile counter stayed at zero."""
    mine = [s for s in samples if s.identity == identity]
    first_leading = next((s.at for s in mine if s.leader == 1), float("inf"))
    standby = [s for s in mine if s.at < first_leading]
    assert standby, f"no standby samples of {identity}"
    assert all(s.reconciles == 0 for s in standby), f"{identity} reconciled as a standby: {standby}"


def wait_leader(cluster: Any, namespace: str, replica: Replica, timeout: float = 60) -> None:
    eventually(lambda: holder(cluster, namespace) == replica.identity and
               (replica.health() or (0, {}))[1].get("leader") is True,
               timeout=timeout, interval=0.1, what=f"{replica.identity} to lead")


def wait_standby(replica: Replica) -> None:
    eventually(lambda: (replica.health() or (0, {}))[1].get("holder") not in (None, replica.identity),
               timeout=30, what=f"{replica.identity} to see another holder")


def leader_standby_and_ready_app(cluster: Any, namespace: str, replicas: Any) -> tuple[Replica, Replica, Sampler]:
    """replica-a leads, replica-b stands by, both are sampled, and the example app is Ready."""
    first = replicas("replica-a")
    wait_leader(cluster, namespace, first)
    second = replicas("replica-b")
    wait_standby(second)
    sampler = Sampler([first, second])
    apply_examples(cluster, namespace, "functionapp.yaml")
    wait_app_ready(cluster, namespace, "hello")
    return first, second, sampler


def test_standby_takes_over_when_the_leader_is_killed(crds: Any, namespace: str, replicas: Any) -> None:
    cluster = crds
    first, second, sampler = leader_standby_and_ready_app(cluster, namespace, replicas)
    assert first.reconcile_intervals(), "the leader logged no reconcile"

    killed_at = time.time()
    first.signal(signal.SIGKILL)
    first.wait()
    wait_leader(cluster, namespace, second, timeout=90)
    lease_taken = time.time() - killed_at
    scale_app(cluster, namespace, "hello", 3)
    eventually(lambda: deployment_replicas(cluster, namespace, "hello") == "3", timeout=60,
               what="the new leader to reconcile the scaled FunctionApp")
    reconciled = time.time() - killed_at
    print(f"\ntakeover after SIGKILL: lease held by the standby after {lease_taken:.1f}s, "
          f"scaled app reconciled {reconciled:.1f}s after the kill")

    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.log_tail()
    samples = sampler.stop()
    assert lease(cluster, namespace).get("holderIdentity") is None, "a clean shutdown must release the lease"

    assert_one_leader_at_a_time(samples)
    assert_standby_never_reconciled(samples, "replica-b")
    # The logs show the same from the processes' side: every reconcile of the new leader started
    # after the old one died, and every reconcile of the old leader ended before that.
    assert all(end <= killed_at for _, end in first.reconcile_intervals())
    assert second.reconcile_intervals(), "the new leader logged no reconcile"
    assert all(start >= killed_at for start, _ in second.reconcile_intervals())


def test_clean_shutdown_hands_over_without_overlap(crds: Any, namespace: str, replicas: Any) -> None:
    cluster = crds
    first, second, sampler = leader_standby_and_ready_app(cluster, namespace, replicas)

    stopped_at = time.time()
    first.signal(signal.SIGTERM)
    assert first.wait() == 0, first.log_tail()
    released_at = first.logged_at("released the leader lease")
    wait_leader(cluster, namespace, second)
    print(f"\nhandover after SIGTERM: the standby leads {time.time() - stopped_at:.1f}s after the signal")
    scale_app(cluster, namespace, "hello", 1)
    eventually(lambda: deployment_replicas(cluster, namespace, "hello") == "1", timeout=60,
               what="the new leader to reconcile the scaled FunctionApp")
    samples = sampler.stop()

    took_over_at = second.logged_at("became leader")
    assert released_at <= took_over_at
    assert all(end <= released_at for _, end in first.reconcile_intervals())
    assert second.reconcile_intervals(), "the new leader logged no reconcile"
    assert all(start >= took_over_at for start, _ in second.reconcile_intervals())
    assert_one_leader_at_a_time(samples)
    assert_standby_never_reconciled(samples, "replica-b")


class SeverableProxy:
    """A TCP proxy to the API server that can be cut: afterwards bytes go nowhere, both ways.

    Connections stay open, so the replica behind it sees what a network partition looks like:
    requests that never answer, not refusals."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            self._sockets.append(downstream)
            if self.cut.is_set():
                continue
            upstream = socket.create_connection(self.target)
            self._sockets.append(upstream)
            threading.Thread(target=self._pipe, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, downstream), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.cut.is_set():
                    sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for sock in self._sockets:
            sock.close()


def kubeconfig_via(original: Path, port: int, path: Path) -> Path:
    config = yaml.safe_load(original.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_partitioned_leader_stops_before_the_standby_starts(crds: Any, namespace: str, replicas: Any,
                                                              tmp_path: Path) -> None:
    cluster = crds
    server = urlparse(cluster.server)
    proxy = SeverableProxy((server.hostname, server.port))
    try:
        first = replicas("replica-a", kubeconfig=kubeconfig_via(cluster.kubeconfig, proxy.port,
                                                                tmp_path / "via-proxy.kubeconfig"))
        wait_leader(cluster, namespace, first)
        second = replicas("replica-b")
        wait_standby(second)
        apply_examples(cluster, namespace, "functionapp.yaml")
        wait_app_ready(cluster, namespace, "hello")

        exited_at: list[float] = []
        waiter = threading.Thread(target=lambda: (first.process.wait(), exited_at.append(time.time())), daemon=True)
        waiter.start()
        cut_at = time.time()
        proxy.cut.set()
        wait_leader(cluster, namespace, second, timeout=90)
        waiter.join(timeout=30)
        assert first.process.returncode == EXIT_LEASE_LOST, first.log_tail()
        took_over_at = second.logged_at("became leader")
        print(f"\npartitioned leader exited {exited_at[0] - cut_at:.1f}s after the cut; "
              f"the standby led {took_over_at - cut_at:.1f}s after it")
        assert exited_at[0] < took_over_at, "the old leader was still running when the standby took over"
        assert all(end < took_over_at for _, end in first.reconcile_intervals())
        assert all(start >= took_over_at for start, _ in second.reconcile_intervals())
    finally:
        proxy.close()
