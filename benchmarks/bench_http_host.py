"""HTTP trigger round trip through funcplane-host + the bundled Python worker, against a plain
ASGI hello-world on uvicorn measured in the same run.

    .venv/bin/python benchmarks/bench_http_host.py [--seconds 5] [--concurrency 1,16,64] [--rounds 6]

Needs: the project venv (aiohttp, uvicorn from the `test` extra). Installs nothing. The load
generator is an asyncio aiohttp client with keep-alive connections, one per concurrent caller.
The two servers are measured in alternating slices so that both see the same machine load.
Prints throughput, p50 and p99 per concurrency and the host/plain ratios with their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

HELLO_CODE = """import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("Hello, world!")
"""


def write_app(app_root: Path, route: str, method: str, code: str) -> None:
    """A host.json app with one anonymous HTTP function at /api/<route> (folder <route>)."""
    function = app_root / route
    function.mkdir(parents=True)
    (app_root / "host.json").write_text('{"version": "2.0"}')
    (function / "__init__.py").write_text(code)
    (function / "function.json").write_text(json.dumps({
        "scriptFile": "__init__.py",
        "bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous",
             "methods": [method], "route": route},
            {"type": "http", "direction": "out", "name": "$return"},
        ],
    }))


ASGI_APP = """async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


@dataclass
class Sample:
    """Latencies (seconds) of the requests of one or more measurement slices, and their time."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Sample) -> None:
        self.latencies.extend(other.latencies)
        self.seconds += other.seconds

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000


async def measure(session: aiohttp.ClientSession, url: str, concurrency: int, seconds: float) -> Sample:
    """`concurrency` callers on keep-alive connections for `seconds`."""
    sample = Sample()

    async def caller(until: float) -> None:
        while True:
            started = time.perf_counter()
            if started >= until:
                return
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            sample.latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller(began + seconds) for _ in range(concurrency)))
    sample.seconds = time.perf_counter() - began
    return sample


async def compare(plain_url: str, host_url: str, concurrency: int, seconds: float,
                  rounds: int) -> tuple[Sample, Sample, list[tuple[float, float]]]:
    """Both servers measured in alternating slices (the machine's load drifts; each slice pair
    sees about the same load). Returns the pooled samples and each round's (p50, throughput)
    ratios host/plain."""
    plain_total, host_total, per_round = Sample(), Sample(), []
    connectors = [aiohttp.TCPConnector(limit=concurrency) for _ in range(2)]
    async with aiohttp.ClientSession(connector=connectors[0]) as plain, \
            aiohttp.ClientSession(connector=connectors[1]) as host:
        for session, url in ((plain, plain_url), (host, host_url)):  # warm up connections and caches
            await measure(session, url, concurrency, min(1.0, seconds / rounds))
        for index in range(rounds):
            order = [(plain, plain_url), (host, host_url)]
            if index % 2:
                order.reverse()
            results = {url: await measure(session, url, concurrency, seconds / rounds) for session, url in order}
            plain_round, host_round = results[plain_url], results[host_url]
            per_round.append((host_round.p50 / plain_round.p50, host_round.throughput / plain_round.throughput))
            plain_total.add(plain_round)
            host_total.add(host_round)
    return plain_total, host_total, per_round


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


async def run(seconds: float, levels: list[int], rounds: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_app(root / "app", "hello", "get", HELLO_CODE)
        (root / "plain_asgi.py").write_text(ASGI_APP)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNCPLANE_", "FUNCTIONS_"))}
        host_port, plain_port = free_port(), free_port()
        host = start([str(BIN / "funcplane-host"), "--app", str(root / "app"), "--bind", "127.0.0.1",
                      "--port", str(host_port), "--worker-config", str(root / "none.json")], env, root / "host.log")
        plain = start([str(BIN / "python"), "-m", "uvicorn", "plain_asgi:app", "--app-dir", str(root),
                       "--host", "127.0.0.1", "--port", str(plain_port), "--log-level", "warning",
                       "--no-access-log"], env, root / "plain.log")
        try:
            host_url = f"http://127.0.0.1:{host_port}/api/hello"
            plain_url = f"http://127.0.0.1:{plain_port}/"
            await wait_http(f"http://127.0.0.1:{host_port}/readyz")
            await wait_http(plain_url)
            print(f"{'conc':>5} {'server':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
            results = []
            for concurrency in levels:
                plain_sample, host_sample, per_round = await compare(plain_url, host_url, concurrency, seconds,
                                                                     rounds)
                for name, sample in (("plain", plain_sample), ("host", host_sample)):
                    print(f"{concurrency:>5} {name:>8} {sample.throughput:>9.0f} {sample.p50:>8.2f} "
                          f"{sample.percentile(0.99):>8.2f}")
                results.append((concurrency, plain_sample, host_sample, per_round))
            print()
            print(f"ratios host/plain over {rounds} alternating rounds: pooled (spread of the rounds)")
            for concurrency, plain_sample, host_sample, per_round in results:
                p50s, throughputs = [r[0] for r in per_round], [r[1] for r in per_round]
                print(f"  c={concurrency:<3} p50 x{host_sample.p50 / plain_sample.p50:.2f} "
                      f"({min(p50s):.2f}-{max(p50s):.2f})  "
                      f"p99 x{host_sample.percentile(0.99) / plain_sample.percentile(0.99):.2f}  "
                      f"throughput {100 * host_sample.throughput / plain_sample.throughput:.0f}% of plain "
                      f"({100 * min(throughputs):.0f}-{100 * max(throughputs):.0f}%)")
            by_level = {r[0]: r for r in results}
            if 1 in by_level:
                ratio = by_level[1][2].p50 / by_level[1][1].p50
                print(f"target: host p50 <= 2.0x plain at concurrency 1 -> x{ratio:.2f} "
                      f"({'meets' if ratio <= 2.0 else 'misses'})")
            if 64 in by_level:
                share = by_level[64][2].throughput / by_level[64][1].throughput
                print(f"target: host throughput >= 40% of plain at concurrency 64 -> {100 * share:.0f}% "
                      f"({'meets' if share >= 0.4 else 'misses'})")
        finally:
            stop(host)
            stop(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per server and level")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated caller counts")
    parser.add_argument("--rounds", type=int, default=6, help="alternating measurement slices per level")
    options = parser.parse_args()
    asyncio.run(run(options.seconds, [int(c) for c in options.concurrency.split(",")], options.rounds))


if __name__ == "__main__":
    main()
