"""The host image runs the pod the operator renders: an app directory as the code volume, the Python
worker image mounted at /siteextensions/python as the managed worker config declares it, the pod's
user, read-only root and probes; and the image's own config matches the rendered Deployment."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from containers import Container, output_of, pod_options, run
from funcplane.api import FunctionApp, WorkerConfig
from funcplane_dev.cluster import free_port
from funcplane_dev.images import image_config
from funcplane.render import instance
from funcplane.render.app import production_view, render_app
from funcplane.render.deploy import plan_deployments
from funcplane.render.volumes import VolumeMode
from funcplane.render.workers import declared_workers
from support import REPO, eventually

APP = REPO / "examples" / "apps" / "hello-v2"
MASTER_KEY = "image-test-master-key"


def _rendered_objects(host_image: str, worker_image: str) -> dict[tuple[str, str], dict[str, Any]]:
    app = FunctionApp.model_validate({
        "metadata": {"name": "hello", "namespace": "images", "uid": "uid-hello"},
        "spec": {"image": host_image, "runtime": {"name": "python"}, "plan": "premium",
                 "code": {"image": {"reference": "example.invalid/hello-code:1"}},
                 "settings": [{"name": "GREETING", "value": "from the image"}]},
    })
    workers = WorkerConfig.model_validate({
        "metadata": {"name": "workers", "namespace": "images", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"workers": [{"name": "python", "language": "python",
                              "source": {"image": {"reference": worker_image}}}]},
    })
    views = [production_view(app)]
    app.status = plan_deployments("hello", "images", app.status, [view.request for view in views]).status
    objects = render_app(app, views, declared_workers([workers]), VolumeMode.IMAGE)
    return {(item["kind"], item["metadata"]["name"]): item for item in objects}


@dataclass
class RunningPod:
    deployment: dict[str, Any]
    container: Container
    port: int
    seconds_to_ready: float

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def host_container(self) -> dict[str, Any]:
        (container,) = self.pod_spec["containers"]
        return container

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _answers(pod: RunningPod, path: str) -> bool:
    try:
        return pod.get(path)[0] == 200
    except (ConnectionError, OSError, http.client.HTTPException):
        return False


@pytest.fixture(scope="module")
def pod(built_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPod]:
    objects = _rendered_objects(built_images["host"], built_images["python-worker"])
    (deployment,) = [item for (kind, _), item in objects.items() if kind == "Deployment"]
    config_maps = {name: item for (kind, name), item in objects.items() if kind == "ConfigMap"}
    pod_spec = deployment["spec"]["template"]["spec"]
    # The keys Secret is the operator's to create; here it holds a known master key.
    secrets = {volume["secret"]["secretName"]: {"keys.json": json.dumps({"masterKey": MASTER_KEY})}
               for volume in pod_spec["volumes"] if "secret" in volume}
    port = free_port()
    options = pod_options(pod_spec, config_maps, secrets, {"code": APP}, tmp_path_factory.mktemp("pod"), port)
    started = time.monotonic()
    container = run(built_images["host"], *options)
    try:
        running = RunningPod(deployment, container, port, 0.0)
        eventually(lambda: _answers(running, "/readyz") or not container.running(), timeout=120, interval=0.1,
                   what="the host container to answer /readyz")
        assert container.running(), f"the host container exited:\n{container.logs()[-4000:]}"
        running.seconds_to_ready = time.monotonic() - started
        print(f"host image: container start to ready in {running.seconds_to_ready:.2f}s")
        yield running
    finally:
        container.remove()


def test_host_image_serves_a_function_with_the_worker_image_mounted(pod: RunningPod) -> None:
    status, body = pod.get("/api/hello?name=image")
    assert status == 200, f"{status} {body!r}\n{pod.container.logs()[-4000:]}"
    assert body.decode() == "Hello, image!"
    status, body = pod.get("/admin/host/status", headers={"x-functions-key": MASTER_KEY})
    assert status == 200, body
    (pool,) = json.loads(body)["workers"]
    assert (pool["source"], pool["path"]) == ("managed", "/siteextensions/python")
    assert "/siteextensions/python/worker.py" in pod.container.logs()


def test_rendered_deployment_matches_the_host_image(pod: RunningPod, built_images: dict[str, str]) -> None:
    config = image_config(built_images["host"])
    container = pod.host_container
    # Command: the pod leaves it to the image, whose entry point is the host.
    assert "command" not in container and "args" not in container
    assert config["Entrypoint"] == ["funcplane-host"]
    # User: the pod's user is the image's.
    assert config["User"] == str(instance.RUN_AS_USER)
    assert pod.pod_spec["securityContext"]["runAsUser"] == instance.RUN_AS_USER
    # Port: the container port is the one the image exposes and listens on.
    (port,) = container["ports"]
    assert port["containerPort"] == instance.HTTP_PORT
    assert f"{instance.HTTP_PORT}/tcp" in config["ExposedPorts"]
    image_env = dict(item.split("=", 1) for item in config["Env"])
    assert image_env["FUNCPLANE_HTTP_PORT"] == str(instance.HTTP_PORT)
    # Paths: the app root is the image's working directory and script root; the worker is mounted
    # where the managed config says.
    assert config["WorkingDir"] == instance.APP_ROOT == image_env["AzureWebJobsScriptRoot"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["code"] == instance.APP_ROOT and mounts["worker-python"] == "/siteextensions/python"
    worker_config = json.loads(pod.container.exec("cat", f"{instance.WORKER_CONFIG_DIR}/workers.json").stdout)
    assert worker_config["workers"]["python"]["path"] == "/siteextensions/python"
    # Probes: every path answers 200 on the named port of the running image.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == port["name"]
        assert pod.get(get["path"])[0] == 200, f"{probe} {get['path']}"
    # The preStop hook's interpreter exists in the image and drains the host.
    hook = container["lifecycle"]["preStop"]["exec"]["command"]
    drained = pod.container.exec(*hook)
    assert drained.returncode == 0, drained.stderr
    assert pod.get("/readyz")[0] == 503


def test_worker_image_carries_only_the_worker_and_the_protocol(built_images: dict[str, str]) -> None:
    # A files-only image cannot run; its contents are read through an image mount in the host image.
    listing = output_of(built_images["host"], "--mount",
                        f"type=image,source={built_images['python-worker']},destination=/siteextensions/python",
                        "--entrypoint", "python3",
                        arguments=("-c", "import json, os; root = '/siteextensions/python'; "
                                   "print(json.dumps([sorted(os.listdir(root)), "
                                   "[d for d, _, _ in os.walk(root) if d.endswith('__pycache__')]]))"))
    top, caches = json.loads(listing)
    assert set(top) == {"README.md", "worker.config.json", "worker.py", "funcplane_pyworker", "funcplane_protocol"}
    assert caches == []
