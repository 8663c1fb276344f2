"""Requests lost while pods go away under load, with the preStop drain and without it.

An app with 3 replicas and real hosts behind its pods (the pod runner), the real operator process.
Four client threads that follow the Service's EndpointSlices send steady traffic while one pod is
deleted and the app is scaled to 1 replica. The run with drain is what a kubelet does (preStop:
the host reports not ready at once and serves for its drain grace period, then stops); the control
run, in the same cluster, kills a deleted pod's host at once (SIGKILL, no preStop), so requests that
are still on their way to it fail.

    python benchmarks/bench_drain.py [rounds]
"""

from __future__ import annotations

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
from funcplane_dev.stages import ANNOTATION_READY_AFTER  # noqa: E402
from funcplane_dev.traffic import TrafficReport, pods_go_away  # noqa: E402
from bench_support import operated_cluster  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
APP = "drain"
FUNCTION_APP_PY = '''
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="ping", methods=["GET"])
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")
'''


def app_objects() -> list[dict[str, Any]]:
    code = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "drain-code"},
            "data": {"host.json": json.dumps({"version": "2.0"}), "function_app.py": FUNCTION_APP_PY}}
    app = {"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": APP},
           "spec": {"runtime": {"name": "python"}, "code": {"configMap": {"name": "drain-code"}}, "plan": "premium",
                    "replicas": 3, "functionTimeoutSeconds": 30,
                    # A replacement pod is Ready only once its host can serve: the scale-down removes it first.
                    "podAnnotations": {ANNOTATION_READY_AFTER: "15s"}}}
    return [code, app]


def ready_endpoints(cluster: LocalCluster, namespace: str) -> int:
    slices = json.loads(cluster.kubectl("-n", namespace, "get", "endpointslices", "-l",
                                        f"kubernetes.io/service-name={APP}", "-o", "json").stdout)["items"]
    return sum(1 for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready"))


def run(cluster: LocalCluster, namespace: str, workdir: Path, drain: bool) -> TrafficReport:
    with PodRunner(cluster, namespace, workdir / namespace, drain=drain):
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(app_objects()))
        deadline = time.monotonic() + 300
        while ready_endpoints(cluster, namespace) < 3:
            if time.monotonic() > deadline:
                raise SystemExit(f"app in {namespace} never had 3 ready endpoints")
            time.sleep(0.5)
        report = pods_go_away(cluster, namespace, APP, "/api/ping", threads=4, timeout=180)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return report


def main() -> None:
    namespaces = [f"bench-drain-{kind}-{n}" for n in range(ROUNDS) for kind in ("drain", "kill")]
    with operated_cluster("bench-drain", namespaces, "bench-drain-operator") as (cluster, workdir):
        totals = {"drain": TrafficReport(), "kill": TrafficReport()}
        for namespace in namespaces:
            kind = namespace.split("-")[2]
            report = run(cluster, namespace, workdir, drain=kind == "drain")
            totals[kind].sent += report.sent
            totals[kind].failures += report.failures
            print(f"{kind:>5}: {report.sent} requests, {len(report.failures)} failed {report.failures[:3]}",
                  flush=True)
    drained, killed = totals["drain"], totals["kill"]
    print(f"\n{'run':>24} {'requests':>9} {'failed':>7} {'failed %':>9}")
    for what, report in (("preStop drain (grace)", drained), ("control: SIGKILL", killed)):
        print(f"{what:>24} {report.sent:>9} {len(report.failures):>7} "
              f"{100 * len(report.failures) / max(report.sent, 1):>8.2f}%")
    ratio = len(drained.failures) / len(killed.failures) if killed.failures else float("nan")
    print(f"failed requests, drain / control: {len(drained.failures)}/{len(killed.failures)} = {ratio:.3f}")


if __name__ == "__main__":
    main()
