"""Dynamic concurrency against hand-tuned static limits, and a 2,000-message backlog on Azurite.

    .venv/bin/python benchmarks/bench_concurrency.py [--workloads io,cpu] [--transports http,queue]
        [--static 1,2,4,8,16,32,64] [--point-seconds 3] [--dynamic-seconds 40] [--azure-seconds 30]
        [--rounds 2] [--slice-seconds 9] [--backlog 2000] [--full] [--trace]

Workloads (tests/host/apps/concurrency-v2): `io`, an async function whose simulated downstream
answers in 200 ms up to 8 concurrent calls and degrades beyond (1 worker process, so the worker
sees every call); `cpu`, GIL-bound hashing with 2 worker processes. Each runs over HTTP (64
closed-loop callers) and over a queue (a feeder keeps a backlog in Azurite).

For each pair: a sweep of static limits (HTTP: a per-function `maximumConcurrency`; queue:
`batchSize` + `newBatchThreshold` summing to the level), one fresh host per point; then dynamic
concurrency from cold, and Azure's algorithm alone (no saturation signal). Throughput is the
host's completion count over the measured window; latency is the host's execution p99 over its
last 10 s (with closed-loop callers, end-to-end latency is callers / throughput whatever the
limit). T* is the best static throughput, C* the smallest static level within 2 % of it, P* the
p99 there. Acceptance: dynamic >= 0.90 x T* with p99 <= 2 x P*, reached within 60 s cold and 10 s
from a snapshot.

The machine is shared, so its load drifts between the sweep's points. The verdict from a snapshot
is therefore measured in alternating slices (`--rounds`, order flipped each round): a host with
the static limit C*, then the dynamic host restarted from its slot's snapshot, each for
`--slice-seconds`, and each round's dynamic figures are divided by the static ones of that round.

The default sweep is 1, 2, 4, 8, 16, 32, 64 with 3 s points and 2 rounds (about 3.3 minutes a
pair under a load average of 10, most of it host start-ups); `--full` adds 3, 6 and 12, measures each
point 6 s and runs 5 rounds. Last, a backlog of
`--backlog` messages is drained by a dynamic-concurrency host and every message is counted: none
lost, none run twice. Needs the project venv and Azurite (installed on first use from npm into
~/.cache/funcplane).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import statistics
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from azure.core.exceptions import AzureError
from azure.storage.queue.aio import QueueClient

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "dev")]
from funcplane_dev.azurite import AzuriteServer  # noqa: E402
from bench_http_host import free_port, wait_http  # noqa: E402  (same directory)

BIN = Path(sys.executable).parent
APP = REPO / "tests" / "host" / "apps" / "concurrency-v2"
MASTER_KEY = "bench-master-key"
HTTP_CALLERS = 64
FEED_FLOOR = 300  # messages kept waiting in a queue under test
FEED_CHUNK = 100
FUNCTION = {("io", "http"): "io", ("cpu", "http"): "cpu", ("io", "queue"): "io_queue", ("cpu", "queue"): "cpu_queue"}
PROCESSES = {"io": 1, "cpu": 2}


@dataclass
class Result:
    label: str
    throughput: float
    p99_ms: float
    limit: int | None = None
    reached_after: float | None = None  # seconds until a 5 s window reached 0.9 x T*
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since load, completed)

    def reached(self, target: float) -> float | None:
        """Seconds after the load began until a 5 s window ran at `target` per second or more."""
        for index, (now, done) in enumerate(self.samples):
            window = [s for s in self.samples[:index + 1] if s[0] >= now - 5.0]
            if len(window) >= 5 and (done - window[0][1]) / (now - window[0][0]) >= target:
                return now
        return None


@dataclass
class Pair:
    """One workload over one transport: the sweep, the dynamic runs and the alternating rounds."""

    workload: str
    transport: str
    static: list[Result]
    dynamic: list[Result]  # cold, then Azure's algorithm alone
    rounds: list[tuple[Result, Result]]  # (static C*, dynamic from its snapshot), same load
    load: tuple[float, float]  # 1-minute load average at the start and at the end


class Host:
    """One funcplane-host process on loopback."""

    def __init__(self, scratch: Path, env: dict[str, str], host_json: dict) -> None:
        self.port = free_port()
        run = scratch / f"host-{self.port}-{uuid.uuid4().hex[:6]}"  # a port comes back in a long run
        run.mkdir()
        (run / "keys.json").write_text(json.dumps({"masterKey": MASTER_KEY}))
        (run / "override.json").write_text(json.dumps(host_json))
        self.log = run / "host.log"
        argv = [str(BIN / "funcplane-host"), "--app", str(APP), "--bind", "127.0.0.1", "--port", str(self.port),
                "--keys-file", str(run / "keys.json"), "--worker-config", str(run / "none.json"),
                "--host-json-override", str(run / "override.json")]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=run)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, session: aiohttp.ClientSession) -> None:
        """Ready, and every worker process started: a host is ready with its first worker, and a
        short point measured before the second one is up would see half the cores."""
        try:
            await wait_http(f"{self.url}/readyz", 60.0)
        except RuntimeError:
            raise RuntimeError(f"host not ready: {self.log.read_text()[-2000:]}") from None
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            async with session.get(f"{self.url}/admin/host/status",
                                   headers={"x-functions-key": MASTER_KEY}) as response:
                pools = (await response.json())["workers"]
            if all(process["state"] == "ready" for pool in pools for process in pool["processes"]):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"worker processes not ready: {pools}")

    async def report(self, session: aiohttp.ClientSession, function: str) -> tuple[dict, str]:
        """The function's /admin/concurrency entry, and its limit with a letter per signal on
        (c: CPU, l: event-loop lag, w: worker channel latency, s: saturated) for --trace."""
        async with session.get(f"{self.url}/admin/concurrency", headers={"x-functions-key": MASTER_KEY}) as response:
            body = await response.json()
        entry = body["functions"][function]
        flags = "".join(name[0].lower() for name in body["throttles"]["enabled"]) + ("s" if entry["saturated"] else "")
        return entry, f"{entry['concurrency']}{flags}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Load:
    """HTTP: 64 closed-loop callers. Queue: a feeder that keeps the backlog above a floor."""

    def __init__(self, transport: str, workload: str, url: str, queue: QueueClient | None) -> None:
        self.transport, self.workload, self.url, self.queue = transport, workload, url, queue
        self.tasks: list[asyncio.Task] = []
        self.errors = 0

    async def _call(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                async with session.get(f"{self.url}/api/{self.workload}") as response:
                    await response.read()
                    if response.status != 200:
                        self.errors += 1
            except aiohttp.ClientError:
                self.errors += 1
                await asyncio.sleep(0.05)

    async def _feed(self) -> None:
        assert self.queue is not None
        while True:
            try:
                properties = await self.queue.get_queue_properties()
                if properties.approximate_message_count < FEED_FLOOR:
                    await asyncio.gather(*(self.queue.send_message("eA==") for _ in range(FEED_CHUNK)))
                    continue
            except AzureError as error:  # a slow emulator must not starve the run: keep feeding
                self.errors += 1
                print(f"    feeder: {error}", flush=True)
            await asyncio.sleep(0.2)

    def start(self, session: aiohttp.ClientSession) -> None:
        if self.transport == "http":
            self.tasks = [asyncio.create_task(self._call(session)) for _ in range(HTTP_CALLERS)]
        else:
            self.tasks = [asyncio.create_task(self._feed())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path, azurite: AzuriteServer) -> None:
        self.args, self.scratch, self.azurite = args, scratch, azurite
        self.queues = {"io": f"bench-io-{uuid.uuid4().hex[:6]}", "cpu": f"bench-cpu-{uuid.uuid4().hex[:6]}"}

    def env(self, workload: str, host_id: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNCPLANE_", "FUNCTIONS_"))}
        env.update({"AzureWebJobsStorage": self.azurite.connection_string, "FUNCPLANE_HOST_ID": host_id,
                    "FUNCTIONS_WORKER_PROCESS_COUNT": str(PROCESSES[workload]),
                    # The host's limit, not the worker's thread pool, must bound concurrency.
                    "PYTHON_THREADPOOL_THREAD_COUNT": "128",
                    # Slow enough that the function, not the emulator or the host's storage
                    # calls, is the bottleneck on a 2-core machine (knees near 40/s and 50/s).
                    "DOWNSTREAM_LATENCY": "0.2", "CPU_ROUNDS": "100000",
                    "IO_QUEUE": self.queues["io"], "CPU_QUEUE": self.queues["cpu"], **extra})
        return env

    async def run_host(self, session: aiohttp.ClientSession, workload: str, transport: str, host_json: dict,
                       seconds: float, warmup: float, host_id: str, t_star: float | None = None) -> Result:
        function = FUNCTION[(workload, transport)]
        queue = None
        if transport == "queue":
            queue = QueueClient.from_connection_string(self.azurite.connection_string, self.queues[workload])
        host = Host(self.scratch, self.env(workload, host_id), host_json)
        load = Load(transport, workload, host.url, queue)
        try:
            await host.ready(session)
            load.start(session)
            started = time.monotonic()
            samples: list[tuple[float, int]] = []
            trace: list[str] = []
            while time.monotonic() - started < warmup + seconds:
                await asyncio.sleep(1.0)
                report, traced = await host.report(session, function)
                samples.append((time.monotonic() - started, report["completed"]))
                trace.append(traced)
            measured = [s for s in samples if s[0] >= warmup]
            throughput = (measured[-1][1] - measured[0][1]) / (measured[-1][0] - measured[0][0])
            if self.args.trace and host_json.get("concurrency", {}).get("dynamicConcurrencyEnabled"):
                print(f"    limit each second: {' '.join(trace)}", flush=True)
            result = Result("", throughput, report["p99LatencyMs"], report["concurrency"], samples=samples)
            if t_star:
                result.reached_after = result.reached(0.9 * t_star)
            return result
        finally:
            await load.stop()
            host.stop()
            if queue is not None:
                await queue.close()

    @staticmethod
    def static_json(transport: str, function: str, level: int) -> dict:
        if transport == "http":
            overrides = {"maximumConcurrency": level}
        else:
            batch = min(32, math.ceil(level / 2))
            overrides = {"batchSize": batch, "newBatchThreshold": level - batch}
        return {"concurrency": {"dynamicConcurrencyEnabled": False}, "funcplane": {"functions": {function: overrides}}}

    async def pair(self, session: aiohttp.ClientSession, workload: str, transport: str) -> Pair:
        args = self.args
        function = FUNCTION[(workload, transport)]
        load_before = os.getloadavg()[0]
        if transport == "queue":
            async with QueueClient.from_connection_string(self.azurite.connection_string,
                                                         self.queues[workload]) as queue:
                await queue.create_queue()
        static = []
        for level in args.static:
            result = await self.run_host(session, workload, transport, self.static_json(transport, function, level),
                                         args.point_seconds, 1.0, f"static-{uuid.uuid4().hex[:8]}")
            result.label = f"static {level}"
            static.append(result)
            print(f"  {workload}/{transport} static {level:>3}: {result.throughput:7.1f}/s  p99 {result.p99_ms:7.1f} ms",
                  flush=True)
        t_star = max(r.throughput for r in static)
        c_star = next(level for level, r in zip(args.static, static) if r.throughput >= 0.98 * t_star)
        dynamic = {"concurrency": {"dynamicConcurrencyEnabled": True}}
        host_id = f"dynamic-{uuid.uuid4().hex[:8]}"
        cold = await self.run_host(session, workload, transport, dynamic, 10.0, args.dynamic_seconds - 10.0,
                                   host_id, t_star)
        cold.label = "dynamic (cold)"
        print(f"  {workload}/{transport} dynamic cold: {cold.throughput:7.1f}/s  p99 {cold.p99_ms:7.1f} ms  "
              f"limit {cold.limit}", flush=True)
        rounds = []
        for index in range(args.rounds):
            runs = {}
            for kind in (("static", "dynamic") if index % 2 == 0 else ("dynamic", "static")):
                if kind == "static":
                    runs[kind] = await self.run_host(
                        session, workload, transport, self.static_json(transport, function, c_star),
                        args.slice_seconds - 1.0, 1.0, f"static-{uuid.uuid4().hex[:8]}")
                else:
                    runs[kind] = await self.run_host(session, workload, transport, dynamic,
                                                     args.slice_seconds - 1.0, 1.0, host_id)
            runs["dynamic"].reached_after = runs["dynamic"].reached(0.9 * runs["static"].throughput)
            rounds.append((runs["static"], runs["dynamic"]))
            print(f"  {workload}/{transport} round {index + 1}: static {c_star} {runs['static'].throughput:6.1f}/s, "
                  f"dynamic from snapshot {runs['dynamic'].throughput:6.1f}/s (limit {runs['dynamic'].limit})",
                  flush=True)
        azure = await self.run_host(
            session, workload, transport,
            {"concurrency": {"dynamicConcurrencyEnabled": True, "saturationThrottleEnabled": False}},
            10.0, args.azure_seconds - 10.0, f"azure-{uuid.uuid4().hex[:8]}", t_star)
        azure.label = "Azure's algorithm alone"
        if transport == "queue":
            async with QueueClient.from_connection_string(self.azurite.connection_string,
                                                         self.queues[workload]) as queue:
                await queue.clear_messages()
        return Pair(workload, transport, static, [cold, azure], rounds, (load_before, os.getloadavg()[0]))

    async def backlog(self, session: aiohttp.ClientSession) -> None:
        count = self.args.backlog
        runs = self.scratch / "backlog-runs.txt"
        name = f"backlog-{uuid.uuid4().hex[:6]}"
        async with QueueClient.from_connection_string(self.azurite.connection_string, name) as queue:
            await queue.create_queue()
            keys = [f"m{i}" for i in range(count)]
            for start in range(0, count, 100):
                await asyncio.gather(*(queue.send_message(base64.b64encode(k.encode()).decode())
                                       for k in keys[start:start + 100]))
            env = self.env("io", f"backlog-{uuid.uuid4().hex[:8]}", RUNS_FILE=str(runs))
            env["IO_QUEUE"] = name
            host = Host(self.scratch, env, {"concurrency": {"dynamicConcurrencyEnabled": True}})
            started = time.monotonic()
            try:
                await host.ready(session)
                while time.monotonic() - started < 600:
                    done = runs.read_text().count("\n") if runs.exists() else 0
                    remaining = (await queue.get_queue_properties()).approximate_message_count
                    if done >= count and remaining == 0:
                        break
                    await asyncio.sleep(0.5)
                elapsed = time.monotonic() - started
                report = (await host.report(session, "io_queue"))[0]
            finally:
                host.stop()
        seen = Counter(line.split()[0] for line in runs.read_text().splitlines())
        lost = [k for k in keys if k not in seen]
        twice = [k for k, n in seen.items() if n > 1]
        print(f"\nbacklog of {count} messages (io_queue, dynamic): drained in {elapsed:.1f} s "
              f"({count / elapsed:.1f}/s, learned concurrency {report['concurrency']}); "
              f"lost {len(lost)}, processed twice {len(twice)}")

    async def main(self) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=HTTP_CALLERS + 8)) as session:
            pairs = []
            for workload in self.args.workloads:
                for transport in self.args.transports:
                    pairs.append(await self.pair(session, workload, transport))
            for pair in pairs:
                print_table(pair)
            if self.args.backlog:
                await self.backlog(session)


def verdict(throughput_ratio: float, p99_ratio: float) -> str:
    return "meets" if throughput_ratio >= 0.9 and p99_ratio <= 2.0 else "misses"


def print_table(pair: Pair) -> None:
    static = pair.static
    t_star = max(r.throughput for r in static)
    best = next(r for r in static if r.throughput >= 0.98 * t_star)
    p_star = best.p99_ms
    print(f"\n{pair.workload} over {pair.transport}: T* = {t_star:.1f}/s, C* = {best.label.split()[-1]}, "
          f"P* = {p_star:.1f} ms (load average {pair.load[0]:.1f} -> {pair.load[1]:.1f})")
    print(f"  {'run':<26} {'per s':>8} {'x T*':>6} {'p99 ms':>8} {'x P*':>6} {'limit':>6} {'0.9 T* after':>13}")
    for result in static + pair.dynamic:
        reached = f"{result.reached_after:.0f} s" if result.reached_after is not None else "-"
        mark = ""
        if result not in static:
            mark = "  " + verdict(result.throughput / t_star, result.p99_ms / p_star)
        else:
            reached = ""
        print(f"  {result.label:<26} {result.throughput:8.1f} {result.throughput / t_star:6.2f} "
              f"{result.p99_ms:8.1f} {result.p99_ms / p_star:6.2f} {result.limit or '':>6} {reached:>13}{mark}")
    if not pair.rounds:
        return
    print(f"  alternating slices (same load): static {best.label.split()[-1]} vs dynamic restarted from its snapshot")
    throughput_ratios, p99_ratios = [], []
    for index, (fixed, learned) in enumerate(pair.rounds, 1):
        throughput_ratios.append(learned.throughput / fixed.throughput)
        p99_ratios.append(learned.p99_ms / fixed.p99_ms if fixed.p99_ms else math.inf)
        reached = f"{learned.reached_after:.0f} s" if learned.reached_after is not None else "not"
        print(f"    round {index}: static {fixed.throughput:6.1f}/s p99 {fixed.p99_ms:7.1f} ms | dynamic "
              f"{learned.throughput:6.1f}/s p99 {learned.p99_ms:7.1f} ms limit {learned.limit}, 0.9 x static "
              f"{reached} -> {throughput_ratios[-1]:.2f} x, p99 {p99_ratios[-1]:.2f} x")
    throughput, p99 = statistics.median(throughput_ratios), statistics.median(p99_ratios)
    print(f"    median of {len(pair.rounds)}: {throughput:.2f} x static throughput "
          f"(spread {min(throughput_ratios):.2f}-{max(throughput_ratios):.2f}), p99 {p99:.2f} x: "
          f"{verdict(throughput, p99)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="io,cpu", type=lambda s: s.split(","))
    parser.add_argument("--transports", default="http,queue", type=lambda s: s.split(","))
    parser.add_argument("--static", type=lambda s: [int(x) for x in s.split(",")],
                        help="static levels (default 1,2,4,8,16,32,64; --full adds 3,6,12)")
    parser.add_argument("--point-seconds", type=float, help="measured seconds per static point (3; --full 6)")
    parser.add_argument("--dynamic-seconds", type=float, default=40.0, help="cold run; the last 10 s are measured")
    parser.add_argument("--azure-seconds", type=float, default=30.0, help="Azure's algorithm alone, from cold")
    parser.add_argument("--rounds", type=int, help="alternating static/snapshot slice pairs (2; --full 5)")
    parser.add_argument("--slice-seconds", type=float, default=9.0,
                        help="each alternating slice, 1 s of it warm-up (the snapshot target is 10 s)")
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--full", action="store_true", help="the whole sweep, longer points, 5 rounds")
    parser.add_argument("--trace", action="store_true", help="print the learned limit each second of dynamic runs")
    args = parser.parse_args()
    if args.static is None:
        args.static = [1, 2, 3, 4, 6, 8, 12, 16, 32, 64] if args.full else [1, 2, 4, 8, 16, 32, 64]
    if args.point_seconds is None:
        args.point_seconds = 6.0 if args.full else 3.0
    if args.rounds is None:
        args.rounds = 5 if args.full else 2
    with tempfile.TemporaryDirectory() as scratch:
        azurite = AzuriteServer(Path(scratch) / "azurite").start()
        try:
            asyncio.run(Bench(args, Path(scratch), azurite).main())
        finally:
            azurite.stop()


if __name__ == "__main__":
    main()
