"""The operator image reconciles an app on the local control plane, and runs the way the chart
deploys it: the chart's command, user and read-only root filesystem work with the image."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from containers import Container, kubeconfig_with_embedded_credentials, run
from funcplane_dev.binaries import ensure
from funcplane_dev.images import image_config
from operator_helpers import REPO, apply_examples, get, wait_app_ready

CHART = REPO / "charts" / "funcplane"
KUBECONFIG_IN_CONTAINER = "/etc/funcplane/kubeconfig"


def _chart_operator_pod(repository: str, tag: str) -> dict:
    rendered = subprocess.run(
        [str(ensure("helm")), "template", "fp", str(CHART), "--namespace", "funcplane-system",
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    (deployment,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


@pytest.fixture
def operator_container(crds, namespace: str, built_images: dict[str, str], tmp_path: Path) -> Iterator[Container]:
    kubeconfig = kubeconfig_with_embedded_credentials(crds.kubeconfig, tmp_path / "kubeconfig")
    repository, tag = built_images["operator"].rsplit(":", 1)
    pod = _chart_operator_pod(repository, tag)
    (chart_container,) = pod["containers"]
    # As the chart runs it: its user, a read-only root, no capabilities; the API server is on loopback.
    options = ["--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--user", f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}",
               "--volume", f"{kubeconfig}:{KUBECONFIG_IN_CONTAINER}:ro",
               "--entrypoint", chart_container["command"][0]]
    container = run(chart_container["image"], *options, arguments=(
        "--namespace", namespace, "--kubeconfig", KUBECONFIG_IN_CONTAINER, "--metrics-port", "0",
        "--health-port", "0", "--log-format", "plain", "--lease-duration", "3", "--renew-deadline", "2",
        "--retry-period", "0.5"))
    try:
        yield container
    finally:
        container.remove()


def test_operator_image_reconciles_an_app(crds, namespace: str, operator_container: Container) -> None:
    apply_examples(crds, namespace, "functionapp.yaml", "workerconfig.yaml")
    try:
        app = wait_app_ready(crds, namespace, "hello", timeout=120)
    except AssertionError as error:
        raise AssertionError(f"{error}\noperator container log:\n{operator_container.logs()[-4000:]}") from None
    instance = app["status"]["activeInstance"]
    deployment = get(crds, namespace, "deployment", instance)
    assert deployment is not None
    (host,) = deployment["spec"]["template"]["spec"]["containers"]
    assert host["image"] == "ghcr.io/funcplane/host:0.1.0"
    assert operator_container.running()


def test_chart_deployment_matches_the_operator_image(built_images: dict[str, str]) -> None:
    repository, tag = built_images["operator"].rsplit(":", 1)
    pod = _chart_operator_pod(repository, tag)
    (container,) = pod["containers"]
    config = image_config(built_images["operator"])
    assert container["image"] == built_images["operator"]
    assert container["command"] == config["Entrypoint"] == ["funcplane-operator"]
    assert config["User"] == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
