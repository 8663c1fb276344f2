"""Slot swap latency on the local control plane, against a plain Deployment rollout.

For 1, 5 and 20 replicas: an app (production v1) and its staging slot (v2), both with real hosts
behind their pod IPs (the pod runner), the real operator process. A swap is requested on the Slot
and timed to the flip (production's Service selects the staging instance) and to completion
(the former production instance runs staging's settings). The baseline, measured in the same run on
the same cluster, is a rolling update of a plain Deployment with the same replica count and the
same surge settings: the cost of one restart of N pods, which a swap pays twice (phases 1 and 4).

    python benchmarks/bench_swap.py [replicas ...]
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "dev")]

from funcplane_dev.cluster import LocalCluster  # noqa: E402
from funcplane_dev.podrunner import PodRunner  # noqa: E402
from bench_support import operated_cluster, wait as wait_until  # noqa: E402

REPLICAS = [int(a) for a in sys.argv[1:]] or [1, 5, 20]
TIMEOUT = 600.0
wait = functools.partial(wait_until, timeout=TIMEOUT)



def app_objects(replicas: int) -> list[dict[str, Any]]:
    def code(name: str, version: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                "data": {"host.json": json.dumps({"version": "2.0", "bench": version})}}

    return [code("code-v1", "v1"), code("code-v2", "v2"), {
        "apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": "bench"},
        "spec": {"runtime": {"name": "python"}, "code": {"configMap": {"name": "code-v1"}}, "plan": "premium",
                 "replicas": replicas, "scale": {"minReplicas": 1, "maxReplicas": max(replicas, 1)},
                 "settings": [{"name": "GREETING", "value": "v1"},
                              {"name": "ENVIRONMENT", "value": "production", "sticky": True}],
                 "warmup": {"timeoutSeconds": 600}, "functionTimeoutSeconds": 5}}, {
        "apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": "bench-staging"},
        "spec": {"appRef": "bench", "slotName": "staging", "code": {"configMap": {"name": "code-v2"}},
                 "settings": [{"name": "GREETING", "value": "v2"},
                              {"name": "ENVIRONMENT", "value": "staging", "sticky": True}]}}]


def baseline_deployment(replicas: int) -> dict[str, Any]:
    labels = {"bench": "baseline"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "baseline"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {"metadata": {"labels": labels, "annotations": {"round": "0"}},
                                  "spec": {"containers": [{"name": "c", "image": "registry.invalid/idle:1"}]}}}}


def get(cluster: LocalCluster, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def rolled_out(cluster: LocalCluster, namespace: str, name: str, replicas: int) -> bool:
    body = get(cluster, namespace, "deployment", name)
    status = body.get("status", {})
    return (status.get("observedGeneration", 0) >= body["metadata"]["generation"] and
            status.get("updatedReplicas", 0) == replicas == status.get("readyReplicas", 0) == status.get("replicas", 0))


def time_baseline(cluster: LocalCluster, namespace: str, replicas: int) -> float:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(baseline_deployment(replicas)))
    wait(lambda: rolled_out(cluster, namespace, "baseline", replicas), "baseline Deployment ready")
    started = time.time()
    cluster.kubectl("-n", namespace, "patch", "deployment", "baseline", "--type", "merge", "-p",
                    json.dumps({"spec": {"template": {"metadata": {"annotations": {"round": "1"}}}}}))
    wait(lambda: rolled_out(cluster, namespace, "baseline", replicas), "baseline rollout", interval=0.05)
    return time.time() - started


def journal_record(cluster: LocalCluster, namespace: str, request_id: str) -> dict[str, Any] | None:
    found = cluster.kubectl("-n", namespace, "get", "configmap", "bench-swap-journal", "-o", "json", check=False)
    if found.returncode != 0:
        return None
    journal = json.loads(json.loads(found.stdout)["data"]["journal.json"])
    return next((r for r in journal.get("history", []) if r["requestId"] == request_id), None)


def time_swap(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    request_id = f"bench-{int(time.time())}"
    started = time.time()
    cluster.kubectl("-n", namespace, "patch", "slot", "bench-staging", "--type", "merge", "-p",
                    json.dumps({"spec": {"swap": {"requestId": request_id}}}))
    record = wait(lambda: journal_record(cluster, namespace, request_id), "swap to finish", interval=0.1)
    if record["result"] != "Succeeded":
        raise SystemExit(f"swap did not succeed: {record}")
    return {"flip": record["flippedAt"] - started, "done": record["finishedAt"] - started,
            "phases": record["durations"]}


def app_ready(cluster: LocalCluster, namespace: str) -> bool:
    status = get(cluster, namespace, "functionapp", "bench").get("status", {})
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    return ready.get("status") == "True" and len(status.get("slots", {})) == 2


def main() -> None:
    namespaces = [f"bench-swap-{n}" for n in REPLICAS]
    # The operator's Lease namespace outlives the per-size namespaces deleted below.
    with operated_cluster("bench-swap", namespaces, "bench-swap-operator") as (cluster, workdir):
        rows = []
        for replicas, namespace in zip(REPLICAS, namespaces):
            with PodRunner(cluster, namespace, workdir / namespace):
                manifests = yaml.safe_dump_all(app_objects(replicas))
                cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifests)
                wait(lambda: app_ready(cluster, namespace), f"app with {replicas} replicas Ready")
                baseline = time_baseline(cluster, namespace, replicas)
                swap = time_swap(cluster, namespace)
                rows.append((replicas, baseline, swap))
                print(f"replicas={replicas}: baseline rollout {baseline:.2f}s, flip {swap['flip']:.2f}s, "
                      f"done {swap['done']:.2f}s, phases {swap['phases']}", flush=True)
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        print(f"\n{'replicas':>8} {'rollout s':>10} {'to flip s':>10} {'to done s':>10} {'flip/rollout':>13} "
              f"{'done/rollout':>13}")
        for replicas, baseline, swap in rows:
            print(f"{replicas:>8} {baseline:>10.2f} {swap['flip']:>10.2f} {swap['done']:>10.2f} "
                  f"{swap['flip'] / baseline:>13.2f} {swap['done'] / baseline:>13.2f}")


if __name__ == "__main__":
    main()
