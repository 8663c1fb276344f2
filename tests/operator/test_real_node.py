"""The real data plane: a FunctionApp and its staging slot on a real node (kubelet, containerd, CNI
bridge) of the local control plane, served through its Service's ClusterIP by kube-proxy's rules.

One cluster with one real node for the module. Pods are real containers of the host image, the
Python worker comes from its image by the init-container copy (containerd 1.6 has no image
volumes), the code from a ConfigMap. Traffic goes to a ClusterIP only once its DNAT rules exist
and lead to the real node's pods (realnode.VipClient). The last test stops the cluster and checks
that the machine's iptables rules, links, mounts and sysctls are as they were before it started.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from funcplane.render import names
from funcplane_dev import realnode
from funcplane_dev.cluster import LocalCluster
from funcplane_dev.traffic import SteadyTraffic
from support import eventually
# operator and shop are fixtures used by name; they take this module's cluster.
from swap_support import APP, Operator, Shop, operator, shop  # noqa: F401

FUNCTION_APP_PY = '''
import base64
import json
import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="whoami", methods=["GET"])
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    names = ("GREETING", "ENVIRONMENT", "FUNCPLANE_SLOT_NAME")
    return func.HttpResponse(json.dumps({name: os.environ.get(name) for name in names} | {"version": VERSION}),
                             mimetype="application/json")


@app.route(route="slow", methods=["GET"])
def slow(req: func.HttpRequest) -> func.HttpResponse:
    # A long invocation: a pod that goes away must finish it (preStop drain, termination grace).
    time.sleep(float(req.params.get("seconds", "3")))
    return func.HttpResponse("done")
'''
REAL_NODE = f"{realnode.NODE_PREFIX}0"


# ---- the machine before and after ---------------------------------------------------------------
def machine_state(cluster_directory: Path) -> dict[str, Any]:
    """What the real node may change on the machine, limited to what is ours to change: other work on
    the machine (podman builds) adds and removes its own rules and veths meanwhile."""
    ours = re.compile(r"KUBE-|fpb\d|10\.214\.")
    rules = []
    for save in ("iptables-save", "ip6tables-save"):
        dump = subprocess.run([save], capture_output=True, text=True).stdout
        rules += [f"{save} {line}" for line in dump.splitlines() if line.startswith("*") or ours.search(line)]
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    link_names = sorted(link["ifname"] for link in links
                        if link["ifname"].startswith("fpb") or (link["ifname"].startswith("veth") and "master" not in link))
    mounts = sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if line.split()[4].startswith((str(cluster_directory), "/run/netns/cni-", "/run/containerd")))
    files = sorted(str(p) for d in (*realnode.RUNTIME_DIRS, realnode.CNI_CACHE)
                   if d.is_dir() for p in d.iterdir() if "podman" not in p.name and not p.name.startswith("netns-"))
    return {"iptables": rules, "links": link_names, "mounts": mounts, "sysctls": realnode.read_sysctls(),
            "runtime dirs": [str(d) for d in realnode.RUNTIME_DIRS if d.exists()], "files": files}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One kwok node and one real node, for the module; the operator renders the copying init
    container, since the node's containerd (1.6) has no image volumes."""
    missing = [tool for tool in ("containerd", "runc", "nft", "iptables-save") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"a real node needs root and {', '.join(missing) or 'its tools'}: run `make real-node-tools` "
                    "(apt-get install containerd runc containernetworking-plugins nftables) as root", pytrace=False)
    directory = tmp_path_factory.mktemp("realcluster") / "c"
    local = LocalCluster.named(f"pytest-real-{os.getpid()}", nodes=1, directory=directory, real_nodes=1)
    local.machine_before = machine_state(directory)  # type: ignore[attr-defined]
    started = time.monotonic()
    try:
        local.up(reuse=False)
    except realnode.RealNodeError as error:
        local.down()
        pytest.fail(f"the real node cannot run here: {error}", pytrace=False)
    print(f"cluster with a real node up in {time.monotonic() - started:.1f}s: {local.timings}")
    # Its env makes the operator render the copying init container (containerd 1.6: no image volumes).
    assert local.env["FUNCPLANE_WORKER_VOLUME_MODE"] == "copy"
    try:
        yield local
    finally:
        local.down()


