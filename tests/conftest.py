"""Session-wide fixtures: one real local control plane per test session, a namespace per test."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from funcplane.devcluster.cluster import LocalCluster
from support import eventually




@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A fresh cluster for this session (binaries are built by `make test` beforehand)."""
    directory = tmp_path_factory.mktemp("cluster") / "c"
    local = LocalCluster.named(f"pytest-{os.getpid()}", directory=directory)
    local.up(reuse=False)
    try:
        yield local
    finally:
        local.down()


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    # Pods need the namespace's default ServiceAccount, which a controller creates asynchronously.
    eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
               timeout=30, what=f"the default ServiceAccount of namespace {name}")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """Image name -> reference of the host, Python worker and operator images (podman; cached)."""
    from containers import build_images

    return build_images()


@pytest.fixture
def k8s(cluster: LocalCluster):
    client = cluster.api_client()
    yield client
    client.close()


@pytest.fixture
def pod_runner(cluster: LocalCluster, namespace: str, tmp_path: Path):
    """Real `funcplane-host` processes for the namespace's funcplane pods, at their pod IPs."""
    from funcplane.devcluster.podrunner import PodRunner

    with PodRunner(cluster, namespace, tmp_path / "pods") as runner:
        yield runner
