"""Timer triggers end to end: the host schedules, a real worker runs the function, the slot decides
whether scheduled work runs at all, and the schedule status follows the host id."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import HOST_APPS, MASTER_KEY, metric_value
from support import json_lines

TIMERS_V1 = HOST_APPS / "timers-v1"
TIMERS_V2 = HOST_APPS / "timers-v2"


def runs_in(path: Path, function: str | None = None) -> list[dict]:
    return [line for line in json_lines(path) if function is None or line["function"] == function]


def timer_status(host, name: str) -> dict | None:
    status = host.admin("/admin/host/status")["nonHttpTriggers"]
    return next((t for t in status["timers"] if t["function"] == name), None)


def test_timer_runs_on_its_schedule_and_a_bad_schedule_is_reported(start_host, tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    host = start_host(TIMERS_V1, env={"RUNS_FILE": str(runs), "TICK_SCHEDULE": "*/1 * * * * *"})
    host.wait_until(lambda: len(runs_in(runs, "tick")) >= 3, "three runs of the every-second timer", 20)
    ticks = runs_in(runs, "tick")
    # One run per second, not a burst: each run lands in a later second than the one before.
    seconds = [int(t["at"]) for t in ticks]
    assert seconds == sorted(set(seconds)), ticks
    assert not any(t["pastDue"] for t in ticks)
    # From the second run on, the function sees the previous run in its schedule status.
    assert ticks[-1]["status"]["Last"] is not None
    assert runs_in(runs, "yearly") == []  # its first occurrence is next 1 January

    status = host.admin("/admin/host/status")
    timers = status["nonHttpTriggers"]
    assert timers["enabled"] is True and timers["timeZone"] == "UTC"
    tick = timer_status(host, "tick")
    assert tick["schedule"] == "*/1 * * * * *" and tick["runs"] >= 3 and tick["lastResult"] == "succeeded"
    assert datetime.fromisoformat(tick["next"]) > datetime.fromisoformat(tick["last"])
    yearly = timer_status(host, "yearly")
    assert datetime.fromisoformat(yearly["next"]).strftime("%m-%d %H:%M:%S") == "01-01 00:00:00"
    # The bad schedule is named with the fix; the host and the other functions are unaffected.
    errors = [e for e in status["errors"] if e["function"] == "badschedule"]
    assert errors and errors[0]["stage"] == "trigger" and "NCRONTAB needs six" in errors[0]["error"], errors
    assert timer_status(host, "badschedule") is None
    assert host.get("/readyz").status == 200
    assert host.get("/api/ping").text == "pong"
    assert metric_value(host.metrics(), "funcplane_invocations_total",
                        function="tick", outcome="success") >= 3


def test_v2_timer_indexed_by_the_worker_runs(start_host, tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    host = start_host(TIMERS_V2, env={"RUNS_FILE": str(runs)})
    host.wait_until(lambda: len(runs_in(runs, "every_second")) >= 2, "two runs of the v2 timer", 20)
    assert timer_status(host, "every_second")["schedule"] == "* * * * * *"


def test_slot_without_non_http_triggers_schedules_nothing_but_runs_on_request(start_host, tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    host = start_host(TIMERS_V1, env={"RUNS_FILE": str(runs), "TICK_SCHEDULE": "*/1 * * * * *",
                                      "FUNCPLANE_SLOT_NAME": "staging", "FUNCPLANE_NON_HTTP_TRIGGERS": "false"})
    # The timers are known (schedules validated) but not armed: nothing is due, nothing runs.
    host.wait_until(lambda: timer_status(host, "tick") is not None, "the timers to be indexed")
    timers = host.admin("/admin/host/status")["nonHttpTriggers"]
    assert timers["enabled"] is False
    assert "off in slot 'staging'" in timers["reason"] and "nonHttpTriggers: true" in timers["reason"]
    assert timer_status(host, "tick")["next"] is None
    assert host.get("/api/ping").text == "pong"  # HTTP triggers serve in every slot
    # An explicit admin request runs the function once, in any slot.
    reply = host.request("POST", "/admin/functions/tick", body="{}",
                         headers={"x-functions-key": MASTER_KEY, "Content-Type": "application/json"})
    assert reply.status == 202, reply.text
    host.wait_until(lambda: len(runs_in(runs, "tick")) == 1, "the requested run")
    assert timer_status(host, "tick")["runs"] == 1  # and no scheduled run beside it
    assert host.request("POST", "/admin/functions/tick").status == 401
    assert host.request("POST", "/admin/functions/ping", headers={"x-functions-key": MASTER_KEY}).status == 400
    assert host.request("POST", "/admin/functions/nope", headers={"x-functions-key": MASTER_KEY}).status == 404


def test_missed_run_is_made_up_from_the_slots_schedule_status(start_host, tmp_path: Path) -> None:
    runs, state = tmp_path / "runs.jsonl", tmp_path / "state"
    env = {"RUNS_FILE": str(runs), "TICK_SCHEDULE": "0 0 0 1 1 *", "FUNCPLANE_STATE_DIR": str(state),
           "FUNCPLANE_HOST_ID": "shop"}
    first = start_host(TIMERS_V1, env=env)
    first.wait_until(lambda: (timer_status(first, "yearly") or {}).get("next") is not None, "yearly to be armed")
    saved = state / "shop" / "timers" / "yearly.json"
    first.wait_until(saved.is_file, "the schedule status to be saved")
    assert first.stop() == 0
    status = json.loads(saved.read_text())
    assert status["schedule"] == "0 0 0 1 1 *"
    # The host was down when the run fell due (pretend the year turned an hour ago).
    missed = datetime.now(timezone.utc) - timedelta(hours=1)
    saved.write_text(json.dumps({**status, "Next": missed.isoformat()}))

    other_slot = start_host(TIMERS_V1, env={**env, "FUNCPLANE_HOST_ID": "shop-staging"})
    other_slot.wait_until(lambda: (timer_status(other_slot, "yearly") or {}).get("next") is not None,
                          "yearly to be armed on the other host id")
    assert timer_status(other_slot, "yearly")["runs"] == 0  # another slot's status is not its own
    other_slot.stop()

    second = start_host(TIMERS_V1, env=env)
    second.wait_until(lambda: len(runs_in(runs, "yearly")) == 1, "the missed run to be made up")
    made_up = runs_in(runs, "yearly")[0]
    assert made_up["pastDue"] is True
    assert made_up["status"]["Next"] == missed.isoformat()
    second.wait_until(lambda: datetime.fromisoformat(timer_status(second, "yearly")["next"]) >
                      datetime.now(timezone.utc), "the next run to be scheduled")
