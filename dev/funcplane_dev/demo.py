"""`funcplane demo`: the whole product on the local environment, ending in a slot swap under traffic.

Brings up (or reuses) the local environment of `funcplane dev up` (cluster, CRDs, operator, pod
runner), deploys the demo app with a staging slot, and once both slots answer real requests sends
steady traffic to production through a client that follows the Service's EndpointSlices, as
kube-proxy would, while it swaps staging into production. It prints the requests sent, the
failures, when production began answering with the new release, and that the sticky setting
stayed with its slot. Everything keeps running afterwards; `funcplane dev down` stops it.

Run again, it swaps back: each run swaps whatever staging runs into production.

With `--real-nodes 1` the same demo runs on the real data plane: the environment gets a real node
(kubelet, containerd, CNI bridge, kube-proxy; see realnode.py), the demo's FunctionApp is steered
onto it as containers of the host image with the Python worker copied from its image, and the
traffic goes through each Service's ClusterIP, i.e. through kube-proxy's rules, sent only once
those rules exist and lead to the real node's pods (realnode.VipClient).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import environment, realnode
from .cluster import DEFAULT_NAME, ClusterError, LocalCluster
from .endpoints import EndpointClient, ServiceEndpoints
from .traffic import SteadyTraffic, TrafficReport

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo"
NAMESPACE = "demo"
APP = "demo"
SERVICES = {"production": APP, "staging": f"{APP}-staging"}
RELEASES = {"demo-code-v1": "1.0", "demo-code-v2": "2.0"}
PATH = "/api/hello?name=demo"
TRAFFIC_INTERVAL = 0.05
AFTER_SWAP = 2.0  # seconds of traffic kept up after the swap completed


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="run the demo end to end on the local environment")
    demo.add_argument("--name", default=DEFAULT_NAME, help="local environment name (default: %(default)s)")
    demo.add_argument("--down", action="store_true", help="stop the environment and remove its cluster at the end")
    demo.add_argument("--real-nodes", type=int, default=0, choices=(0, 1), metavar="N",
                      help="1: run the app on a real node and send through its Services' ClusterIPs "
                           "(root; see `dev up --real-nodes`; default: %(default)s)")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each step (default: %(default)s)")
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


def manifests(real_nodes: int) -> list[dict[str, Any]]:
    """examples/demo/functionapp.yaml; with real nodes, its FunctionApp steered onto them (the host
    image they hold, their label and taint) and a WorkerConfig naming the worker's copyable image."""
    documents = [d for d in yaml.safe_load_all((DEMO / "functionapp.yaml").read_text()) if d]
    if not real_nodes:
        return documents
    for document in documents:
        if document["kind"] == "FunctionApp":
            document["spec"] |= realnode.app_on_real_nodes()
    return [realnode.copy_worker_config(), *documents]


def _answer(client: Any, service: str, timeout: float) -> dict:
    """A 200 answer from the Service, retried while its endpoints' hosts are still starting."""
    deadline, last = time.monotonic() + timeout, "no ready endpoint"
    while time.monotonic() < deadline:
        try:
            _, status, body = client.get(PATH, wait=1.0)
            if status == 200:
                return json.loads(body)
            last = f"HTTP {status}"
        except (OSError, ValueError) as error:
            last = str(error)
        time.sleep(0.3)
    raise ClusterError(f"Service {service} gave no answer within {timeout:.0f}s ({last}); "
                       "see `funcplane dev logs pods`")


def _every_endpoint_serves(follower: ServiceEndpoints, timeout: float) -> int:
    """Until each ready endpoint of the Service answers (a simulated pod is Ready before its host is)."""
    deadline = time.monotonic() + timeout
    waiting = {endpoint.url for endpoint in follower.ready}
    while waiting and time.monotonic() < deadline:
        for url in sorted(waiting):
            try:
                with urllib.request.urlopen(url + PATH, timeout=5) as response:
                    if response.status == 200:
                        waiting.discard(url)
            except OSError:
                pass
        time.sleep(0.2)
    if waiting:
        raise ClusterError(f"endpoints {sorted(waiting)} of Service {follower.service} do not answer; "
                           "see `funcplane dev logs pods`")
    return len(follower.ready)


