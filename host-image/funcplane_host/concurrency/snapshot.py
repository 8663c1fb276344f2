"""Concurrency snapshots: the learned per-function limits, kept per host id in the app's storage.

Where: the blob `azure-webjobs-hosts/concurrency/<host id>/concurrencyStatus.json` in the account
of `AzureWebJobsStorage`, Azure's own location and shape (`{"timestamp", "numberOfCores",
"functionSnapshots": {"<function>": {"concurrency": N}}}`). The host id belongs to the slot, so
every pod of a slot reads the same snapshot and a swap carries it with the slot; the storage
account outlives pods, unlike a pod's state directory. One writer per slot: a pod writes only
while it holds a 60 s blob lease on the snapshot (renewed at each write), the analogue of
Azure's primary host; the others read it at start only.

Applied once at start, before the first invocation (Azure's rules: scaled by the ratio of core
counts, skipped above `maximumFunctionConcurrency`, only ever raising the start from 1), and
written every 10 s when it changed, and once more at shutdown.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobClient, BlobLeaseClient, BlobServiceClient

logger = logging.getLogger("Host.Concurrency")
CONTAINER = "azure-webjobs-hosts"
WRITE_INTERVAL = 10.0
LEASE_SECONDS = 60


def blob_name(host_id: str) -> str:
    return f"concurrency/{host_id.lower()}/concurrencyStatus.json"


def encode(levels: dict[str, int], cores: int) -> bytes:
    return json.dumps({
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "numberOfCores": cores,
        "functionSnapshots": {name: {"concurrency": level} for name, level in sorted(levels.items())},
    }).encode()


def decode(payload: bytes) -> tuple[dict[str, int], int]:
    """(levels, cores) from a snapshot; ValueError when it is not one."""
    document = json.loads(payload)
    functions = document.get("functionSnapshots") or {}
    cores = document.get("numberOfCores", 0)  # 0: unknown, applied without scaling
    if not isinstance(functions, dict) or not isinstance(cores, int):
        raise ValueError("not a concurrency snapshot (functionSnapshots, numberOfCores)")
    levels = {}
    for name, entry in functions.items():
        level = entry.get("concurrency") if isinstance(entry, dict) else None
        if isinstance(level, int) and level >= 1:
            levels[name] = level
    return levels, cores


class BlobSnapshotStore:
    def __init__(self, connection_string: str, host_id: str) -> None:
        self.service = BlobServiceClient.from_connection_string(connection_string)
        self.blob: BlobClient = self.service.get_blob_client(CONTAINER, blob_name(host_id))
        self.location = f"blob {CONTAINER}/{blob_name(host_id)}"
        self._lease: BlobLeaseClient | None = None
        self._written: dict[str, int] | None = None

    async def read(self) -> tuple[dict[str, int], int] | None:
        try:
            download = await self.blob.download_blob()
            return decode(await download.readall())
        except ResourceNotFoundError:
            return None
        except (AzureError, ValueError) as error:
            logger.warning("concurrency snapshot %s unreadable, starting from 1: %s", self.location, error)
            return None

    async def _hold_lease(self) -> bool:
        """Renew our lease, or try to take it; False while another pod of the slot writes."""
        if self._lease is not None:
            try:
                await self._lease.renew()
                return True
            except HttpResponseError:
                self._lease = None
        try:
            await self.service.get_container_client(CONTAINER).create_container()
        except ResourceExistsError:
            pass
        try:
            await self.blob.upload_blob(b"{}", overwrite=False)
        except ResourceExistsError:
            pass
        lease = BlobLeaseClient(self.blob)
        try:
            await lease.acquire(lease_duration=LEASE_SECONDS)
        except HttpResponseError:
            return False  # another pod of this slot holds it
        self._lease = lease
        return True

    async def write(self, levels: dict[str, int], cores: int) -> bool:
        """Write when changed and we are the slot's writer; True when written."""
        if levels == self._written:
            if self._lease is not None:
                await self._hold_lease()
            return False
        if not await self._hold_lease():
            return False
        await self.blob.upload_blob(encode(levels, cores), overwrite=True, lease=self._lease)
        self._written = dict(levels)
        return True

    async def close(self, release: bool = True) -> None:
        if release and self._lease is not None:
            try:
                await self._lease.release()
            except AzureError:
                pass
        await self.service.close()

    def as_json(self) -> dict[str, Any]:
        return {"location": self.location, "writer": self._lease is not None}
