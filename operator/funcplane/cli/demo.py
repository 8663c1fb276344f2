"""`funcplane demo`: the whole product on the local control plane, end to end.

Starts (or reuses) the local cluster, installs the CRDs, runs the operator, deploys the demo app
with a staging slot, runs real hosts for its pods and sends a real request to each slot through
its Service's endpoints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ..devcluster.cluster import DEFAULT_NAME, ClusterError, LocalCluster, free_port
from ..devcluster.podrunner import PodRunner

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "examples" / "demo"
NAMESPACE = "demo"
APP = "demo"
RELEASES = {"demo-code-v1": "1.0", "demo-code-v2": "2.0"}


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="run the demo end to end on the local control plane")
    demo.add_argument("--name", default=DEFAULT_NAME, help="local cluster name (default: %(default)s)")
    demo.add_argument("--down", action="store_true", help="remove the cluster at the end")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for Ready (default: %(default)s)")
    demo.set_defaults(handler=run)


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def _code_configmap(name: str, release: str) -> dict:
    files = {f.name: f.read_text() for f in (DEMO / "app").iterdir() if f.is_file()}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE},
            "data": files | {"release.txt": release + "\n"}}


def _wait_ready(cluster: LocalCluster, kind: str, name: str, timeout: float) -> None:
    cluster.kubectl("wait", f"{kind}/{name}", "-n", NAMESPACE, "--for=condition=Ready",
                    f"--timeout={int(timeout)}s", timeout=timeout + 10)


def _serving_endpoint(cluster: LocalCluster, service: str, timeout: float) -> str:
    """The address of one ready endpoint of the Service, from its EndpointSlices."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", NAMESPACE, "-l",
                                            f"kubernetes.io/service-name={service}", "-o", "json").stdout)["items"]
        for endpoint_slice in slices:
            port = next((p["port"] for p in endpoint_slice.get("ports") or []), 8080)
            for endpoint in endpoint_slice.get("endpoints") or []:
                if endpoint["conditions"].get("ready"):
                    return f"http://{endpoint['addresses'][0]}:{port}"
        time.sleep(0.5)
    raise ClusterError(f"Service {service} has no ready endpoint after {timeout:.0f}s")


def _request(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except OSError as error:
            if time.monotonic() > deadline:
                raise ClusterError(f"no answer from {url} within {timeout:.0f}s: {error}") from None
            time.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    _step(f"local control plane {args.name!r}")
    cluster = LocalCluster.named(args.name).up()
    print(f"    {cluster.server}  (export KUBECONFIG={cluster.kubeconfig})")

    _step("CRDs")
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
    for name, release in RELEASES.items():
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_code_configmap(name, release)))

    _step("operator (funcplane-operator, leader election on a Lease)")
    log_path = cluster.directory / "logs" / "operator-demo.log"
    operator = subprocess.Popen(
        [str(Path(sys.executable).with_name("funcplane-operator")), "--namespace", NAMESPACE,
         "--kubeconfig", str(cluster.kubeconfig), "--lease-namespace", NAMESPACE, "--log-format", "plain",
         "--metrics-port", str(free_port()), "--health-port", str(free_port()), "--bind-address", "127.0.0.1"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=cluster.env)
    workdir = Path(tempfile.mkdtemp(prefix="funcplane-demo-"))
    try:
        with PodRunner(cluster, NAMESPACE, workdir):
            _step("FunctionApp demo with a staging slot (examples/demo/functionapp.yaml)")
            cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(DEMO / "functionapp.yaml"))
            _wait_ready(cluster, "functionapp", APP, args.timeout)
            _wait_ready(cluster, "slot", f"{APP}-staging", args.timeout)
            print(cluster.kubectl("get", "functionapps,slots,deployments,services", "-n", NAMESPACE).stdout)

            results = {}
            for slot, service in (("production", APP), ("staging", f"{APP}-staging")):
                endpoint = _serving_endpoint(cluster, service, args.timeout)
                _step(f"GET {endpoint}/api/hello?name=demo  (Service {service}, slot {slot})")
                results[slot] = _request(f"{endpoint}/api/hello?name=demo", args.timeout)
                print(f"    {json.dumps(results[slot])}")
            expected = {"production": ("1.0", "production"), "staging": ("2.0", "staging")}
            for slot, (release, environment) in expected.items():
                got = (results[slot]["release"], results[slot]["environment"])
                if got != (release, environment):
                    raise ClusterError(f"slot {slot} answered release/environment {got}, expected {(release, environment)}")
    except BaseException:
        print(f"operator log: {log_path}", file=sys.stderr)
        raise
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    _step(f"done in {time.monotonic() - started:.0f}s: each slot served a real request from its own host")
    if args.down:
        cluster.down()
        print("    cluster removed")
    else:
        print(f"    the cluster stays up: export KUBECONFIG={cluster.kubeconfig}; "
              f"`funcplane dev cluster down --name {args.name}` removes it")
    return 0
