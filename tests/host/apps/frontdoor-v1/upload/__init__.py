"""Answers with the size of the body it received; with ?gate=PATH, first waits (up to 60 s) for
that file to exist, holding the body meanwhile."""

import asyncio
import os

import azure.functions as func


async def main(req: func.HttpRequest) -> func.HttpResponse:
    gate = req.params.get("gate")
    for _ in range(1200):
        if not gate or os.path.exists(gate):
            break
        await asyncio.sleep(0.05)
    return func.HttpResponse(str(len(req.get_body())))
