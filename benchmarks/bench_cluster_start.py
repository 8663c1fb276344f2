"""Cold start of the local control plane with cached binaries, against etcd alone.

etcd alone is the floor any cluster start pays, measured in the same run, so the ratio says how
much the rest of the control plane (API server readiness, controllers, scheduler, kwok, nodes
Ready) adds on this machine. Also prints the one-time build time recorded for each component.
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

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / part) for part in ("operator", "dev")]

from funcplane_dev import binaries  # noqa: E402
from funcplane_dev.cluster import LocalCluster, free_port  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def etcd_alone(etcd: Path, workdir: Path) -> float:
    client, peer = free_port(), free_port()
    started = time.monotonic()
    process = subprocess.Popen([str(etcd), "--data-dir", str(workdir / "etcd"), "--unsafe-no-fsync",
                                "--listen-client-urls", f"http://127.0.0.1:{client}",
                                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                "--initial-cluster", f"default=http://127.0.0.1:{peer}", "--log-level", "error"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.02)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    bins = binaries.ensure_all()
    cluster_times, etcd_times = [], []
    for run in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            etcd_times.append(etcd_alone(bins["etcd"] / "etcd", Path(tmp)))
            cluster = LocalCluster.named(f"bench-{run}", directory=Path(tmp) / "cluster")
            started = time.monotonic()
            cluster.up(reuse=False)
            cluster_times.append(time.monotonic() - started)
            cluster.down()
    cluster_median, etcd_median = statistics.median(cluster_times), statistics.median(etcd_times)
    print(f"cluster cold start (binaries cached, 3 kwok nodes Ready), {RUNS} runs: "
          f"median {cluster_median:.2f}s, min {min(cluster_times):.2f}s, max {max(cluster_times):.2f}s")
    print(f"baseline etcd alone: median {etcd_median:.2f}s")
    print(f"ratio cluster/etcd-alone: {cluster_median / etcd_median:.1f}x")
    for component in binaries.COMPONENTS.values():
        manifest = component.directory / binaries.MANIFEST
        if manifest.exists():
            seconds = json.loads(manifest.read_text()).get("build_seconds")
            print(f"one-time build {component.name} {component.version}: {seconds}s (this cache; Go build cache may have been warm)")


if __name__ == "__main__":
    main()
