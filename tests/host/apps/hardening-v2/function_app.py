"""Sync functions that hold worker threads, log late or log a lot (host hardening tests)."""

import logging
import os
import threading
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="sleep", methods=["GET"])
def sleep_sync(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(float(req.params.get("seconds", "1")))
    return func.HttpResponse(f"slept in {os.getpid()}")


@app.route(route="pid", methods=["GET"])
def pid_sync(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(str(os.getpid()))


@app.route(route="late", methods=["GET"])
def late_log(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Returns at once; a thread it started logs a moment later, tied to this invocation."""
    marker = req.params.get("marker", "late-line")
    invocation_id = context.invocation_id

    def log_later() -> None:
        context.thread_local_storage.invocation_id = invocation_id
        time.sleep(0.5)
        logging.info("%s after the response", marker)

    threading.Thread(target=log_later).start()
    return func.HttpResponse("returned")


@app.route(route="flood", methods=["GET"])
def flood(req: func.HttpRequest) -> func.HttpResponse:
    # ?started= is written after the first 1,000 lines, then the rest wait for the file ?gate=
    # (if given); ?done= is written once every line was logged.
    lines = int(req.params.get("lines", "100000"))
    started, gate, done = (req.params.get(name) for name in ("started", "gate", "done"))
    for number in range(lines):
        if number == 1000:
            if started:
                open(started, "w").close()
            while gate and not os.path.exists(gate):
                time.sleep(0.01)
        logging.info("flood line %d", number)
    if done:
        open(done, "w").close()
    return func.HttpResponse(f"logged {lines}")
