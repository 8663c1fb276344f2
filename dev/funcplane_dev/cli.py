"""`funcplane dev ...` and `funcplane demo`: the local environment, the local control plane and its binaries.

`dev up` / `dev down` / `dev status` / `dev logs operator|pods` / `dev port-forward SERVICE` manage
the whole local environment (cluster, CRDs, operator, pod runner); `dev cluster ...` the control
plane alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from funcplane.cli.main import add_global_options

from . import azurite, binaries, demo, environment, images, realnode
from .cluster import DEFAULT_NAME, DEFAULT_NODES, ClusterError, LocalCluster


def register(subparsers: argparse._SubParsersAction) -> None:
    dev = subparsers.add_parser("dev", help="local development: control plane and binaries")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)

    cluster = dev_sub.add_parser("cluster", help="a real local control plane with kwok nodes")
    cluster.add_argument("action", choices=["up", "down", "status", "kubeconfig"])
    cluster.add_argument("--name", default=DEFAULT_NAME, help="cluster name (default: %(default)s)")
    cluster.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="simulated nodes (default: %(default)s)")
    cluster.add_argument("--fresh", action="store_true", help="replace a running cluster instead of reusing it")
    cluster.add_argument("--real-nodes", type=int, default=0, metavar="N",
                         help="real nodes (kubelet, containerd, CNI bridge; one kube-proxy) beside the simulated "
                              "ones, tainted funcplane.io/real-node (default: %(default)s; needs root)")
    cluster.set_defaults(handler=_cluster)

    def named(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--name", default=DEFAULT_NAME, help="environment (cluster) name (default: %(default)s)")
        return parser

    dev_up = named(dev_sub.add_parser("up", help="start (or reuse) the local environment: cluster, CRDs, "
                                                 "operator and pod runner, left running in the background"))
    dev_up.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="simulated nodes (default: %(default)s)")
    dev_up.add_argument("--fresh", action="store_true", help="replace a running cluster instead of reusing it")
    dev_up.add_argument("--real-nodes", type=int, default=0, metavar="N",
                        help="real nodes beside the simulated ones (see `dev cluster up`; default: %(default)s)")
    dev_up.set_defaults(handler=_up)
    named(dev_sub.add_parser("down", help="stop the local environment and remove its cluster")).set_defaults(
        handler=_down)
    named(dev_sub.add_parser("status", help="the environment's components and services (exit 1 if broken)")) \
        .set_defaults(handler=_status)
    logs = named(dev_sub.add_parser("logs", help="a service's log (operator, pods)"))
    logs.add_argument("service", choices=environment.SERVICES)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    logs.add_argument("--tail", type=int, default=100, help="lines to print first (default: %(default)s)")
    logs.set_defaults(handler=_logs)
    forward = named(dev_sub.add_parser("port-forward", help="serve a Service on 127.0.0.1, relaying each "
                                                            "connection to a ready endpoint from its EndpointSlices"))
    forward.add_argument("service", help="Service name (or svc/NAME)")
    forward.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: default)")
    forward.add_argument("--port", type=int, default=0, help="local port on 127.0.0.1 (default: a free one)")
    forward.set_defaults(handler=_port_forward)

    bins = dev_sub.add_parser("binaries", help="build (once) and verify the cached cluster binaries")
    bins.add_argument("components", nargs="*", metavar="COMPONENT",
                      help=f"one of {', '.join(sorted(binaries.COMPONENTS))} (default: kubernetes etcd kwok)")
    bins.set_defaults(handler=_binaries)

    imgs = dev_sub.add_parser("images", help="build the host, Python worker and operator images with podman")
    imgs.add_argument("names", nargs="*", metavar="IMAGE", help=f"one of {', '.join(images.IMAGES)} (default: all)")
    imgs.add_argument("--registry", default=images.DEFAULT_REGISTRY, help="image names' prefix (default: %(default)s)")
    imgs.add_argument("--tag", default=images.VERSION, help="image tag (default: %(default)s)")
    imgs.set_defaults(handler=_images)

    storage = dev_sub.add_parser("azurite", help="install (once) the Azure Storage emulator; --run serves it")
    storage.add_argument("--run", metavar="DATA_DIR", help="also run it on loopback with its data in DATA_DIR")
    storage.set_defaults(handler=_azurite)


def _cluster(args: argparse.Namespace) -> int:
    if args.action == "up":
        started = time.monotonic()
        cluster = LocalCluster.named(args.name, args.nodes, real_nodes=args.real_nodes).up(reuse=not args.fresh)
        steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in cluster.timings.items())
        print(f"cluster {cluster.name} is up in {time.monotonic() - started:.1f}s{f' ({steps})' if steps else ''}: "
              f"{cluster.server}")
        print(cluster.shell_exports)
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


def _loaded(name: str) -> LocalCluster:
    cluster = LocalCluster.load(name)
    if cluster is None:
        raise ClusterError(f"no local environment named {name!r}: start one with `funcplane dev up`")
    return cluster


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    env = environment.up(args.name, args.nodes, fresh=args.fresh, real_nodes=args.real_nodes)
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in env.timings.items())
    print(f"local environment {args.name!r} is up in {time.monotonic() - started:.1f}s ({steps})")
    print(f"  {env.cluster.shell_exports}")
    print(f"  logs: funcplane dev logs operator|pods   stop: funcplane dev down --name {args.name}")
    return 0


def _down(args: argparse.Namespace) -> int:
    cluster = LocalCluster.load(args.name)
    if cluster is None:
        print(f"no local environment named {args.name!r}")
        return 0
    cluster.down()
    print(f"local environment {args.name!r} stopped and removed")
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = _loaded(args.name)
    status = cluster.status()
    print(json.dumps(status, indent=2))
    broken = cluster.crashed() or cluster.crashed_services() or set(cluster.services) != set(environment.SERVICES)
    return 0 if status["apiserver_ready"] and not broken else 1


def _logs(args: argparse.Namespace) -> int:
    path = environment.log_path(_loaded(args.name), args.service)
    command = ["tail", f"--lines={args.tail}", *(["--follow=name"] if args.follow else []), str(path)]
    try:
        return subprocess.run(command).returncode
    except KeyboardInterrupt:
        return 0


def _port_forward(args: argparse.Namespace) -> int:
    from .endpoints import PortForward, ServiceEndpoints

    cluster = _loaded(args.name)
    service = args.service.removeprefix("svc/").removeprefix("service/")
    namespace = getattr(args, "namespace", None) or "default"
    with ServiceEndpoints(cluster.api_client(), namespace, service) as endpoints:
        forward = PortForward(endpoints, args.port)
        print(f"Forwarding from 127.0.0.1:{forward.port} -> Service {namespace}/{service} "
              "(its ready endpoints, round robin); Ctrl-C stops", flush=True)
        try:
            forward.serve_forever()
        except KeyboardInterrupt:
            forward.close()
    return 0


def _binaries(args: argparse.Namespace) -> int:
    wanted = tuple(args.components) or ("kubernetes", "etcd", "kwok")
    unknown = sorted(set(wanted) - set(binaries.COMPONENTS))
    if unknown:
        raise binaries.BinaryError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(sorted(binaries.COMPONENTS))}")
    started = time.monotonic()
    for name, path in binaries.ensure_all(wanted).items():
        print(f"{name} {binaries.COMPONENTS[name].version}: {path}")
    print(f"binaries ready in {time.monotonic() - started:.1f}s")
    return 0


def _images(args: argparse.Namespace) -> int:
    started = time.monotonic()
    built = images.build_all(tuple(args.names) or tuple(images.IMAGES), registry=args.registry, tag=args.tag)
    for image in built:
        print(f"{image.reference}: {image.size} (built in {image.seconds:.1f}s)")
    print(f"images ready in {time.monotonic() - started:.1f}s")
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


ERRORS = (ClusterError, binaries.BinaryError, images.ImageError, azurite.AzuriteError, realnode.RealNodeError)


def main(argv: list[str], prog: str = "funcplane") -> int:
    """Run `dev ...` or `demo ...` (with the product command line's global options) as `prog` would."""
    parser = argparse.ArgumentParser(prog=prog, description="funcplane's development tools")
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    demo.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ERRORS as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
