"""`funcplane-operator`: the operator process.

Every replica serves /metrics and /healthz and competes for the leader Lease; only the holder runs
kopf. On SIGTERM/SIGINT the leader stops kopf, waits for running handlers, releases the Lease (a
standby then takes over at its next poll) and exits 0. A leader that cannot renew in time stops
reconciling and exits with status 3 (EXIT_LEASE_LOST) so that it is restarted as a standby.

Every flag has an environment variable (FUNCPLANE_<FLAG>, e.g. FUNCPLANE_METRICS_PORT); the flag
wins. FUNCPLANE_NAMESPACES takes a comma-separated list.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from funcplane.controllers import runtime_auth, runtime_kopf, runtime_logging
from funcplane.controllers.leader import EXIT_LEASE_LOST, LeadershipWatchdog, LeaseElector, LeaseTiming
from funcplane.controllers.metrics import serve_endpoints

logger = logging.getLogger("funcplane.runtime")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
EXIT_OPERATOR_FAILED = 1
# How long a clean shutdown waits for running handlers before giving up on releasing the Lease.
SHUTDOWN_GRACE = 20.0


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...]
    clusterwide: bool
    kubeconfig: Path | None
    metrics_port: int
    health_port: int
    bind_address: str
    lease_name: str
    lease_namespace: str
    identity: str
    timing: LeaseTiming
    handlers: str
    workers: int
    log_format: str
    log_level: str


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"FUNCPLANE_{name}", default)


def _default_identity() -> str:
    # In a pod the Deployment passes POD_NAME; elsewhere the pid keeps two local processes apart.
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _default_lease_namespace() -> str | None:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return None


def parser() -> argparse.ArgumentParser:
    kubeconfig = _env("KUBECONFIG") or os.environ.get("KUBECONFIG")
    p = argparse.ArgumentParser(prog="funcplane-operator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", metavar="NAME",
                       help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch every namespace (cluster scope)")
    p.add_argument("--kubeconfig", type=Path, default=Path(kubeconfig) if kubeconfig else None,
                   help="kubeconfig file (default: the pod's service account)")
    p.add_argument("--metrics-port", type=int, default=int(_env("METRICS_PORT", "8080") or 8080))
    p.add_argument("--health-port", type=int, default=int(_env("HEALTH_PORT", "8081") or 8081))
    # Loopback unless told otherwise: on the local cluster the pod CIDR is local, and a wildcard
    # listener on 8080 would answer for every pod's IP. The Helm chart sets 0.0.0.0 (probes, scrapes).
    p.add_argument("--bind-address", default=_env("BIND_ADDRESS", "127.0.0.1"),
                   help="address the metrics and health endpoints listen on (default: %(default)s)")
    p.add_argument("--lease-name", default=_env("LEASE_NAME", "funcplane-operator"))
    p.add_argument("--lease-namespace", default=_env("LEASE_NAMESPACE") or _default_lease_namespace(),
                   help="namespace of the Lease (default: the pod's namespace, else the first --namespace)")
    p.add_argument("--identity", default=_env("IDENTITY") or _default_identity(),
                   help="this replica's name in the Lease (default: $POD_NAME, else host-pid)")
    p.add_argument("--lease-duration", type=int, default=int(_env("LEASE_DURATION", "15") or 15),
                   help="seconds a standby waits after the last renewal it saw before taking over")
    p.add_argument("--renew-deadline", type=float, default=float(_env("RENEW_DEADLINE", "10") or 10),
                   help="seconds after its last renewal the leader counts as leading; a late renewal is "
                        "accepted for (lease-duration - renew-deadline) / 2 more seconds")
    p.add_argument("--retry-period", type=float, default=float(_env("RETRY_PERIOD", "2") or 2),
                   help="seconds between renewals (leader) and polls (standby)")
    p.add_argument("--handlers", default=_env("HANDLERS", runtime_kopf.DEFAULT_HANDLERS),
                   help="module that registers the kopf handlers")
    p.add_argument("--workers", type=int, default=int(_env("WORKERS", "8") or 8),
                   help="threads for synchronous handlers")
    p.add_argument("--log-format", choices=runtime_logging.LOG_FORMATS, default=_env("LOG_FORMAT", "json"))
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    return p


def _scope(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[tuple[str, ...], bool]:
    """Namespaces to watch and whether to watch all; flags win over FUNCPLANE_NAMESPACES/ALL_NAMESPACES."""
    if args.namespaces or args.all_namespaces:
        return tuple(args.namespaces or ()), args.all_namespaces
    namespaces = tuple(n.strip() for n in (_env("NAMESPACES") or "").split(",") if n.strip())
    clusterwide = (_env("ALL_NAMESPACES") or "").lower() in ("1", "true", "yes")
    if namespaces and clusterwide:
        p.error("FUNCPLANE_NAMESPACES and FUNCPLANE_ALL_NAMESPACES exclude each other: set one")
    if not namespaces and not clusterwide:
        p.error("choose a scope: --namespace NAME (repeatable) or --all-namespaces "
                "(or FUNCPLANE_NAMESPACES=a,b / FUNCPLANE_ALL_NAMESPACES=true)")
    return namespaces, clusterwide


def parse_options(argv: Sequence[str] | None = None) -> Options:
    p = parser()
    args = p.parse_args(argv)
    namespaces, clusterwide = _scope(p, args)
    lease_namespace = args.lease_namespace or (namespaces[0] if namespaces else None)
    if not lease_namespace:
        p.error("--lease-namespace is required with --all-namespaces outside a pod")
    try:
        timing = LeaseTiming(args.lease_duration, args.renew_deadline, args.retry_period)
    except ValueError as error:
        p.error(str(error))
    for flag, port in (("--metrics-port", args.metrics_port), ("--health-port", args.health_port)):
        if not 0 <= port <= 65535:
            p.error(f"{flag} {port}: use a TCP port between 0 and 65535")
    if args.workers < 1:
        p.error(f"--workers {args.workers}: use at least 1")
    return Options(
        namespaces=namespaces, clusterwide=clusterwide, kubeconfig=args.kubeconfig,
        metrics_port=args.metrics_port, health_port=args.health_port, bind_address=args.bind_address,
        lease_name=args.lease_name, lease_namespace=lease_namespace, identity=args.identity,
        timing=timing, handlers=args.handlers, workers=args.workers,
        log_format=args.log_format, log_level=args.log_level)


class Runtime:
    """Campaigns for the Lease and runs kopf while (and only while) it is held."""

    def __init__(self, options: Options, configuration: client.Configuration) -> None:
        self.options = options
        self.configuration = configuration
        self.shutdown = asyncio.Event()
        self.kopf_exited = asyncio.Event()
        self.kopf: runtime_kopf.KopfThread | None = None
        # Imported up front so that a broken handlers module fails the start, not the takeover.
        self.registry = runtime_kopf.load_registry(options.handlers)
        runtime_auth.register_login(self.registry, configuration)
        self.elector = LeaseElector(
            client.CoordinationV1Api(client.ApiClient(configuration)),
            name=options.lease_name, namespace=options.lease_namespace,
            identity=options.identity, timing=options.timing)
        self.watchdog = LeadershipWatchdog(self.elector.deadline, grace=options.timing.stop_grace)

    def health(self) -> tuple[bool, dict[str, object]]:
        """Live when the API was reached recently (standby) or kopf's loop is beating (leader)."""
        timing = self.options.timing
        now = time.monotonic()
        contact = self.elector.last_contact
        details: dict[str, object] = {
            "identity": self.options.identity, "leader": self.elector.leading, "holder": self.elector.holder,
            "seconds_since_api_contact": None if contact is None else round(now - contact, 1),
        }
        if self.kopf is not None:
            details["operator_ready"] = self.kopf.ready.is_set()
            details["operator_running"] = self.kopf.running
            return self.kopf.running and self.kopf.beating(within=10.0), details
        # A standby is fine while it keeps talking to the API; give it several lease durations.
        recent = contact is None or now - contact < 3 * timing.lease_duration
        return recent, details

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_shutdown, signum)
        opts = self.options
        runners = await serve_endpoints(host=opts.bind_address, metrics_port=opts.metrics_port,
                                        health_port=opts.health_port, health=self.health)
        logger.info("operator starting", extra={
            "namespaces": list(opts.namespaces) or "*", "lease": f"{opts.lease_namespace}/{opts.lease_name}",
            "metrics_port": opts.metrics_port, "health_port": opts.health_port})
        try:
            if not await self.elector.acquire(self.shutdown):
                return 0
            return await self._lead()
        finally:
            for runner in runners:
                await runner.cleanup()

    def _request_shutdown(self, signum: int) -> None:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        self.shutdown.set()

    async def _lead(self) -> int:
        settings = runtime_kopf.operator_settings(
            identity=self.options.identity, clusterwide=self.options.clusterwide, workers=self.options.workers)
        self.watchdog.start()
        # Every task the leader waits on exists before kopf starts (see runtime_kopf's docstring).
        holding = asyncio.create_task(self.elector.hold(), name="lease renewal")
        shutting_down = asyncio.create_task(self.shutdown.wait(), name="shutdown signal")
        kopf_exited = asyncio.create_task(self.kopf_exited.wait(), name="operator exit")
        self.kopf = runtime_kopf.KopfThread(
            registry=self.registry, settings=settings, namespaces=self.options.namespaces,
            clusterwide=self.options.clusterwide, on_exit=self.kopf_exited)
        self.kopf.start()
        await asyncio.wait({holding, shutting_down, kopf_exited}, return_when=asyncio.FIRST_COMPLETED)
        shutting_down.cancel()
        kopf_exited.cancel()
        self.kopf.stop()
        if holding.done():
            # Leadership is gone: stop before the Lease can expire for the others, whatever it takes.
            drained = await self.kopf.drained(timeout=self.options.timing.stop_grace)
            logger.error("lost the lease: exiting so that nothing reconciles (%s)",
                         "handlers had finished" if drained else "running handlers end with the process")
            return EXIT_LEASE_LOST
        drained = await self.kopf.drained(timeout=SHUTDOWN_GRACE)
        if drained and self.elector.leading:
            # Nothing reconciles any more: stop renewing, then hand the Lease over.
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            await self.elector.release()
            self.watchdog.stop()
        if self.kopf.error is not None:
            return EXIT_OPERATOR_FAILED
        if not drained:
            logger.error("handlers did not finish within %.0fs; the lease is left to expire", SHUTDOWN_GRACE)
            return EXIT_OPERATOR_FAILED
        return 0


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    runtime_logging.configure(log_format=options.log_format, level=options.log_level, identity=options.identity)
    configuration = runtime_auth.load_configuration(options.kubeconfig)
    # Not asyncio.run(): its shutdown joins worker threads, and a thread stuck on an unreachable
    # API server or in a handler that ignores the stop must not keep a finished process alive.
    loop = asyncio.new_event_loop()
    code = loop.run_until_complete(Runtime(options, configuration).run())
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
