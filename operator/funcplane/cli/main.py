"""The `funcplane` command line (also `kubectl funcplane` as a kubectl plugin)."""

from __future__ import annotations

import argparse
import sys

from . import crds, demo, devcluster, swap


def build_parser(prog: str = "funcplane") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="funcplane: Azure-Functions-style apps on Kubernetes")
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
