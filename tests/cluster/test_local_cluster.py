"""The local control plane behaves like a cluster: scheduling, readiness, endpoints, failures."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from funcplane_dev import stages
from funcplane_dev.cluster import ClusterError, LocalCluster, processes_naming
from funcplane_dev.podrunner import PodRunner
from support import eventually, hello_code_configmap, hello_host_deployment, isolated_cache

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example.invalid/web:1, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def _pod(name: str, annotations: dict[str, str], labels: dict[str, str] | None = None) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/web:1"}]},
    })


def _pods(cluster: LocalCluster, namespace: str, selector: str | None = None) -> list[dict]:
    args = ["get", "pods", "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
    return json.loads(cluster.kubectl(*args).stdout)["items"]


def _pod_when(cluster: LocalCluster, namespace: str, name: str, predicate) -> dict | None:
    pod = json.loads(cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    return pod if predicate(pod) else None


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def test_deployment_pods_become_ready_on_kwok_nodes_and_endpointslice_lists_them(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    # A pod that the Service selects but that is marked never to pass readiness.
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=_pod("never-ready", {stages.ANNOTATION_READY: "false"}, {"app": "web"}))

    def three_ready() -> list[dict] | None:
        ready = [p for p in _pods(cluster, namespace, "pod-template-hash") if _ready(p)]
        return ready if len(ready) == 3 else None

    ready = eventually(three_ready, what="3 Ready pods of the Deployment")
    nodes = {p["spec"]["nodeName"] for p in ready}
    assert nodes <= {f"kwok-node-{i}" for i in range(3)}, nodes
    ips = {p["status"]["podIP"] for p in ready}
    assert len(ips) == 3

    def endpoints() -> dict[str, bool] | None:
        slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", namespace, "-l",
                                            "kubernetes.io/service-name=web", "-o", "json").stdout)["items"]
        seen = {e["addresses"][0]: bool(e["conditions"].get("ready"))
                for s in slices for e in s.get("endpoints") or []}
        return seen if len(seen) == 4 else None

    seen = eventually(endpoints, what="the EndpointSlice of Service web listing all 4 selected pods")
    assert {ip for ip, ok in seen.items() if ok} == ips

    deployment = json.loads(cluster.kubectl("get", "deployment", "web", "-n", namespace, "-o", "json").stdout)
    assert deployment["status"].get("readyReplicas") == 3

    never = json.loads(cluster.kubectl("get", "pod", "never-ready", "-n", namespace, "-o", "json").stdout)
    assert never["status"]["phase"] == "Running"
    assert not _ready(never), "a pod annotated ready=false must stay unready"
    assert seen[never["status"]["podIP"]] is False


def test_pod_ready_after_delay_and_failing_pod(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("slow", {stages.ANNOTATION_READY_AFTER: "4s"}))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("broken", {stages.ANNOTATION_FAIL: "true"}))

    running = eventually(lambda: _pod_when(cluster, namespace, "slow", lambda p: p["status"].get("phase") == "Running"),
                         what="pod slow Running")
    assert not _ready(running), "a pod with a readiness delay starts unready"
    eventually(lambda: _pod_when(cluster, namespace, "slow", _ready), timeout=30, what="pod slow Ready after its delay")

    broken = eventually(lambda: _pod_when(cluster, namespace, "broken", lambda p: p["status"].get("containerStatuses")),
                        what="pod broken to report its container")
    status = broken["status"]["containerStatuses"][0]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["restartCount"] > 0
    assert not _ready(broken)


def test_a_deleted_pod_held_by_the_pod_runner_waits_and_keeps_its_ip(cluster, namespace):
    """As a kubelet keeps a deleted pod (and its IP) until its containers have exited, the runner's
    finalizer keeps it until the host has stopped; other deleted pods go at once."""
    held = json.loads(_pod("held", {}))
    held["metadata"]["finalizers"] = [stages.RUNNER_FINALIZER]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(held))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("plain", {}))
    ip = eventually(lambda: _pod_when(cluster, namespace, "held", lambda p: p["status"].get("podIP")),
                    what="pod held to get an IP")["status"]["podIP"]
    eventually(lambda: _pod_when(cluster, namespace, "plain", lambda p: p["status"].get("podIP")),
               what="pod plain to get an IP")
    cluster.kubectl("delete", "pod", "held", "plain", "-n", namespace, "--wait=false")
    eventually(lambda: cluster.kubectl("get", "pod", "plain", "-n", namespace, check=False).returncode != 0,
               timeout=30, what="the deleted pod without the finalizer to go")
    terminating = _pod_when(cluster, namespace, "held", lambda p: p["metadata"].get("deletionTimestamp"))
    assert terminating is not None and terminating["status"]["podIP"] == ip
    cluster.kubectl("patch", "pod", "held", "-n", namespace, "--type=json",
                    "-p", '[{"op": "remove", "path": "/metadata/finalizers/0"}]')
    eventually(lambda: cluster.kubectl("get", "pod", "held", "-n", namespace, check=False).returncode != 0,
               timeout=30, what="the pod to go once the runner let it go")


def test_cli_up_shows_ready_nodes_then_down_leaves_nothing(tmp_path: Path):
    env = isolated_cache(tmp_path)
    cli = [sys.executable, "-m", "funcplane.cli.main"]
    up = subprocess.run([*cli, "dev", "cluster", "up", "--name", "cli-test", "--nodes", "2"], env=env,
                        capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    cluster = LocalCluster.load("cli-test", tmp_path / "cache" / "clusters" / "cli-test")
    assert cluster is not None
    try:
        nodes = cluster.kubectl("get", "nodes", "--no-headers").stdout.splitlines()
        assert len(nodes) == 2 and all(" Ready " in line for line in nodes), nodes
        status = subprocess.run([*cli, "dev", "cluster", "status", "--name", "cli-test"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and json.loads(status.stdout)["apiserver_ready"] is True
        again = subprocess.run([*cli, "dev", "cluster", "up", "--name", "cli-test", "--nodes", "2"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0
        assert LocalCluster.load("cli-test", cluster.directory).processes["kube-apiserver"].pid == \
            cluster.processes["kube-apiserver"].pid, "a healthy cluster is reused, not restarted"
        serve_at_pod_ips_from_this_process(cluster, tmp_path)
    finally:
        down = subprocess.run([*cli, "dev", "cluster", "down", "--name", "cli-test"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not cluster.directory.exists()
    assert not processes_naming(cluster.directory), "a process of the removed cluster still runs"
    assert cluster.pod_cidr not in _loopback_addresses(), "the pod network outlived the cluster"
    for port in cluster.ports.values():
        with socket.socket() as sock:
            # SO_REUSEADDR tolerates closed connections in TIME_WAIT but not a listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


def _loopback_addresses() -> str:
    return subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout


def serve_at_pod_ips_from_this_process(started_elsewhere: LocalCluster, tmp_path: Path) -> None:
    """A cluster another process started, reused here: its whole state (the pod network too) is
    loaded, so hosts bind their pod IPs and answer there."""
    reused = LocalCluster.named("cli-test", nodes=2, directory=started_elsewhere.directory).up()
    assert reused.processes["kube-apiserver"].pid == started_elsewhere.processes["kube-apiserver"].pid
    assert reused.pod_cidr and reused.pod_cidr == started_elsewhere.pod_cidr
    reused.kubectl("create", "namespace", "reuse")
    eventually(lambda: reused.kubectl("get", "serviceaccount", "default", "-n", "reuse", check=False).returncode == 0,
               timeout=30, what="the default ServiceAccount of namespace reuse")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hello-secret"},
              "stringData": {"greeting": "hi"}}
    reused.kubectl("apply", "-n", "reuse", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [hello_code_configmap("hello-code"), secret,
                                                       hello_host_deployment(1)]}))
    with PodRunner(reused, "reuse", tmp_path / "pods") as runner:
        (pod,) = eventually(lambda: list(runner.running.values()), what="a host for the pod")
        assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(reused.pod_cidr)
        assert reused.pod_cidr in _loopback_addresses(), "the reusing process made the pod network local"

        def hello() -> str | None:
            try:
                with urllib.request.urlopen(f"{pod.url}/api/hello?name=reuse", timeout=10) as response:
                    return response.read().decode()
            except OSError:
                return None
        assert eventually(hello, timeout=90, what=f"the host at {pod.url} to answer") == "Hello, reuse!"


def test_crashed_component_is_reported_and_stale_cluster_replaced(tmp_path: Path):
    local = LocalCluster.named("stale", nodes=1, directory=tmp_path / "stale").up(reuse=False)
    try:
        old_pid = local.processes["kube-apiserver"].pid
        os.kill(old_pid, signal.SIGKILL)
        eventually(lambda: any(p.name == "kube-apiserver" for p in local.crashed()), timeout=10,
                   what="the killed apiserver to be reported as crashed")
        status = local.status()
        assert status["components"]["kube-apiserver"] == "stopped"
        assert status["crashed_log_tails"]["kube-apiserver"].strip(), "the crashed component's log tail is shown"
        assert not local.healthy()

        replaced = LocalCluster.named("stale", nodes=1, directory=tmp_path / "stale").up()
        assert replaced.healthy()
        assert replaced.processes["kube-apiserver"].pid != old_pid
        assert "Ready" in replaced.kubectl("get", "nodes", "--no-headers").stdout
        # A fresh object for the directory knows the replacement's processes (state.json is loaded whole).
        fresh = LocalCluster.named("stale", directory=tmp_path / "stale")
        assert fresh.reload() and fresh.processes["kube-apiserver"].pid == replaced.processes["kube-apiserver"].pid
    finally:
        LocalCluster.named("stale", directory=tmp_path / "stale").down()
        local.down()
    assert not processes_naming(tmp_path / "stale"), "down() from a fresh object left processes of the cluster"


def test_port_clash_is_one_actionable_error(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        clash = LocalCluster.named("clash", nodes=1, directory=tmp_path / "clash")
        clash.ports["kube-apiserver"] = port
        with pytest.raises(ClusterError) as failure:
            clash.up(reuse=False)
    message = str(failure.value)
    assert "kube-apiserver" in message and "address already in use" in message
    assert "run `funcplane dev cluster up` again" in message
    assert not [p for p in clash.processes.values() if Path(f"/proc/{p.pid}").exists()]
