"""Queue triggers end to end on Azurite: a real host, a real worker, the real storage SDK.

Success deletes, failure retries with a growing dequeue count, poison after maxDequeueCount,
queue output bindings ($return in v1, named in v2, from an HTTP function too), a host killed
mid-batch loses nothing, and a slot without non-HTTP triggers consumes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

from azure.storage.queue import QueueClient

from conftest import HOST_APPS, MASTER_KEY, queue
from support import json_lines

QUEUES_V1 = HOST_APPS / "queues-v1"
QUEUES_V2 = HOST_APPS / "queues-v2"


def drain_texts(client: QueueClient) -> list[str]:
    """Every visible message's text (deleted as read)."""
    texts = []
    while True:
        batch = list(client.receive_messages(max_messages=32, messages_per_page=32))
        if not batch:
            return texts
        for message in batch:
            texts.append(message.content)
            client.delete_message(message)


def v1_env(azurite, tmp_path: Path, **extra: str) -> tuple[dict[str, str], str]:
    suffix = uuid.uuid4().hex[:8]
    env = {"AzureWebJobsStorage": azurite.connection_string, "RUNS_FILE": str(tmp_path / "runs.jsonl"),
           "WORK_QUEUE": f"work-{suffix}", "DONE_QUEUE": f"done-{suffix}", **extra}
    return env, suffix


def test_success_retry_poison_and_return_output(start_host, azurite, tmp_path: Path) -> None:
    env, suffix = v1_env(azurite, tmp_path)
    work = queue(azurite, env["WORK_QUEUE"])
    for key, fail_until in (("ok", 0), ("flaky", 1), ("broken", 99)):
        work.send_message(json.dumps({"key": key, "fail_until": fail_until}))
    host = start_host(QUEUES_V1, env=env)
    runs_file = Path(env["RUNS_FILE"])
    host.wait_until(lambda: sum(r["key"] == "broken" for r in json_lines(runs_file)) == 3
                    and sum(r["key"] == "flaky" for r in json_lines(runs_file)) == 2,
                    "the retries of flaky and broken", 60)
    poison = queue(azurite, f"{env['WORK_QUEUE']}-poison")
    host.wait_until(lambda: poison.get_queue_properties().approximate_message_count == 1, "the poison message")
    runs = json_lines(runs_file)
    counts = {key: [r["dequeueCount"] for r in runs if r["key"] == key] for key in ("ok", "flaky", "broken")}
    assert counts == {"ok": [1], "flaky": [1, 2], "broken": [1, 2, 3]}, counts
    # Trigger metadata arrived: the same message id on each attempt, its insertion time.
    assert len({r["id"] for r in runs if r["key"] == "broken"}) == 1 and all(r["inserted"] for r in runs)
    # $return went to the output queue, once per success; the failed message is in <queue>-poison.
    done = queue(azurite, env["DONE_QUEUE"])
    host.wait_until(lambda: done.get_queue_properties().approximate_message_count == 2, "two outputs")
    assert sorted(json.loads(t)["done"] for t in drain_texts(done)) == ["flaky", "ok"]
    assert [json.loads(t)["key"] for t in drain_texts(poison)] == ["broken"]
    assert work.get_queue_properties().approximate_message_count == 0
    listener = host.admin("/admin/host/status")["queueTriggers"]["listeners"][0]
    assert listener["queue"] == env["WORK_QUEUE"] and listener["runs"] == 2 and listener["poisoned"] == 1
    assert listener["failures"] == 1 + 3, listener  # flaky once, broken three times
    function = host.admin("/admin/concurrency")["functions"]["work"]
    assert function["trigger"] == "queue" and function["concurrency"] == 4 + 2  # batchSize + batchSize/2
    assert function["completed"] == 6 and function["inFlight"] == 0


def test_v2_named_output_from_queue_and_http_functions(start_host, azurite) -> None:
    for name in ("v2-in", "v2-out"):
        drain_texts(queue(azurite, name))
    host = start_host(QUEUES_V2, env={"StorageConnection": azurite.connection_string})
    reply = host.request("POST", "/api/enqueue", body="hello queue")
    assert reply.status == 202, reply.text
    out = queue(azurite, "v2-out")
    host.wait_until(lambda: out.get_queue_properties().approximate_message_count == 1, "the relayed message")
    [relayed] = [json.loads(t) for t in drain_texts(out)]
    assert relayed["relayed"] == "hello queue" and relayed["dequeueCount"] == 1 and relayed["id"]


def test_host_killed_mid_batch_loses_no_message(start_host, azurite, tmp_path: Path) -> None:
    env, _ = v1_env(azurite, tmp_path, WORK_SLEEP="60")
    lease = tmp_path / "lease.json"
    lease.write_text(json.dumps({"funcplane": {"queues": {"messageLease": "00:00:03"}}}))
    work = queue(azurite, env["WORK_QUEUE"])
    keys = [f"m{i}" for i in range(10)]
    for key in keys:
        work.send_message(json.dumps({"key": key}))
    first = start_host(QUEUES_V1, env=env, args=["--host-json-override", str(lease)])
    runs_file = Path(env["RUNS_FILE"])
    first.wait_until(lambda: len(json_lines(runs_file)) >= 4, "the first batch to start", 30)
    taken = {r["key"] for r in json_lines(runs_file)}
    worker_pids = {r["pid"] for r in json_lines(runs_file)}
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    for pid in worker_pids:  # the orphaned worker would run on; a killed pod takes it along
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    env["WORK_SLEEP"] = "0"
    second = start_host(QUEUES_V1, env=env, args=["--host-json-override", str(lease)])
    done = queue(azurite, env["DONE_QUEUE"])
    results: list[str] = []

    def all_done() -> bool:
        results.extend(json.loads(t)["done"] for t in drain_texts(done))
        return len(results) >= len(keys)

    second.wait_until(all_done, "every message to complete on the second host", 60)
    time.sleep(1)
    results.extend(json.loads(t)["done"] for t in drain_texts(done))
    assert sorted(results) == sorted(keys)  # nothing lost, nothing twice
    retried = {r["key"] for r in json_lines(runs_file) if r["dequeueCount"] == 2}
    assert retried == taken  # exactly the messages the killed host held came back
    assert work.get_queue_properties().approximate_message_count == 0


def test_slot_without_non_http_triggers_consumes_nothing(start_host, azurite, tmp_path: Path) -> None:
    env, _ = v1_env(azurite, tmp_path, FUNCPLANE_SLOT_NAME="staging", FUNCPLANE_NON_HTTP_TRIGGERS="false")
    work = queue(azurite, env["WORK_QUEUE"])
    work.send_message(json.dumps({"key": "stay"}))
    host = start_host(QUEUES_V1, env=env)
    host.wait_until(lambda: host.admin("/admin/host/status")["queueTriggers"]["listeners"], "the listener")
    status = host.admin("/admin/host/status")["queueTriggers"]
    assert status["enabled"] is False
    time.sleep(3)  # several polling intervals of a production host
    assert not Path(env["RUNS_FILE"]).exists()
    [message] = list(work.peek_messages())
    assert json.loads(message.content)["key"] == "stay" and message.dequeue_count == 0
    assert host.get("/api/ping").text == "pong"
    assert host.request("GET", "/admin/concurrency").status == 401  # master key only
    assert host.get("/admin/concurrency", headers={"x-functions-key": MASTER_KEY}).status == 200
