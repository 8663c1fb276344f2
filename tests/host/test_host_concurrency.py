"""Dynamic concurrency on a real host: HTTP and queue functions governed by the learned limit,
converging on a downstream that degrades past 8 concurrent calls while CPU stays idle, the learned
level kept as a snapshot blob per host id and applied when the slot's host starts again, and a
queue listener that fetches nothing while a host throttle is on."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import aiohttp
from azure.storage.blob import BlobClient
from azure.storage.queue import QueueClient

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


def feed(azurite, name: str, stop: threading.Event, floor: int = 200) -> threading.Thread:
    """Keep at least `floor` messages waiting in queue `name` until `stop` is set."""
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    client.create_queue()

    def run() -> None:
        while not stop.is_set():
            if client.get_queue_properties().approximate_message_count < floor:
                for _ in range(50):
                    client.send_message("eA==")  # base64 of "x", the host's default message encoding
            else:
                stop.wait(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def sample_concurrency(host, function: str, seconds: float) -> list[dict]:
    """`function`'s entry of /admin/concurrency, once a second for `seconds`."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        samples.append(host.admin("/admin/concurrency")["functions"][function])
    return samples


def test_dynamic_concurrency_converges_on_a_degrading_downstream_and_restarts_from_its_snapshot(
        start_host, azurite) -> None:
    host_id = f"dc-{uuid.uuid4().hex[:8]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "FUNCPLANE_HOST_ID": host_id,
           "IO_QUEUE": "dc-io", "CPU_QUEUE": "dc-cpu"}
    host = start_host(CONCURRENCY_V2, env=env)
    assert host.admin("/admin/concurrency")["functions"]["io"]["concurrency"] == 1  # Azure starts at 1
    stop = threading.Event()
    load = closed_loop(f"{host.base_url}/api/io", stop)
    try:
        samples = sample_concurrency(host, "io", 45)
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


def test_queue_function_converges_on_a_degrading_downstream(start_host, azurite) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {"AzureWebJobsStorage": azurite.connection_string, "IO_QUEUE": f"dcq-io-{suffix}",
           "CPU_QUEUE": f"dcq-cpu-{suffix}", "DOWNSTREAM_LATENCY": "0.2"}  # the knee at 40/s, not Azurite's
    stop = threading.Event()
    feeder = feed(azurite, env["IO_QUEUE"], stop)
    try:
        host = start_host(CONCURRENCY_V2, env=env)
        samples = sample_concurrency(host, "io_queue", 50)
    finally:
        stop.set()
        feeder.join(timeout=30)
    limits = [s["concurrency"] for s in samples]
    # The listener fetched up to the learned limit, which grew from 1 past the knee (8), saw the
    # downstream degrade with CPU idle, and came back near it instead of following the backlog.
    assert limits[0] <= 2 and max(limits) >= 7, limits
    assert any(s["saturated"] for s in samples), samples[-5:]
    assert 4 <= limits[-1] <= 16 and max(limits[-10:]) <= 16, limits
    assert all(s["inFlight"] <= s["concurrency"] + 6 for s in samples)
    # Messages fetched ahead of the limit waited for a slot rather than running past it.
    assert max(s["queued"] for s in samples) > 0, samples[-5:]
    assert max(s["backlog"] or 0 for s in samples) > 0 and samples[-1]["completed"] > 100, samples[-1]


def test_queue_listener_fetches_nothing_while_the_host_is_throttled(start_host, azurite, tmp_path) -> None:
    # Azure's algorithm alone treats full CPU as an overload; a threshold of 5 % of the cores makes
    # a CPU-bound function trip it within seconds, then stop-go: fetch, throttled, idle, healthy.
    override = tmp_path / "throttle.json"
    override.write_text(json.dumps({"concurrency": {"dynamicConcurrencyEnabled": True, "cpuThreshold": 0.05,
                                                    "saturationThrottleEnabled": False}}))
    suffix = uuid.uuid4().hex[:8]
    env = {"AzureWebJobsStorage": azurite.connection_string, "IO_QUEUE": f"dct-io-{suffix}",
           "CPU_QUEUE": f"dct-cpu-{suffix}"}
    stop = threading.Event()
    feeder = feed(azurite, env["CPU_QUEUE"], stop, floor=50)
    # Alternating reads: the throttle state, then the listener's receive count. The throttle is
    # re-evaluated at most once a second, so two Enabled readings less than 1 s apart mean it was
    # on all along between them, and no receive may have been issued in that span.
    readings: list[tuple[float, str, list[str]] | tuple[float, int]] = []
    try:
        host = start_host(CONCURRENCY_V2, env=env, args=["--host-json-override", str(override)])
        host.wait_until(lambda: host.admin("/admin/host/status")["queueTriggers"]["listeners"], "the listeners")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            throttles = host.admin("/admin/concurrency")["throttles"]
            readings.append((time.monotonic(), throttles["state"], throttles["enabled"]))
            [listener] = [l for l in host.admin("/admin/host/status")["queueTriggers"]["listeners"]
                          if l["function"] == "cpu_queue"]
            readings.append((time.monotonic(), listener["receives"]))
            time.sleep(0.1)
    finally:
        stop.set()
        feeder.join(timeout=30)
    throttled_spans, receives_seen = [], []
    for index in range(0, len(readings) - 2, 2):
        before, count, after = readings[index], readings[index + 1], readings[index + 2]
        on = before[1] == after[1] == "Enabled" and after[0] - before[0] < 1.0
        if on:
            assert "cpu" in before[2], before
            throttled_spans.append(after[0] - before[0])
            receives_seen.append(count[1])
        elif receives_seen:
            assert len(set(receives_seen)) == 1, receives_seen  # nothing fetched while throttled
            receives_seen = []
    assert len(set(receives_seen)) <= 1, receives_seen
    assert sum(throttled_spans) >= 3.0, readings[-6:]  # it was throttled for a while
    assert readings[-1][1] > 0  # and it did fetch while healthy
