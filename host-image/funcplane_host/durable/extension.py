"""The durable extension as the host sees it: configuration, the task hub's store, the client binding.

The task hub is named by host.json `extensions.durableTask.hubName` (a `%Setting%` reference is
resolved from the app settings; `AzureFunctionsJobHost__extensions__durableTask__hubName` is the
app-setting form). Without one, the hub is the site name (or `TestHubName`) plus the slot name
outside production, so each slot keeps its own instances, as Azure advises. The store is
`<state dir>/durable/<hub>.sqlite`; the state dir is FUNCPLANE_STATE_DIR or, without it, a
folder per app under the system temp directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from funcplane_host.durable.engine import (
    ACTIVITY_TRIGGER,
    ENTITY_TRIGGER,
    ORCHESTRATION_TRIGGER,
    DurableEngine,
    Options,
)
from funcplane_host.durable.store import DurableStoreError, SqliteStore, SqlStore
from funcplane_host.services import ExtensionServices
from funcplane_protocol import FunctionRpc_pb2 as rpc

if TYPE_CHECKING:
    from funcplane_host.app.functions import FunctionDefinition


class DurableServices(ExtensionServices, Protocol):
    """What the durable extension uses of the host besides the shared services."""

    @property
    def app_root(self) -> Path: ...
    @property
    def state(self) -> str: ...


logger = logging.getLogger("funcplane.host.durable")

CLIENT_BINDINGS = frozenset({"durableclient", "orchestrationclient"})
DURABLE_TRIGGERS = frozenset({ORCHESTRATION_TRIGGER, ACTIVITY_TRIGGER, ENTITY_TRIGGER})
SYSTEM_KEY_NAME = "durabletask_extension"
WEBHOOK_BASE = "/runtime/webhooks/durabletask"
RPC_BASE = "/durabletask"  # loopback-only twin of the webhook base, for the SDK's rpcBaseUrl
_HUB_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,49}$")
_SETTING_REFERENCE = re.compile(r"^%([^%]+)%$")
_HUB_SETTING = "AzureFunctionsJobHost__extensions__durableTask__hubName"
READY_POLL_SECONDS = 0.05


class DurableConfigError(ValueError):
    """extensions.durableTask cannot be used; the message names the field."""


def _section(raw: dict[str, Any]) -> dict[str, Any]:
    extensions = raw.get("extensions")
    section = extensions.get("durableTask") if isinstance(extensions, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise DurableConfigError("host.json extensions.durableTask: must be an object")
    return section


def hub_name(raw: dict[str, Any], env: Any, slot: str) -> str:
    configured = env.get(_HUB_SETTING) or _section(raw).get("hubName")
    if configured is not None:
        if not isinstance(configured, str):
            raise DurableConfigError("host.json extensions.durableTask.hubName: must be a string")
        reference = _SETTING_REFERENCE.match(configured)
        if reference:
            value = env.get(reference.group(1))
            if not value:
                raise DurableConfigError(f"host.json extensions.durableTask.hubName refers to app setting "
                                         f"{reference.group(1)!r}, which is not set")
            configured = value
        if not _HUB_PATTERN.match(configured):
            raise DurableConfigError(
                f"host.json extensions.durableTask.hubName {configured!r}: use 3-50 letters and digits, "
                "starting with a letter")
        return configured
    site = re.sub(r"[^A-Za-z0-9]", "", env.get("WEBSITE_SITE_NAME") or "") or "TestHubName"
    if not site[0].isalpha():
        site = "Hub" + site
    if slot and slot.lower() != "production":
        site += re.sub(r"[^A-Za-z0-9]", "", slot)
    return site[:50] if len(site) >= 3 else site + "Hub"


def _positive_int(section: dict[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DurableConfigError(f"host.json extensions.durableTask.{key}: must be a whole number >= 1")
    return value


def options_from(raw: dict[str, Any], cores: int = 1) -> Options:
    """extensions.durableTask; concurrency defaults to Azure's 10 per core."""
    section = _section(raw)
    own = section.get("funcplane") or {}
    if not isinstance(own, dict):
        raise DurableConfigError("host.json extensions.durableTask.funcplane: must be an object")
    return Options(
        max_activities=_positive_int(section, "maxConcurrentActivityFunctions", 10 * cores),
        max_orchestrations=_positive_int(section, "maxConcurrentOrchestratorFunctions", 10 * cores),
        entity_batch=_positive_int(section, "maxEntityOperationBatchSize", Options.entity_batch),
        payload_limit=_positive_int(own, "maxPayloadBytes", Options.payload_limit),
        full_history=_flag(own, "fullHistory"),
    )


