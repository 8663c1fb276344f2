"""Durable Functions end to end: Microsoft's Python SDK (azure-functions-durable) installed into
the app's .python_packages, a real host and real workers. One host serves the module's scenarios."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import MASTER_KEY, HostProcess, launch_host
from durable_support import DURABLE_V1, DURABLE_V2, durable_app, start_orchestration, status, wait_for
from funcplane_host.durable.history import parse_time

WEBHOOK = "/runtime/webhooks/durabletask"
ADMIN = {"x-functions-key": MASTER_KEY}


@pytest.fixture(scope="module")
def durable_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    root = tmp_path_factory.mktemp("durable")
    app = durable_app(DURABLE_V2, root)
    host = launch_host(root, app, wait_ready=False, env={
        "FUNCPLANE_STATE_DIR": str(root / "state"), "DURABLE_TEST_STATE": str(root),
        "FUNCTIONS_WORKER_RUNTIME": "python"})
    try:
        host.wait_ready(90)
        yield host
    finally:
        host.stop()


def api(host: HostProcess, method: str, path: str, body: object = None, headers: dict | None = None):
    return host.request(method, WEBHOOK + path, body=json.dumps(body) if body is not None else None,
                        headers={**ADMIN, "Content-Type": "application/json", **(headers or {})})


def test_function_chaining_through_the_sdk_starter(durable_host: HostProcess) -> None:
    reply = durable_host.request("POST", "/api/orchestrators/chain")
    assert reply.status == 202, reply.text
    check = reply.json()
    # create_check_status_response: the SDK rewrote the binding's URLs onto the request's origin.
    assert reply.headers["location"] == check["statusQueryGetUri"]
    assert check["statusQueryGetUri"].startswith(f"{durable_host.base_url}{WEBHOOK}/instances/{check['id']}?")
    assert set(check) >= {"id", "sendEventPostUri", "terminatePostUri", "rewindPostUri", "purgeHistoryDeleteUri",
                          "restartPostUri", "suspendPostUri", "resumePostUri"}
    done = wait_for(durable_host, check["id"])
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    # The status URL works as handed out (with its code= system key) from any client.
    url = urlsplit(check["statusQueryGetUri"])
    assert "code=" in url.query
    assert durable_host.get(f"{url.path}?{url.query}").json()["runtimeStatus"] == "Completed"


def test_fan_out_fan_in(durable_host: HostProcess) -> None:
    instance = start_orchestration(durable_host, "fan_out", 200)
    done = wait_for(durable_host, instance)
    assert (done["runtimeStatus"], done["output"]) == ("Completed", sum(n * n for n in range(200)))


def test_human_interaction_event_and_timeout(durable_host: HostProcess) -> None:
    approved = start_orchestration(durable_host, "approval", 60)
    timed_out = start_orchestration(durable_host, "approval", 1)
    durable_host.wait_until(lambda: status(durable_host, approved)["customStatus"] == "waiting for approval",
                            "the orchestrator to wait")
    reply = api(durable_host, "POST", f"/instances/{approved}/raiseEvent/Approval", {"by": "alice"})
    assert reply.status == 202, reply.text
    assert wait_for(durable_host, approved)["output"] == {"approved": {"by": "alice"}}
    assert wait_for(durable_host, timed_out)["output"] == "timed out"
    # A finished instance takes no more events; an unknown one is not found.
    assert api(durable_host, "POST", f"/instances/{approved}/raiseEvent/Approval", 1).status == 410
    assert api(durable_host, "POST", "/instances/nobody/raiseEvent/Approval", 1).status == 404
    bad_type = api(durable_host, "POST", f"/instances/{timed_out}/raiseEvent/Approval", 1,
                   headers={"Content-Type": "text/plain"})
    assert bad_type.status == 400

    paused = start_orchestration(durable_host, "approval_then_pause")
    assert api(durable_host, "POST", f"/instances/{paused}/raiseEvent/Approval", True).status == 202
    assert wait_for(durable_host, paused)["output"] == "approved"
    history = status(durable_host, paused, "showHistory=true")["historyEvents"]
    assert [e["EventType"] for e in history].count("TimerFired") == 1  # the pause, not the cancelled timeout


def test_durable_timer_replays_time_deterministically(durable_host: HostProcess) -> None:
    done = wait_for(durable_host, start_orchestration(durable_host, "sleeper"))
    assert done["output"] == {"elapsedAtLeastOne": True, "uuidStable": True}


def test_schema_v3_is_negotiated_and_long_timers_are_split(durable_host: HostProcess) -> None:
    # The host offers schema V3 (upperSchemaVersionNew) with Azure Storage's timer limits, as Azure
    # does: the SDK then splits a 7-day timer and schedules its first 3-day part.
    instance = start_orchestration(durable_host, "long_wait")

    def first_timer() -> dict | None:
        events = status(durable_host, instance, "showHistory=true")["historyEvents"]
        return next((e for e in events if e["EventType"] == "TimerCreated"), None)

    durable_host.wait_until(lambda: first_timer() is not None, "the first timer")
    timer = first_timer()
    assert timer is not None
    created = parse_time(status(durable_host, instance)["createdTime"])
    assert abs(parse_time(timer["FireAt"]) - created - 3 * 86400) < 60, timer
    assert api(durable_host, "POST", f"/instances/{instance}/terminate?reason=done").status == 202
    assert wait_for(durable_host, instance)["runtimeStatus"] == "Terminated"


def test_retries_run_in_the_host(durable_host: HostProcess) -> None:
    recovered = start_orchestration(durable_host, "retrying", 2)
    exhausted = start_orchestration(durable_host, "retrying", 5)
    assert wait_for(durable_host, recovered)["output"] == "succeeded on attempt 3"
    gave_up = wait_for(durable_host, exhausted)["output"]
    assert gave_up.startswith("gave up: Activity function 'flaky' failed:") and "attempt 3 failed" in gave_up


def test_sub_orchestrations(durable_host: HostProcess) -> None:
    instance = start_orchestration(durable_host, "parent", ["Rome", "Lima"])
    assert wait_for(durable_host, instance)["output"] == ["Hello Rome!", "Hello Lima!", "Hello Oslo!"]
    child = status(durable_host, f"{instance}-named")
    assert (child["runtimeStatus"], child["output"]) == ("Completed", ["Hello Oslo!"])


def test_continue_as_new(durable_host: HostProcess) -> None:
    instance = start_orchestration(durable_host, "looping", {"n": 0, "until": 4, "sum": 0})
    done = wait_for(durable_host, instance)
    assert done["output"] == {"n": 4, "until": 4, "sum": 0 + 1 + 4 + 9}
    history = status(durable_host, instance, "showHistory=true")["historyEvents"]
    assert [e["EventType"] for e in history].count("ExecutionStarted") == 1  # only the last execution


def test_entities_from_orchestrators_and_clients(durable_host: HostProcess) -> None:
    instance = start_orchestration(durable_host, "entity_user", "first")
    assert wait_for(durable_host, instance)["output"] == {"value": 15, "failureSeen": True}
    # The SDK's client: signal, then read the state back (through rpcBaseUrl).
    assert durable_host.request("POST", "/api/client/second/signal", body="7").status == 202
    durable_host.wait_until(lambda: durable_host.get("/api/client/second/entity").json()["state"] == 7,
                            "the signal to reach the entity")
    assert durable_host.get("/api/client/nobody/entity").json() == {"exists": False, "state": None}
    assert api(durable_host, "GET", "/entities/counter/first").json() == 15
    assert api(durable_host, "GET", "/entities/counter/nobody").status == 404
    # Entity queries: by name, with state on request, a page at a time.
    listed = api(durable_host, "GET", "/entities/counter?fetchState=true").json()
    assert [(e["entityId"], e["state"]) for e in listed] == [
        ({"name": "counter", "key": "first"}, 15), ({"name": "counter", "key": "second"}, 7)]
    assert all(e["lastOperationTime"].endswith("Z") and "state" not in e
               for e in api(durable_host, "GET", "/entities/counter").json())
    first_page = api(durable_host, "GET", "/entities/?top=1")
    token = first_page.headers["x-ms-continuation-token"]
    second_page = api(durable_host, "GET", "/entities/?top=1", headers={"x-ms-continuation-token": token})
    assert [e["entityId"]["key"] for e in first_page.json() + second_page.json()] == ["first", "second"]
    assert api(durable_host, "GET", "/entities/counter?lastOperationTimeFrom=2999-01-01T00:00:00Z").json() == []


def test_custom_status_suspend_resume_terminate_and_purge(durable_host: HostProcess) -> None:
    paused = start_orchestration(durable_host, "waiter")
    durable_host.wait_until(lambda: status(durable_host, paused)["customStatus"] == {"stage": "waiting"},
                            "custom status")
    assert api(durable_host, "POST", f"/instances/{paused}/suspend?reason=hold").status == 202
    durable_host.wait_until(lambda: status(durable_host, paused)["runtimeStatus"] == "Suspended", "suspension")
    # The SDK client raises the event; a suspended instance keeps it until it resumes.
    assert durable_host.request("POST", f"/api/client/{paused}/raise?event=go", body='"ahead"').status == 202
    time.sleep(0.3)
    assert status(durable_host, paused)["runtimeStatus"] == "Suspended"
    assert api(durable_host, "POST", f"/instances/{paused}/resume?reason=go").status == 202
    # The SDK sends raise_event data as a JSON text, which is what the orchestrator receives (as on Azure).
    assert wait_for(durable_host, paused)["output"] == '"ahead"'

    stopped = start_orchestration(durable_host, "waiter")
    assert durable_host.request("POST", f"/api/client/{stopped}/terminate").status == 202
    done = wait_for(durable_host, stopped)
    assert (done["runtimeStatus"], done["output"]) == ("Terminated", "stopped by test")
    assert api(durable_host, "POST", f"/instances/{stopped}/terminate").status == 410
    assert durable_host.request("POST", f"/api/client/{stopped}/purge").json() == {"deleted": 1}
    assert api(durable_host, "GET", f"/instances/{stopped}").status == 404
    assert api(durable_host, "DELETE", f"/instances/{stopped}").status == 404

    doomed = [start_orchestration(durable_host, "waiter") for _ in range(2)]
    for instance in doomed:
        api(durable_host, "POST", f"/instances/{instance}/terminate?reason=cleanup")
        wait_for(durable_host, instance)
    purged = api(durable_host, "DELETE", "/instances/?runtimeStatus=Terminated")
    assert purged.status == 200 and purged.json()["instancesDeleted"] >= 2
    assert all(api(durable_host, "GET", f"/instances/{i}").status == 404 for i in doomed)


def test_failures_and_status_api(durable_host: HostProcess) -> None:
    failed = start_orchestration(durable_host, "failing")
    done = wait_for(durable_host, failed)
    assert done["runtimeStatus"] == "Failed"
    assert done["output"] == "Orchestrator function 'failing' failed: the orchestrator gave up"
    assert api(durable_host, "GET", f"/instances/{failed}?returnInternalServerErrorOnFailure=true").status == 500
    detailed = status(durable_host, failed, "showHistory=true&showHistoryOutput=true")
    kinds = [e["EventType"] for e in detailed["historyEvents"]]
    assert kinds[:2] == ["OrchestratorStarted", "ExecutionStarted"] and "TaskCompleted" in kinds
    assert next(e for e in detailed["historyEvents"] if e["EventType"] == "TaskCompleted")["Result"] == "Hello first!"
    running = start_orchestration(durable_host, "waiter")
    reply = api(durable_host, "GET", f"/instances/{running}")
    assert reply.status == 202 and reply.headers["retry-after"] == "5"

    # Listing with paging: the continuation token carries on where the last page ended.
    seen: list[str] = []
    token = None
    for _ in range(50):
        page = api(durable_host, "GET", "/instances/?top=3", headers={"x-ms-continuation-token": token} if token else {})
        assert page.status == 200 and len(page.json()) <= 3
        seen.extend(item["instanceId"] for item in page.json())
        token = page.headers.get("x-ms-continuation-token")
        if not token:
            break
    assert failed in seen and running in seen and len(seen) == len(set(seen))
    listed = api(durable_host, "GET", "/instances/?runtimeStatus=Failed").json()
    assert {item["runtimeStatus"] for item in listed} == {"Failed"}
    api(durable_host, "POST", f"/instances/{running}/terminate")


def test_sdk_wait_for_completion(durable_host: HostProcess) -> None:
    reply = durable_host.request("POST", "/api/wait/chain", body=json.dumps(["Kyiv"]),
                                 headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply.text
    assert reply.json() == ["Hello Kyiv!"]


def test_keys_and_bad_input(durable_host: HostProcess) -> None:
    # The webhook API needs the durabletask_extension system key (or the master key); loopback rpc does not.
    assert durable_host.get(f"{WEBHOOK}/instances/").status == 401
    assert durable_host.get(f"{WEBHOOK}/instances/?code=wrong").status == 401
    assert durable_host.get("/durabletask/instances/").status == 200
    unknown = api(durable_host, "POST", "/orchestrators/no_such_orchestrator")
    assert unknown.status == 400
    assert "no_such_orchestrator" in unknown.json()["ExceptionMessage"]
    too_big = api(durable_host, "POST", "/orchestrators/chain", ["x" * 70000])
    assert too_big.status == 413 and "maxPayloadBytes" in too_big.json()["ExceptionMessage"]
    not_json = durable_host.request("POST", f"{WEBHOOK}/orchestrators/chain", body="{nope", headers=ADMIN)
    assert not_json.status == 400


def test_v1_function_json_app_with_orchestration_client(start_host, tmp_path: Path) -> None:
    app = durable_app(DURABLE_V1, tmp_path)
    host = start_host(app, env={"FUNCPLANE_STATE_DIR": str(tmp_path / "state")})
    reply = host.request("POST", "/api/start/chain", body=json.dumps(["Ada", "Linus"]),
                         headers={"Content-Type": "application/json"})
    assert reply.status == 202, reply.text
    done = wait_for(host, reply.json()["id"])
    assert done["output"] == ["Good day, Ada.", "Good day, Linus."]
    assert (tmp_path / "state" / "durable" / "DurableV1.sqlite").is_file()


def test_corrupt_or_foreign_store_is_refused(start_host, tmp_path: Path) -> None:
    app = durable_app(DURABLE_V1, tmp_path)
    store = tmp_path / "state" / "durable" / "DurableV1.sqlite"
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE invoices(id INTEGER)")
    host = start_host(app, env={"FUNCPLANE_STATE_DIR": str(tmp_path / "state")}, wait_ready=False)
    host.wait_until(lambda: host.get("/readyz").status == 503 and "belongs to another program"
                    in host.get("/readyz").text, "the foreign store to be reported")
    assert str(store) in host.get("/readyz").json()["reasons"][0]
    assert sqlite3.connect(store).execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
    host.stop()
    store.write_bytes(b"this is not a database" * 100)
    host = start_host(app, env={"FUNCPLANE_STATE_DIR": str(tmp_path / "state")}, wait_ready=False)
    host.wait_until(lambda: "not a usable SQLite database" in host.get("/readyz").text, "the corrupt store")


def test_rewind_restart_and_call_http(durable_host: HostProcess) -> None:
    fragile = start_orchestration(durable_host, "fragile")
    failed = wait_for(durable_host, fragile)
    assert failed["runtimeStatus"] == "Failed" and "attempt 1 failed" in failed["output"]
    assert api(durable_host, "POST", f"/instances/{fragile}/rewind?reason=fixed").status == 202
    assert wait_for(durable_host, fragile)["output"] == "succeeded on attempt 2"
    assert api(durable_host, "POST", f"/instances/{fragile}/rewind").status == 410  # only Failed ones

    first = start_orchestration(durable_host, "chain", ["Bern"])
    wait_for(durable_host, first)
    restarted = api(durable_host, "POST", f"/instances/{first}/restart")
    assert restarted.status == 202 and restarted.json()["id"] != first
    assert wait_for(durable_host, restarted.json()["id"])["output"] == ["Hello Bern!"]
    again = api(durable_host, "POST", f"/instances/{first}/restart?restartWithNewInstanceId=False")
    assert again.status == 202 and again.json()["id"] == first  # the same id runs again from its input
    assert wait_for(durable_host, first)["output"] == ["Hello Bern!"]

    caller = start_orchestration(durable_host, "http_caller", f"{durable_host.base_url}/api/ping")
    assert wait_for(durable_host, caller)["output"] == {"status": 200, "content": "pong"}


def test_pending_work_is_published_as_demand(start_host, tmp_path: Path) -> None:
    # Azure's concurrency knobs hold the work back: 1 orchestrator episode and 2 activities at a time.
    app = durable_app(DURABLE_V2, tmp_path)
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["durableTask"].update(maxConcurrentOrchestratorFunctions=1,
                                                  maxConcurrentActivityFunctions=2)
    (app / "host.json").write_text(json.dumps(host_json))
    host = start_host(app, env={"FUNCPLANE_STATE_DIR": str(tmp_path / "state"), "DURABLE_TEST_STATE": str(tmp_path),
                                "FUNCTIONS_WORKER_RUNTIME": "python"}, wait_ready=False)
    host.wait_ready(90)
    orchestrations, activities = "durabletask/DurableTests/orchestrations", "durabletask/DurableTests/activities"

    def demand() -> dict:
        functions = host.get("/admin/concurrency", headers=ADMIN).json()["functions"]
        return {name: (functions[name]["concurrency"], functions[name]["inFlight"], functions[name]["backlog"])
                for name in (orchestrations, activities)}

    started = [start_orchestration(host, "held", n) for n in range(5)]
    # The first episode holds the only orchestrator slot: every instance's start waits.
    host.wait_until(lambda: demand() == {orchestrations: (1, 1, 5), activities: (2, 0, 0)},
                    "five pending orchestrations, one running")
    (tmp_path / "gate-orchestrators").touch()
    host.wait_until(lambda: demand() == {orchestrations: (1, 0, 0), activities: (2, 2, 5)},
                    "five pending activities, two running")
    metrics = host.get("/metrics").text
    assert f'funcplane_queue_length{{function="{activities}"}} 5.0' in metrics
    assert f'funcplane_function_concurrency_limit{{function="{orchestrations}"}} 1.0' in metrics
    (tmp_path / "gate-activities").touch()
    assert sorted(wait_for(host, instance)["output"] for instance in started) == [0, 1, 2, 3, 4]
    host.wait_until(lambda: demand() == {orchestrations: (1, 0, 0), activities: (2, 0, 0)}, "no pending work")
