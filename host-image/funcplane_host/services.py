"""What the host's extensions (durable, queues, timers, concurrency) and the local run use of it.

They sit below `host` in the import layers and are handed the `FunctionHost`, which satisfies these
protocols structurally, so none of them names it. The members several of them use are declared once
here; each module's own protocol adds what only it uses (as `dispatch.DispatchServices` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from funcplane_host.app.catalog import FunctionCatalog
from funcplane_host.app.host_json import HostConfig
from funcplane_host.invocation import Invocation
from funcplane_host.keys import KeyStore
from funcplane_host.settings import HostSettings
from funcplane_host.workers.supervisor import WorkerPool


class ExtensionServices(Protocol):
    """The host's settings, the app as loaded, its workers and keys, and the one way to run a function."""

    @property
    def settings(self) -> HostSettings: ...
    @property
    def environment(self) -> Mapping[str, str]: ...
    @property
    def config(self) -> HostConfig: ...
    @property
    def catalog(self) -> FunctionCatalog: ...
    @property
    def pools(self) -> Mapping[str, WorkerPool]: ...
    @property
    def keys(self) -> KeyStore: ...
    @property
    def draining(self) -> bool: ...
    # `ready, reasons = host.readiness()` (a readiness.Readiness, which sits beside the extensions).
    def readiness(self) -> tuple[bool, list[str]]: ...
    async def invoke(self, invocation: Invocation) -> Any: ...


READY_POLL_SECONDS = 0.1


async def until_ready(host: ExtensionServices) -> bool:
    """Wait for the host to be ready (True), or to start draining first (False). Triggers are
    armed only then: worker-indexed apps report their functions after the worker starts."""
    while not host.readiness()[0]:
        if host.draining:
            return False
        await asyncio.sleep(READY_POLL_SECONDS)
    return True
