"""The metrics-driven scaler on the local control plane, with the real operator process and real
hosts behind the pods' IPs (the pod runner): a step load scales out on the first ticks, an idle
autoscaled app costs no API write, scale-in removes the pods with the least work (and, in the
control run without pod-deletion-cost, the ReplicaSet removes the busiest one instead)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from funcplane.controllers.scaler import DELETION_COST_ENV
from funcplane.render.names import ANNOTATION_DELETION_COST
from funcplane_dev.endpoints import ServiceEndpoints
from funcplane_dev.stages import ANNOTATION_READY_AFTER
from funcplane_dev.traffic import SteadyTraffic
from operator_helpers import resource_versions
from support import PeriodicSampler, eventually
from swap_support import APP, Operator, Shop, operator, shop  # noqa: F401 - fixtures used by name

WORK_APP_PY = '''
import asyncio

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="work", methods=["GET"])
async def work(req: func.HttpRequest) -> func.HttpResponse:
    # Holds a concurrency slot for ?ms= milliseconds without using CPU.
    await asyncio.sleep(int(req.params.get("ms", "200")) / 1000)
    return func.HttpResponse("done")
'''


def work_app(*, replicas: int, limit: int, autoscale: dict[str, Any] | None, min_replicas: int = 1,
             max_replicas: int = 4, timeout: int = 120) -> list[dict[str, Any]]:
    """The app as kept in git: one async HTTP function with a static per-pod limit of `limit`."""
    code = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{APP}-code"},
            "data": {"host.json": json.dumps({"version": "2.0"}), "function_app.py": WORK_APP_PY}}
    scale: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if autoscale is not None:
        scale["autoscale"] = autoscale
    app = {"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": APP},
           "spec": {"runtime": {"name": "python"}, "code": {"configMap": {"name": f"{APP}-code"}}, "plan": "premium",
                    "replicas": replicas, "scale": scale, "functionTimeoutSeconds": timeout,
                    # The simulated readiness probe turns a pod Ready on a timer: long enough for its
                    # host to start and load the app even on a busy machine (else it answers 503).
                    "podAnnotations": {ANNOTATION_READY_AFTER: "15s"},
                    "hostJson": {"funcplane": {"functions": {"work": {"maximumConcurrency": limit}}}}}}
    return [code, app]


def production_instance(shop: Shop) -> str:
    return shop.pointers()["production"]


def scale_status(shop: Shop) -> dict[str, Any]:
    return shop.status().get("instances", {}).get(production_instance(shop), {}).get("scale") or {}


def deployment_replicas(shop: Shop) -> int:
    return shop.get("deployment", production_instance(shop))["spec"]["replicas"]


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_step_load_scales_out_at_once_and_gitops_does_not_reset_it(shop: Shop, operator: Operator,
                                                                      pod_runner: Any) -> None:
    manifests = work_app(replicas=1, limit=2, autoscale={"enabled": True})
    shop.apply(manifests)
    eventually(lambda: shop.ready(slots=1), timeout=120, interval=0.5, what="app Ready")
    spec_before = shop.get("functionapp", APP)
    assert deployment_replicas(shop) == 1 and not scale_status(shop)

    with ServiceEndpoints(shop.cluster.api_client(), shop.namespace, APP) as endpoints:
        eventually(lambda: len(endpoints.ready) == 1, timeout=60, interval=0.2, what="one ready endpoint")
        # 12 clients in a closed loop on 300 ms calls: demand 12 against 2 x 70 % a pod = 8.6 pods,
        # so the first reading already asks for over twice the one ready pod (panic).
        load_started = time.time()
        traffic = SteadyTraffic(endpoints, "/api/work?ms=300", threads=12, max_seconds=120, pause=0.0,
                                endpoint_wait=10).start()
        try:
            decided = eventually(lambda: scale_status(shop) or None, timeout=30, interval=0.1,
                                 what="a scale decision in the status")
            eventually(lambda: len(endpoints.ready) == 4, timeout=90, interval=0.2, what="four ready endpoints")
        finally:
            report = traffic.stop()

    decision_delay = parse_time(decided["lastDecisionTime"]) - load_started
    print(f"decision written {decision_delay:.2f}s after the load started: {decided}")
    # The bound: two 2 s ticks (the first reading may land just after the load starts).
    assert decision_delay <= 4.0, decided
    assert decided["currentReplicas"] == 1 and decided["desiredReplicas"] > 1
    assert (decided["function"], decided["metric"], decided["mode"]) == ("work", "http", "panic")
    eventually(lambda: deployment_replicas(shop) == 4, timeout=30, interval=0.5, what="4 replicas (maxReplicas)")
    assert report.sent > 50 and report.failures == [], report.failures[:10]
    events = shop.kubectl("get", "events", "--field-selector", f"involvedObject.name={APP},reason=ScaledOut",
                          "-o", "json").stdout
    assert json.loads(events)["items"], "no ScaledOut event on the FunctionApp"

    # The FunctionApp's spec was never written: a GitOps re-apply finds no drift and resets nothing.
    after = shop.get("functionapp", APP)
    assert after["spec"] == spec_before["spec"]
    assert after["metadata"]["generation"] == spec_before["metadata"]["generation"]
    shop.apply(manifests)
    time.sleep(5)
    assert deployment_replicas(shop) == 4
    assert shop.get("functionapp", APP)["metadata"]["generation"] == spec_before["metadata"]["generation"]


def test_steady_load_does_not_flap(shop: Shop, operator: Operator, pod_runner: Any) -> None:
    # 10 clients on 300 ms calls against 4 x 70 % a pod: 3.6 pods, so 4, well inside maxReplicas 6.
    # The issue asks for 5 minutes; the suite holds the load 90 s after convergence (1.5 stable
    # windows) and benchmarks/bench_scaler.py runs the 5 minutes.
    shop.apply(work_app(replicas=1, limit=4, max_replicas=6, autoscale={"enabled": True}))
    eventually(lambda: shop.ready(slots=1), timeout=120, interval=0.5, what="app Ready")
    with ServiceEndpoints(shop.cluster.api_client(), shop.namespace, APP) as endpoints:
        eventually(lambda: len(endpoints.ready) == 1, timeout=60, interval=0.2, what="one ready endpoint")
        traffic = SteadyTraffic(endpoints, "/api/work?ms=300", threads=10, max_seconds=400, pause=0.0,
                                endpoint_wait=10).start()
        try:
            eventually(lambda: len(endpoints.ready) == 4, timeout=90, interval=0.2, what="four ready endpoints")
            time.sleep(10)  # the last panic readings age out of the 6 s window
            with ReplicaSampler(shop) as sampler:
                time.sleep(90)
        finally:
            report = traffic.stop()
    replicas = [count for _, count in sampler.samples]
    changes = sum(1 for before, after in zip(replicas, replicas[1:]) if before != after)
    print(f"steady load: {len(replicas)} samples, replicas {sorted(set(replicas))}, {changes} changes; "
          f"{report.sent} requests")
    assert changes == 0 and set(replicas) == {4}, sorted(set(replicas))
    assert report.failures == [], report.failures[:10]


def test_an_idle_autoscaled_app_makes_no_api_writes(shop: Shop, operator: Operator,
                                                    pod_runner: Any) -> None:
    shop.apply(work_app(replicas=2, limit=2, min_replicas=2, autoscale={"enabled": True}))
    eventually(lambda: shop.ready(slots=1), timeout=120, interval=0.5, what="app Ready")
    time.sleep(6)  # the scaler has ticked a few times and the app's status has settled
    before = resource_versions(shop.cluster, shop.namespace)
    time.sleep(60)
    after = resource_versions(shop.cluster, shop.namespace)
    changed = {name: (version, after.get(name)) for name, version in before.items() if after.get(name) != version}
    assert not changed and set(after) == set(before), (changed, set(after) ^ set(before))
    assert "scale" not in scale_status(shop)  # nothing to decide: no decision recorded either
    assert not re.search(r"funcplane\.scale\s+scaled", operator.logs())


def _long_call(ip: str, ms: int, results: list[tuple[str, int | str]]) -> None:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/api/work?ms={ms}", timeout=ms / 1000 + 60) as response:
            results.append((ip, response.status))
    except OSError as error:
        results.append((ip, f"{type(error).__name__}: {error}"))


@pytest.mark.parametrize("operator", [{}, {DELETION_COST_ENV: "false"}], indirect=True,
                         ids=["deletion-cost", "control-without-deletion-cost"])
def test_scale_in_removes_the_pods_with_the_least_work(shop: Shop, operator: Operator,
                                                       pod_runner: Any) -> None:
    with_cost = DELETION_COST_ENV not in operator.extra_env
    manifests = work_app(replicas=2, limit=10, autoscale=None, max_replicas=3)
    shop.apply(manifests)
    eventually(lambda: shop.ready(slots=1), timeout=120, interval=0.5, what="app Ready")
    instance = production_instance(shop)
    eventually(lambda: len(shop.pods(instance)) == 2, timeout=60, interval=0.5, what="two pods")
    # The third pod comes ~20 s later: the newest-ready pod, the one the ReplicaSet removes first
    # when no deletion cost says otherwise. It gets the most work.
    time.sleep(20)
    shop.kubectl("scale", "functionapp", APP, "--replicas=3")
    eventually(lambda: shop.ready(slots=1) and len(shop.endpoint_ips("production")) == 3, timeout=120,
               interval=0.5, what="three ready pods")
    pods = sorted(shop.pods(instance), key=lambda p: p["metadata"]["creationTimestamp"])
    newest = pods[-1]
    ips = {p["status"]["podIP"]: p["metadata"]["name"] for p in pods}
    busy_ip = newest["status"]["podIP"]
    # Every pod runs long invocations: 4 on the newest, 1 on each other (6 in flight against
    # 10 x 70 % a pod = 0.86 pods: the scaler wants 1).
    calls = [busy_ip] * 4 + [ip for ip in ips if ip != busy_ip]
    results: list[tuple[str, int | str]] = []
    threads = [threading.Thread(target=_long_call, args=(ip, 40000, results)) for ip in calls]
    for thread in threads:
        thread.start()
    time.sleep(2)
    # Autoscaling on now, with short windows so that the test is quick: the scaler starts from the
    # 3 replicas running, waits one stable window (10 s) and then scales in 3 -> 1 in one step.
    autoscale = {"enabled": True, "stableWindowSeconds": 10, "panicWindowSeconds": 2,
                 "scaleDownDelaySeconds": 0, "maxScaleDownRate": 3}
    shop.kubectl("patch", "functionapp", APP, "--type", "merge", "-p",
                 json.dumps({"spec": {"scale": {"autoscale": autoscale}}}))
    deleted: dict[str, dict[str, Any]] = {}

    def two_pods_going() -> bool:
        listed = shop.core.list_namespaced_pod(shop.namespace, label_selector=f"funcplane.io/instance={instance}")
        for pod in listed.items:
            if pod.metadata.deletion_timestamp is not None:
                deleted[pod.metadata.name] = dict(pod.metadata.annotations or {})
        return len(deleted) >= 2
    eventually(two_pods_going, timeout=60, interval=0.2, what="the scale-in to delete two pods")
    for thread in threads:
        thread.join(timeout=120)
    decided = scale_status(shop)
    assert (decided.get("currentReplicas"), decided.get("desiredReplicas")) == (3, 1), decided
    assert sorted(results) == sorted((ip, 200) for ip in calls), results  # every invocation completed 2xx
    survivors = [p["metadata"]["name"] for p in shop.pods(instance)]
    if with_cost:
        # The pods with the least work were marked and are the ones the ReplicaSet removed.
        assert newest["metadata"]["name"] not in deleted and survivors == [newest["metadata"]["name"]], \
            (deleted, survivors)
        assert all(annotations.get(ANNOTATION_DELETION_COST) == "-1000" for annotations in deleted.values()), deleted
    else:
        # Without the mark the ReplicaSet removes the newest pod: the one with the most work.
        assert newest["metadata"]["name"] in deleted, (deleted, survivors)
        assert not any(ANNOTATION_DELETION_COST in annotations for annotations in deleted.values())


def test_the_standby_takes_over_a_leader_killed_mid_scale_out(shop: Shop, cluster: Any, namespace: str, crds: None,
                                                             tmp_path: Path, pod_runner: Any) -> None:
    replicas = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        replicas.append(Operator(cluster, namespace, tmp_path / name))
    first, second = replicas
    first.start()
    eventually(lambda: "became leader" in first.logs(), timeout=60, interval=0.2, what="the first operator leading")
    second.start()  # the standby: polls the Lease
    try:
        shop.apply(work_app(replicas=1, limit=2, max_replicas=4, autoscale={
            "enabled": True, "stableWindowSeconds": 10, "panicWindowSeconds": 4, "scaleDownDelaySeconds": 0}))
        eventually(lambda: shop.ready(slots=1), timeout=120, interval=0.5, what="app Ready")
        with ServiceEndpoints(shop.cluster.api_client(), shop.namespace, APP) as endpoints:
            eventually(lambda: len(endpoints.ready) == 1, timeout=60, interval=0.2, what="one ready endpoint")
            traffic = SteadyTraffic(endpoints, "/api/work?ms=300", threads=12, max_seconds=150, pause=0.0,
                                    endpoint_wait=10).start()
            try:
                # The moment the leader's decision reaches the Deployment, the leader dies (SIGKILL:
                # no Lease release); its new pods are still starting.
                eventually(lambda: deployment_replicas(shop) > 1, timeout=30, interval=0.05, what="a scale-out")
                first.kill()
                killed_at = time.monotonic()
                eventually(lambda: "became leader" in second.logs(), timeout=60, interval=0.2,
                           what="the standby taking the Lease")
                took_over = time.monotonic() - killed_at
                # Under the same load the new leader keeps the scaled-out count: its windows are empty,
                # and it never scales in before one stable window of its own readings.
                with ReplicaSampler(shop) as sampler:
                    time.sleep(15)
                samples = [count for _, count in sampler.samples]
            finally:
                report = traffic.stop()
        print(f"standby leading {took_over:.1f}s after the kill; replicas during the load: {sorted(set(samples))}")
        assert min(samples) == 4, samples
        assert report.failures == [], report.failures[:10]
        # The load is gone: the new leader, not the dead one, decides the scale-in.
        eventually(lambda: deployment_replicas(shop) == 1, timeout=90, interval=0.5, what="scale-in to 1")
        assert "from 4 to" in second.logs(), second.logs()[-3000:]
    finally:
        for replica in replicas:
            replica.stop()
        print(first.logs(), second.logs())


QUEUE_APP_PY = '''
import asyncio
import os

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
async def process(msg: func.QueueMessage) -> None:
    await asyncio.sleep(0.1)
    # One short line per message, appended: whole lines even with several pods writing.
    with open(os.environ["RESULTS_FILE"], "a") as results:
        results.write(msg.get_body().decode() + "\\n")
'''


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from funcplane_dev.azurite import AzuriteServer

    server = AzuriteServer(tmp_path_factory.mktemp("azurite")).start()
    yield server
    server.stop()


def send_all(connection: str, queue: str, count: int, prefix: str) -> None:
    """`count` messages (base64, the trigger's default), 32 at a time."""
    from azure.storage.queue import TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    async def send() -> None:
        async with QueueClient.from_connection_string(connection, queue,
                                                      message_encode_policy=TextBase64EncodePolicy()) as client:
            limit = asyncio.Semaphore(32)

            async def one(n: int) -> None:
                async with limit:
                    await client.send_message(f"{prefix}-{n}")
            await asyncio.gather(*(one(n) for n in range(count)))
    asyncio.run(send())


class ReplicaSampler(PeriodicSampler):
    """The production Deployment's replicas every 0.2 s while a block runs: (monotonic time, replicas)."""

    def __init__(self, shop: Shop) -> None:
        super().__init__()
        self.shop, self.samples = shop, []

    def sample(self) -> None:
        self.samples.append((time.monotonic(), deployment_replicas(self.shop)))


def _deployment_made(shop: Shop) -> bool:
    """The app reconciler has made the production instance's Deployment."""
    instance = shop.pointers().get("production")
    return bool(instance) and shop.kubectl("get", "deployment", instance, check=False).returncode == 0


def queue_length(connection: str, queue: str) -> int:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    with QueueClient.from_connection_string(connection, queue) as client:
        try:
            return client.get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            return 0


def test_a_queue_backlog_scales_out_drains_and_scales_to_zero_and_back(shop: Shop, operator: Operator,
                                                                       pod_runner: Any, azurite: Any,
                                                                       tmp_path: Path) -> None:
    from azure.storage.queue import QueueClient

    connection, results = azurite.connection_string, tmp_path / "processed.txt"
    with QueueClient.from_connection_string(connection, "work") as client:
        client.create_queue()
    code = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{APP}-code"},
            "data": {"host.json": json.dumps({"version": "2.0"}), "function_app.py": QUEUE_APP_PY}}
    app = {"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": APP},
           "spec": {"runtime": {"name": "python"}, "code": {"configMap": {"name": f"{APP}-code"}}, "plan": "premium",
                    "replicas": 0, "functionTimeoutSeconds": 60,
                    "podAnnotations": {ANNOTATION_READY_AFTER: "5s"},
                    "scale": {"minReplicas": 0, "maxReplicas": 4, "autoscale": {
                        "enabled": True, "stableWindowSeconds": 10, "panicWindowSeconds": 4,
                        "scaleDownDelaySeconds": 0}},
                    "settings": [{"name": "AzureWebJobsStorage", "value": connection},
                                 {"name": "WORK_QUEUE", "value": "work"},
                                 {"name": "RESULTS_FILE", "value": str(results)}]}}
    shop.apply([code, app])
    # Created at 0 replicas, no pod has named its queue yet: the scaler gives it one pod, records the
    # queue that pod's host reports and, the queue idle, scales it back to zero.
    eventually(lambda: _deployment_made(shop), timeout=60, interval=0.2, what="the production Deployment")
    with ReplicaSampler(shop) as sampler:
        eventually(lambda: scale_status(shop).get("queues") and deployment_replicas(shop) == 0, timeout=150,
                   interval=0.5, what="one pod to learn the queue, then zero")
    assert max(replicas for _, replicas in sampler.samples) == 1, sorted(set(sampler.samples))
    assert scale_status(shop)["queues"] == {"process": {"queueName": "%WORK_QUEUE%",
                                                        "connection": "AzureWebJobsStorage"}}
    eventually(lambda: not shop.pods(production_instance(shop)), timeout=90, interval=0.5, what="no pod left")

    peaks = []
    for round_, count in (("backlog", 2000), ("again", 100)):
        with ReplicaSampler(shop) as sampler:
            started = time.monotonic()
            send_all(connection, "work", count, round_)
            sent = time.monotonic() - started
            # No pod ran when the round started: the operator reads the queue itself and scales out.

            def processed() -> bool:
                lines = results.read_text().split() if results.exists() else []
                return len({line for line in lines if line.startswith(f"{round_}-")}) >= count
            eventually(processed, timeout=300, interval=1.0, what=f"{count} messages of round {round_} processed")
            drained = time.monotonic() - started
            eventually(lambda: deployment_replicas(shop) == 0, timeout=120, interval=0.5, what="scale back to zero")
        out = next(at for at, replicas in sampler.samples if replicas > 0) - started
        peaks.append(max(replicas for _, replicas in sampler.samples))
        print(f"{round_}: {count} messages sent in {sent:.1f}s; out of zero {out:.1f}s after the first send, "
              f"peak {peaks[-1]} replicas, all processed after {drained:.1f}s, back to zero after "
              f"{time.monotonic() - started:.1f}s")

    lines = results.read_text().split()
    unique = set(lines)
    assert unique == {f"backlog-{n}" for n in range(2000)} | {f"again-{n}" for n in range(100)}
    print(f"processed {len(lines)} messages, {len(lines) - len(unique)} more than once (at-least-once)")
    assert peaks[0] == 4, peaks  # 2,000 / 24 a pod asks for far more than maxReplicas
    assert queue_length(connection, "work") == 0 and queue_length(connection, "work-poison") == 0


