"""Worker indexing: the functions a v2 app declares with azure.functions decorators.

The app's main file (function_app.py, or the file named by PYTHON_SCRIPT_FILE_NAME) is imported
and its single FunctionApp is read through the library's public API (get_functions(),
get_bindings(), get_raw_bindings(), get_user_function()).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func

from funcplane_pyworker import status
from funcplane_pyworker.bindings import BindingSpec
from funcplane_pyworker.functions import FunctionLoadError, LoadedFunction, build_function
from funcplane_pyworker.loader import import_app_module
from funcplane_pyworker.protocol import pb

APP_SCRIPT_SETTING = "PYTHON_SCRIPT_FILE_NAME"
DEFAULT_APP_SCRIPT = "function_app.py"
WORKER_INDEXED_PROPERTY = "worker_indexed"


@dataclass
class IndexedFunction:
    metadata: pb.RpcFunctionMetadata
    # None when the function's code and bindings do not fit; metadata.status says why.
    loaded: LoadedFunction | None


def app_script_path(app_directory: Path) -> Path:
    return app_directory / os.environ.get(APP_SCRIPT_SETTING, DEFAULT_APP_SCRIPT)


def _function_id(script_path: Path, function_name: str) -> str:
    """Stable across restarts, so a re-indexed app keeps its ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{script_path}#{function_name}"))


def _the_app(module: object, script_path: Path) -> func.FunctionRegister:
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    if not apps:
        raise FunctionLoadError(
            f"{script_path.name} defines no azure.functions.FunctionApp; add "
            "`app = func.FunctionApp()` and decorate the functions with it"
        )
    if len(apps) > 1:
        raise FunctionLoadError(
            f"{script_path.name} defines {len(apps)} FunctionApp objects; keep one and register "
            "the others' functions on it as Blueprints"
        )
    return apps[0]


def index_app(app_directory: Path) -> list[IndexedFunction] | None:
    """The app's functions, or None when the app has no main file (the host indexes it itself).

    Import errors and app-level mistakes raise; a single function whose parameters do not fit
    its bindings is returned with a failed status so that the others still load.
    """
    script_path = app_script_path(app_directory)
    if not script_path.is_file():
        return None
    module = import_app_module(script_path)
    indexed: list[IndexedFunction] = []
    for function in _the_app(module, script_path).get_functions():
        name = function.get_function_name() or function.get_user_function().__name__
        function_id = _function_id(script_path, name)
        specs = [
            BindingSpec(
                name=binding.name,
                type=binding.type,
                direction=binding.direction,
                data_type=binding.data_type or 0,
            )
            for binding in function.get_bindings()
        ]
        metadata = pb.RpcFunctionMetadata(
            name=name,
            function_id=function_id,
            directory=str(app_directory),
            script_file=str(script_path),
            entry_point=function.get_user_function().__name__,
            language="python",
            raw_bindings=function.get_raw_bindings(),
            properties={WORKER_INDEXED_PROPERTY: "True"},
        )
        for spec in specs:
            metadata.bindings[spec.name].CopyFrom(spec.to_binding_info())
        try:
            loaded: LoadedFunction | None = build_function(
                function_id=function_id,
                name=name,
                directory=str(app_directory),
                user_function=function.get_user_function(),
                bindings=specs,
            )
            metadata.status.CopyFrom(status.success())
        except Exception as error:
            loaded = None
            metadata.status.CopyFrom(status.failure(error, context=f"function {name!r}"))
        indexed.append(IndexedFunction(metadata=metadata, loaded=loaded))
    return indexed