def manifests(replicas: int = 2) -> list[dict[str, Any]]:
    """The app on the real node: production v1, staging v2, the worker from its (copyable) image."""
    def code(name: str, version: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                "data": {"host.json": json.dumps({"version": "2.0"}),
                         "function_app.py": FUNCTION_APP_PY + f"\nVERSION = {version!r}\n"}}

    workers = realnode.copy_worker_config()
    app = {"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": APP},
           "spec": {"runtime": {"name": "python"}, "code": {"configMap": {"name": "shop-code-v1"}},
                    "plan": "premium", "replicas": replicas, "scale": {"maxReplicas": 10},
                    "settings": [{"name": "GREETING", "value": "hello v1"},
                                 {"name": "ENVIRONMENT", "value": "production", "sticky": True}],
                    "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                    "warmup": {"timeoutSeconds": 120}, "functionTimeoutSeconds": 30,
                    **realnode.app_on_real_nodes()}}
    slot = {"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": f"{APP}-staging"},
            "spec": {"appRef": APP, "slotName": "staging", "code": {"configMap": {"name": "shop-code-v2"}},
                     "settings": [{"name": "GREETING", "value": "hello v2"},
                                  {"name": "ENVIRONMENT", "value": "staging", "sticky": True}]}}
    return [code("shop-code-v1", "v1"), code("shop-code-v2", "v2"), workers, app, slot]


def vip(shop: Shop, service: str) -> realnode.VipClient:
    cluster_ip = shop.get("service", service)["spec"]["clusterIP"]
    return realnode.VipClient(cluster_ip, 80)


def answer(client: realnode.VipClient, path: str = "/api/whoami") -> dict[str, Any]:
    _, status, body = client.get(path)
    assert status == 200, f"{status} {body[:300]!r}"
    return json.loads(body)


@contextlib.contextmanager
def under_load(client: realnode.VipClient, what: str, *, slow_threads: int,
               slow_sent: int) -> Iterator[tuple[SteadyTraffic, SteadyTraffic]]:
    """Quick requests from three threads and 3 s invocations from `slow_threads`, all through the VIP,
    while the block runs; when it ends without an error, no request may have failed."""
    load = SteadyTraffic(None, "/api/whoami", threads=3, max_seconds=240, pause=0.02, client=client).start()
    slow = SteadyTraffic(None, "/api/slow?seconds=3", threads=slow_threads, max_seconds=240, pause=0.0,
                         client=client).start()
    try:
        yield load, slow
    finally:
        report, slow_report = load.stop(), slow.stop()
    print(f"{what} on the real node: {report.sent} + {slow_report.sent} requests through the VIP, "
          f"{len(report.failures) + len(slow_report.failures)} failed")
    assert report.sent > 60 and slow_report.sent >= slow_sent, (report, slow_report)
    assert report.failures == [] and slow_report.failures == [], (report.failures[:10], slow_report.failures[:10])


def running_on_real_node(shop: Shop, instance: str) -> list[dict[str, Any]]:
    pods = shop.pods(instance)
    return [p for p in pods if p["spec"].get("nodeName") == REAL_NODE and p["status"].get("phase") == "Running"]


