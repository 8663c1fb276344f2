"""Scale of the operator on the local control plane.

N FunctionApps, each with one Slot (2N instances, one pod each), are created at once. Printed:
- time until every FunctionApp is Ready, against a baseline measured in the same run: the same
  2N Deployments applied directly (no operator) until all are available;
- API requests per app: the operator's own REST calls (its metric) and, from the API server's
  `apiserver_request_total`, all mutating requests during the run;
- the operator's peak RSS (REST calls include the swap engine's, which share the client);
- then IDLE seconds with nothing changing: the operator's writes (must be 0).

    python benchmarks/bench_operator_scale.py [--apps 200] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from funcplane_dev.cluster import LocalCluster, free_port

REPO = Path(__file__).resolve().parents[1]
OPERATOR = Path(sys.executable).parent / "funcplane-operator"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "CREATE", "UPDATE"}


def app_manifests(count: int) -> list[dict[str, Any]]:
    manifests = []
    for index in range(count):
        name = f"app{index:04d}"
        manifests.append({"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": name},
                          "spec": {"runtime": {"name": "python", "version": "3.12"}, "plan": "premium",
                                   "code": {"image": {"reference": "bench/app:1"}}, "replicas": 1,
                                   "settings": [{"name": "INDEX", "value": str(index)}]}})
        manifests.append({"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot",
                          "metadata": {"name": f"{name}-staging"},
                          "spec": {"appRef": name, "slotName": "staging"}})
    return manifests


def baseline_manifests(count: int) -> list[dict[str, Any]]:
    manifests = []
    for index in range(count):
        labels = {"bench": f"d{index:04d}"}
        manifests.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"d{index:04d}"},
                          "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                                   "template": {"metadata": {"labels": labels},
                                                "spec": {"containers": [{"name": "c", "image": "bench/app:1"}]}}}})
    return manifests


def apply(cluster: LocalCluster, namespace: str, manifests: list[dict[str, Any]], batch: int = 100) -> None:
    for start in range(0, len(manifests), batch):
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(manifests[start:start + batch]),
                        timeout=300)


def wait_until(probe, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not probe():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1.0)
    return time.monotonic() - started


def all_apps_ready(cluster: LocalCluster, namespace: str, count: int) -> bool:
    items = json.loads(cluster.kubectl("-n", namespace, "get", "fa", "-o", "json", timeout=120).stdout)["items"]
    ready = sum(1 for item in items for c in item.get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True")
    return ready == count


def all_slots_ready(cluster: LocalCluster, namespace: str, count: int) -> bool:
    items = json.loads(cluster.kubectl("-n", namespace, "get", "fslot", "-o", "json", timeout=120).stdout)["items"]
    ready = sum(1 for item in items for c in item.get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True")
    return ready == count


def _quiet(port: int, window: float = 10.0) -> bool:
    """No operator REST call for `window` seconds (status updates trail the Ready condition)."""
    before = operator_requests(port)
    time.sleep(window)
    return operator_requests(port) == before


def all_deployments_available(cluster: LocalCluster, namespace: str, count: int) -> bool:
    items = json.loads(cluster.kubectl("-n", namespace, "get", "deploy", "-o", "json", timeout=120).stdout)["items"]
    return sum(1 for d in items if d.get("status", {}).get("availableReplicas", 0) >= 1) == count


SAMPLE = re.compile(r'^(\w+)\{(.*)\} ([0-9.e+]+)$')


def apiserver_writes(cluster: LocalCluster) -> dict[str, float]:
    """Mutating requests so far by resource, from the API server's own metrics."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match.group(1) != "apiserver_request_total":
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if labels.get("verb") in WRITE_VERBS:
            key = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else "")
            totals[key] = totals.get(key, 0.0) + float(match.group(3))
    return totals


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def operator_requests(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == "funcplane_reconciler_api_requests_total":
            method = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))["method"]
            counts[method] = counts.get(method, 0.0) + float(match.group(3))
    return counts


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    cluster = LocalCluster.named("bench-operator-scale", directory=workdir / "cluster").up(reuse=False)
    operator: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("functionapps", "slots", "workerconfigs"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}.funcplane.io", "--timeout=60s")
        for namespace in ("baseline", "bench"):
            cluster.kubectl("create", "namespace", namespace)
        wait_until(lambda: cluster.kubectl("-n", "bench", "get", "sa", "default", check=False).returncode == 0,
                   60, "the default ServiceAccount")

        # Baseline: the same number of bare Deployments, straight to the API server.
        started = time.monotonic()
        apply(cluster, "baseline", baseline_manifests(2 * args.apps))
        wait_until(lambda: all_deployments_available(cluster, "baseline", 2 * args.apps), args.timeout,
                   "baseline Deployments")
        baseline_seconds = time.monotonic() - started
        cluster.kubectl("delete", "namespace", "baseline", "--wait=false")

        metrics_port = free_port()
        log = (workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [str(OPERATOR), "--namespace", "bench", "--kubeconfig", str(cluster.kubeconfig),
             "--metrics-port", str(metrics_port), "--health-port", "0", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=cluster.env)
        wait_until(lambda: _answers(metrics_port), 60, "the operator's metrics endpoint")
        writes_before = apiserver_writes(cluster)
        started = time.monotonic()
        apply(cluster, "bench", app_manifests(args.apps))
        wait_until(lambda: all_apps_ready(cluster, "bench", args.apps), args.timeout, "every FunctionApp Ready")
        ready_seconds = time.monotonic() - started
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited ({operator.returncode}); see {workdir / 'operator.log'}")
        wait_until(lambda: all_slots_ready(cluster, "bench", args.apps), args.timeout, "every Slot Ready")
        settled = wait_until(lambda: _quiet(metrics_port), args.timeout, "the operator to finish its last writes")
        requests = operator_requests(metrics_port)
        writes_run = delta(apiserver_writes(cluster), writes_before)

        idle_requests_before = operator_requests(metrics_port)
        idle_writes_before = apiserver_writes(cluster)
        time.sleep(args.idle)
        idle_requests = {k: v - idle_requests_before.get(k, 0.0) for k, v in operator_requests(metrics_port).items()}
        idle_writes = delta(apiserver_writes(cluster), idle_writes_before)
        rss = peak_rss_mib(operator.pid)

        operator_writes = sum(v for k, v in requests.items() if k != "GET")
        idle_operator_writes = sum(v for k, v in idle_requests.items() if k != "GET")
        print(f"apps: {args.apps} FunctionApps x (production + 1 Slot) = {2 * args.apps} instances, 1 pod each")
        print(f"baseline: {2 * args.apps} bare Deployments available in {baseline_seconds:.1f}s")
        print(f"operator: all FunctionApps Ready in {ready_seconds:.1f}s "
              f"(ratio to baseline {ready_seconds / baseline_seconds:.2f}x)")
        print(f"operator REST calls: {sum(requests.values()):.0f} "
              f"({sum(requests.values()) / args.apps:.1f} per app; writes {operator_writes / args.apps:.1f} per app) "
              f"by method {dict(sorted(requests.items()))}")
        print(f"API server mutating requests during the run (all clients): {sum(writes_run.values()):.0f} "
              f"({sum(writes_run.values()) / args.apps:.1f} per app)")
        print(f"operator peak RSS: {rss:.0f} MiB; quiet {settled:.0f}s after the last app was Ready")
        print(f"idle {args.idle:.0f}s: operator writes {idle_operator_writes:.0f}, reads "
              f"{idle_requests.get('GET', 0):.0f}; API server mutating requests by resource "
              f"{dict(sorted(idle_writes.items()))} (leases = leader election renewals)")
        if idle_operator_writes:
            raise SystemExit("the operator wrote while nothing changed")
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        cluster.down()


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
