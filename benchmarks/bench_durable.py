"""Durable Functions throughput on one host with the embedded SQLite store, using Microsoft's
Python SDK (azure-functions-durable) in the test app tests/host/apps/durable-v2.

    .venv/bin/python benchmarks/bench_durable.py [--chain 100,300] [--fan 3000] [--starts 300] [--workers 1]
    .venv/bin/python benchmarks/bench_durable.py --store postgresql --hosts 3

Measures: a sequential activity chain (activities/s), fan-out/fan-in (activities/s), and
orchestrations started and completed per second. The baseline, measured in the same run, is the
rate of plain sequential HTTP invocations of a trivial function on the same host and worker: the
chain ratio says what durability (history replay, one store commit per step) costs per activity.
Targets from the issue: chain >= 50 activities/s, fan-out >= 1,000 activities/s (Azure Storage
documents about 5/s and 100/s per instance). Every step of a chain replays the whole history in
the SDK (which parses each event's timestamp), so a chain's rate falls with its length; two
lengths are measured. Each scenario runs --runs times; beside each rate the CPU seconds the hosts
and their worker processes spent per activity (steadier than rates on a shared machine) and the
load average are printed. Installs the SDK into ~/.cache/funcplane once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "host"), str(REPO / "tests")]

from conftest import MASTER_KEY, launch_host  # noqa: E402
from durable_support import DURABLE_V2, durable_app, postgres_server, use_postgres  # noqa: E402

WEBHOOK = "/runtime/webhooks/durabletask"
HEADERS = {"x-functions-key": MASTER_KEY, "Content-Type": "application/json"}
CHAIN_TARGET = 50.0
FAN_TARGET = 1000.0


async def start(session: aiohttp.ClientSession, base: str, name: str, payload: object) -> str:
    # Encoded as the SDK's client sends it: a JSON string holding the input's JSON text.
    async with session.post(f"{base}{WEBHOOK}/orchestrators/{name}", data=json.dumps(json.dumps(payload)),
                            headers=HEADERS) as reply:
        body = await reply.json(content_type=None)
        if reply.status != 202:
            raise SystemExit(f"starting {name} answered {reply.status}: {body}")
        return body["id"]


async def finish(session: aiohttp.ClientSession, base: str, instance: str, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(f"{base}{WEBHOOK}/instances/{instance}", headers=HEADERS) as reply:
            body = await reply.json(content_type=None)
        if body["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            if body["runtimeStatus"] != "Completed":
                raise SystemExit(f"{instance} ended {body['runtimeStatus']}: {body['output']}")
            return body
        await asyncio.sleep(0.05)  # a completion is seen within 50 ms; polling costs the host little
    raise SystemExit(f"{instance} did not finish in {timeout}s")


async def baseline(session: aiohttp.ClientSession, base: str, seconds: float) -> float:
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        async with session.get(f"{base}/api/ping") as reply:
            await reply.read()
        calls += 1
    return calls / (time.perf_counter() - started)


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User + system CPU seconds of (the host processes, their child processes: the workers)."""
    def of(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent in pids:
                children.append(int(entry.name))
    return sum(of(p) for p in pids), sum(of(c) for c in children)


class Scenario:
    """One timed run: activities per second, CPU per activity (hosts, workers) and the load average."""

    def __init__(self, pids: list[int], activities: int) -> None:
        self.pids, self.activities = pids, activities

    def __enter__(self) -> Scenario:
        self.cpu = cpu_seconds(self.pids)
        self.began = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.perf_counter() - self.began
        host, workers = (after - before for after, before in zip(cpu_seconds(self.pids), self.cpu))
        self.rate = self.activities / wall
        self.text = (f"{self.rate:8.1f} activities/s  cpu/activity host {host / self.activities * 1000:.2f} ms "
                     f"workers {workers / self.activities * 1000:.2f} ms  load {os.getloadavg()[0]:.1f}")


async def measure(base: str, args: argparse.Namespace, pids: list[int]) -> None:
    async with aiohttp.ClientSession() as session:
        await finish(session, base, await start(session, base, "fan_out", 50))  # warm the worker and the store
        plain = await baseline(session, base, 3.0)

        chain_runs: dict[int, list[Scenario]] = {}
        for length in args.chain:
            for _ in range(args.runs):
                with Scenario(pids, length) as run:
                    done = await finish(session, base, await start(session, base, "chain",
                                                                   [f"c{i}" for i in range(length)]))
                chain_runs.setdefault(length, []).append(run)
                assert len(done["output"]) == length

        fan_runs = []
        for _ in range(args.runs):
            with Scenario(pids, args.fan) as run:
                done = await finish(session, base, await start(session, base, "fan_out", args.fan))
            fan_runs.append(run)
            assert done["output"] == sum(n * n for n in range(args.fan))

        began = time.perf_counter()
        gate = asyncio.Semaphore(16)

        async def one(index: int) -> str:
            async with gate:
                return await start(session, base, "chain", [f"s{index}"])

        instances = await asyncio.gather(*(one(i) for i in range(args.starts)))
        start_rate = args.starts / (time.perf_counter() - began)
        for instance in instances:
            await finish(session, base, instance)
        complete_rate = args.starts / (time.perf_counter() - began)

    print(f"store={args.store} hosts={args.hosts} worker processes={args.workers} per host "
          "sdk=azure-functions-durable")
    print(f"baseline: plain HTTP invocations, sequential     {plain:8.1f} /s")
    for length, runs in chain_runs.items():
        for run in runs:
            print(f"sequential chain ({length} activities)          {run.text}  "
                  f"ratio to baseline {run.rate / plain:.2f}, to target {run.rate / CHAIN_TARGET:.1f}x")
    for run in fan_runs:
        print(f"fan-out/fan-in ({args.fan} activities)            {run.text}  "
              f"ratio to baseline {run.rate / plain:.2f}, to target {run.rate / FAN_TARGET:.1f}x")
    print(f"orchestrations started ({args.starts}, 16 callers)      {start_rate:8.1f} /s")
    print(f"orchestrations started and completed ({args.starts})  {complete_rate:8.1f} /s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=lambda text: [int(n) for n in text.split(",")], default=[100, 300],
                        help="chain lengths, comma-separated")
    parser.add_argument("--fan", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each chain and fan-out scenario")
    parser.add_argument("--starts", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="FUNCTIONS_WORKER_PROCESS_COUNT")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--hosts", type=int, default=1, help="hosts sharing the hub (postgresql only)")
    args = parser.parse_args()
    if args.store == "sqlite" and args.hosts != 1:
        raise SystemExit("the SQLite store serves one host; use --store postgresql for more")
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as scratch, ExitStack() as stack:
        root = Path(scratch)
        app = durable_app(DURABLE_V2, root)
        env = {"FUNCPLANE_STATE_DIR": str(root / "state"), "DURABLE_TEST_STATE": str(root),
               "FUNCTIONS_WORKER_RUNTIME": "python", "FUNCTIONS_WORKER_PROCESS_COUNT": str(args.workers)}
        if args.store == "postgresql":
            env["DurablePostgres"] = stack.enter_context(postgres_server())
            use_postgres(app)
        hosts = []
        try:
            for _ in range(args.hosts):
                hosts.append(launch_host(root, app, wait_ready=False, env=env))
            for host in hosts:
                host.wait_ready(90)
            # Requests go to the first host; with a shared store every host runs the work.
            asyncio.run(measure(hosts[0].base_url, args, [host.process.pid for host in hosts]))
        finally:
            for host in hosts:
                host.stop()


if __name__ == "__main__":
    main()
