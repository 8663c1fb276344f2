"""Launcher of funcplane's Python worker: `python worker.py --host H --port P --workerId ...`.

Finds the funcplane_pyworker package in this order: a copy bundled beside this file (a site
extension shipped on its own), the interpreter's installed packages (the host image), the
source tree this file sits in (a checkout). If the interpreter lacks the worker's dependencies
and the checkout has a virtualenv, the launcher re-runs itself with that interpreter.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_TREE_PACKAGES = HERE.parent.parent  # host-image/ in a checkout
CHECKOUT_VENV = SOURCE_TREE_PACKAGES.parent / ".venv"
CHECKOUT_PYTHON = CHECKOUT_VENV / "bin" / "python"


def _importable() -> bool:
    try:
        import funcplane_pyworker.main  # noqa: F401
    except ImportError:
        return False
    return True


def _locate_worker() -> None:
    if (HERE / "funcplane_pyworker").is_dir():
        sys.path.insert(0, str(HERE))
    if _importable():
        return
    if (SOURCE_TREE_PACKAGES / "funcplane_pyworker").is_dir():
        sys.path.insert(0, str(SOURCE_TREE_PACKAGES))
        if _importable():
            return
    if CHECKOUT_PYTHON.is_file() and Path(sys.prefix).resolve() != CHECKOUT_VENV.resolve():
        os.execv(str(CHECKOUT_PYTHON), [str(CHECKOUT_PYTHON), __file__, *sys.argv[1:]])
    try:
        import funcplane_pyworker.main  # noqa: F401  (re-raise with the real reason)
    except ImportError as error:
        sys.exit(
            f"funcplane python worker: cannot start with {sys.executable}: {error}. "
            "Install the worker's dependencies (protobuf, hpack, azure-functions) into that "
            "interpreter or point the worker's executable at one that has them."
        )


if __name__ == "__main__":
    _locate_worker()
    from funcplane_pyworker.main import main

    sys.exit(main())
