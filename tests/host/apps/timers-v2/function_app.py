"""A v2 (decorator) app with a timer: indexed by the worker, scheduled by the host."""

import json
import os
import time

import azure.functions as func

app = func.FunctionApp()


@app.timer_trigger(schedule="* * * * * *", arg_name="timer")
def every_second(timer: func.TimerRequest) -> None:
    with open(os.environ["RUNS_FILE"], "a") as runs:
        runs.write(json.dumps({"function": "every_second", "pastDue": timer.past_due, "at": time.time()}) + "\n")
