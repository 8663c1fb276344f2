"""Appends one JSON line per run to the file named by the app setting RUNS_FILE (every timer
function of this app runs this script)."""

import json
import os
import time

import azure.functions as func


def main(timer: func.TimerRequest, context: func.Context) -> None:
    with open(os.environ["RUNS_FILE"], "a") as runs:
        runs.write(json.dumps({"function": context.function_name, "host": os.environ.get("HOST_TAG"),
                               "pastDue": timer.past_due, "at": time.time(),
                               "status": timer.schedule_status}) + "\n")