def _proxied_to_every_endpoint(follower: ServiceEndpoints, vip: realnode.VipClient, timeout: float) -> int:
    """Until kube-proxy's rules for the ClusterIP lead to exactly the Service's ready endpoints (a
    real pod is Ready once its readiness probe passed: its host serves)."""
    deadline = time.monotonic() + timeout
    wanted = lambda: {f"{e.ip}:{e.port}" for e in follower.ready}  # noqa: E731
    while (targets := realnode.service_dnat_targets(vip.vip.ip, vip.vip.port)) != wanted() or not targets:
        if time.monotonic() > deadline:
            raise ClusterError(f"kube-proxy's rules for Service {follower.service} ({vip.vip.ip}) lead to "
                               f"{sorted(targets)}, not to its ready endpoints {sorted(wanted())}; "
                               "see `funcplane dev logs` and the cluster's logs/kube-proxy.log")
        time.sleep(0.2)
    return len(targets)


@contextmanager
def _clients(cluster: LocalCluster, real_nodes: int) -> Iterator[tuple[dict[str, ServiceEndpoints], dict[str, Any]]]:
    """Per slot, its Service's EndpointSlices and the client that sends to it: one that follows the
    EndpointSlices as kube-proxy would, or with real nodes one through the ClusterIP itself."""
    api = cluster.api_client()
    with ServiceEndpoints(api, NAMESPACE, SERVICES["production"]) as production, \
            ServiceEndpoints(api, NAMESPACE, SERVICES["staging"]) as staging:
        followers = {"production": production, "staging": staging}
        if not real_nodes:
            yield followers, {slot: EndpointClient(f) for slot, f in followers.items()}
            return
        clients = {}
        for slot, service in SERVICES.items():
            spec = json.loads(cluster.kubectl("get", "service", service, "-n", NAMESPACE, "-o", "json").stdout)["spec"]
            clients[slot] = realnode.VipClient(spec["clusterIP"], spec["ports"][0]["port"])
        yield followers, clients


@dataclass
class Releases:
    """What production answered during the swap: each release with its time, and the environments."""

    answers: list[tuple[float, str]] = field(default_factory=list)       # (time, release)
    environments: set[str] = field(default_factory=set)

    def __call__(self, at: float, body: bytes) -> None:
        answer = json.loads(body)
        self.answers.append((at, answer["release"]))
        self.environments.add(answer["environment"])


def _swap(cluster: LocalCluster, timeout: float) -> float:
    """`kubectl funcplane swap demo --slot staging --wait`, its output shown; returns when it was asked."""
    command = [sys.executable, "-m", "funcplane.cli.main", "-n", NAMESPACE, "--kubeconfig", str(cluster.kubeconfig),
               "swap", APP, "--slot", "staging", "--wait", "--timeout", str(int(timeout))]
    asked = time.monotonic()
    swap = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.env)
    assert swap.stdout is not None
    for line in swap.stdout:
        print(f"    {line.rstrip()}", flush=True)
    if swap.wait() != 0:
        raise ClusterError(f"the swap failed (exit {swap.returncode}); `kubectl funcplane status {APP} -n {NAMESPACE}` "
                           "and `funcplane dev logs operator` say why")
    return asked


def _deploy(cluster: LocalCluster, timeout: float, real_nodes: int) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
    for name, release in RELEASES.items():
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_code_configmap(name, release)))
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(manifests(real_nodes)))
    _wait_ready(cluster, "functionapp", APP, timeout)
    _wait_ready(cluster, "slot", f"{APP}-staging", timeout)
    print(cluster.kubectl("get", "functionapps,slots,deployments,services", "-n", NAMESPACE).stdout)
    if real_nodes:
        print(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout)


def _ask_both(clients: dict[str, Any], timeout: float) -> dict[str, dict]:
    answers = {}
    for slot, client in clients.items():
        answers[slot] = _answer(client, SERVICES[slot], timeout)
        print(f"    {slot:<10} (Service {SERVICES[slot]}): {json.dumps(answers[slot])}", flush=True)
        if answers[slot]["environment"] != slot:
            raise ClusterError(f"slot {slot} answered with environment {answers[slot]['environment']!r}: "
                               "its sticky ENVIRONMENT setting did not stay with it")
    return answers


