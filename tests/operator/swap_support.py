"""The shop app of the swap tests on the local control plane: its manifests, the real operator process,
a test-side view of the app (Shop), the invariants sampled during swaps, and their fixtures. Shared by
the swap, drain, scaler and real-node tests."""

from __future__ import annotations

import json
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

from support import PeriodicSampler, eventually


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


@pytest.fixture
def operator(request: pytest.FixtureRequest, cluster: Any, namespace: str, crds: None,
             tmp_path: Path) -> Iterator[Operator]:
    """The operator; a test parametrized indirectly passes extra environment (a control run's switch)."""
    running = Operator(cluster, namespace, tmp_path, getattr(request, "param", {}))
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


class Invariants(PeriodicSampler):
    """Samples the app while a test runs: never two slots on one instance, never a Service without
    Ready endpoints."""

    def __init__(self, shop: Shop) -> None:
        super().__init__()
        self.shop = shop
        self.violations: list[str] = []
        self.samples = 0

    def sample(self) -> None:
        pointers = self.shop.pointers()
        if len(set(pointers.values())) != len(pointers):
            self.violations.append(f"two slots on one instance: {pointers}")
        for slot in ("production", "staging"):
            if not self.shop.endpoint_ips(slot):
                self.violations.append(f"Service of slot {slot} has no Ready endpoints")
        self.samples += 1
