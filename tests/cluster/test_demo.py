"""`make demo`'s command, twice: the environment it leaves running is reused by the next process,
each run swaps staging into production under steady traffic with no failed request, and the
Services can be reached from the machine through `funcplane dev port-forward`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from funcplane_dev.cluster import LocalCluster, processes_naming
from support import eventually, isolated_cache

CLI = [sys.executable, "-m", "funcplane.cli.main"]
NAME = "demo-test"


def _run(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _answers(output: str) -> dict[str, list[dict]]:
    """Per slot, the JSON answers the demo printed (before and after its swap)."""
    found: dict[str, list[dict]] = {}
    for slot, body in re.findall(r"^\s+(production|staging)\s+\(Service [\w-]+\): (\{.*\})$", output, re.M):
        found.setdefault(slot, []).append(json.loads(body))
    return found


def _headline(output: str) -> tuple[int, int]:
    sent, failures = re.search(r"requests sent to production: (\d+), failures: (\d+)", output).groups()
    return int(sent), int(failures)


@pytest.mark.timeout(900)  # two demo runs and a cold cluster start on a loaded machine
def test_demo_twice_swaps_under_traffic_and_leaves_the_environment_running(tmp_path: Path):
    env = isolated_cache(tmp_path)
    directory = tmp_path / "cache" / "clusters" / NAME
    try:
        first = _run(env, "demo", "--name", NAME)
        assert first.returncode == 0, f"demo failed:\n{first.stdout[-4000:]}\n{first.stderr[-3000:]}"
        answers = _answers(first.stdout)
        assert [(a["release"], a["environment"]) for a in answers["production"]] == [("1.0", "production"),
                                                                                     ("2.0", "production")]
        assert [(a["release"], a["environment"]) for a in answers["staging"]] == [("2.0", "staging"),
                                                                                  ("1.0", "staging")]
        sent, failures = _headline(first.stdout)
        assert sent > 0 and failures == 0, first.stdout[-3000:]
        assert "production answered release 2.0 from" in first.stdout
        assert "functionapp.funcplane.io/demo   True" in first.stdout

        # The environment outlived the command: services still run, and a Service is reachable.
        cluster = LocalCluster.load(NAME, directory)
        assert cluster is not None and set(cluster.services) == {"operator", "pods"}
        assert not cluster.crashed_services(), cluster.status()
        status = _run(env, "dev", "status", "--name", NAME, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        forward = subprocess.Popen([*CLI, "dev", "port-forward", "--name", NAME, "-n", "demo", "svc/demo"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = forward.stdout.readline()
            port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))

            def through_forward() -> dict | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/hello?name=pf", timeout=10) as answer:
                        return json.loads(answer.read())
                except OSError:
                    return None
            answer = eventually(through_forward, timeout=30, what="an answer through dev port-forward")
            assert (answer["release"], answer["environment"]) == ("2.0", "production")
        finally:
            forward.terminate()
            forward.wait(timeout=10)

        # A second run in a new process reuses all of it and swaps back.
        second = _run(env, "demo", "--name", NAME)
        assert second.returncode == 0, f"second demo failed:\n{second.stdout[-4000:]}\n{second.stderr[-3000:]}"
        assert "ready in" in second.stdout
        answers = _answers(second.stdout)
        assert [a["release"] for a in answers["production"]] == ["2.0", "1.0"]
        assert _headline(second.stdout)[1] == 0
        reused = LocalCluster.load(NAME, directory)
        assert reused.processes["kube-apiserver"].pid == cluster.processes["kube-apiserver"].pid
        assert {n: p.pid for n, p in reused.services.items()} == {n: p.pid for n, p in cluster.services.items()}
    finally:
        down = _run(env, "dev", "down", "--name", NAME, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not directory.exists()
    assert not processes_naming(directory), "a process of the demo environment outlived `dev down`"
