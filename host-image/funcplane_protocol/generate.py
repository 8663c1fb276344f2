"""Regenerate the Python modules of the worker protocol from the .proto files.

Usage:
    python -m funcplane_protocol.generate          # rewrite the generated modules
    python -m funcplane_protocol.generate --check  # exit 1 if they drifted from the .proto

The .proto files keep the import paths of the upstream contract ("shared/...", "identity/..."),
so protoc emits top-level imports such as ``from shared import NullableTypes_pb2``; they are
rewritten to absolute imports inside this package.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

PROTOCOL_DIR = Path(__file__).resolve().parent
PACKAGE = "funcplane_protocol"
PROTO_FILES = (
    "FunctionRpc.proto",
    "shared/NullableTypes.proto",
    "identity/ClaimsIdentityRpc.proto",
)
_SUBPACKAGES = ("shared", "identity")


def _generated_names(proto: str) -> list[str]:
    stem = proto[: -len(".proto")]
    names = [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
    if proto == "FunctionRpc.proto":
        names.append(f"{stem}_pb2_grpc.py")
    return names


def _fix_imports(source: str) -> str:
    for sub in _SUBPACKAGES:
        source = re.sub(
            rf"^from {sub} import (\w+)",
            rf"from {PACKAGE}.{sub} import \1",
            source,
            flags=re.MULTILINE,
        )
    return re.sub(
        r"^import FunctionRpc_pb2 as",
        f"from {PACKAGE} import FunctionRpc_pb2 as",
        source,
        flags=re.MULTILINE,
    )


def render() -> dict[str, str]:
    """Run protoc and return {relative path: file text} of every generated module."""
    from grpc_tools import protoc  # imported lazily: only needed at generation time
    import grpc_tools

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as out:
        args = [
            "protoc",
            f"-I{PROTOCOL_DIR}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {PROTO_FILES}")
        rendered: dict[str, str] = {}
        for proto in PROTO_FILES:
            for name in _generated_names(proto):
                rendered[name] = _fix_imports((Path(out) / name).read_text())
        return rendered


def drifted(rendered: dict[str, str]) -> list[str]:
    """Names of generated modules whose committed text differs from a fresh generation."""
    stale = []
    for name, text in rendered.items():
        target = PROTOCOL_DIR / name
        if not target.exists() or target.read_text() != text:
            stale.append(name)
    return stale


def write(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        target = PROTOCOL_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for sub in _SUBPACKAGES:
        init = PROTOCOL_DIR / sub / "__init__.py"
        if not init.exists():
            init.write_text("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    options = parser.parse_args(argv)
    rendered = render()
    if options.check:
        stale = drifted(rendered)
        if stale:
            print(
                "generated protocol modules are stale: "
                + ", ".join(stale)
                + "; run `python -m funcplane_protocol.generate`",
                file=sys.stderr,
            )
            return 1
        return 0
    write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
