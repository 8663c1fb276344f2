"""The metrics-driven scaler on the local control plane.

1. Step load (real hosts behind the pods, the pod runner): an app with one pod at rest gets a
   closed loop of N clients (10: demand 10 against 4 x 70 % a pod, 3.6 pods) on a 300 ms function
   (static limit 4 a pod, maxReplicas 6). Printed: the time from the
   step to the replicas written (the status' lastDecisionTime) and to every pod Ready, against an
   HPA replayed on the same metrics: the benchmark samples every pod's in-flight + queued once a
   second during the run and replays HPA's formula (desired = ceil(current x value / target),
   tolerance 0.1) with its default timing, a 15 s sync period and a 15 s metrics scrape, over
   every phase of the two (1 s grid). A real HPA cannot run here: the simulated nodes have no
   kubelet metrics, so no metrics-server and no CPU.
2. Steady load for STEADY seconds (the issue's 5 minutes by default): replica changes after the
   first scale-out (the test suite runs a shorter version).
3. 100 autoscaled apps (one pod each): operator CPU seconds and peak RSS over IDLE seconds, against
   the same operator with the same apps not autoscaled. The pods' hosts are stand-ins (one process
   serving an idle /admin/concurrency at every pod IP): 100 real hosts do not fit on 2 cores.

    python benchmarks/bench_scaler.py [--clients 12] [--steady 300] [--apps 100] [--idle 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from funcplane.api import PRODUCTION
from funcplane.render.names import slot_keys_secret
from funcplane_dev.cluster import LocalCluster
from funcplane_dev.endpoints import ServiceEndpoints
from funcplane_dev.podrunner import PodRunner
from funcplane_dev.stages import ANNOTATION_READY_AFTER
from funcplane_dev.traffic import SteadyTraffic

from bench_support import create_namespace, wait

REPO = Path(__file__).resolve().parents[1]
OPERATOR = Path(sys.executable).parent / "funcplane-operator"
HPA_PERIOD = 15.0  # --horizontal-pod-autoscaler-sync-period and metrics-server's default resolution
HPA_TOLERANCE = 0.1
WORK_APP_PY = '''
import asyncio

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="work", methods=["GET"])
async def work(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(int(req.params.get("ms", "300")) / 1000)
    return func.HttpResponse("done")
'''


def app_manifests(name: str, *, autoscale: bool, replicas: int = 1, max_replicas: int = 6,
                  limit: int = 4) -> list[dict[str, Any]]:
    code = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-code"},
            "data": {"host.json": json.dumps({"version": "2.0"}), "function_app.py": WORK_APP_PY}}
    app = {"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": name},
           "spec": {"runtime": {"name": "python"}, "code": {"configMap": {"name": f"{name}-code"}}, "plan": "premium",
                    "replicas": replicas, "podAnnotations": {ANNOTATION_READY_AFTER: "5s"},
                    "scale": {"minReplicas": 1, "maxReplicas": max_replicas, "autoscale": {"enabled": autoscale}},
                    "hostJson": {"funcplane": {"functions": {"work": {"maximumConcurrency": limit}}}}}}
    return [code, app]


def kubectl_json(cluster: LocalCluster, namespace: str, *args: str) -> Any:
    return json.loads(cluster.kubectl("-n", namespace, *args, "-o", "json", timeout=120).stdout)


def start_operator(cluster: LocalCluster, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(OPERATOR), "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig),
                             "--metrics-port", "0", "--health-port", "0", "--bind-address", "127.0.0.1",
                             "--log-format", "plain"], env=cluster.env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sampler:
    """Once a second: every Ready pod's in-flight + queued (its /admin/concurrency, master key)."""

    def __init__(self, cluster: LocalCluster, namespace: str, app: str) -> None:
        self.cluster, self.namespace, self.app = cluster, namespace, app
        self.samples: list[tuple[float, float, int]] = []  # (wall time, demand, ready pods)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        secret = kubectl_json(cluster, namespace, "get", "secret", slot_keys_secret(app, PRODUCTION))
        self.key = json.loads(base64.b64decode(secret["data"]["keys.json"]))["masterKey"]

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            pods = kubectl_json(self.cluster, self.namespace, "get", "pods", "-l", f"funcplane.io/app={self.app}")
            demand, ready = 0.0, 0
            for pod in pods["items"]:
                ok = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
                if not ok or pod["metadata"].get("deletionTimestamp"):
                    continue
                ready += 1
                request = urllib.request.Request(f"http://{pod['status']['podIP']}:8080/admin/concurrency",
                                                 headers={"x-functions-key": self.key})
                try:
                    with urllib.request.urlopen(request, timeout=2) as response:
                        for entry in json.loads(response.read())["functions"].values():
                            demand += entry.get("inFlight", 0) + entry.get("queued", 0)
                except OSError:
                    pass
            self.samples.append((at, demand, ready))
            self._stop.wait(max(0.0, 1.0 - (time.time() - at)))


