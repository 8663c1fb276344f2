"""Running an app on a workstation like `func start`: keys when none are configured, the functions'
URLs once the host is ready, fatal configuration errors, and an optional access log.

"Outside a cluster" means no KUBERNETES_SERVICE_HOST in the environment (the kubelet sets it in
every pod). There a configuration error ends the process with the message; in a pod the host
stays up, not ready, with the reason in /readyz and /admin/host/status for the operator to see.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from funcplane_host.settings import HostSettings

if TYPE_CHECKING:
    from funcplane_host.services import ExtensionServices

access_logger = logging.getLogger("funcplane.access")
# The invocation an HTTP request ran, for its access-log line (set by FunctionHost.invoke in the
# request's own task, so the middleware that wraps the handler sees it).
current_invocation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("invocation_id", default=None)
ANNOUNCE_POLL_SECONDS = 0.2


def in_cluster(environment: Mapping[str, str]) -> bool:
    return bool(environment.get("KUBERNETES_SERVICE_HOST"))


def _state_home(settings: HostSettings) -> Path:
    if settings.state_dir is not None:
        return settings.state_dir
    configured = settings.environment.get("XDG_STATE_HOME")
    return Path(configured) if configured else Path.home() / ".local" / "state"


def local_keys_file(settings: HostSettings) -> Path:
    """Where generated keys of an app live: one file per app directory, kept across runs."""
    digest = hashlib.sha256(str(settings.app_root).encode()).hexdigest()[:12]
    return _state_home(settings) / "funcplane" / "keys" / f"{settings.app_root.name}-{digest}.json"


def with_local_keys(settings: HostSettings) -> HostSettings:
    """Outside a cluster with no keys configured, generate a master key and a default function key
    (kept for the next run of the same app) and say where they are; otherwise `settings` as is."""
    if settings.keys_file is not None or settings.master_key or in_cluster(settings.environment):
        return settings
    path = local_keys_file(settings)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = {"masterKey": secrets.token_urlsafe(32), "functionKeys": {"default": secrets.token_urlsafe(32)}}
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(keys, handle, indent=1)
    print(f"funcplane-host: no keys configured (--keys-file, FUNCPLANE_KEYS_FILE or FUNCPLANE_MASTER_KEY); "
          f"using keys generated for this app in {path}", file=sys.stderr, flush=True)
    return dataclasses.replace(settings, keys_file=path,
                               keys_hint=f"this local run's keys are in {path} (functionKeys.default)")


def _base_url(settings: HostSettings) -> str:
    host = "localhost" if settings.bind in ("0.0.0.0", "::", "") else settings.bind
    return f"http://{host}:{settings.port}"


def function_lines(host: ExtensionServices) -> list[str]:
    """One line per function: HTTP ones with methods and URL (with ?code= for keyed ones)."""
    base = _base_url(host.settings)
    prefix = host.config.http.route_prefix
    keys = host.keys
    lines = []
    for name, definition in sorted(host.catalog.definitions.items()):
        state = host.catalog.states[name]
        if state.status != "loaded" or definition.disabled:
            continue
        trigger = definition.http
        if trigger is None:
            lines.append(f"  {name}: {definition.trigger_type}")
            continue
        methods = ",".join(sorted(trigger.methods)) if trigger.methods else "ALL"
        route = "/".join(part for part in (prefix, trigger.route.strip("/")) if part)
        key = {"function": next(iter(keys.host_keys.values()), None), "admin": keys.master_key}.get(trigger.auth_level)
        lines.append(f"  {name}: [{methods}] {base}/{route}" + (f"?code={key}" if key else ""))
    return lines


async def announce_when_ready(host: ExtensionServices) -> None:
    """Print the app's functions once, when the host first turns ready."""
    while not host.draining:
        if host.readiness()[0]:
            print("Functions:\n" + "\n".join(function_lines(host)), flush=True)
            return
        await asyncio.sleep(ANNOUNCE_POLL_SECONDS)


@web.middleware
async def access_log(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """One line per request: method, path, status, duration and the invocation it ran."""
    started = time.perf_counter()
    current_invocation_id.set(None)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        access_logger.info("%s %s %d %.1fms invocationId=%s", request.method, request.path, status,
                           (time.perf_counter() - started) * 1000, current_invocation_id.get() or "-")
