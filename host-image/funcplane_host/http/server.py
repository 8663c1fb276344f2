"""Assemble the aiohttp application of the host's front door."""

from __future__ import annotations

from aiohttp import web

from funcplane_host.durable.api import DurableApi
from funcplane_host.host import FunctionHost
from funcplane_host.http.admin import AdminHandlers
from funcplane_host.app.front_door import FrontDoorOptions
from funcplane_host.http.triggers import HttpTriggerHandler


def build_app(host: FunctionHost, options: FrontDoorOptions) -> web.Application:
    app = web.Application(client_max_size=options.max_body_size)
    admin = AdminHandlers(host, options)
    app.router.add_get("/livez", admin.livez)
    app.router.add_get("/readyz", admin.readyz)
    app.router.add_get("/metrics", admin.metrics)
    app.router.add_get("/admin/warmup", admin.warmup)
    app.router.add_post("/admin/drain", admin.drain)
    app.router.add_get("/admin/host/status", admin.host_status)
    app.router.add_get("/admin/functions", admin.functions)
    app.router.add_get("/admin/concurrency", admin.concurrency)
    app.router.add_post("/admin/functions/{name}", admin.run_function)
    DurableApi(host.durable).register(app)
    prefix = host.config.http.route_prefix
    pattern = f"/{prefix}{{tail:(?:/.*)?}}" if prefix else "/{tail:.*}"
    app.router.add_route("*", pattern, HttpTriggerHandler(host, options))
    return app