def hpa_replay(samples: list[tuple[float, float, int]], step: float, target: float) -> list[float]:
    """Seconds from the step to an HPA's first scale-out, over every (sync phase, scrape phase) on a
    1 s grid: a scrape keeps the latest sample at its time, each sync decides on the latest scrape
    (desired = ceil(sum / target) for a per-pod average target, tolerance 0.1)."""
    end = samples[-1][0]
    delays = []
    for sync_phase in range(int(HPA_PERIOD)):
        for scrape_phase in range(int(HPA_PERIOD)):
            sync = step + sync_phase
            while sync <= end:
                first_scrape = step - HPA_PERIOD + scrape_phase
                scrape = first_scrape + math.floor((sync - first_scrape) / HPA_PERIOD) * HPA_PERIOD
                seen = [s for s in samples if s[0] <= scrape]
                if seen:
                    _, demand, ready = seen[-1]
                    ready = max(ready, 1)
                    ratio = demand / ready / target
                    if abs(ratio - 1) > HPA_TOLERANCE and math.ceil(demand / target) > ready:
                        delays.append(sync - step)
                        break
                sync += HPA_PERIOD
    return delays


def step_load(cluster: LocalCluster, workdir: Path, clients: int, steady: float) -> None:
    namespace = "bench-step"
    create_namespace(cluster, namespace)
    operator = start_operator(cluster, namespace, workdir / "operator-step.log")
    try:
        with PodRunner(cluster, namespace, workdir / "pods"):
            cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(
                app_manifests("step", autoscale=True)))
            wait(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in kubectl_json(
                cluster, namespace, "get", "fa", "step").get("status", {}).get("conditions", [])), "app Ready", 180)
            status = kubectl_json(cluster, namespace, "get", "fa", "step")["status"]
            instance = status["slots"]["production"]["instance"]
            api = cluster.api_client()
            with ServiceEndpoints(api, namespace, "step") as endpoints, Sampler(cluster, namespace, "step") as sampler:
                wait(lambda: len(endpoints.ready) == 1, "one endpoint", 60)
                time.sleep(5)  # a few idle samples
                step = time.time()
                traffic = SteadyTraffic(endpoints, "/api/work?ms=300", threads=clients, max_seconds=steady + 120,
                                        pause=0.0, endpoint_wait=10).start()
                try:
                    def decided() -> dict[str, Any] | None:
                        record = kubectl_json(cluster, namespace, "get", "fa", "step")["status"]["instances"][instance]
                        return record.get("scale")
                    decision = wait(decided, "a scale decision", 60)
                    written = datetime.fromisoformat(decision["lastDecisionTime"].replace("Z", "+00:00")).timestamp()
                    wanted = kubectl_json(cluster, namespace, "get", "deploy", instance)["spec"]["replicas"]
                    wait(lambda: kubectl_json(cluster, namespace, "get", "deploy", instance)["status"]
                         .get("readyReplicas", 0) >= wanted, f"{wanted} pods Ready", 120)
                    all_ready = time.time()
                    changes_before = decision_count(cluster, namespace)
                    time.sleep(steady)
                    changes = decision_count(cluster, namespace) - changes_before
                finally:
                    report = traffic.stop()
            api.close()
        samples = [s for s in sampler.samples]
        delays = hpa_replay(samples, step, target=4 * 0.7)
        to_written, to_ready = written - step, all_ready - step
        median_hpa = statistics.median(delays) if delays else float("nan")
        print(f"step load 0 -> {clients} clients (static limit 4 a pod, target 70 %): scaler wrote "
              f"{decision['currentReplicas']} -> {decision['desiredReplicas']} replicas {to_written:.2f}s after the step "
              f"({decision['mode']}), all {wanted} pods Ready after {to_ready:.2f}s (pods turn Ready 5 s after start)")
        print(f"HPA replayed on the same samples (15 s sync, 15 s scrape, every phase): first scale-out "
              f"median {median_hpa:.1f}s, min {min(delays):.1f}s, max {max(delays):.1f}s -> scaler x"
              f"{to_written / median_hpa:.2f} of HPA's median to the decision; to all Ready: scaler {to_ready:.1f}s vs "
              f"HPA ~{median_hpa + (to_ready - to_written):.1f}s (x{to_ready / (median_hpa + to_ready - to_written):.2f})")
        print(f"steady load {steady:.0f}s after the scale-out: {changes} replica changes; "
              f"{report.sent} requests, {len(report.failures)} failed, first of them "
              f"{[(round(at - report.failures[0][0], 1), what) for at, what in report.failures[:5]]}")
    finally:
        stop(operator)


