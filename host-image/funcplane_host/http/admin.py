"""Admin API, health and metrics endpoints."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from funcplane_host.host import FunctionHost
from funcplane_host.invocation import Invocation
from funcplane_host.protocol import FunctionRpc_pb2 as rpc
from funcplane_host.http.auth import presented_key
from funcplane_host.http.triggers import error_response
from funcplane_host.metrics import CONTENT_TYPE

DEFAULT_DRAIN_TIMEOUT = 30.0
_LOOPBACK = ("127.0.0.1", "::1")


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload, indent=1), content_type="application/json")


class AdminHandlers:
    def __init__(self, host: FunctionHost) -> None:
        self.host = host

    def _is_admin(self, request: web.Request) -> bool:
        return self.host.keys.is_master(presented_key(request))

    def _denied(self) -> web.Response:
        return error_response(401, "admin endpoints require the master key (x-functions-key header or code)")

    async def livez(self, request: web.Request) -> web.Response:
        return _json({"alive": True, "state": self.host.state})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reasons = self.host.readiness()
        return _json({"ready": ready, "reasons": reasons}, 200 if ready else 503)

    async def warmup(self, request: web.Request) -> web.Response:
        # Allowed without a key: the operator calls it per pod during slot swaps.
        warm, reasons = await self.host.warmup()
        return _json({"warm": warm, "reasons": reasons}, 200 if warm else 503)

    async def drain(self, request: web.Request) -> web.Response:
        # The pod's preStop hook calls this from inside the pod, so loopback needs no key.
        if request.remote not in _LOOPBACK and not self._is_admin(request):
            return self._denied()
        try:
            timeout = float(request.query.get("timeout", DEFAULT_DRAIN_TIMEOUT))
        except ValueError:
            return error_response(400, "timeout must be a number of seconds")
        return _json(await self.host.drain(timeout))

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
