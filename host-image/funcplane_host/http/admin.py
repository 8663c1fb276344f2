"""Admin API, health and metrics endpoints."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web

from funcplane_host.host import FunctionHost
from funcplane_host.invocation import Invocation
from funcplane_host.limits import THROTTLED
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_host.keys import presented_key
from funcplane_host.app.front_door import FrontDoorOptions
from funcplane_host.http.triggers import error_response
from funcplane_host.metrics import CONTENT_TYPE

DEFAULT_DRAIN_TIMEOUT = 30.0
MAX_DRAIN_SECONDS = 3600.0  # the longest functionTimeout a FunctionApp may set
_LOOPBACK = ("127.0.0.1", "::1")


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload, indent=1), content_type="application/json")


def _seconds_parameter(request: web.Request, name: str, default: float) -> float:
    """A query parameter in seconds within 0..MAX_DRAIN_SECONDS; ValueError names it otherwise."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_DRAIN_SECONDS:
        raise ValueError(f"{name}={text!r} must be between 0 and {MAX_DRAIN_SECONDS:g} seconds")
    return value


class AdminHandlers:
    def __init__(self, host: FunctionHost, options: FrontDoorOptions) -> None:
        self.host = host
        self.options = options
        self._warmed = False  # warm-up functions ran successfully in this process
        self._warming = asyncio.Lock()

    def _is_admin(self, request: web.Request) -> bool:
        return self.host.keys.is_master(presented_key(request))

    def _denied(self) -> web.Response:
        return error_response(401, "admin endpoints require the master key (x-functions-key header or code)")

    async def livez(self, request: web.Request) -> web.Response:
        # A drained host serves nothing more: failing liveness lets the kubelet restart it.
        alive = self.host.state != "drained"
        return _json({"alive": alive, "state": self.host.state}, 200 if alive else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reasons = self.host.readiness()
        return _json({"ready": ready, "reasons": reasons}, 200 if ready else 503)

    async def warmup(self, request: web.Request) -> web.Response:
        """The swap's warm-up call (the operator sends the slot's master key). Warm-up functions run
        once per process; the call counts against the HTTP throttle like any request."""
        if not self._is_admin(request):
            return self._denied()
        async with self.host.throttle.admitted() as admitted:
            if not admitted:
                return error_response(429, THROTTLED)
            async with self._warming:
                if self._warmed:
                    warm, reasons = self.host.readiness()
                else:
                    warm, reasons = await self.host.warmup()
                    self._warmed = warm
        # A host that is not ready refuses with the readiness reason (the operator quotes its start).
        return _json({"warm": warm, "reason": "; ".join(reasons), "reasons": reasons}, 200 if warm else 503)

    async def drain(self, request: web.Request) -> web.Response:
        # The pod's preStop hook calls this from inside the pod, so loopback needs no key.
        if request.remote not in _LOOPBACK and not self._is_admin(request):
            return self._denied()
        try:
            timeout = _seconds_parameter(request, "timeout", DEFAULT_DRAIN_TIMEOUT)
            grace = _seconds_parameter(request, "grace", self.options.drain_grace)
        except ValueError as error:
            return error_response(400, str(error))
        return _json(await self.host.drain(timeout, grace))

    async def host_status(self, request: web.Request) -> web.Response:
        if not self._is_admin(request):
            return self._denied()
        return _json(self.host.status())

    async def functions(self, request: web.Request) -> web.Response:
        if not self._is_admin(request):
            return self._denied()
        return _json(self.host.catalog.as_json())

    async def run_function(self, request: web.Request) -> web.Response:
        """Run a non-HTTP function once, now (POST {"input": ...}); 202 as on Azure, the run is async.
        Works in any slot: an explicit request is not the slot's scheduled work."""
        if not self._is_admin(request):
            return self._denied()
        host = self.host
        name = request.match_info["name"]
        definition = host.catalog.find(name)
        if definition is None:
            return error_response(404, f"no function named {name!r}")
        if definition.http is not None:
            return error_response(400, f"function {definition.name!r} is HTTP-triggered; call its route instead")
        if host.draining:
            return error_response(503, "host is draining; not accepting new work")
        if host.timers.run_now(definition.name):
            return _json({"function": definition.name, "accepted": True}, 202)
        try:
            payload = await request.json() if request.can_read_body else {}
        except ValueError:
            return error_response(400, 'body must be JSON like {"input": "..."}')
        value = payload.get("input", "") if isinstance(payload, dict) else ""
        host.spawn(host.run_logged(Invocation.of_trigger(definition, rpc.TypedData(string=str(value))), "manual run"))
        return _json({"function": definition.name, "accepted": True}, 202)

    async def concurrency(self, request: web.Request) -> web.Response:
        """Per-function limits and load: what an autoscaler reads (README: "Queues and concurrency")."""
        if not self._is_admin(request):
            return self._denied()
        return _json(self.host.concurrency.as_json())

    async def metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.host.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response