def _flag(section: dict[str, Any], key: str) -> bool:
    value = section.get(key, False)
    if not isinstance(value, bool):
        raise DurableConfigError(f"host.json extensions.durableTask.funcplane.{key}: must be true or false")
    return value


@dataclass(frozen=True)
class StoreChoice:
    kind: str  # "sqlite" or "postgresql"
    connection_setting: str | None = None
    lease_seconds: float = 15.0


def store_choice(raw: dict[str, Any]) -> StoreChoice:
    """host.json extensions.durableTask.storageProvider: PostgreSQL, or the embedded SQLite file
    (also for Azure's default AzureStorage, which has no equivalent here)."""
    provider = _section(raw).get("storageProvider") or {}
    where = "host.json extensions.durableTask.storageProvider"
    if not isinstance(provider, dict):
        raise DurableConfigError(f"{where}: must be an object")
    kind = str(provider.get("type") or "sqlite").lower()
    if kind in ("sqlite", "azurestorage"):
        return StoreChoice("sqlite")
    if kind != "postgresql":
        raise DurableConfigError(f"{where}.type {provider.get('type')!r}: use \"sqlite\" (embedded, one host) "
                                 "or \"postgresql\" (shared by many hosts)")
    setting = provider.get("connectionStringName")
    if not isinstance(setting, str) or not setting:
        raise DurableConfigError(f"{where}.connectionStringName: name the app setting that holds the "
                                 "PostgreSQL connection string")
    lease = provider.get("leaseSeconds", 15)
    if not isinstance(lease, (int, float)) or isinstance(lease, bool) or not 1 <= lease <= 300:
        raise DurableConfigError(f"{where}.leaseSeconds: must be a number of seconds from 1 to 300")
    return StoreChoice("postgresql", setting, float(lease))


def uses_durable(definition: FunctionDefinition) -> bool:
    return any(str(b.get("type", "")).lower() in DURABLE_TRIGGERS | CLIENT_BINDINGS for b in definition.bindings)


