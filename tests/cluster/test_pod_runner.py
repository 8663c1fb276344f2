"""Simulated pods of the local cluster can be served by real host processes at their pod IPs."""

from __future__ import annotations

import json
import urllib.request

from support import eventually, hello_code_configmap, hello_host_deployment


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_host_runs_at_the_pod_ip_and_stops_with_the_pod(cluster, namespace, pod_runner):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hello-secret"},
              "stringData": {"greeting": "hi"}}
    manifests = {"apiVersion": "v1", "kind": "List",
                 "items": [hello_code_configmap("hello-code"), secret, hello_host_deployment(2)]}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifests))

    pods = eventually(lambda: len(pod_runner.running) == 2 and list(pod_runner.running.values()),
                      what="host processes for both pods")
    for pod in pods:
        assert pod.url.startswith("http://10.213."), pod.url
        status, body = eventually(lambda: _try_get(f"{pod.url}/api/hello?name=pod"), timeout=60,
                                  what=f"the host of pod {pod.name} to serve /api/hello")
        assert (status, body) == (200, "Hello, pod!")

    # The service's EndpointSlice lists exactly the addresses that now serve.
    cluster.kubectl("expose", "deployment", "hello", "-n", namespace, "--port=80", "--target-port=8080")
    def endpoint_ips() -> set[str] | None:
        slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", namespace, "-o", "json").stdout)["items"]
        ips = {e["addresses"][0] for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")}
        return ips if len(ips) == 2 else None
    assert eventually(endpoint_ips, what="two ready endpoints") == {p.ip for p in pods}

    cluster.kubectl("scale", "deployment", "hello", "-n", namespace, "--replicas=1")
    eventually(lambda: len(pod_runner.running) == 1, what="the removed pod to be seen going away")
    stopped = [p for p in pods if p.uid not in pod_runner.running]
    assert len(stopped) == 1
    eventually(lambda: stopped[0].process.poll() is not None, timeout=60, what="the removed pod's host to stop")
    assert _try_get(f"{stopped[0].url}/livez") is None, "nothing serves at a removed pod's IP"


def _try_get(url: str) -> tuple[int, str] | None:
    try:
        return _get(url)
    except OSError:
        return None


def test_pod_with_a_volume_that_cannot_run_locally_gets_a_warning_event(cluster, namespace, pod_runner):
    deployment = hello_host_deployment(1)
    deployment["spec"]["template"]["spec"]["volumes"] = [
        {"name": "code", "image": {"reference": "example.invalid/app:1"}}]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment))

    def warning() -> str | None:
        events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        return next((e["message"] for e in events if e["reason"] == "LocalRunUnsupported"), None)

    message = eventually(warning, what="a LocalRunUnsupported event")
    assert "volume 'code' is of type image" in message
    assert not pod_runner.running
