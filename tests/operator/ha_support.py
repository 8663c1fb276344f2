"""Operator replicas for the high-availability tests: a real `funcplane-operator` process each, on
its own ports, and the Lease they share. Used by the HA, runtime endpoint, kopf and Helm tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families



OPERATOR = Path(sys.executable).parent / "funcplane-operator"
LEASE = "funcplane-operator"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wall_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class Replica:
    """One operator process with its own ports, identity and JSON log file."""

    def __init__(self, identity: str, *, kubeconfig: Path, env: dict[str, str], log_dir: Path,
                 scope: list[str], lease_namespace: str, extra: tuple[str, ...] = ()) -> None:
        self.identity = identity
        self.metrics_port, self.health_port = free_port(), free_port()
        self.log_path = log_dir / f"{identity}.log"
        argv = [str(OPERATOR), *scope, "--kubeconfig", str(kubeconfig), "--identity", identity,
                "--lease-namespace", lease_namespace, "--bind-address", "127.0.0.1",
                "--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port),
                "--log-format", "json", "--log-level", "debug", *extra]
        # The handlers' own client reads KUBECONFIG; keep it on the same file as --kubeconfig.
        env = dict(env, KUBECONFIG=str(kubeconfig))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _get(self, port: int, path: str) -> tuple[int, bytes] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return None

    def metrics(self) -> dict[str, float] | None:
        """Sample name (with sorted labels) -> value; None when the process does not answer."""
        answer = self._get(self.metrics_port, "/metrics")
        if answer is None:
            return None
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(answer[1].decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return values

    def health(self) -> tuple[int, dict[str, Any]] | None:
        answer = self._get(self.health_port, "/healthz")
        return None if answer is None else (answer[0], json.loads(answer[1]))

    def reconciles(self, values: dict[str, float]) -> float:
        return sum(v for k, v in values.items() if k.startswith("funcplane_reconciles_total"))

    def log(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def reconcile_intervals(self) -> list[tuple[float, float]]:
        return [(e["started"], e["started"] + e["seconds"]) for e in self.log() if e.get("message") == "reconcile finished"]

    def logged_at(self, message: str) -> float:
        """Wall time of the first log entry with this message (fails naming the replica)."""
        for entry in self.log():
            if entry.get("message") == message:
                return wall_time(entry["time"])
        raise AssertionError(f"{self.identity} never logged {message!r}; log tail:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.identity} did not exit within {timeout}s; log tail:\n{self.log_tail()}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def lease(cluster: Any, namespace: str) -> dict[str, Any]:
    result = cluster.kubectl("-n", namespace, "get", "lease", LEASE, "-o", "json", check=False)
    return json.loads(result.stdout).get("spec", {}) if result.returncode == 0 else {}


def holder(cluster: Any, namespace: str) -> str | None:
    return lease(cluster, namespace).get("holderIdentity")
