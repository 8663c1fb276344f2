"""Workloads for dynamic concurrency: a downstream that serves 8 concurrent calls in 50 ms and
degrades beyond (simulated in the worker), and a CPU-bound function; each over HTTP and a queue."""

import asyncio
import hashlib
import os

import azure.functions as func

app = func.FunctionApp()
KNEE = 8
BASE_LATENCY = float(os.environ.get("DOWNSTREAM_LATENCY", "0.05"))
CPU_ROUNDS = int(os.environ.get("CPU_ROUNDS", "50000"))  # about 20 ms of GIL-bound hashing
RUNS_FILE = os.environ.get("RUNS_FILE")
_downstream_calls = 0


async def call_downstream() -> None:
    """50 ms up to KNEE concurrent calls, then 1.5 x 50 ms more per KNEE extra calls."""
    global _downstream_calls
    _downstream_calls += 1
    try:
        load = _downstream_calls
        await asyncio.sleep(BASE_LATENCY * (1 + 1.5 * max(0, load - KNEE) / KNEE))
    finally:
        _downstream_calls -= 1


def burn() -> str:
    digest = b"seed"
    for _ in range(CPU_ROUNDS):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@app.route(route="io", auth_level=func.AuthLevel.ANONYMOUS)
async def io(req: func.HttpRequest) -> func.HttpResponse:
    await call_downstream()
    return func.HttpResponse("ok")


@app.route(route="cpu", auth_level=func.AuthLevel.ANONYMOUS)
def cpu(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(burn())


def record(msg: func.QueueMessage) -> None:
    """One line per run (RUNS_FILE, when set): how a benchmark counts losses and duplicates."""
    if RUNS_FILE:
        with open(RUNS_FILE, "a") as runs:
            runs.write(f"{msg.get_body().decode()} {msg.id} {msg.dequeue_count}\n")


@app.queue_trigger(arg_name="msg", queue_name="%IO_QUEUE%", connection="AzureWebJobsStorage")
async def io_queue(msg: func.QueueMessage) -> None:
    await call_downstream()
    record(msg)


@app.queue_trigger(arg_name="msg", queue_name="%CPU_QUEUE%", connection="AzureWebJobsStorage")
def cpu_queue(msg: func.QueueMessage) -> None:
    burn()
    record(msg)
