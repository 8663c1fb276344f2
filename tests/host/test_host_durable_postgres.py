"""Durable Functions on the shared PostgreSQL store: three hosts share one task hub, one is killed
with its workers mid-orchestration, the others take its instances and activities over when its
leases run out, and every orchestration completes with the right output."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import MASTER_KEY, launch_host
from durable_support import DURABLE_V2, durable_app, postgres_server, process_tree, start_orchestration, use_postgres, wait_for

LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


def activities_run(host) -> int:
    status = host.get("/admin/host/status", headers={"x-functions-key": MASTER_KEY}).json()
    return status["durable"]["counters"]["activities"]


def test_three_hosts_share_a_hub_and_survive_losing_one(postgres: str, tmp_path: Path) -> None:
    app = durable_app(DURABLE_V2, tmp_path)
    use_postgres(app, LEASE_SECONDS)
    env = {"DurablePostgres": postgres, "DURABLE_TEST_STATE": str(tmp_path), "FUNCTIONS_WORKER_RUNTIME": "python"}
    hosts = [launch_host(tmp_path, app, env=env, wait_ready=False) for _ in range(3)]
    try:
        for host in hosts:
            host.wait_ready(90)
        status = hosts[0].admin("/admin/host/status")["durable"]
        assert (status["store"], status["taskHub"]) == ("postgresql", "DurableTests")
        chains = [start_orchestration(hosts[i % 3], "slow_chain", 6) for i in range(12)]
        fan = start_orchestration(hosts[1], "fan_out", 60)
        counted = start_orchestration(hosts[2], "entity_user", "shared")
        victim = hosts[2]
        victim.wait_until(lambda: activities_run(victim) >= 2, "the third host to run activities")
        for pid in process_tree(victim.process.pid):
            os.kill(pid, signal.SIGKILL)
        victim.process.wait()
        with psycopg.connect(postgres) as conn:
            orphaned = conn.execute("SELECT count(*) FROM dt_durabletests.work WHERE owner LIKE %s",
                                    (f"{victim.env['FUNCPLANE_HOST_ID']}/%",)).fetchone()[0]
        assert orphaned > 0, "the kill came when the third host held no activity; nothing was taken over"
        survivors = hosts[:2]
        for index, instance in enumerate(chains):
            done = wait_for(survivors[index % 2], instance, 120)
            assert (done["runtimeStatus"], done["output"]) == ("Completed", sum(n * n for n in range(6)))
        assert wait_for(survivors[0], fan, 120)["output"] == sum(n * n for n in range(60))
        assert wait_for(survivors[1], counted, 120)["output"] == {"value": 15, "failureSeen": True}
        assert all(activities_run(host) > 0 for host in survivors)
    finally:
        for host in hosts:
            host.stop()


def test_a_foreign_schema_is_refused_by_name(postgres: str, tmp_path: Path) -> None:
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS dt_billing")
        conn.execute("CREATE TABLE IF NOT EXISTS dt_billing.invoices(id INTEGER)")
    app = durable_app(DURABLE_V2, tmp_path)
    use_postgres(app)
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["durableTask"]["hubName"] = "Billing"
    (app / "host.json").write_text(json.dumps(host_json))
    host = launch_host(tmp_path, app, wait_ready=False, env={"DurablePostgres": postgres,
                                                             "FUNCTIONS_WORKER_RUNTIME": "python"})
    try:
        host.wait_until(lambda: "holds other tables" in host.get("/readyz").text, "the foreign schema", 90)
        assert "dt_billing" in host.get("/readyz").text
        with psycopg.connect(postgres) as conn:
            tables = conn.execute("SELECT table_name FROM information_schema.tables "
                                  "WHERE table_schema = 'dt_billing'").fetchall()
        assert tables == [("invoices",)]  # nothing created or dropped next to them
    finally:
        host.stop()
