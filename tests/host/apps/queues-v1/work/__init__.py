"""A v1 queue function: records each run, fails on request, returns its result to an output queue."""

import json
import os
import time

import azure.functions as func


def main(msg: func.QueueMessage) -> str:
    body = json.loads(msg.get_body().decode())
    with open(os.environ["RUNS_FILE"], "a") as runs:
        runs.write(json.dumps({"key": body["key"], "id": msg.id, "dequeueCount": msg.dequeue_count,
                               "inserted": msg.insertion_time.isoformat() if msg.insertion_time else None,
                               "pid": os.getpid(), "at": time.time()}) + "\n")
    time.sleep(body.get("sleep", float(os.environ.get("WORK_SLEEP", "0"))))
    if body.get("fail_until", 0) >= msg.dequeue_count:
        raise RuntimeError(f"failing {body['key']} on attempt {msg.dequeue_count}")
    return json.dumps({"done": body["key"]})