class DurableExtension:
    def __init__(self, host: DurableServices, cores: int = 1) -> None:
        self.host = host
        self.engine: DurableEngine | None = None
        self.error: str | None = None
        self.hub = ""
        self.options = Options()
        self.store_path: Path | None = None
        self.choice = StoreChoice("sqlite")
        self._starter: asyncio.Task[None] | None = None
        try:
            settings = host.settings
            self.hub = hub_name(host.config.raw, host.environment, settings.slot_name)
            self.options = options_from(host.config.raw, cores)
            self.choice = store_choice(host.config.raw)
            state_dir = settings.state_dir or Path(tempfile.gettempdir()) / "funcplane-state" / hashlib.sha256(
                str(host.app_root).encode()).hexdigest()[:16]
            self.store_path = state_dir / "durable" / f"{self.hub}.sqlite"
        except DurableConfigError as error:
            self.error = str(error)
        self.system_key = self._system_key()

    def _system_key(self) -> str | None:
        keys = self.host.keys
        configured = getattr(keys, "system_keys", {}).get(SYSTEM_KEY_NAME)
        if configured:
            return str(configured)
        if keys.master_key:
            # Stable across restarts and pods without storing anything: derived from the master key.
            return hmac.new(keys.master_key.encode(), SYSTEM_KEY_NAME.encode(), hashlib.sha256).hexdigest()
        return None

    # ---- lifecycle ------------------------------------------------------------------------------

    @property
    def wanted(self) -> bool:
        return any(uses_durable(d) for d in self.host.catalog.definitions.values())

    def start(self) -> None:
        self._starter = asyncio.get_running_loop().create_task(self._start_when_indexed())

    def _indexed(self) -> bool:
        host = self.host
        return (host.state == "running" and all(host.catalog.is_indexed(lang) for lang in host.pools)
                and all(pool.is_ready for pool in host.pools.values()))

    async def _start_when_indexed(self) -> None:
        while not self._indexed():
            await asyncio.sleep(READY_POLL_SECONDS)
        if not self.wanted:
            return
        if self.error is not None:
            return
        try:
            store = self._store()
        except DurableConfigError as error:
            self.error = str(error)
            return
        try:
            await asyncio.to_thread(store.open)
        except DurableStoreError as error:
            self.error = str(error)
            logger.error("%s", error)
            return
        engine = DurableEngine(self.host, store, self.options)
        await engine.start()
        self.engine = engine
        logger.info("durable task hub %s: store %s", self.hub, store.path)

    def _store(self) -> SqlStore:
        if self.choice.kind == "sqlite":
            assert self.store_path is not None
            return SqliteStore(self.store_path, self.hub)
        from funcplane_host.durable.postgres import PostgresStore  # psycopg only where it is used

        setting = self.choice.connection_setting or ""
        dsn = self.host.environment.get(setting)
        if not dsn:
            raise DurableConfigError(f"host.json extensions.durableTask.storageProvider.connectionStringName "
                                     f"names app setting {setting!r}, which is not set")
        owner = f"{self.host.settings.host_id}/{uuid.uuid4().hex[:8]}"
        return PostgresStore(dsn, self.hub, owner, self.choice.lease_seconds)

    async def stop(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
            await asyncio.gather(self._starter, return_exceptions=True)
        if self.engine is not None:
            await self.engine.stop()
            await asyncio.to_thread(self.engine.store.close)
            self.engine = None

    def readiness_reasons(self) -> list[str]:
        if self.error is not None and self.wanted:
            return [f"durable task hub: {self.error}"]
        if self.engine is None and self.wanted and self._indexed():
            return [f"durable task hub {self.hub} is starting"]
        return []

    def as_json(self) -> dict[str, Any]:
        engine = self.engine
        return {"taskHub": self.hub, "store": engine.store.kind if engine else self.choice.kind,
                "path": str(engine.store.path if engine else self.store_path), "error": self.error,
                "counters": dict(engine.counters) if engine else None}

    def demand(self) -> dict[str, dict[str, Any]]:
        """The task hub's pending orchestration and activity work, as entries of /admin/concurrency
        shaped like a queue function's (a backlog and a concurrency limit), so that a scaler counts
        them as it counts queues. The backlog is the hub's (on a shared store, all hosts'), waiting
        and running, refreshed every few seconds."""
        engine = self.engine
        if engine is None:
            return {}
        prefix = f"durabletask/{self.hub}"
        return {
            f"{prefix}/orchestrations": {
                "trigger": "durableOrchestration", "taskHub": self.hub,
                "concurrency": self.options.max_orchestrations, "inFlight": engine.episodes_running,
                "completed": engine.counters["episodes"] + engine.counters["entityBatches"],
                "backlog": engine.pending["orchestrations"]},
            f"{prefix}/activities": {
                "trigger": "durableActivity", "taskHub": self.hub,
                "concurrency": self.options.max_activities, "inFlight": engine.activities_running,
                "completed": engine.counters["activities"], "backlog": engine.pending["activities"]},
        }

    # ---- the client binding ----------------------------------------------------------------------

    def input_bindings(self, definition: FunctionDefinition) -> list[Any]:
        """Values of the function's durableClient inputs (a JSON string, as Azure sends it)."""
        names = [b["name"] for b in definition.bindings
                 if str(b.get("type", "")).lower() in CLIENT_BINDINGS and b.get("direction") == "in"]
        if not names:
            return []
        value = rpc.TypedData(string=json.dumps(self.client_value()))
        return [rpc.ParameterBinding(name=name, data=value) for name in names]

    def client_value(self) -> dict[str, Any]:
        settings = self.host.settings
        public_host = self.host.environment.get("WEBSITE_HOSTNAME")
        origin = f"https://{public_host}" if public_host else f"http://127.0.0.1:{settings.port}"
        base = origin + WEBHOOK_BASE
        query = f"code={self.system_key}" if self.system_key else ""
        common = f"taskHub={self.hub}&connection=Storage" + (f"&{query}" if query else "")
        instance = f"{base}/instances/INSTANCEID"
        return {
            "taskHubName": self.hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
                                            + (f"?{query}" if query else ""),
                "createAndWaitOnNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
                                                     "?timeout={timeoutInSeconds}&pollingInterval="
                                                     "{intervalInSeconds}" + (f"&{query}" if query else ""),
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{common}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{common}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{common}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{common}",
                "purgeHistoryDeleteUri": f"{instance}?{common}",
                "restartPostUri": f"{instance}/restart?{common}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{common}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{common}",
            },
            "baseUrl": base,
            "requiredQueryStringParameters": query,
            "rpcBaseUrl": f"http://127.0.0.1:{settings.port}{RPC_BASE}/",
            "httpBaseUrl": base,
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
        }
