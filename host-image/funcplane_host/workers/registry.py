"""The worker registry: managed config (declared site-extension paths) plus the default directory.

Declared and enabled workers load from their declared path, undeclared ones from the default
workers directory, disabled ones never. A declared path that does not exist is a registry error:
the host reports it and is not ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funcplane_host.jsonfile import JsonFileError, read_json_object
from funcplane_host.workers.config import (
    WORKER_CONFIG_FILE,
    WorkerConfigError,
    WorkerDescription,
    load_worker_description,
)


class WorkerSelectionError(LookupError):
    """No usable worker for a language/version; the message says why."""


@dataclass(frozen=True)
class DeclaredWorker:
    name: str
    path: Path | None
    enabled: bool


def parse_managed_config(document: Any, source: str) -> dict[str, DeclaredWorker]:
    if not isinstance(document, dict) or not isinstance(document.get("workers", {}), dict):
        raise WorkerConfigError(f"{source}: must be an object with a \"workers\" object")
    declared: dict[str, DeclaredWorker] = {}
    for name, entry in document.get("workers", {}).items():
        where = f"{source}: workers.{name}"
        if not isinstance(entry, dict):
            raise WorkerConfigError(f"{where} must be an object with \"path\" and \"enabled\"")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise WorkerConfigError(f"{where}.enabled must be true or false")
        path = entry.get("path")
        if enabled and (not isinstance(path, str) or not path):
            raise WorkerConfigError(f"{where}.path is required for an enabled worker")
        declared[name] = DeclaredWorker(name, Path(path) if isinstance(path, str) and path else None, enabled)
    return declared


def _description_of(*folders: Path) -> WorkerDescription | None:
    for folder in folders:
        try:
            return load_worker_description(folder)
        except (WorkerConfigError, OSError):
            continue
    return None


@dataclass
class WorkerRegistry:
    workers: list[WorkerDescription] = field(default_factory=list)
    # Disabled name -> its description when one could be read (for its language and extensions).
    disabled: dict[str, WorkerDescription | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    managed_config: Path | None = None
    default_dir: Path | None = None

    @classmethod
    def load(cls, managed_config: Path, default_dir: Path) -> WorkerRegistry:
        registry = cls(managed_config=managed_config, default_dir=default_dir)
        declared: dict[str, DeclaredWorker] = {}
        if managed_config.is_file():
            try:
                document = read_json_object(managed_config, f"managed worker config {managed_config}")
                declared = parse_managed_config(document, str(managed_config))
            except (JsonFileError, WorkerConfigError) as error:
                registry.errors.append(str(error))
        for entry in declared.values():
            if not entry.enabled:
                folders = [entry.path] if entry.path else []
                registry.disabled[entry.name] = _description_of(*folders, default_dir / entry.name)
                continue
            if entry.path is None or not entry.path.is_dir():
                registry.errors.append(
                    f"worker {entry.name!r}: declared path {entry.path} (in {managed_config}) does not exist; "
                    "mount the site extension there or fix workers."
                    f"{entry.name}.path"
                )
                continue
            registry._add(entry.path, entry.name, "managed")
        if default_dir.is_dir():
            for folder in sorted(p for p in default_dir.iterdir() if p.is_dir()):
                if folder.name in declared or not (folder / WORKER_CONFIG_FILE).is_file():
                    continue
                registry._add(folder, folder.name, "default")
        return registry

    def _add(self, folder: Path, name: str, source: str) -> None:
        try:
            self.workers.append(load_worker_description(folder, name, source))
        except WorkerConfigError as error:
            self.errors.append(str(error))

    def extensions(self) -> dict[str, str]:
        """File extension -> language, for picking a function's language from its script file."""
        mapping: dict[str, str] = {}
        # Disabled workers count too, so their functions fail with "disabled", not "unknown".
        known = [*self.workers, *(d for d in self.disabled.values() if d is not None)]
        for worker in known:
            for extension in worker.extensions:
                mapping.setdefault(extension, worker.language)
        return mapping

    def select(self, language: str, version: str | None) -> WorkerDescription:
        candidates = [w for w in self.workers if w.language == language]
        if not candidates:
            disabled = sorted(n for n, d in self.disabled.items() if n == language or (d and d.language == language))
            if disabled:
                raise WorkerSelectionError(
                    f"no enabled worker for language {language!r}: worker(s) {disabled} are disabled "
                    f"in the managed worker config {self.managed_config}"
                )
            raise WorkerSelectionError(
                f"no worker for language {language!r}; known languages: "
                + (", ".join(sorted({w.language for w in self.workers})) or "none")
            )
        matching = [w for w in candidates if w.supports_version(version)]
        if not matching:
            offered = sorted({v for w in candidates for v in (w.supported_runtime_versions or
                                                              [w.default_runtime_version or "?"])})
            raise WorkerSelectionError(
                f"no {language!r} worker supports FUNCTIONS_WORKER_RUNTIME_VERSION={version}; "
                f"available versions: {', '.join(offered)}"
            )
        # Declared site extensions win over the bundled default of the same language.
        matching.sort(key=lambda w: 0 if w.source == "managed" else 1)
        return matching[0]

    def as_json(self) -> dict[str, Any]:
        return {
            "managedConfig": str(self.managed_config) if self.managed_config else None,
            "defaultDirectory": str(self.default_dir) if self.default_dir else None,
            "workers": [
                {
                    "name": w.name,
                    "language": w.language,
                    "path": str(w.directory),
                    "source": w.source,
                    "runtimeVersions": list(w.supported_runtime_versions),
                    "defaultRuntimeVersion": w.default_runtime_version,
                }
                for w in self.workers
            ],
            "disabled": sorted(self.disabled),
            "errors": list(self.errors),
        }
