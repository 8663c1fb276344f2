"""Session-wide fixtures: one real local control plane per test session, a namespace per test.

Also the suite's hygiene: a failed test (a timeout included) shows the log tails of the operator
and the pods it ran, and the session fails if any process of a test cluster outlives it.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import diagnostics
from funcplane_dev.cluster import LocalCluster, processes_naming
from support import eventually, processes_inside


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for title, text in diagnostics.tails():
            if hasattr(report.longrepr, "addsection"):
                report.longrepr.addsection(title, text)
            else:
                report.sections.append((title, text))
    if report.when == "teardown":
        diagnostics.forget()
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After every fixture is torn down: no process of a test cluster may still run."""
    basetemp = session.config._tmp_path_factory.getbasetemp()
    leaked = processes_naming(basetemp) | processes_inside(basetemp)
    if not leaked:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(leaked)} process(es) of test clusters outlived the session (now stopped):"]
    lines += [f"  pid {pid}: {cmdline[:300]}" for pid, cmdline in sorted(leaked.items())]
    for line in lines:
        reporter.write_line(line, red=True) if reporter else print(line)
    for pid in leaked:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[LocalCluster]:
    """A fresh cluster for this session (binaries are built by `make test` beforehand)."""
    directory = tmp_path_factory.mktemp("cluster") / "c"
    local = LocalCluster.named(f"pytest-{os.getpid()}", directory=directory)
    started = time.monotonic()
    local.up(reuse=False)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nlocal cluster for the session up in {time.monotonic() - started:.1f}s")
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
    from funcplane_dev.podrunner import PodRunner

    with PodRunner(cluster, namespace, tmp_path / "pods") as runner:
        diagnostics.register(f"pods ({namespace})", runner.logs)
        yield runner
