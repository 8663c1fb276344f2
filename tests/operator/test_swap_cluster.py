"""Slot swaps on the local control plane, with the real operator process and real hosts behind
the pods' IPs (the pod runner). Each test watches the swap journal and the app's status; nothing
in the operator is replaced or mocked."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import REPO, eventually, json_lines

APP = "shop"
PHASES_BEFORE_FLIP = ("ApplyingTargetSettings", "WarmingUp")
FUNCTION_APP_PY = '''
import json
import os
import time
import re

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="whoami", methods=["GET"])
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    names = ("GREETING", "ENVIRONMENT", "FUNCPLANE_SLOT_NAME", "FUNCPLANE_HOST_ID", "FUNCPLANE_NON_HTTP_TRIGGERS")
    return func.HttpResponse(json.dumps({name: os.environ.get(name) for name in names}),
                             mimetype="application/json")


@app.warm_up_trigger("warmup")
def warmup(warmup) -> None:
    # Real apps prime caches here; the host's warm-up endpoint waits for it.
    time.sleep(float(os.environ.get("WARMUP_SECONDS", "0")))


if os.environ.get("RUNS_FILE"):  # only the timer test sets it
    @app.timer_trigger(schedule="* * * * * *", arg_name="timer")
    def tick(timer: func.TimerRequest) -> None:
        # Records which slot and pod ran which occurrence.
        with open(os.environ["RUNS_FILE"], "a") as runs:
            runs.write(json.dumps({"slot": os.environ.get("FUNCPLANE_SLOT_NAME"),
                                   "pod": os.environ.get("FUNCPLANE_HTTP_HOST"),
                                   "occurrence": (timer.schedule_status or {}).get("Next")}) + "\\n")
'''


def code_config_map(name: str, greeting_version: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"host.json": json.dumps({"version": "2.0"}),
                     "function_app.py": FUNCTION_APP_PY + f"\nVERSION = {greeting_version!r}\n"}}


def manifests(replicas: int = 2, staging_annotations: dict[str, str] | None = None,
              timeout_seconds: int = 60, warmup_seconds: int = 0) -> list[dict[str, Any]]:
    """The app as a user keeps it in git: production v1, a staging slot with v2."""
    app = {
        "apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp", "metadata": {"name": APP},
        "spec": {"runtime": {"name": "python"}, "code": {"configMap": {"name": "shop-code-v1"}},
                 "plan": "premium", "replicas": replicas,
                 "settings": [{"name": "GREETING", "value": "hello v1"},
                              {"name": "ENVIRONMENT", "value": "production", "sticky": True}],
                 "warmup": {"timeoutSeconds": timeout_seconds}, "functionTimeoutSeconds": 30},
    }
    slot = {
        "apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": f"{APP}-staging"},
        "spec": {"appRef": APP, "slotName": "staging", "code": {"configMap": {"name": "shop-code-v2"}},
                 "settings": [{"name": "GREETING", "value": "hello v2"},
                              {"name": "ENVIRONMENT", "value": "staging", "sticky": True},
                              {"name": "WARMUP_SECONDS", "value": str(warmup_seconds)}]},
    }
    if staging_annotations:
        # Pod annotations are app-wide: only the instance that rolls out picks them up.
        app["spec"]["podAnnotations"] = staging_annotations
    return [code_config_map("shop-code-v1", "v1"), code_config_map("shop-code-v2", "v2"), app, slot]


class Operator:
    """The real `funcplane-operator` process for one namespace; can be killed and restarted."""

    def __init__(self, cluster: Any, namespace: str, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.cluster, self.namespace, self.log_dir = cluster, namespace, log_dir
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        command = [str(Path(sys.executable).with_name("funcplane-operator")), "--namespace", self.namespace,
                   "--kubeconfig", str(self.cluster.kubeconfig), "--metrics-port", "0", "--health-port", "0",
                   "--bind-address", "127.0.0.1", "--lease-duration", "3", "--renew-deadline", "2",
                   "--retry-period", "0.5", "--log-format", "plain"]
        self.process = subprocess.Popen(command, env={**self.cluster.env, **self.extra_env}, stdout=log,
                                        stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no Lease release; the next process must resume from status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("operator-*.log")))


@pytest.fixture(scope="module")
def crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


@pytest.fixture
def operator(cluster: Any, namespace: str, crds: None, tmp_path: Path) -> Iterator[Operator]:
    running = Operator(cluster, namespace, tmp_path)
    running.start()
    yield running
    running.stop()
    print(running.logs())


class Shop:
    """Test-side view of the app in one namespace."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        from kubernetes import client

        self.cluster, self.namespace = cluster, namespace
        api = cluster.api_client()
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, **kwargs)

    def apply(self, objects: list[dict[str, Any]]) -> str:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects)).stdout

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-o", "json").stdout)

    def status(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object("funcplane.io", "v1alpha1", self.namespace, "functionapps",
                                                        APP).get("status", {})

    def journal(self) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.core.read_namespaced_config_map(f"{APP}-swap-journal", self.namespace)
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        return json.loads(found.data["journal.json"])

    def record(self, request_id: str) -> dict[str, Any] | None:
        journal = self.journal()
        for record in ([journal["current"]] if journal.get("current") else []) + journal.get("history", []):
            if record["requestId"] == request_id:
                return record
        return None

    def pointers(self) -> dict[str, str]:
        return {slot: pointer["instance"] for slot, pointer in self.status().get("slots", {}).items()}

    def service_selector(self, slot: str) -> str:
        name = APP if slot == "production" else f"{APP}-{slot}"
        return self.get("service", name)["spec"]["selector"]["funcplane.io/instance"]

    def endpoint_ips(self, slot: str) -> set[str]:
        name = APP if slot == "production" else f"{APP}-{slot}"
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={name}").items
        return {address for s in slices for e in s.endpoints or []
                if e.conditions is None or e.conditions.ready is not False for address in e.addresses}

    def pods(self, instance: str) -> list[dict[str, Any]]:
        """The instance's pods that are not being deleted (a deleted pod leaves the endpoints at once
        but drains for its grace period before it is gone)."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"funcplane.io/instance={instance}")
        return [self.core.api_client.sanitize_for_serialization(pod) for pod in pods.items
                if pod.metadata.deletion_timestamp is None]

    def ready(self, slots: int = 2) -> bool:
        status = self.status()
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return ready.get("status") == "True" and len(status.get("slots", {})) == slots

    def whoami(self, slot: str) -> dict[str, Any]:
        """Ask the function through the endpoints the slot's Service routes to (a real host)."""
        answers = []
        for ip in sorted(self.endpoint_ips(slot)):
            with urllib.request.urlopen(f"http://{ip}:8080/api/whoami", timeout=10) as response:
                answers.append(json.loads(response.read()))
        assert answers, f"slot {slot} has no endpoints"
        return answers[0] if all(a == answers[0] for a in answers) else {"mixed": answers}

    def request_swap(self, action: str = "start", mode: str = "full", request_id: str | None = None,
                     slot: str = "staging") -> str:
        request_id = request_id or f"r-{uuid.uuid4().hex[:8]}"
        patch = {"spec": {"swap": {"requestId": request_id, "target": "production", "mode": mode, "action": action}}}
        self.kubectl("patch", "slot", f"{APP}-{slot}", "--type", "merge", "-p", json.dumps(patch))
        return request_id

    def finished(self, request_id: str, timeout: float = 120) -> dict[str, Any]:
        return eventually(lambda: (r := self.record(request_id)) and r.get("result") != "Running" and r,
                          timeout=timeout, interval=0.5, what=f"swap {request_id} to finish")


@pytest.fixture
def shop(cluster: Any, namespace: str) -> Shop:
    return Shop(cluster, namespace)


def deploy(shop: Shop, **kwargs: Any) -> dict[str, str]:
    shop.apply(manifests(**kwargs))
    eventually(shop.ready, timeout=120, interval=0.5, what="app and staging slot Ready")
    return shop.pointers()


def serving(shop: Shop, slot: str, expect: dict[str, str] | None = None, timeout: float = 90) -> dict[str, Any]:
    """The answer of every host behind the slot's Service once they agree (and show `expect`); fails
    with the last answer or error (a host of another local cluster at the same pod IP answers 404)."""
    deadline, last = time.monotonic() + timeout, "no answer yet"
    while time.monotonic() < deadline:
        try:
            answer = shop.whoami(slot)
            if "mixed" not in answer and answer.items() >= (expect or {}).items():
                return answer
            last = f"answer {answer}"
        except (OSError, AssertionError) as error:
            last = f"{type(error).__name__}: {error}"
        time.sleep(0.5)
    raise AssertionError(f"hosts of slot {slot} not serving {expect or ''} within {timeout:.0f}s: {last}")


def test_full_swap_moves_content_keeps_sticky_settings(shop: Shop, operator: Operator, pod_runner: Any) -> None:
    before = deploy(shop)
    specs_before = {kind: shop.get(kind, name)["spec"] for kind, name in (("functionapp", APP),
                                                                           ("slot", f"{APP}-staging"))}
    assert serving(shop, "production")["GREETING"] == "hello v1"
    assert serving(shop, "staging")["GREETING"] == "hello v2"

    request_id = shop.request_swap()
    # Until the flip, production's Service selects production's instance, whatever the staging pods do.
    flipped_seen_at_phase = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        selected = shop.service_selector("production")
        record = shop.record(request_id) or {}  # read after the selector: at least as new
        if selected != before["production"]:
            flipped_seen_at_phase = record.get("phase") or record.get("result")
            break
        assert record.get("result") in (None, "Running"), record
        time.sleep(0.2)
    assert flipped_seen_at_phase in ("Flipping", "ApplyingSourceSettings", "Succeeded"), flipped_seen_at_phase
    record = shop.finished(request_id)
    assert record["result"] == "Succeeded", record
    assert all(p["ready"] and p["warm"] and p["status"] == 200 for p in record["pods"]), record["pods"]
    assert len(record["pods"]) == 2
    assert set(record["durations"]) == {"ApplyingTargetSettings", "WarmingUp", "Flipping", "ApplyingSourceSettings"}

    after = shop.pointers()
    assert after == {"production": before["staging"], "staging": before["production"]}
    assert shop.service_selector("production") == before["staging"]
    assert shop.endpoint_ips("production") == {p["status"]["podIP"] for p in shop.pods(before["staging"])}
    # Non-sticky settings travelled with the content; sticky ones stayed with their slots.
    production = serving(shop, "production")
    staging = serving(shop, "staging")
    assert (production["GREETING"], production["ENVIRONMENT"]) == ("hello v2", "production")
    assert (staging["GREETING"], staging["ENVIRONMENT"]) == ("hello v1", "staging")
    # Specs untouched; re-applying the original manifests neither redeploys nor undoes the swap.
    assert shop.get("functionapp", APP)["spec"] == specs_before["functionapp"]
    slot_spec = shop.get("slot", f"{APP}-staging")["spec"]
    assert slot_spec.pop("swap")["requestId"] == request_id
    assert slot_spec == specs_before["slot"]
    app_version = shop.get("functionapp", APP)["metadata"]["resourceVersion"]
    deployments = {d["metadata"]["name"]: d["metadata"]["generation"]
                   for d in json.loads(shop.kubectl("get", "deployments", "-o", "json").stdout)["items"]}
    print(shop.apply(manifests()))
    time.sleep(5)
    assert shop.pointers() == after
    assert {d["metadata"]["name"]: d["metadata"]["generation"]
            for d in json.loads(shop.kubectl("get", "deployments", "-o", "json").stdout)["items"]} == deployments
    assert shop.get("functionapp", APP)["metadata"]["resourceVersion"] == app_version
    # The same request id again is a no-op.
    shop.request_swap(request_id=request_id)
    time.sleep(3)
    assert shop.pointers() == after
    assert [r["requestId"] for r in shop.journal()["history"]].count(request_id) == 1


class Invariants:
    """Samples the app while a test runs: never two slots on one instance, never a Service without
    Ready endpoints."""

    def __init__(self, shop: Shop) -> None:
        import threading

        self.shop = shop
        self.violations: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Invariants":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pointers = self.shop.pointers()
            if len(set(pointers.values())) != len(pointers):
                self.violations.append(f"two slots on one instance: {pointers}")
            for slot in ("production", "staging"):
                if not self.shop.endpoint_ips(slot):
                    self.violations.append(f"Service of slot {slot} has no Ready endpoints")
            self.samples += 1
            self._stop.wait(0.2)


def test_swap_with_a_source_pod_never_ready_fails_and_reverts(shop: Shop, operator: Operator,
                                                              pod_runner: Any) -> None:
    before = deploy(shop, timeout_seconds=15)
    staging_template = before["staging"]
    # Every new pod of the staging instance from now on runs but never turns Ready (kwok stage).
    shop.kubectl("patch", "deployment", staging_template, "--type", "merge", "-p", json.dumps(
        {"spec": {"template": {"metadata": {"annotations": {"sim.funcplane.dev/ready": "false"}}}}}))
    production_before = serving(shop, "production")
    with Invariants(shop) as invariants:
        request_id = shop.request_swap()
        record = shop.finished(request_id)
    assert record["result"] == "Failed", record
    # The reason names the staging pod that never turned Ready (a pod of the new template).
    not_ready = rf"pod {before['staging']}-[a-z0-9]+-[a-z0-9]+ is not Ready after 1\d+s"
    assert re.search(not_ready, record["message"]), record
    assert "ApplyingTargetSettings" in record["durations"] and "Flipping" not in record["durations"]
    # Reverted: pointers as before, the source runs its own sticky settings again, production untouched.
    assert shop.pointers() == before
    instances = shop.status()["instances"]
    assert instances[before["staging"]].get("stickySettingsFrom") is None
    assert shop.service_selector("production") == before["production"]
    assert serving(shop, "production") == production_before
    assert invariants.samples > 5 and not invariants.violations, invariants.violations
    slot_status = shop.get("slot", f"{APP}-staging")["status"]["swap"]
    assert slot_status["phase"] == "Failed" and "is not Ready" in slot_status["message"]
    events = shop.kubectl("get", "events", "--field-selector", f"involvedObject.name={APP}-staging",
                          "-o", "json").stdout
    assert "SwapFailed" in events and "SwapReverting" in events


@pytest.mark.parametrize("phase", ["ApplyingTargetSettings", "WarmingUp", "Flipping", "ApplyingSourceSettings"])
def test_operator_killed_mid_swap_resumes(shop: Shop, operator: Operator, pod_runner: Any, cluster: Any,
                                          namespace: str, phase: str) -> None:
    from kubernetes import client, watch

    # Pods turn Ready 3 s after starting, so rollouts (phases 1 and 4) take a while, as in real life.
    # Warm-up runs the app's warmup function for 2 s.
    before = deploy(shop, staging_annotations={"sim.funcplane.dev/ready-after": "3s"}, warmup_seconds=2)
    api = client.CoreV1Api(cluster.api_client())
    with Invariants(shop) as invariants:
        request_id = shop.request_swap()
        stream = watch.Watch()
        killed_in = None
        for event in stream.stream(api.list_namespaced_config_map, namespace, timeout_seconds=120,
                                   field_selector=f"metadata.name={APP}-swap-journal"):
            current = json.loads(event["object"].data["journal.json"]).get("current") or {}
            if current.get("requestId") == request_id and current.get("phase") == phase:
                operator.kill()
                stream.stop()
                killed_in = (shop.journal().get("current") or {}).get("phase")
        assert killed_in == phase, f"the swap was in phase {killed_in} when killed, not {phase}: {shop.journal()}"
        operator.start()
        record = shop.finished(request_id, timeout=180)
    assert record["result"] == "Succeeded", (killed_in, record)
    assert shop.pointers() == {"production": before["staging"], "staging": before["production"]}
    assert eventually(lambda: shop.endpoint_ips("production") ==
                      {p["status"]["podIP"] for p in shop.pods(before["staging"])}, timeout=30,
                      what="production endpoints = the former staging pods")
    assert invariants.samples > 5 and not invariants.violations, (killed_in, invariants.violations)
    assert serving(shop, "production")["GREETING"] == "hello v2"
    print(f"killed in phase {killed_in} (asked {phase}); durations {record['durations']}")


def test_preview_cancel_complete_rollback_and_refused_concurrent_swap(shop: Shop, operator: Operator,
                                                                       pod_runner: Any) -> None:
    before = deploy(shop)
    shop.apply([{"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot", "metadata": {"name": f"{APP}-qa"},
                 "spec": {"appRef": APP, "slotName": "qa", "code": {"configMap": {"name": "shop-code-v2"}}}}])
    eventually(lambda: shop.ready(slots=3), timeout=120, what="qa slot ready")

    # Preview: staging runs production's sticky settings on its own hostname, and waits.
    preview = shop.request_swap(mode="preview")
    eventually(lambda: (shop.record(preview) or {}).get("phase") == "AwaitingCompletion", timeout=120,
               what="preview warm and waiting")
    assert serving(shop, "staging", {"ENVIRONMENT": "production"})["GREETING"] == "hello v2"
    assert shop.service_selector("production") == before["production"]

    # A second swap while the preview waits is refused, with the reason in the other slot's status.
    concurrent = shop.request_swap(slot="qa")
    refused = shop.finished(concurrent)
    assert refused["result"] == "Refused" and preview in refused["message"], refused
    qa_status = eventually(lambda: shop.get("slot", f"{APP}-qa")["status"].get("swap"), what="qa swap status")
    assert qa_status["phase"] == "Refused" and "in progress" in qa_status["message"]

    # Cancel restores staging's own settings; production never changed.
    shop.request_swap(action="cancel", request_id=preview, mode="preview")
    cancelled = shop.finished(preview)
    assert cancelled["result"] == "Cancelled", cancelled
    assert shop.pointers()["production"] == before["production"]
    serving(shop, "staging", {"ENVIRONMENT": "staging", "GREETING": "hello v2"})

    # Preview again, then complete: the flip happens only on complete.
    second = shop.request_swap(mode="preview")
    eventually(lambda: (shop.record(second) or {}).get("phase") == "AwaitingCompletion", timeout=120,
               what="second preview waiting")
    assert shop.pointers()["production"] == before["production"]
    shop.request_swap(action="complete", request_id=second, mode="preview")
    completed = shop.finished(second)
    assert completed["result"] == "Succeeded", completed
    assert shop.pointers()["production"] == before["staging"]
    assert serving(shop, "production")["GREETING"] == "hello v2"

    # Rollback: a swap back, right after the swap.
    rollback = shop.request_swap(action="rollback")
    rolled_back = shop.finished(rollback)
    assert rolled_back["result"] == "Succeeded" and rolled_back["rollbackOf"] == second, rolled_back
    assert {k: v for k, v in shop.pointers().items() if k != "qa"} == before
    production = serving(shop, "production")
    assert (production["GREETING"], production["ENVIRONMENT"]) == ("hello v1", "production")
    history = shop.journal()["history"]
    assert [r["requestId"] for r in history[:4]] == [rollback, second, preview, concurrent]
    assert [r["result"] for r in history[:4]] == ["Succeeded", "Succeeded", "Cancelled", "Refused"]
    assert all(r["requestedBy"] != "unknown" for r in history[:4])


def test_auto_swap_swaps_each_new_deployment_into_production(shop: Shop, operator: Operator,
                                                             pod_runner: Any) -> None:
    objects = manifests()
    objects[3]["spec"]["autoSwapTarget"] = {"target": "production"}
    shop.apply(objects)
    # The slot's first deployment is swapped in once warm.
    eventually(lambda: any(r["result"] == "Succeeded" for r in shop.journal().get("history", [])),
               timeout=180, what="first auto-swap")
    assert serving(shop, "production")["GREETING"] == "hello v2"
    assert serving(shop, "production")["ENVIRONMENT"] == "production"
    # A new deployment to staging (new code and setting) goes to production by itself.
    objects.append(code_config_map("shop-code-v3", "v3"))
    objects[3]["spec"]["code"] = {"configMap": {"name": "shop-code-v3"}}
    objects[3]["spec"]["settings"][0]["value"] = "hello v3"
    shop.apply(objects)
    eventually(lambda: sum(r["result"] == "Succeeded" and r["trigger"] == "auto-swap"
                           for r in shop.journal().get("history", [])) == 2, timeout=180, what="second auto-swap")
    assert serving(shop, "production", {"GREETING": "hello v3"})["ENVIRONMENT"] == "production"
    # Non-HTTP triggers follow the slot: on in production, off in staging, whichever instance serves.
    assert serving(shop, "production")["FUNCPLANE_NON_HTTP_TRIGGERS"] == "true"
    assert serving(shop, "staging")["FUNCPLANE_NON_HTTP_TRIGGERS"] == "false"
    # So do the slot's identity and trigger state: its host id and slot name.
    assert {k: serving(shop, "production")[k] for k in ("FUNCPLANE_HOST_ID", "FUNCPLANE_SLOT_NAME")} == \
        {"FUNCPLANE_HOST_ID": "shop", "FUNCPLANE_SLOT_NAME": "production"}
    assert {k: serving(shop, "staging")[k] for k in ("FUNCPLANE_HOST_ID", "FUNCPLANE_SLOT_NAME")} == \
        {"FUNCPLANE_HOST_ID": "shop-staging", "FUNCPLANE_SLOT_NAME": "staging"}
    # Re-applying the same manifests does not start another swap.
    shop.apply(objects)
    time.sleep(5)
    assert sum(r["trigger"] == "auto-swap" for r in shop.journal()["history"]) == 2


def test_timers_run_in_one_pod_of_the_slot_and_follow_it_through_a_swap(shop: Shop, operator: Operator,
                                                                        pod_runner: Any, tmp_path: Path) -> None:
    runs = tmp_path / "timer-runs.jsonl"

    def recorded() -> list[dict[str, Any]]:
        return json_lines(runs)

    objects = manifests(replicas=2)
    for resource in objects[2:]:
        resource["spec"]["settings"].append({"name": "RUNS_FILE", "value": str(runs)})
    shop.apply(objects)
    eventually(shop.ready, timeout=120, interval=0.5, what="app and staging slot Ready")
    before = shop.pointers()
    eventually(lambda: len(recorded()) >= 4, timeout=60, what="four timer runs")
    first = recorded()
    # Production runs the timer in one of its two pods; staging (nonHttpTriggers off) never does.
    assert {r["slot"] for r in first} == {"production"}, first
    assert len({r["pod"] for r in first}) == 1, first
    assert first[0]["pod"] in {p["status"]["podIP"] for p in shop.pods(before["production"])}

    record = shop.finished(shop.request_swap())
    assert record["result"] == "Succeeded", record
    # After the swap the timer is production's still, run by one pod of the instance now serving it.
    new_pods = {p["status"]["podIP"] for p in shop.pods(before["staging"])}
    eventually(lambda: recorded()[-1]["pod"] in new_pods, timeout=60, what="the new production pods to run it")
    mark = len(recorded())
    eventually(lambda: len(recorded()) >= mark + 3, timeout=30, what="three more runs")
    everything = recorded()
    assert {r["slot"] for r in everything} == {"production"}, everything
    assert len({r["pod"] for r in everything[mark:]}) == 1
    # Never two runs of one occurrence, not even while the source warmed up as production.
    occurrences = [r["occurrence"] for r in everything if r["occurrence"]]
    assert len(occurrences) == len(set(occurrences)), everything


def kubectl_funcplane(cluster: Any, namespace: str, *argv: str) -> int:
    """The plugin's swap commands, in process, against the real API server."""
    import argparse

    from funcplane.cli import swap as swap_cli

    parser = argparse.ArgumentParser(prog="kubectl funcplane")
    swap_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)])
    return args.handler(args)


