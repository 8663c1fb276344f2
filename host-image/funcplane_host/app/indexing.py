"""Host indexing: one folder per function with a function.json; errors are kept per function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable

from funcplane_host.app.functions import (
    FunctionDefinition,
    FunctionDefinitionError,
    definition_from_function_json,
)

_CONVENTIONAL_SCRIPTS = ("__init__.py", "index.js", "index.mjs", "run.ps1", "run.py", "main.py")


@dataclass(frozen=True)
class FunctionError:
    """Why a function (or the app as a whole, name "") could not be loaded."""

    name: str
    reason: str
    stage: str  # "index", "worker", "load"

    def as_json(self) -> dict[str, str]:
        return {"function": self.name, "stage": self.stage, "error": self.reason}


def _default_script(folder: Path, extensions: Iterable[str]) -> str | None:
    for conventional in _CONVENTIONAL_SCRIPTS:
        if (folder / conventional).is_file():
            return conventional
    suffixes = tuple(extensions)
    candidates = [p.name for p in folder.iterdir() if p.is_file() and p.suffix in suffixes]
    return candidates[0] if len(candidates) == 1 else None


def function_folders(app_root: Path) -> list[Path]:
    if not app_root.is_dir():
        return []
    return sorted(p for p in app_root.iterdir() if p.is_dir() and (p / "function.json").is_file())


def index_function_folders(
    app_root: Path, extensions: Iterable[str], only: tuple[str, ...] | None = None
) -> tuple[list[FunctionDefinition], list[FunctionError]]:
    extensions = tuple(extensions)
    definitions: list[FunctionDefinition] = []
    errors: list[FunctionError] = []
    for folder in function_folders(app_root):
        if only is not None and folder.name not in only:
            continue
        try:
            definitions.append(definition_from_function_json(folder, _default_script(folder, extensions)))
        except FunctionDefinitionError as error:
            errors.append(FunctionError(folder.name, str(error), "index"))
        except OSError as error:
            errors.append(FunctionError(folder.name, f"cannot read function.json: {error}", "index"))
    return definitions, errors
