"""The `funcplane` command line (also `kubectl funcplane` as a kubectl plugin)."""

from __future__ import annotations

import argparse
import sys

from . import crds, demo, devcluster, swap


def build_parser(prog: str = "funcplane") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="funcplane: Azure-Functions-style apps on Kubernetes")
    # kubectl's global flags, accepted before the subcommand too (`kubectl funcplane -n demo swap ...`);
    # subcommands take them as well, with SUPPRESS defaults so that they never overwrite these.
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig context's)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    subparsers = parser.add_subparsers(dest="command", required=True)
    devcluster.register(subparsers)
    crds.register(subparsers)
    demo.register(subparsers)
    swap.register(subparsers)
    return parser


def main(argv: list[str] | None = None, prog: str = "funcplane") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return args.handler(args)
    except devcluster.ERRORS as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1


def kubectl_plugin() -> int:
    return main(prog="kubectl funcplane")


if __name__ == "__main__":
    sys.exit(main())