def test_app_with_a_staging_slot_serves_swaps_and_scales_in_through_its_vip(
        cluster: LocalCluster, shop: Shop, operator: Operator) -> None:
    started = time.monotonic()
    shop.apply(manifests())
    eventually(shop.ready, timeout=240, interval=0.5, what="app and staging slot Ready on the real node")
    print(f"app and slot Ready (4 host pods) {time.monotonic() - started:.1f}s after apply")
    before = shop.pointers()
    for instance in before.values():
        pods = running_on_real_node(shop, instance)
        assert len(pods) == 2, f"instance {instance}: pods not running on {REAL_NODE}: {shop.pods(instance)}"
        # The worker came from its image through the copying init container; the code from the ConfigMap.
        (init,) = pods[0]["status"]["initContainerStatuses"]
        assert init["name"] == "copy-worker-python" and init["state"]["terminated"]["exitCode"] == 0, init

    production, staging = vip(shop, APP), vip(shop, f"{APP}-staging")
    assert answer(production) == {"GREETING": "hello v1", "ENVIRONMENT": "production",
                                  "FUNCPLANE_SLOT_NAME": "production", "version": "v1"}
    assert answer(staging)["version"] == "v2"
    master_key = _master_key(cluster, shop.namespace, "production")
    _, status, body = production.get(f"/admin/host/status?code={master_key}")
    assert status == 200, body
    (pool,) = json.loads(body)["workers"]
    assert (pool["source"], pool["path"]) == ("managed", "/siteextensions/python"), pool

    # Swap under load: the production VIP answers v2 afterwards, and no request failed meanwhile.
    with under_load(production, "swap", slow_threads=1, slow_sent=2) as (load, _):
        eventually(lambda: load.sent() >= 60, timeout=60, what="traffic to flow")
        request_id = shop.request_swap()
        record = shop.finished(request_id, timeout=240)
        assert record["result"] == "Succeeded", record
        eventually(lambda: answer(production)["version"] == "v2", timeout=30, what="production VIP to answer v2")
        time.sleep(3)
    assert answer(production)["ENVIRONMENT"] == "production", "sticky settings stay with the slot"

    # Scale-in 4 -> 1 under load, with long invocations in flight on the pods that go away.
    shop.kubectl("scale", "functionapp", APP, "--replicas=4")
    instance = shop.pointers()["production"]
    eventually(lambda: len(realnode.service_dnat_targets(production.vip.ip, 80)) == 4, timeout=180, interval=0.5,
               what="four ready endpoints in kube-proxy's rules")
    assert len(running_on_real_node(shop, instance)) == 4
    with under_load(production, "scale-in 4 -> 1", slow_threads=2, slow_sent=4) as (load, slow):
        eventually(lambda: load.sent() >= 60 and slow.sent() >= 4, timeout=60, what="traffic to flow")
        shop.kubectl("scale", "functionapp", APP, "--replicas=1")
        eventually(lambda: len(shop.pods(instance)) == 1 and len(_all_pods(shop, instance)) == 1, timeout=180,
                   interval=0.5, what="the pods of the production instance to go away but one")
        time.sleep(2)
    assert len(realnode.service_dnat_targets(production.vip.ip, 80)) == 1


def _all_pods(shop: Shop, instance: str) -> list[Any]:
    """Pods still present, terminating ones included (they drain until their containers exit)."""
    return shop.core.list_namespaced_pod(shop.namespace, label_selector=f"funcplane.io/instance={instance}").items


def _master_key(cluster: LocalCluster, namespace: str, slot: str) -> str:
    secret = json.loads(cluster.kubectl("-n", namespace, "get", "secret", names.slot_keys_secret(APP, slot),
                                        "-o", "json").stdout)
    return json.loads(base64.b64decode(secret["data"]["keys.json"]))["masterKey"]


def test_an_app_naming_a_missing_secret_is_not_ready_and_says_why(cluster: LocalCluster, shop: Shop,
                                                                    operator: Operator) -> None:
    code, _, workers, app, _ = manifests(replicas=1)
    app["spec"]["settings"].append({"name": "DATABASE_URL",
                                    "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "url"}}})
    shop.apply([code, workers, app])

    def reported() -> dict[str, Any] | None:
        conditions = {c["type"]: c for c in shop.status().get("conditions", [])}
        degraded = conditions.get("Degraded", {})
        return conditions if degraded.get("reason") == "PodsFailing" else None

    conditions = eventually(reported, timeout=120, interval=0.5, what="the app to report its failing pod")
    assert conditions["Ready"]["status"] == "False"
    for condition in (conditions["Ready"], conditions["Degraded"]):
        assert "CreateContainerConfigError" in condition["message"] and "db-credentials" in condition["message"], \
            condition
    events = json.loads(shop.kubectl("get", "events", "--field-selector", f"involvedObject.name={APP}",
                                     "-o", "json").stdout)["items"]
    assert any(e["type"] == "Warning" and "db-credentials" in e["message"] for e in events), \
        [(e["reason"], e["message"]) for e in events]

    # The Secret arrives: the pod starts and the app turns Ready with no problem left to report.
    shop.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-credentials"},
                 "stringData": {"url": "postgres://example.invalid/db"}}])
    eventually(lambda: shop.ready(slots=1), timeout=180, interval=0.5, what="the app Ready once the Secret exists")
    degraded = next(c for c in shop.status()["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False", degraded


def test_down_leaves_the_machine_as_it_was(cluster: LocalCluster) -> None:
    """Last in the module: stops the shared cluster (its pods included) and compares the machine."""
    cluster.down()
    after = machine_state(cluster.directory)
    before = cluster.machine_before  # type: ignore[attr-defined]
    for key in before:
        assert after[key] == before[key], f"{key} differ after down:\nbefore: {before[key]}\nafter:  {after[key]}"
    assert not cluster.directory.exists()

