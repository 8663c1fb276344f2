"""`funcplane-host`: serve an app like `func start` (one asyncio loop for HTTP and gRPC)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from funcplane_host.host import FunctionHost
from funcplane_host.http.admin import DEFAULT_DRAIN_TIMEOUT
from funcplane_host.http.connection import FrontDoorRunner
from funcplane_host.http.server import build_app
from funcplane_host.local_run import access_log, announce_when_ready, in_cluster, with_local_keys
from funcplane_host.settings import SettingsError, load_settings

logger = logging.getLogger("funcplane.host")


async def serve(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as error:
        print(f"funcplane-host: {error}", file=sys.stderr)
        return 2
    settings = with_local_keys(settings)
    host = FunctionHost(settings)
    if host.config_errors and not in_cluster(settings.environment):
        # On a workstation a broken configuration is fatal; in a pod the host stays up, not ready.
        for error in host.config_errors:
            print(f"funcplane-host: {error}", file=sys.stderr)
        return 2
    await host.start()
    options = host.config.front_door
    app = build_app(host, options)
    if settings.access_log:
        logging.getLogger("funcplane.access").setLevel(logging.INFO)
        app.middlewares.append(access_log)
    runner = FrontDoorRunner(app, options.headers_timeout)
    await runner.setup()
    site = web.TCPSite(runner, settings.bind, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as error:
        print(f"funcplane-host: cannot listen on {settings.bind}:{settings.port}: {error}", file=sys.stderr)
        await host.stop()
        return 2
    logger.info("listening on http://%s:%d (routes under /%s)", settings.bind, settings.port,
                host.config.http.route_prefix)
    announce = asyncio.create_task(announce_when_ready(host))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    announce.cancel()
    logger.info("shutting down: draining in-flight work")
    summary = await host.drain(DEFAULT_DRAIN_TIMEOUT)
    logger.info("drained: %s", summary)
    await runner.cleanup()
    await host.stop()
    return 0


def main(argv: list[str] | None = None) -> None:
    # uvloop drives both aiohttp and grpc.aio: the HTTP -> gRPC round trip is the hot path.
    sys.exit(uvloop.run(serve(argv)))


if __name__ == "__main__":
    main()
