"""Background services of the local environment: the operator and the pod runner.

`funcplane dev up` starts each as a process of the cluster (recorded in its ``state.json``, log in
``logs/<service>.log``), so the environment keeps running after the command returns and
`funcplane dev down` stops it with the cluster:

- ``operator``: `funcplane-operator` for every namespace, kept running as a kubelet keeps a
  container: an exit (a lost Lease ends the process with status 3 by design) is logged and the
  operator is started again with a doubling back-off.
- ``pods``: the pod runner for every namespace (real hosts at the pods' IPs); on SIGTERM it drains
  and stops its hosts.

Run as ``python -m funcplane_dev.services operator|pods --directory DIR [-- OPERATOR ARGS...]``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

LOG = logging.getLogger("funcplane.services")
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# A child that ran this long before exiting starts its next back-off from the beginning again.
HEALTHY_RUN = 60.0


def operator_command() -> str:
    return str(Path(sys.executable).with_name("funcplane-operator"))


class Supervisor:
    """Keeps one child process running: every exit is reported, then the child is started again.

    `open_log(n)` gives the n-th start's output file; `report` receives one line per exit and
    restart. `stop()` ends the child with SIGTERM (SIGKILL after `timeout`) and supervision with
    it; `kill()` ends it with SIGKILL, as a crash would, without a restart.
    """

    def __init__(self, argv: Sequence[str], *, open_log: Callable[[int], IO[bytes]],
                 report: Callable[[str], None], env: dict[str, str] | None = None) -> None:
        self.argv, self.env = list(argv), env
        self._open_log, self._report = open_log, report
        self.starts = 0
        self.exits: list[int] = []           # statuses of the exits that were followed by a restart
        self.process: subprocess.Popen[bytes] | None = None
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"supervise-{Path(self.argv[0]).name}", daemon=True)

    def start(self) -> "Supervisor":
        with self._lock:
            self._launch()
        self._thread.start()
        return self

    def _launch(self) -> None:
        self.starts += 1
        with self._open_log(self.starts) as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while True:
            process = self.process
            assert process is not None
            started = time.monotonic()
            status = process.wait()
            if self._ended.is_set():
                return
            if time.monotonic() - started >= HEALTHY_RUN:
                backoff = FIRST_BACKOFF
            self.exits.append(status)
            self._report(f"{Path(self.argv[0]).name} (pid {process.pid}) exited with status {status}; "
                         f"starting it again in {backoff:.0f}s (restart {len(self.exits)})")
            if self._ended.wait(backoff):
                return
            with self._lock:
                if self._ended.is_set():
                    return
                self._launch()
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _end(self, signum: int, timeout: float) -> int | None:
        with self._lock:
            self._ended.set()
            process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return process.returncode

    def stop(self, timeout: float = 30.0) -> int | None:
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        return self._end(signal.SIGKILL, 10.0)


def _say(text: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{stamp} [supervisor] {text}", flush=True)


def _until_terminated() -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def run_operator(operator_args: Sequence[str]) -> int:
    """Keep the operator running (stdout is the service's log) until SIGTERM."""
    supervisor = Supervisor([operator_command(), *operator_args], report=_say,
                            open_log=lambda _: open(sys.stdout.fileno(), "wb", closefd=False))
    supervisor.start()
    _say(f"started the operator (pid {supervisor.process.pid if supervisor.process else '?'})")
    _until_terminated()
    status = supervisor.stop()
    _say(f"stopped the operator (status {status})")
    return 0


def run_pods(directory: Path) -> int:
    """Run real hosts for the funcplane pods of every namespace until SIGTERM."""
    from .cluster import LocalCluster
    from .podrunner import PodRunner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    cluster = LocalCluster.named(directory.name, directory=directory)
    if not cluster.reload():
        print(f"no cluster in {directory}", file=sys.stderr)
        return 1
    runner = PodRunner(cluster, None, directory / "pods").start()
    _until_terminated()
    runner.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m funcplane_dev.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", choices=["operator", "pods"])
    parser.add_argument("--directory", type=Path, required=True, help="the cluster directory")
    given = list(sys.argv[1:] if argv is None else argv)
    split = given.index("--") if "--" in given else len(given)
    args = parser.parse_args(given[:split])
    if args.service == "operator":
        return run_operator(given[split + 1:])
    return run_pods(args.directory)


if __name__ == "__main__":
    sys.exit(main())
