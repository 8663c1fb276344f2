"""Importing user code: function folders (function.json + script) and function_app.py.

Function folders are imported as submodules of a synthetic ``__app__`` package rooted at the
app's script root, so ``from ..shared import x`` works inside them as it does on Azure; the
script root is also put on sys.path for absolute imports of the app's own modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from funcplane_pyworker.functions import FunctionLoadError

APP_PACKAGE = "__app__"
DEFAULT_ENTRY_POINT = "main"


APP_PACKAGES = Path(".python_packages") / "lib" / "site-packages"


def add_script_root(script_root: Path) -> None:
    """Make the app's modules importable; the newest script root wins. The packages a published
    app carries (.python_packages/lib/site-packages, as Azure builds it) are importable too."""
    root = str(script_root)
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    packages = str(script_root / APP_PACKAGES)
    if packages not in sys.path and (script_root / APP_PACKAGES).is_dir():
        sys.path.append(packages)
    package = sys.modules.get(APP_PACKAGE)
    if package is None:
        package = types.ModuleType(APP_PACKAGE)
        package.__path__ = []  # type: ignore[attr-defined]
        sys.modules[APP_PACKAGE] = package
    if root not in package.__path__:  # type: ignore[attr-defined]
        package.__path__.insert(0, root)  # type: ignore[attr-defined]


def _module_name(script_root: Path, script_path: Path) -> str | None:
    """The dotted name of `script_path` inside the __app__ package, or None if it is outside."""
    try:
        relative = script_path.with_suffix("").relative_to(script_root)
    except ValueError:
        return None
    parts = list(relative.parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([APP_PACKAGE, *parts]) if parts else None


def import_script(script_root: Path, script_path: Path) -> types.ModuleType:
    """Import one script file of the app (a function folder's module)."""
    if not script_path.is_file():
        raise FunctionLoadError(f"script file {str(script_path)!r} does not exist")
    add_script_root(script_root)
    module_name = _module_name(script_root, script_path)
    if module_name is not None:
        return importlib.import_module(module_name)
    # A script outside the script root: load it on its own under a name derived from its path.
    module_name = "_funcplane_script_" + "_".join(script_path.with_suffix("").parts[1:])
    spec = importlib.util.spec_from_file_location(module_name, script_path)
    if spec is None or spec.loader is None:
        raise FunctionLoadError(f"cannot import {str(script_path)!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_entry_point(
    *, script_root: Path, directory: str, script_file: str, entry_point: str
) -> Callable[..., Any]:
    """The callable a function.json function names (entry point `main` unless it says otherwise)."""
    if not script_file:
        raise FunctionLoadError("the function metadata names no scriptFile")
    script_path = Path(script_file)
    if not script_path.is_absolute():
        script_path = Path(directory) / script_path
    module = import_script(script_root, script_path.resolve())
    name = entry_point or DEFAULT_ENTRY_POINT
    target: Any = module
    for attribute in name.split("."):
        if not hasattr(target, attribute):
            raise FunctionLoadError(
                f"{script_path.name} has no entry point {name!r}; define `def {name}(...)` or "
                "set \"entryPoint\" in function.json"
            )
        target = getattr(target, attribute)
    return target


def import_app_module(script_path: Path) -> types.ModuleType:
    """(Re-)import a worker-indexed app's main file (function_app.py) by path."""
    add_script_root(script_path.parent)
    module_name = script_path.stem
    spec = importlib.util.spec_from_file_location(module_name, script_path)
    if spec is None or spec.loader is None:
        raise FunctionLoadError(f"cannot import {str(script_path)!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