def decision_count(cluster: LocalCluster, namespace: str) -> int:
    events = kubectl_json(cluster, namespace, "get", "events")["items"]
    return sum(e.get("count", 1) for e in events if e.get("reason") in ("ScaledOut", "ScaledIn"))


STUB = '''
import asyncio, json, sys
BODY = json.dumps({"functions": {"work": {"trigger": "http", "concurrency": 4, "inFlight": 0, "queued": 0}},
                   "draining": False}).encode()
async def answer(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
                         + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    servers = [await asyncio.start_server(answer, ip, 8080) for ip in sys.argv[1:]]
    print("serving", len(servers), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def many_apps(cluster: LocalCluster, workdir: Path, count: int, idle: float) -> None:
    cluster.ensure_pod_network()
    results = {}
    for autoscale in (False, True):
        namespace = f"bench-many-{'auto' if autoscale else 'static'}"
        create_namespace(cluster, namespace)
        manifests = [m for index in range(count) for m in app_manifests(f"a{index:03d}", autoscale=autoscale)]
        for start in range(0, len(manifests), 100):
            cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(manifests[start:start + 100]),
                            timeout=300)
        operator = start_operator(cluster, namespace, workdir / f"operator-{namespace}.log")
        stub = None
        try:
            def ready_pods() -> list[str]:
                pods = kubectl_json(cluster, namespace, "get", "pods")["items"]
                return [p["status"]["podIP"] for p in pods if p["status"].get("podIP") and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
            wait(lambda: len(ready_pods()) >= count, f"{count} pods Ready", 900, interval=2.0)
            stub = subprocess.Popen([sys.executable, "-c", STUB, *ready_pods()], stdout=subprocess.PIPE)
            assert stub.stdout is not None and stub.stdout.readline().startswith(b"serving")
            time.sleep(20)  # the operator settles (statuses written, the scaler's first ticks)
            cpu_before, wall_before = cpu_seconds(operator.pid), time.monotonic()
            time.sleep(idle)
            cpu = cpu_seconds(operator.pid) - cpu_before
            rss, peak = rss_mib(operator.pid)
            results[autoscale] = (cpu / (time.monotonic() - wall_before), rss, peak)
        finally:
            stop(stub)
            stop(operator)
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    static, auto = results[False], results[True]
    print(f"{count} apps, one pod each, {idle:.0f}s at rest: operator CPU {auto[0] * 100:.1f} % of a core autoscaled vs "
          f"{static[0] * 100:.1f} % not (x{auto[0] / max(static[0], 1e-9):.1f}); RSS {auto[1]:.0f} MiB (peak "
          f"{auto[2]:.0f}) vs {static[1]:.0f} MiB (peak {static[2]:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--steady", type=float, default=300.0)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--skip-many", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cluster = LocalCluster.named("bench-scaler", directory=workdir / "cluster").up(reuse=False)
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            if not args.skip_step:
                step_load(cluster, workdir, args.clients, args.steady)
            if not args.skip_many:
                many_apps(cluster, workdir, args.apps, args.idle)
        finally:
            cluster.down()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
