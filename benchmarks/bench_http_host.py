"""HTTP trigger round trip through funcplane-host + the bundled Python worker, against a plain
ASGI hello-world on uvicorn measured in the same run.

    .venv/bin/python benchmarks/bench_http_host.py [--seconds 5] [--concurrency 1,16,64]

Needs: the project venv (aiohttp, uvicorn from the `test` extra). Installs nothing. The load
generator is an asyncio aiohttp client with keep-alive connections, one per concurrent caller.
Prints throughput, p50 and p99 per concurrency and the host/plain ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

FUNCTION_JSON = """{
  "scriptFile": "__init__.py",
  "bindings": [
    {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous", "methods": ["get"],
     "route": "hello"},
    {"type": "http", "direction": "out", "name": "$return"}
  ]
}
"""
FUNCTION_CODE = """import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("Hello, world!")
"""
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


async def measure(url: str, concurrency: int, seconds: float) -> tuple[float, float, float]:
    """Requests/second, p50 and p99 latency (ms) for `concurrency` callers over `seconds`."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def caller(until: float, record: bool) -> None:
            while True:
                started = time.perf_counter()
                if started >= until:
                    return
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                if record:
                    latencies.append(time.perf_counter() - started)

        warm_until = time.perf_counter() + min(1.0, seconds / 3)
        await asyncio.gather(*(caller(warm_until, False) for _ in range(concurrency)))
        began = time.perf_counter()
        await asyncio.gather(*(caller(began + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return len(latencies) / elapsed, p50, p99


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


async def run(seconds: float, levels: list[int]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        function = root / "app" / "hello"
        function.mkdir(parents=True)
        (root / "app" / "host.json").write_text('{"version": "2.0"}')
        (function / "function.json").write_text(FUNCTION_JSON)
        (function / "__init__.py").write_text(FUNCTION_CODE)
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
            ratios = []
            for concurrency in levels:
                plain_result = await measure(plain_url, concurrency, seconds)
                host_result = await measure(host_url, concurrency, seconds)
                for name, (rps, p50, p99) in (("plain", plain_result), ("host", host_result)):
                    print(f"{concurrency:>5} {name:>8} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f}")
                ratios.append((concurrency, plain_result, host_result))
            print()
            print("ratios host/plain (latency: lower is better; throughput: plain/host)")
            for concurrency, plain_result, host_result in ratios:
                print(f"  c={concurrency:<3} p50 x{host_result[1] / plain_result[1]:.2f}  "
                      f"p99 x{host_result[2] / plain_result[2]:.2f}  "
                      f"throughput plain/host x{plain_result[0] / host_result[0]:.2f}")
            c1 = next((r for r in ratios if r[0] == 1), None)
            if c1 is not None:
                ratio = c1[2][1] / c1[1][1]
                verdict = "meets" if ratio <= 3 else "misses"
                print(f"target: host p50 <= 3x plain at concurrency 1 -> x{ratio:.2f} ({verdict})")
        finally:
            stop(host)
            stop(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per server and level")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated caller counts")
    options = parser.parse_args()
    asyncio.run(run(options.seconds, [int(c) for c in options.concurrency.split(",")]))


if __name__ == "__main__":
    main()
