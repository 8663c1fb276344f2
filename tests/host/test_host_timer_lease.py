"""The timer lock against a real API server: hosts of one slot share a Lease named after the
host id, only its holder runs the timers, a standby takes over when the holder dies, a clean stop
hands the Lease on, and a host without the Role says so instead of running anything."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from kubernetes import client

from funcplane.api import FunctionApp
from funcplane.render.app import host_access, production_view
from support import eventually, json_lines

TIMERS_V1 = Path(__file__).resolve().parent / "apps" / "timers-v1"
LEASE_SECONDS = 3


def host_rbac(cluster, namespace: str) -> None:
    """The ServiceAccount, Role and RoleBinding the operator renders for an app named shop."""
    app = FunctionApp.model_validate({
        "metadata": {"name": "shop", "namespace": namespace, "uid": "not-owned"},
        "spec": {"runtime": {"name": "python", "version": "3.12"}, "code": {"image": {"reference": "code:1"}}}})
    objects = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop", "namespace": namespace}}]
    for obj in host_access(app, [production_view(app)]):
        obj["metadata"].pop("ownerReferences")  # no FunctionApp exists here to own them
        objects.append(obj)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def service_account_dir(cluster, k8s, namespace: str, account: str, target: Path) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
    eventually(lambda: _exists(k8s, namespace, account), timeout=30, what=f"ServiceAccount {account}")
    issued = client.CoreV1Api(k8s).create_namespaced_service_account_token(
        account, namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])))
    target.mkdir(parents=True)
    (target / "token").write_text(issued.status.token)
    (target / "ca.crt").write_bytes((cluster.directory / "pki" / "ca.crt").read_bytes())
    (target / "namespace").write_text(namespace)
    return target


def _exists(k8s, namespace: str, account: str) -> bool:
    try:
        client.CoreV1Api(k8s).read_namespaced_service_account(account, namespace)
        return True
    except client.ApiException:
        return False


def in_cluster_env(cluster, account_dir: Path, runs: Path, tag: str) -> dict[str, str]:
    port = cluster.server.rsplit(":", 1)[1]
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port,
            "FUNCPLANE_SERVICEACCOUNT_DIR": str(account_dir), "FUNCPLANE_HOST_ID": "shop",
            "FUNCPLANE_TIMER_LEASE_SECONDS": str(LEASE_SECONDS),
            "RUNS_FILE": str(runs), "TICK_SCHEDULE": "*/1 * * * * *", "HOST_TAG": tag}


def lock_of(host) -> dict:
    return host.admin("/admin/host/status")["nonHttpTriggers"]["lock"]


def lease_holder(k8s, namespace: str) -> str | None:
    return client.CoordinationV1Api(k8s).read_namespaced_lease("shop-timers", namespace).spec.holder_identity


def test_only_the_lease_holder_runs_timers_and_a_standby_takes_over(
        cluster, namespace, k8s, start_host, tmp_path: Path) -> None:
    host_rbac(cluster, namespace)
    account = service_account_dir(cluster, k8s, namespace, "shop", tmp_path / "sa")
    runs = tmp_path / "runs.jsonl"
    first = start_host(TIMERS_V1, env=in_cluster_env(cluster, account, runs, "first"))
    first.wait_until(lambda: lock_of(first)["held"], "the first host to hold the lease")
    second = start_host(TIMERS_V1, env=in_cluster_env(cluster, account, runs, "second"))
    second.wait_until(lambda: lock_of(second)["holder"] == lock_of(first)["identity"],
                      "the second host to see the first one holding the lease")
    first.wait_until(lambda: len([r for r in json_lines(runs) if r["function"] == "tick"]) >= 4, "four runs")
    assert lease_holder(k8s, namespace) == lock_of(first)["identity"]
    assert not lock_of(second)["held"] and lock_of(second)["error"] is None
    second.wait_until(lambda: next(t for t in second.admin("/admin/host/status")["nonHttpTriggers"]["timers"]
                                   if t["function"] == "tick")["skipped"] >= 1, "the standby to skip a due run")

    first.process.send_signal(signal.SIGKILL)  # no chance to release: the lease must run out
    first.process.wait()
    second.wait_until(lambda: lock_of(second)["held"], "the standby to take the lease over", LEASE_SECONDS * 5)
    second.wait_until(lambda: json_lines(runs)[-1]["host"] == "second", "the standby's first run")
    ticks = [r["host"] for r in json_lines(runs) if r["function"] == "tick"]
    # One holder at a time: the first host's runs, then only the second's, never interleaved.
    switch = ticks.index("second")
    assert set(ticks[:switch]) == {"first"} and set(ticks[switch:]) == {"second"}, ticks
    assert lease_holder(k8s, namespace) == lock_of(second)["identity"]

    # A clean stop releases the lease so that the next pod need not wait for it to run out.
    assert second.stop() == 0
    eventually(lambda: lease_holder(k8s, namespace) is None, timeout=10, what="the lease to be released")


def test_host_without_the_role_reports_it_and_runs_nothing(cluster, namespace, k8s, start_host, tmp_path: Path) -> None:
    account = service_account_dir(cluster, k8s, namespace, "default", tmp_path / "sa")
    runs = tmp_path / "runs.jsonl"
    host = start_host(TIMERS_V1, env=in_cluster_env(cluster, account, runs, "lonely"))
    host.wait_until(lambda: lock_of(host)["error"] is not None, "the lease error to be reported")
    lock = lock_of(host)
    assert "403" in lock["error"] and "needs get, create and update on this Lease" in lock["error"], lock
    assert lock["held"] is False
    assert host.get("/api/ping").text == "pong"  # HTTP is unaffected
    assert json_lines(runs) == []
