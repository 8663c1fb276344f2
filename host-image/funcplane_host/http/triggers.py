"""HTTP triggers: route -> auth -> throttle -> invoke through the worker -> response."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.host import FunctionHost, Invocation, InvocationFailed
from funcplane_host.http.auth import presented_key
from funcplane_host.http.convert import build_rpc_http, response_from_output
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_host.readiness import serving_problem
from funcplane_host.workers.channel import WorkerChannel


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    payload = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json")


def _http_output(definition: FunctionDefinition, response: Any) -> Any | None:
    output = definition.http.output_binding if definition.http else None
    if output is None or output == "$return":
        return response.return_value if response.HasField("return_value") else None
    for binding in response.output_data:
        if binding.name == output:
            return binding.data
    return None


class HttpTriggerHandler:
    def __init__(self, host: FunctionHost) -> None:
        self.host = host
        self.prefix_length = len(host.config.http.route_prefix) + 1 if host.config.http.route_prefix else 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        host = self.host
        path = request.path[self.prefix_length:] if self.prefix_length else request.path
        resolved = host.catalog.routes.resolve(request.method, path or "/")
        if resolved is None:
            problem = serving_problem(host)
            if problem is not None:  # the route may exist once the app is indexed
                return error_response(503, problem)
            return error_response(404, f"no function is routed at {request.path}")
        if resolved is False:
            return error_response(405, f"method {request.method} is not allowed at {request.path}")
        definition, route_params = resolved  # type: ignore[misc]
        trigger = definition.http
        if host.draining:
            return error_response(503, "host is draining; not accepting new requests")
        if not host.keys.authorize(trigger.auth_level, definition.name, presented_key(request)):
            return error_response(401, f"function {definition.name!r} has authLevel {trigger.auth_level}: send a "
                                       "valid key in the x-functions-key header or the code query parameter; "
                                       + host.settings.keys_hint)
        throttle = host.throttle
        if not throttle.try_enter():
            return error_response(429, "too many outstanding requests (extensions.http.maxOutstandingRequests)")
        acquired = False
        try:
            await throttle.acquire()
            acquired = True
            body = await request.read()
            binding_name = trigger.binding_name

            def build(channel: WorkerChannel) -> tuple[list[Any], dict[str, Any]]:
                shape = host.http_shape(channel)
                http = build_rpc_http(request, body, route_params, shape)
                metadata = {key: rpc.TypedData(string=value) for key, value in route_params.items()}
                if not shape.trigger_metadata_removed:
                    metadata["Query"] = rpc.TypedData(json=json.dumps(dict(request.query)))
                    metadata["Headers"] = rpc.TypedData(json=json.dumps(dict(request.headers)))
                return [rpc.ParameterBinding(name=binding_name, data=rpc.TypedData(http=http))], metadata

            try:
                response = await host.invoke(Invocation(definition, build))
            except InvocationFailed as failure:
                return error_response(failure.status, str(failure), invocationId=failure.invocation_id,
                                      detail=failure.detail)
            try:
                return response_from_output(_http_output(definition, response))
            except ValueError as error:
                return error_response(500, f"function {definition.name!r} returned an unusable HTTP response: {error}")
        finally:
            throttle.release(acquired)