def _report(report: TrafficReport, releases: Releases, asked: float, old: str, new: str) -> int:
    first_new = next((at for at, release in releases.answers if release == new), None)
    last_old = max((at for at, release in releases.answers if release == old), default=None)
    print(f"    requests sent to production: {report.sent}, failures: {len(report.failures)}")
    for at, what in report.failures[:5]:
        print(f"      failed {at - asked:+.2f}s after the swap request: {what}")
    if first_new is None:
        print(f"    production never answered with release {new}")
        return 1
    print(f"    production answered release {new} from {first_new - asked:.2f}s after the swap request "
          f"(last release {old} answer at {(last_old or asked) - asked:.2f}s)")
    print(f"    sticky setting: production answered with ENVIRONMENT={'/'.join(sorted(releases.environments))} "
          "throughout")
    return 0 if not report.failures and releases.environments == {"production"} else 1


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    real = args.real_nodes
    _step(f"local environment {args.name!r}: cluster{f', {real} real node' if real else ''}, CRDs, operator, "
          "pod runner")
    env = environment.up(args.name, real_nodes=real)
    cluster = env.cluster
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in env.timings.items())
    print(f"    ready in {time.monotonic() - started:.1f}s ({steps}); export KUBECONFIG={cluster.kubeconfig}")
    if real and cluster.timings:
        print("    real node: " + ", ".join(f"{step} {seconds:.1f}s" for step, seconds in cluster.timings.items()))

    _step("FunctionApp demo with a staging slot (examples/demo/functionapp.yaml"
          f"{', on the real node: host image, worker copied from its image' if real else ''})")
    _deploy(cluster, args.timeout, real)
    with _clients(cluster, real) as (followers, clients):
        production = followers["production"]
        route = "ClusterIP (kube-proxy's rules)" if real else "EndpointSlices"
        _step(f"GET {PATH} on each slot, through its Service's {route}")
        before = _ask_both(clients, args.timeout)
        old, new = before["production"]["release"], before["staging"]["release"]

        if real:
            serving = _proxied_to_every_endpoint(production, clients["production"], args.timeout)
        else:
            serving = _every_endpoint_serves(production, args.timeout)
        via = f" through {clients['production'].vip.ip}" if real else ""
        _step(f"steady traffic to production{via} ({serving} endpoints, one request every "
              f"{TRAFFIC_INTERVAL * 1000:.0f} ms) while staging (release {new}) swaps in: "
              f"kubectl funcplane swap {APP} --slot staging --wait")
        releases = Releases()
        traffic = SteadyTraffic(production, PATH, threads=1, pause=TRAFFIC_INTERVAL, endpoint_wait=0.0,
                                on_answer=releases, client=clients["production"] if real else None,
                                max_seconds=args.timeout + AFTER_SWAP + 10).start()
        try:
            time.sleep(1.0)
            asked = _swap(cluster, args.timeout)
            time.sleep(AFTER_SWAP)
        finally:
            report = traffic.stop()
        outcome = _report(report, releases, asked, old, new)

        _step("each slot after the swap")
        after = _ask_both(clients, args.timeout)
    if (after["production"]["release"], after["staging"]["release"]) != (new, old):
        print(f"    expected production {new} and staging {old} after the swap")
        outcome = 1
    _step(f"{'done' if outcome == 0 else 'FAILED'} in {time.monotonic() - started:.0f}s")
    if args.down:
        cluster.down()
        print("    environment stopped and cluster removed")
    else:
        named = "" if args.name == DEFAULT_NAME else f" --name {args.name}"
        print("    the environment keeps running (operator, pod runner, cluster):\n"
              f"      {cluster.shell_exports}\n"
              f"      kubectl funcplane swap {APP} -n {NAMESPACE} --slot staging --wait   # swap back\n"
              f"      funcplane dev port-forward{named} {APP} -n {NAMESPACE}               # the Service on 127.0.0.1\n"
              f"      funcplane dev logs{named} operator|pods\n"
              f"      funcplane dev down{named}                                      # stop it all")
    return outcome
