"""Sleeps ?seconds= (async); writes the worker pid to ?pidfile= first."""

import asyncio
import os

import azure.functions as func


async def main(req: func.HttpRequest) -> func.HttpResponse:
    pidfile = req.params.get("pidfile")
    if pidfile:
        with open(pidfile, "w") as handle:
            handle.write(str(os.getpid()))
    await asyncio.sleep(float(req.params.get("seconds", "1")))
    return func.HttpResponse(f"slept in {os.getpid()}")
