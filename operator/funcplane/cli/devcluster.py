"""`funcplane dev ...`: the local control plane and its binaries."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..devcluster import azurite, binaries
from ..devcluster.cluster import DEFAULT_NAME, DEFAULT_NODES, ClusterError, LocalCluster


def register(subparsers: argparse._SubParsersAction) -> None:
    dev = subparsers.add_parser("dev", help="local development: control plane and binaries")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)

    cluster = dev_sub.add_parser("cluster", help="a real local control plane with kwok nodes")
    cluster.add_argument("action", choices=["up", "down", "status", "kubeconfig"])
    cluster.add_argument("--name", default=DEFAULT_NAME, help="cluster name (default: %(default)s)")
    cluster.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="simulated nodes (default: %(default)s)")
    cluster.add_argument("--fresh", action="store_true", help="replace a running cluster instead of reusing it")
    cluster.set_defaults(handler=_cluster)

    bins = dev_sub.add_parser("binaries", help="build (once) and verify the cached cluster binaries")
    bins.add_argument("components", nargs="*", metavar="COMPONENT",
                      help=f"one of {', '.join(sorted(binaries.COMPONENTS))} (default: kubernetes etcd kwok)")
    bins.set_defaults(handler=_binaries)

    storage = dev_sub.add_parser("azurite", help="install (once) the Azure Storage emulator; --run serves it")
    storage.add_argument("--run", metavar="DATA_DIR", help="also run it on loopback with its data in DATA_DIR")
    storage.set_defaults(handler=_azurite)


def _cluster(args: argparse.Namespace) -> int:
    if args.action == "up":
        started = time.monotonic()
        cluster = LocalCluster.named(args.name, args.nodes).up(reuse=not args.fresh)
        print(f"cluster {cluster.name} is up in {time.monotonic() - started:.1f}s: {cluster.server}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    cluster = LocalCluster.load(args.name)
    if cluster is None:
        print(f"no cluster named {args.name!r} (start one with `funcplane dev cluster up`)", file=sys.stderr)
        return 0 if args.action == "down" else 1
    if args.action == "down":
        cluster.down()
        print(f"cluster {args.name} stopped and removed")
    elif args.action == "kubeconfig":
        print(cluster.kubeconfig)
    else:
        status = cluster.status()
        print(json.dumps(status, indent=2))
        return 0 if status["apiserver_ready"] and not cluster.crashed() else 1
    return 0


def _binaries(args: argparse.Namespace) -> int:
    wanted = tuple(args.components) or ("kubernetes", "etcd", "kwok")
    unknown = sorted(set(wanted) - set(binaries.COMPONENTS))
    if unknown:
        raise binaries.BinaryError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(sorted(binaries.COMPONENTS))}")
    for name, path in binaries.ensure_all(wanted).items():
        print(f"{name} {binaries.COMPONENTS[name].version}: {path}")
    return 0


def _azurite(args: argparse.Namespace) -> int:
    print(f"azurite {azurite.AZURITE_VERSION}: {azurite.ensure_installed()}")
    if args.run:
        server = azurite.AzuriteServer(Path(args.run)).start()
        print(f"AzureWebJobsStorage={server.connection_string}")
        try:
            server.process.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            server.stop()
    return 0


ERRORS = (ClusterError, binaries.BinaryError, azurite.AzuriteError)
