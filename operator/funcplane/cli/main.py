"""The `funcplane` command line (also `kubectl funcplane` as a kubectl plugin)."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import crds, swap

# Development tools from the source checkout's `funcplane_dev` package, never in the images; their
# command line is handed over whole, so the product imports that package only when one is run.
DEV_COMMANDS = {"dev": "local development: environment, control plane, binaries, images",
                "demo": "run the demo end to end on the local environment"}


def add_global_options(parser: argparse.ArgumentParser) -> None:
    # kubectl's global flags, accepted before the subcommand too (`kubectl funcplane -n demo swap ...`);
    # subcommands take them as well, with SUPPRESS defaults so that they never overwrite these.
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig context's)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context")


def build_parser(prog: str = "funcplane") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="funcplane: Azure-Functions-style apps on Kubernetes")
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command, text in DEV_COMMANDS.items():
        subparsers.add_parser(command, help=f"{text} (development tools, source checkout only)", add_help=False)
    crds.register(subparsers)
    swap.register(subparsers)
    return parser


def run_dev_tools(argv: list[str], prog: str) -> int:
    try:
        dev_cli = importlib.import_module("funcplane_dev.cli")
    except ModuleNotFoundError as error:
        if error.name != "funcplane_dev":
            raise
        print(f"{prog}: `dev` and `demo` are development tools (package funcplane_dev) that this installation "
              "lacks: run them from a source checkout after `make venv` (pip install -e '.[test]')", file=sys.stderr)
        return 1
    return dev_cli.main(argv, prog)


def main(argv: list[str] | None = None, prog: str = "funcplane") -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(prog)
    args, unknown = parser.parse_known_args(argv)
    if args.command in DEV_COMMANDS:
        return run_dev_tools(argv, prog)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.handler(args)


def kubectl_plugin() -> int:
    return main(prog="kubectl funcplane")


if __name__ == "__main__":
    sys.exit(main())
