"""Workloads for dynamic concurrency: a downstream that serves 8 concurrent calls in 50 ms and
degrades beyond (simulated in the worker), and a CPU-bound function; each over HTTP and a queue."""

import asyncio
import hashlib
import os

import azure.functions as func

app = func.FunctionApp()
KNEE = 8
BASE_LATENCY = 0.05
CPU_ROUNDS = int(os.environ.get("CPU_ROUNDS", "20000"))
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


@app.queue_trigger(arg_name="msg", queue_name="%IO_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="done", queue_name="%DONE_QUEUE%", connection="AzureWebJobsStorage")
async def io_queue(msg: func.QueueMessage, done: func.Out[str]) -> None:
    await call_downstream()
    done.set(msg.get_body().decode())


@app.queue_trigger(arg_name="msg", queue_name="%CPU_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="done", queue_name="%DONE_QUEUE%", connection="AzureWebJobsStorage")
def cpu_queue(msg: func.QueueMessage, done: func.Out[str]) -> None:
    burn()
    done.set(msg.get_body().decode())