def test_cli_swaps_follows_progress_shows_history_and_rolls_back(shop: Shop, operator: Operator, pod_runner: Any,
                                                                 cluster: Any, namespace: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    before = deploy(shop)
    assert kubectl_funcplane(cluster, namespace, "swap", APP, "--slot", "staging", "--wait", "--timeout", "180") == 0
    followed = capsys.readouterr().out
    assert "staging -> production" in followed and "Succeeded" in followed
    assert "ApplyingTargetSettings" in followed and "WarmingUp" in followed
    assert shop.pointers() == {"production": before["staging"], "staging": before["production"]}

    assert kubectl_funcplane(cluster, namespace, "rollback", APP, "--slot", "staging", "--wait") == 0
    assert shop.pointers() == before
    assert kubectl_funcplane(cluster, namespace, "status", APP) == 0
    table = capsys.readouterr().out
    assert "no swap in progress" in table
    rows = [line for line in table.splitlines() if line.startswith(("start-", "rollback-"))]
    assert len(rows) == 2 and all("Succeeded" in row and "WarmingUp=" in row for row in rows), table
    kubeconfig = json.loads(cluster.kubectl("config", "view", "-o", "json", "--minify").stdout)
    user = kubeconfig["contexts"][0]["context"]["user"]
    assert all(user[:20] in row for row in rows)

    # Nothing to cancel: refused with the reason, and the command says so.
    assert kubectl_funcplane(cluster, namespace, "cancel", APP, "--slot", "staging", "--wait") == 1
    assert "no swap before its flip to cancel" in capsys.readouterr().out
    assert kubectl_funcplane(cluster, namespace, "swap", APP, "--slot", "nope") == 2
    assert "has no slot 'nope'" in capsys.readouterr().err
