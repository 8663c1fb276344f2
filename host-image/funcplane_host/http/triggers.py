"""HTTP triggers: route -> auth -> throttle -> invoke through the worker -> response."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.host import FunctionHost, Invocation, InvocationFailed
from funcplane_host.keys import presented_key
from funcplane_host.http.body import BodyRefused, MemoryBudget, RequestBody
from funcplane_host.app.front_door import FrontDoorOptions
from funcplane_host.http.convert import build_rpc_http, response_from_output
from funcplane_host.limits import THROTTLED
from funcplane_host.readiness import serving_problem
from funcplane_host.workers.channel import WorkerChannel

logger = logging.getLogger("funcplane.host.http")


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
    def __init__(self, host: FunctionHost, options: FrontDoorOptions) -> None:
        self.host = host
        self.options = options
        self.body_memory = MemoryBudget(options.body_memory)
        self.prefix_length = len(host.config.http.route_prefix) + 1 if host.config.http.route_prefix else 0
        # As Azure: exception details reach callers only when the app runs in development.
        self.show_details = host.environment.get("AZURE_FUNCTIONS_ENVIRONMENT", "").lower() == "development"

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
        if host.refusing_requests:
            return error_response(503, "host is draining; not accepting new requests")
        if not host.keys.authorize(trigger.auth_level, definition.name, presented_key(request)):
            return error_response(401, f"function {definition.name!r} has authLevel {trigger.auth_level}: send a "
                                       "valid key in the x-functions-key header or the code query parameter; "
                                       + host.settings.keys_hint)
        # The body arrives before the request counts against the throttle: a slow sender holds
        # only its connection and its share of body memory, never a concurrency slot.
        request_body = RequestBody(self.body_memory)
        try:
            try:
                await request_body.read(request, self.options)
            except BodyRefused as refused:
                response = error_response(refused.status, str(refused))
                response.force_close()
                return response
            return await self._invoke(request, definition, route_params, request_body)
        finally:
            request_body.release()

    async def _invoke(self, request: web.Request, definition: FunctionDefinition, route_params: dict[str, str],
                      request_body: RequestBody) -> web.StreamResponse:
        host = self.host
        async with host.throttle.admitted() as admitted:
            if not admitted:
                return error_response(429, THROTTLED)
            binding_name = definition.http.binding_name  # type: ignore[union-attr]

            def build(channel: WorkerChannel, target: Any) -> None:
                shape = host.http_shape(channel)
                binding = target.input_data.add()
                binding.name = binding_name
                try:
                    build_rpc_http(request, request_body.take(), route_params, shape, binding.data.http)
                except UnicodeEncodeError:
                    raise InvocationFailed(400, "request headers must be UTF-8 text") from None
                metadata = target.trigger_metadata
                for key, value in route_params.items():
                    metadata[key].string = value
                if not shape.trigger_metadata_removed:
                    metadata["Query"].json = json.dumps(dict(request.query))
                    metadata["Headers"].json = json.dumps(dict(request.headers))

            try:
                response = await host.invoke(Invocation(definition, build))
            except InvocationFailed as failure:
                return self._failed(definition, failure)
            try:
                return response_from_output(_http_output(definition, response))
            except ValueError as error:
                logger.error("function %s returned an unusable HTTP response: %s", definition.name, error)
                return error_response(500, f"function {definition.name!r} returned an unusable HTTP response",
                                      detail=str(error) if self.show_details else None)

    def _failed(self, definition: FunctionDefinition, failure: InvocationFailed) -> web.Response:
        """The caller learns the status and the invocation id; the function's own error text is
        logged under that id (and shown only in development)."""
        if failure.detail:
            logger.error("invocation %s of %s: %s: %s", failure.invocation_id, definition.name, failure,
                         failure.detail)
        return error_response(failure.status, str(failure), invocationId=failure.invocation_id,
                              detail=failure.detail if self.show_details else None)
