"""Peak memory of funcplane-host under concurrent large uploads, against the bytes uploaded.

    .venv/bin/python benchmarks/bench_http_upload_memory.py [--uploads 8] [--megabytes 50]

Starts a host (default host.json: 100 MB body limit, 100 MB of body memory) with a function that
answers with the size of the body it got, posts the uploads all at once, and reads the host
process's peak resident set (VmHWM) from /proc. Prints the peak, the host's resident set before
the uploads, and peak / (uploads x size): below 1.0 means the host never held all bodies at once.
Linux only (reads /proc). Installs nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from bench_http_host import BIN, free_port, start, stop, wait_http, write_app

MB = 1024 * 1024
UPLOAD_CODE = """import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(str(len(req.get_body())))
"""


def resident_kib(pid: int, field: str) -> int:
    """A VmRSS/VmHWM figure of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


async def upload_all(url: str, body: bytes, uploads: int) -> list[tuple[int, str]]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one() -> tuple[int, str]:
            async with session.post(url, data=body) as response:
                return response.status, await response.text()
        return await asyncio.gather(*(one() for _ in range(uploads)))


async def run(uploads: int, megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_app(root / "app", "upload", "post", UPLOAD_CODE)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNCPLANE_", "FUNCTIONS_"))}
        port = free_port()
        host = start([str(BIN / "funcplane-host"), "--app", str(root / "app"), "--bind", "127.0.0.1",
                      "--port", str(port), "--worker-config", str(root / "none.json")], env, root / "host.log")
        try:
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            before = resident_kib(host.pid, "VmRSS")
            body = os.urandom(MB) * megabytes
            started = time.perf_counter()
            replies = await upload_all(f"http://127.0.0.1:{port}/api/upload", body, uploads)
            elapsed = time.perf_counter() - started
            peak = resident_kib(host.pid, "VmHWM")
        finally:
            stop(host)
        wrong = [reply for reply in replies if reply != (200, str(len(body)))]
        if wrong:
            raise RuntimeError(f"{len(wrong)} uploads failed, e.g. {wrong[0][0]} {wrong[0][1][:200]}")
        uploaded_mib = uploads * megabytes
        print(f"{uploads} concurrent uploads of {megabytes} MiB in {elapsed:.1f}s")
        print(f"host RSS before: {before / 1024:.0f} MiB, peak: {peak / 1024:.0f} MiB, uploaded: {uploaded_mib} MiB")
        print(f"ratio peak host RSS / ({uploads} x {megabytes} MiB): {peak / 1024 / uploaded_mib:.2f} "
              f"(growth over the idle host: {(peak - before) / 1024 / uploaded_mib:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8, help="concurrent uploads")
    parser.add_argument("--megabytes", type=int, default=50, help="size of each upload in MiB")
    options = parser.parse_args()
    asyncio.run(run(options.uploads, options.megabytes))


if __name__ == "__main__":
    main()
