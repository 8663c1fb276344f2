"""`funcplane crds generate [--check]`: write crds/ from the API models, or check they match."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from funcplane.api.crd import render_files


def default_directory() -> Path:
    # operator/funcplane/cli/crds.py -> repository root
    return Path(__file__).resolve().parents[3] / "crds"


def drifted_files(directory: Path) -> list[str]:
    """CRD files in `directory` that differ from (or are missing versus) the models."""
    return [name for name, text in render_files().items()
            if not (directory / name).exists() or (directory / name).read_text() != text]


def generate(directory: Path, check: bool) -> int:
    if check:
        drift = drifted_files(directory)
        if drift:
            print(f"CRDs out of date in {directory}: {', '.join(drift)}; run `funcplane crds generate`",
                  file=sys.stderr)
            return 1
        print(f"CRDs in {directory} match the API models")
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_files().items():
        (directory / name).write_text(text)
        print(f"wrote {directory / name}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    crds = subparsers.add_parser("crds", help="CustomResourceDefinitions of the funcplane.io API")
    actions = crds.add_subparsers(dest="crds_command", required=True)
    gen = actions.add_parser("generate", help="regenerate crds/ from the API models")
    gen.add_argument("--check", action="store_true", help="fail if crds/ differs from the models")
    gen.add_argument("--dir", type=Path, default=default_directory(), help="output directory")
    gen.set_defaults(handler=lambda args: generate(args.dir, args.check))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="funcplane")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
