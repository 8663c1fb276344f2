"""`funcplane dev ...`: the local control plane and its binaries."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..devcluster import binaries, images
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

    imgs = dev_sub.add_parser("images", help="build the host, Python worker and operator images with podman")
    imgs.add_argument("names", nargs="*", metavar="IMAGE", help=f"one of {', '.join(images.IMAGES)} (default: all)")
    imgs.add_argument("--registry", default=images.DEFAULT_REGISTRY, help="image names' prefix (default: %(default)s)")
    imgs.add_argument("--tag", default=images.VERSION, help="image tag (default: %(default)s)")
    imgs.set_defaults(handler=_images)


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


def _images(args: argparse.Namespace) -> int:
    started = time.monotonic()
    built = images.build_all(tuple(args.names) or tuple(images.IMAGES), registry=args.registry, tag=args.tag)
    for image in built:
        print(f"{image.reference}: {image.size} (built in {image.seconds:.1f}s)")
    print(f"images ready in {time.monotonic() - started:.1f}s")
    return 0


ERRORS = (ClusterError, binaries.BinaryError, images.ImageError)
