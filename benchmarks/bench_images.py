"""The images: sizes, a rebuild with nothing changed, and the host image's start to ready.

Start to ready is measured for the host image (podman run of an app with the Python worker image
mounted at /siteextensions/python, to /readyz answering 200) against the same host and worker run
as local processes from the checkout in the same run: the ratio is what the container costs.
A cold build (base included) is measured by hand: see the README's figures.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "dev")]

from funcplane_dev import images  # noqa: E402
from funcplane_dev.cluster import free_port  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
APP = REPO / "examples" / "apps" / "hello-v2"
HOST = Path(sys.executable).parent / "funcplane-host"


def _wait_ready(port: int, give_up: float = 120.0) -> None:
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"no ready host on port {port} after {give_up:.0f}s")


def container_start(host: str, worker: str, workers_json: Path) -> float:
    port = free_port()
    name = f"funcplane-bench-{port}"
    started = time.monotonic()
    subprocess.run([*images.PODMAN, "run", "--detach", "--name", name, *images.ULIMITS, "--read-only",
                    "--tmpfs", "/tmp:rw,mode=1777", "--publish", f"127.0.0.1:{port}:8080",
                    "--volume", f"{APP}:/home/site/wwwroot:ro",
                    "--mount", f"type=image,source={worker},destination=/siteextensions/python",
                    "--volume", f"{workers_json}:/etc/funcplane/workers/workers.json:ro",
                    "--env", "FUNCPLANE_WORKER_CONFIG=/etc/funcplane/workers/workers.json",
                    "--env", "FUNCTIONS_WORKER_RUNTIME=python", host], check=True, capture_output=True)
    try:
        _wait_ready(port)
        return time.monotonic() - started
    finally:
        subprocess.run([*images.PODMAN, "rm", "--force", "--time", "10", name], capture_output=True)


def process_start(scratch: Path) -> float:
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen([str(HOST), "--app", str(APP), "--bind", "127.0.0.1", "--port", str(port),
                                "--workers-dir", str(REPO / "host-image" / "workers")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=scratch,
                               env={"PATH": str(HOST.parent), "FUNCTIONS_WORKER_RUNTIME": "python"})
    try:
        _wait_ready(port)
        return time.monotonic() - started
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    started = time.monotonic()
    built = images.build_all()
    rebuild = time.monotonic() - started
    for image in built:
        print(f"{image.reference}: {image.size}")
    print(f"build of all images (cached when nothing changed): {rebuild:.1f}s")
    references = {image.spec.name: image.reference for image in built}
    with tempfile.TemporaryDirectory() as scratch:
        workers_json = Path(scratch) / "workers.json"
        workers_json.write_text(json.dumps({"workers": {"python": {"path": "/siteextensions/python",
                                                                   "enabled": True, "language": "python"}}}))
        workers_json.chmod(0o644)
        containers = [container_start(references["host"], references["python-worker"], workers_json)
                      for _ in range(RUNS)]
        processes = [process_start(Path(scratch)) for _ in range(RUNS)]
    in_container, alone = statistics.median(containers), statistics.median(processes)
    print(f"host image start to ready, median of {RUNS}: {in_container:.2f}s "
          f"(min {min(containers):.2f}, max {max(containers):.2f}); "
          f"same host as a local process: {alone:.2f}s; ratio x{in_container / alone:.2f}")


if __name__ == "__main__":
    main()
