"""Durable Functions survive `kill -9`: the host and its workers die mid-orchestration, a new host
on the same state directory picks up activities, timers and episodes from the SQLite store, and
every orchestration completes with the right output."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from conftest import launch_host
from durable_support import DURABLE_V2, durable_app, process_tree, start_orchestration, status, wait_for


def completed_tasks(host, instance: str) -> int:
    history = status(host, instance, "showHistory=true").get("historyEvents") or []
    return sum(1 for event in history if event["EventType"] == "TaskCompleted")


def test_kill_9_of_host_and_workers_mid_orchestration_then_restart(tmp_path: Path) -> None:
    app = durable_app(DURABLE_V2, tmp_path)
    env = {"FUNCPLANE_STATE_DIR": str(tmp_path / "state"), "DURABLE_TEST_STATE": str(tmp_path),
           "FUNCTIONS_WORKER_RUNTIME": "python"}
    host = launch_host(tmp_path, app, env=env, wait_ready=False)
    try:
        host.wait_ready(90)
        chains = [start_orchestration(host, "slow_chain", 8) for _ in range(4)]
        fan = start_orchestration(host, "fan_out", 100)
        timed = start_orchestration(host, "sleeper")
        host.wait_until(lambda: completed_tasks(host, chains[0]) >= 2, "the chains to make progress")
        tree = process_tree(host.process.pid)
        assert len(tree) >= 2, "the host should have a worker process"
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
        host.process.wait()
        unfinished = [i for i in chains if status_in_store(tmp_path, i) != "Completed"]
        assert unfinished, "the kill came too late: every chain had finished"
    finally:
        host.stop()

    restarted = launch_host(tmp_path, app, env=env, wait_ready=False)
    try:
        restarted.wait_ready(90)
        for instance in chains:
            done = wait_for(restarted, instance, 120)
            assert (done["runtimeStatus"], done["output"]) == ("Completed", sum(n * n for n in range(8)))
        assert wait_for(restarted, fan, 120)["output"] == sum(n * n for n in range(100))
        assert wait_for(restarted, timed, 120)["output"] == {"elapsedAtLeastOne": True, "uuidStable": True}
    finally:
        restarted.stop()


def status_in_store(root: Path, instance: str) -> str | None:
    with sqlite3.connect(root / "state" / "durable" / "DurableTests.sqlite") as conn:
        row = conn.execute("SELECT status FROM instances WHERE instance_id = ?", (instance,)).fetchone()
    return row[0] if row else None