def test_a_swap_brings_the_source_to_production_capacity_and_each_instance_scales_after(
        shop: Shop, operator: Operator, pod_runner: Any) -> None:
    # Default windows (a 10 s stable window moves a count that sits near a boundary on a busy
    # machine); no scale-down delay, so the old production goes back to 1 a stable window after the flip.
    code, app = work_app(replicas=1, limit=4, max_replicas=6, autoscale={"enabled": True, "scaleDownDelaySeconds": 0})
    slot = {"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": f"{APP}-staging"},
            "spec": {"appRef": APP, "slotName": "staging", "code": {"configMap": {"name": f"{APP}-code"}},
                     "settings": [{"name": "NEW_BUILD", "value": "2"}]}}
    shop.apply([code, app, slot])
    eventually(lambda: shop.ready(slots=2), timeout=180, interval=0.5, what="app and staging Ready")
    before = shop.pointers()

    def replicas_of(instance: str) -> int:
        return shop.get("deployment", instance)["spec"]["replicas"]
    with ServiceEndpoints(shop.cluster.api_client(), shop.namespace, APP) as endpoints:
        eventually(lambda: len(endpoints.ready) == 1, timeout=60, interval=0.2, what="one production endpoint")
        # 11 clients on 300 ms calls: 9-10.5 in flight on a busy machine, 3.2-3.8 pods at 2.8 a pod: 4.
        traffic = SteadyTraffic(endpoints, "/api/work?ms=300", threads=11, max_seconds=400, pause=0.0,
                                endpoint_wait=10).start()
        try:
            eventually(lambda: len(endpoints.ready) == 4, timeout=90, interval=0.2, what="production at 4 pods")
            assert replicas_of(before["staging"]) == 1  # staging has no load
            fewest: list[int] = []
            request_id = shop.request_swap()

            def flipped() -> bool:
                # Production's Ready endpoints until the flip is done (afterwards the new production
                # scales by its own load).
                fewest.append(len(shop.endpoint_ips("production")))
                phase = (shop.record(request_id) or {}).get("phase")
                return phase in ("ApplyingSourceSettings", None) and bool(shop.record(request_id))
            eventually(flipped, timeout=180, interval=0.2, what="the swap past its flip")
            record = shop.finished(request_id, timeout=180)
            assert record["result"] == "Succeeded", record
            # The source was raised to production's 4 replicas and all 4 were warm before the flip.
            assert len(record["pods"]) == 4 and all(p["warm"] for p in record["pods"]), record["pods"]
            assert min(fewest) >= 4, f"production endpoints fell to {min(fewest)} during the swap"
            # After the swap each instance scales on its own load: the new production keeps its 4
            # under the traffic, the old one (now staging, idle) goes back to 1.
            eventually(lambda: replicas_of(before["production"]) == 1, timeout=120, interval=0.5,
                       what="the old production instance, now staging, scaled in")
            assert replicas_of(before["staging"]) >= 4
        finally:
            report = traffic.stop()
    assert shop.pointers() == {"production": before["staging"], "staging": before["production"]}
    assert report.failures == [], report.failures[:10]
