"""The real data plane against the simulated one, in the same cluster and run.

One cluster with a kwok node and a real node (kubelet, containerd, CNI bridge, kube-proxy), one
operator. The same app (production v1, staging v2, 2 replicas, code from a ConfigMap) runs twice:
on kwok's node with hosts as local processes at the pod IPs (the pod runner; traffic through an
EndpointSlice client that applies changes 1.5 s late, as kube-proxy would), and on the real node
as containers of the host image with the worker copied from its image (traffic through the
Service's ClusterIP, sent only once its DNAT rules exist). For each: apply to Ready, a scale-up
2 -> 4 to four ready endpoints, a swap under load, a scale-in 4 -> 1 under load (with 3 s
invocations in flight), and the failed requests. Also: the real node's start time, and per pod
of the host image the time from scheduled to Ready (its conditions, 1 s resolution).

    python benchmarks/bench_real_node.py
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "dev")]

from funcplane_dev import realnode  # noqa: E402
from funcplane_dev.cluster import LocalCluster  # noqa: E402
from funcplane_dev.endpoints import ServiceEndpoints  # noqa: E402
from funcplane_dev.podrunner import PodRunner, wait_until_serving  # noqa: E402
from funcplane_dev.traffic import PROXY_LAG_SECONDS, SteadyTraffic, TrafficReport  # noqa: E402
from bench_support import operated_cluster, wait as wait_until  # noqa: E402

APP = "bench"
FUNCTION_APP_PY = '''
import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="version", methods=["GET"])
def version(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(VERSION)


@app.route(route="slow", methods=["GET"])
def slow(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(3)
    return func.HttpResponse("done")
'''
TIMEOUT = 300.0
wait = functools.partial(wait_until, timeout=TIMEOUT)



def objects(real: bool) -> list[dict[str, Any]]:
    def code(name: str, version: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                "data": {"host.json": json.dumps({"version": "2.0"}),
                         "function_app.py": FUNCTION_APP_PY + f"\nVERSION = {version!r}\n"}}

    spec: dict[str, Any] = {
        "runtime": {"name": "python"}, "code": {"configMap": {"name": "code-v1"}}, "plan": "premium",
        "replicas": 2, "scale": {"maxReplicas": 10}, "functionTimeoutSeconds": 30,
        "settings": [{"name": "ENVIRONMENT", "value": "production", "sticky": True}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}}
    result = [code("code-v1", "v1"), code("code-v2", "v2")]
    if real:
        spec |= realnode.app_on_real_nodes()
        result.append(realnode.copy_worker_config())
    result += [{"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": APP}, "spec": spec},
               {"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": f"{APP}-staging"},
                "spec": {"appRef": APP, "slotName": "staging", "code": {"configMap": {"name": "code-v2"}},
                         "settings": [{"name": "ENVIRONMENT", "value": "staging", "sticky": True}]}}]
    return result


def get(cluster: LocalCluster, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def app_ready(cluster: LocalCluster, namespace: str) -> bool:
    status = get(cluster, namespace, "functionapp", APP).get("status", {})
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    return ready.get("status") == "True" and len(status.get("slots", {})) == 2


def production_instance(cluster: LocalCluster, namespace: str) -> str:
    return get(cluster, namespace, "functionapp", APP)["status"]["slots"]["production"]["instance"]


def pods(cluster: LocalCluster, namespace: str, instance: str) -> list[dict[str, Any]]:
    return get(cluster, namespace, "pods", "-l", f"funcplane.io/instance={instance}")["items"]


def ready_endpoints(cluster: LocalCluster, namespace: str, service: str) -> int:
    slices = get(cluster, namespace, "endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    return sum(1 for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready"))


def scheduled_to_ready(pod: dict[str, Any]) -> float | None:
    times = {c["type"]: c.get("lastTransitionTime") for c in pod["status"].get("conditions", [])}
    if not times.get("PodScheduled") or not times.get("Ready"):
        return None
    parse = lambda t: datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").timestamp()  # noqa: E731
    return parse(times["Ready"]) - parse(times["PodScheduled"])


def journal_record(cluster: LocalCluster, namespace: str, request_id: str) -> dict[str, Any] | None:
    found = cluster.kubectl("-n", namespace, "get", "configmap", f"{APP}-swap-journal", "-o", "json", check=False)
    if found.returncode != 0:
        return None
    journal = json.loads(json.loads(found.stdout)["data"]["journal.json"])
    return next((r for r in journal.get("history", []) if r["requestId"] == request_id), None)


def under_load(client: Any, action: Any) -> tuple[Any, TrafficReport]:
    quick = SteadyTraffic(None, "/api/version", threads=3, max_seconds=TIMEOUT, pause=0.02, client=client).start()
    slow = SteadyTraffic(None, "/api/slow", threads=2, max_seconds=TIMEOUT, pause=0.0, client=client).start()
    try:
        wait(lambda: quick.sent() >= 60 and slow.sent() >= 4, "traffic to flow", timeout=60)
        result = action()
    finally:
        report, slow_report = quick.stop(), slow.stop()
    report.sent += slow_report.sent
    report.failures += slow_report.failures
    return result, report


def measure(cluster: LocalCluster, namespace: str, real: bool) -> dict[str, Any]:
    row: dict[str, Any] = {}
    started = time.monotonic()
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(objects(real)))
    wait(lambda: app_ready(cluster, namespace), "app and slot Ready")
    row["apply to Ready s"] = time.monotonic() - started
    instance = production_instance(cluster, namespace)

    started = time.monotonic()
    cluster.kubectl("-n", namespace, "scale", "functionapp", APP, "--replicas=4")
    wait(lambda: ready_endpoints(cluster, namespace, APP) == 4, "four ready endpoints")
    row["scale 2->4 to ready s"] = time.monotonic() - started
    per_pod = [t for p in pods(cluster, namespace, instance) if (t := scheduled_to_ready(p)) is not None]
    row["pod scheduled->Ready s (median)"] = statistics.median(per_pod) if per_pod else float("nan")
    cluster.kubectl("-n", namespace, "scale", "functionapp", APP, "--replicas=2")
    wait(lambda: len(pods(cluster, namespace, instance)) == 2 and app_ready(cluster, namespace), "back to 2")

    service = get(cluster, namespace, "service", APP)["spec"]["clusterIP"]
    endpoints = None
    if real:
        client: Any = realnode.VipClient(service, 80)
    else:
        endpoints = ServiceEndpoints(cluster.api_client(), namespace, APP, lag=PROXY_LAG_SECONDS)
        endpoints.__enter__()
        client = None
    try:
        def swap() -> dict[str, Any]:
            request_id = f"bench-{int(time.time())}"
            begun = time.time()
            cluster.kubectl("-n", namespace, "patch", "slot", f"{APP}-staging", "--type", "merge", "-p",
                            json.dumps({"spec": {"swap": {"requestId": request_id}}}))
            record = wait(lambda: journal_record(cluster, namespace, request_id), "swap to finish", interval=0.1)
            if record["result"] != "Succeeded":
                raise SystemExit(f"swap did not succeed: {record}")
            time.sleep(3)  # traffic goes on past the flip
            return {"flip": record["flippedAt"] - begun, "done": record["finishedAt"] - begun}

        from funcplane_dev.endpoints import EndpointClient

        traffic_client = client or EndpointClient(endpoints, timeout=10.0)
        swapped, report = under_load(traffic_client, swap)
        row["swap: to flip s"], row["swap: to done s"] = swapped["flip"], swapped["done"]
        row["swap: requests"], row["swap: failed"] = report.sent, len(report.failures)

        cluster.kubectl("-n", namespace, "scale", "functionapp", APP, "--replicas=4")
        instance = production_instance(cluster, namespace)
        wait(lambda: ready_endpoints(cluster, namespace, APP) == 4, "four ready endpoints")
        for pod in pods(cluster, namespace, instance):  # a simulated pod is Ready before its host serves
            wait_until_serving(f"http://{pod['status']['podIP']}:8080", timeout=120)
        if real:
            wait(lambda: len(realnode.service_dnat_targets(service, 80)) == 4, "four DNAT targets")

        def scale_in() -> float:
            begun = time.monotonic()
            cluster.kubectl("-n", namespace, "scale", "functionapp", APP, "--replicas=1")
            wait(lambda: len(pods(cluster, namespace, instance)) == 1, "one pod left")
            return time.monotonic() - begun

        row["scale-in 4->1: s"], report = under_load(traffic_client, scale_in)
        row["scale-in: requests"], row["scale-in: failed"] = report.sent, len(report.failures)
    finally:
        if endpoints is not None:
            endpoints.__exit__(None, None, None)
    return row


def main() -> None:
    namespaces = ["bench-simulated", "bench-real"]
    started = time.monotonic()
    with operated_cluster("bench-real-node", namespaces, "bench-real-operator", real_nodes=1) as (cluster, workdir):
        up = time.monotonic() - started
        print(f"cluster up in {up:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items()), flush=True)
        with PodRunner(cluster, namespaces[0], workdir / namespaces[0]):
            simulated = measure(cluster, namespaces[0], False)
        print(f"simulated: {simulated}", flush=True)
        real = measure(cluster, namespaces[1], True)
        print(f"real: {real}", flush=True)
    print(f"\n{'':>32} {'simulated':>10} {'real node':>10} {'real/sim':>9}")
    for key in simulated:
        a, b = simulated[key], real[key]
        ratio = f"{b / a:>9.2f}" if isinstance(a, float) and a else f"{'':>9}"
        print(f"{key:>32} {a:>10.2f} {b:>10.2f} {ratio}" if isinstance(a, float)
              else f"{key:>32} {a:>10} {b:>10} {ratio}")


if __name__ == "__main__":
    main()
