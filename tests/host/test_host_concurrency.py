"""Dynamic concurrency on a real host: HTTP functions governed by the learned limit, converging on
a downstream that degrades past 8 concurrent calls while CPU stays idle, the learned level kept
as a snapshot blob per host id and applied when the slot's host starts again."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import aiohttp
from azure.storage.blob import BlobClient

from conftest import HOST_APPS, metric_value

CONCURRENCY_V2 = HOST_APPS / "concurrency-v2"
CLIENTS = 32


def closed_loop(url: str, stop: threading.Event, clients: int = CLIENTS) -> threading.Thread:
    """`clients` callers, each sending its next request when the previous one is answered."""

    async def caller(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(url) as response:
                await response.read()

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
            await asyncio.gather(*(caller(session) for _ in range(clients)))

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread


def test_dynamic_concurrency_converges_on_a_degrading_downstream_and_restarts_from_its_snapshot(
        start_host, azurite) -> None:
    host_id = f"dc-{uuid.uuid4().hex[:8]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "FUNCPLANE_HOST_ID": host_id,
           "IO_QUEUE": "dc-io", "CPU_QUEUE": "dc-cpu"}
    host = start_host(CONCURRENCY_V2, env=env)
    assert host.admin("/admin/concurrency")["functions"]["io"]["concurrency"] == 1  # Azure starts at 1
    stop = threading.Event()
    load = closed_loop(f"{host.base_url}/api/io", stop)
    samples = []
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            time.sleep(1)
            samples.append(host.admin("/admin/concurrency")["functions"]["io"])
    finally:
        stop.set()
        load.join(timeout=30)
    limits = [s["concurrency"] for s in samples]
    # It grew from 1, noticed the knee with CPU idle, and held well below the 32 callers' demand
    # (Azure's CPU and thread-pool throttles alone would follow demand up to 32).
    assert max(limits) >= 7, limits
    assert any(s["saturated"] for s in samples), samples[-5:]
    assert 4 <= limits[-1] <= 16 and max(limits[-10:]) <= 16, limits
    assert all(s["inFlight"] <= s["concurrency"] + 6 for s in samples)  # a lowered limit drains, never overshoots
    assert max(s["queued"] for s in samples) > 0  # the excess callers waited for a slot
    metrics = host.metrics()
    assert metric_value(metrics, "funcplane_function_concurrency_limit", function="io") >= 1
    learned = host.admin("/admin/concurrency")["functions"]["io"]["concurrency"]

    # The snapshot is written (every 10 s, and at shutdown) under the slot's host id.
    host.stop()
    blob = BlobClient.from_connection_string(
        azurite.connection_string, "azure-webjobs-hosts", f"concurrency/{host_id}/concurrencyStatus.json")
    snapshot = json.loads(blob.download_blob().readall())
    assert snapshot["functionSnapshots"]["io"]["concurrency"] == learned
    assert snapshot["numberOfCores"] >= 1

    # A new host of the same slot starts at the learned level, before any load.
    again = start_host(CONCURRENCY_V2, env=env)
    again.wait_until(lambda: again.admin("/admin/concurrency")["snapshot"]["applied"], "the snapshot to apply")
    report = again.admin("/admin/concurrency")
    assert report["snapshot"]["applied"]["io"] == learned
    assert report["functions"]["io"]["concurrency"] == learned
    assert report["hostId"] == host_id and report["dynamic"] is True
