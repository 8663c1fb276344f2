"""Sleeps ?seconds= (async) before answering."""

import asyncio

import azure.functions as func


async def main(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(float(req.params.get("seconds", "1")))
    return func.HttpResponse("slept")
