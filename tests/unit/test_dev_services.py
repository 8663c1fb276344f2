"""The local environment's plumbing without a cluster: the supervisor that keeps a process running
as a kubelet would, the kubectl plugin's global flags, and how a cluster recognizes its processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from funcplane.cli.main import build_parser
from funcplane_dev import cluster as local_cluster
from funcplane_dev.services import Supervisor
from support import eventually


def _supervised(script: str, tmp_path: Path) -> tuple[Supervisor, list[str]]:
    reports: list[str] = []
    supervisor = Supervisor([sys.executable, "-c", script], report=reports.append,
                            open_log=lambda n: (tmp_path / f"run-{n}.log").open("wb"))
    return supervisor.start(), reports


def test_an_exiting_child_is_started_again_and_each_exit_is_reported(tmp_path: Path) -> None:
    supervisor, reports = _supervised("import sys; print('up', flush=True); sys.exit(3)", tmp_path)
    try:
        eventually(lambda: supervisor.starts >= 2, timeout=20, what="a second start after the exit")
    finally:
        supervisor.stop()
    assert supervisor.exits[:1] == [3]
    assert "exited with status 3; starting it again in 1s (restart 1)" in reports[0]
    assert (tmp_path / "run-1.log").read_text() == "up\n" and (tmp_path / "run-2.log").exists()


def test_stop_and_kill_end_the_child_without_a_restart(tmp_path: Path) -> None:
    stopped, _ = _supervised("import time; time.sleep(60)", tmp_path)
    assert stopped.stop(timeout=10) == -15
    killed, reports = _supervised("import time; time.sleep(60)", tmp_path / "..")
    assert killed.kill() == -9
    time.sleep(1.5)  # longer than the first back-off: a restart would have happened by now
    assert (stopped.starts, killed.starts, stopped.exits, killed.exits, reports) == (1, 1, [], [], [])


def test_kubectl_global_flags_go_before_or_after_the_subcommand() -> None:
    parser = build_parser("kubectl funcplane")
    for argv in (["-n", "demo", "--context", "dev", "--kubeconfig", "/k", "swap", "demo", "--slot", "staging"],
                 ["swap", "demo", "--slot", "staging", "-n", "demo", "--context", "dev", "--kubeconfig", "/k"],
                 ["--namespace", "demo", "--context=dev", "swap", "demo", "--slot", "staging", "--kubeconfig=/k"]):
        args = parser.parse_args(argv)
        assert (args.namespace, args.context, args.kubeconfig, args.app, args.slot) == \
            ("demo", "dev", "/k", "demo", "staging"), argv
    status = parser.parse_args(["status", "demo"])
    assert (status.namespace, status.context, status.kubeconfig) == (None, None, None)


def test_a_cluster_recognizes_its_own_processes_not_a_siblings(tmp_path: Path) -> None:
    mine, sibling = tmp_path / "c", tmp_path / "c-2"
    for directory in (mine, sibling):
        directory.mkdir()
    processes = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--data-dir={d}/etcd"])
                 for d in (mine, sibling)]
    try:
        found = local_cluster.processes_naming(mine)
        assert processes[0].pid in found and processes[1].pid not in found
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert not local_cluster.processes_naming(mine)
