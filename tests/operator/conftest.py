"""Operator fixtures: the CRDs installed in the cluster of each module (the session's, or a module's own),
and the real operator per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from operator_helpers import REPO, OperatorProcess


@pytest.fixture(scope="module")
def crds(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("functionapps", "slots", "workerconfigs"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}.funcplane.io", "--timeout=60s")
    return cluster


@pytest.fixture
def operator(crds, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator, restarted after an exit as a kubelet would (a lost Lease exits by design);
    any other exit status is a defect and fails the test."""
    process = OperatorProcess(crds, namespace, tmp_path).start()
    yield process
    process.stop()
    assert not process.unexpected_exits, \
        f"the operator exited with {process.unexpected_exits} (restarts: {process.restarts}):\n{process.logs()[-4000:]}"
