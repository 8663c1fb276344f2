"""worker.config.json (Azure's format) parsed into a WorkerDescription that can build a command line."""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from funcplane_host.app.timespan import parse_timespan
from funcplane_host.jsonfile import JsonFileError, read_json_object

WORKER_CONFIG_FILE = "worker.config.json"
DEFAULT_INIT_TIMEOUT_SECONDS = 60.0
# How the host passes its address to the worker: both spellings (Azure host v4), or only one.
HOST_ARGUMENT_FORMS = ("all", "legacy", "modern")
_ENV_PLACEHOLDER = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")


class WorkerConfigError(ValueError):
    """A worker folder or its worker.config.json is unusable; the message names the field."""


def _os_name() -> str:
    return {"linux": "LINUX", "darwin": "OSX", "win32": "WINDOWS"}.get(sys.platform, sys.platform.upper())


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "X64", "amd64": "X64", "aarch64": "Arm64", "arm64": "Arm64", "i686": "X86"}.get(
        machine, machine
    )


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise WorkerConfigError(f"{where}: must be a list of strings")
    return list(value)


@dataclass(frozen=True)
class WorkerDescription:
    name: str
    language: str
    directory: Path
    default_executable_path: str
    default_worker_path: str = ""
    arguments: tuple[str, ...] = ()
    worker_arguments: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    worker_indexing: bool = False
    supported_runtime_versions: tuple[str, ...] = ()
    default_runtime_version: str | None = None
    init_timeout: float = DEFAULT_INIT_TIMEOUT_SECONDS
    host_arguments: str = "all"
    source: str = "default"  # "default" (workers dir) or "managed" (declared site-extension path)
    extra: dict[str, Any] = field(default_factory=dict)

    def supports_version(self, version: str | None) -> bool:
        if version is None:
            return True
        if self.supported_runtime_versions:
            return version in self.supported_runtime_versions
        return self.default_runtime_version in (None, version)

    def runtime_version(self, requested: str | None) -> str | None:
        return requested or self.default_runtime_version

    def _expand(self, text: str, env: Mapping[str, str], version: str | None) -> str:
        def replace(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "FUNCTIONS_WORKER_RUNTIME_VERSION":
                return version or ""
            return env.get(key, match.group(0))

        text = _ENV_PLACEHOLDER.sub(replace, text)
        return (
            text.replace("{os}", _os_name())
            .replace("{architecture}", _architecture())
            .replace("{workerDirectoryPath}", str(self.directory))
        )

    def _resolve_executable(self, executable: str, env: Mapping[str, str]) -> str:
        if os.sep in executable or executable.startswith("."):
            candidate = Path(executable)
            if not candidate.is_absolute():
                candidate = self.directory / candidate
            if not candidate.exists():
                raise WorkerConfigError(
                    f"worker {self.name!r}: defaultExecutablePath {executable!r} not found at {candidate}"
                )
            return str(candidate)
        # A bare name is looked up on PATH, the host interpreter's folder first so that
        # "python" means the Python the host runs on (its venv, or the image's).
        search = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
        found = shutil.which(executable, path=search)
        if found is None:
            raise WorkerConfigError(
                f"worker {self.name!r}: defaultExecutablePath {executable!r} is not on PATH"
            )
        return found

    def command(self, env: Mapping[str, str], requested_version: str | None) -> list[str]:
        """Executable, its arguments, the worker path and worker arguments (host args come later)."""
        version = self.runtime_version(requested_version)
        executable = self._resolve_executable(self._expand(self.default_executable_path, env, version), env)
        argv = [executable]
        for item in self.arguments:
            argv.extend(shlex.split(self._expand(item, env, version)))
        if self.default_worker_path:
            worker_path = Path(self._expand(self.default_worker_path, env, version))
            if not worker_path.is_absolute():
                worker_path = self.directory / worker_path
            if not worker_path.exists():
                raise WorkerConfigError(
                    f"worker {self.name!r}: defaultWorkerPath resolves to {worker_path}, which does not exist"
                    + (f" (runtime version {version})" if version else "")
                )
            argv.append(str(worker_path))
        for item in self.worker_arguments:
            argv.extend(shlex.split(self._expand(item, env, version)))
        return argv


def host_arguments(form: str, port: int, worker_id: str, request_id: str, max_length: int) -> list[str]:
    legacy = [
        "--host", "127.0.0.1", "--port", str(port), "--workerId", worker_id,
        "--requestId", request_id, "--grpcMaxMessageLength", str(max_length),
    ]
    modern = [
        "--functions-uri", f"http://127.0.0.1:{port}/", "--functions-worker-id", worker_id,
        "--functions-request-id", request_id, "--functions-grpc-max-message-length", str(max_length),
    ]
    return {"legacy": legacy, "modern": modern}.get(form, legacy + modern)


def load_worker_description(directory: Path, name: str | None = None, source: str = "default") -> WorkerDescription:
    config_path = directory / WORKER_CONFIG_FILE
    label = name or directory.name
    if not config_path.is_file():
        raise WorkerConfigError(f"worker {label!r}: {config_path} does not exist")
    try:
        document = read_json_object(config_path)
    except JsonFileError as error:
        raise WorkerConfigError(f"worker {label!r}: {error}") from None
    description = document.get("description")
    if not isinstance(description, dict):
        raise WorkerConfigError(f"worker {label!r}: {config_path} needs a \"description\" object")
    language = description.get("language")
    if not isinstance(language, str) or not language:
        raise WorkerConfigError(f"worker {label!r}: description.language is required")
    executable = description.get("defaultExecutablePath")
    if not isinstance(executable, str) or not executable:
        raise WorkerConfigError(f"worker {label!r}: description.defaultExecutablePath is required")
    worker_path = description.get("defaultWorkerPath", "")
    if not isinstance(worker_path, str):
        raise WorkerConfigError(f"worker {label!r}: description.defaultWorkerPath must be a string")
    indexing = description.get("workerIndexing", False)
    form = description.get("hostArguments", "all")
    if form not in HOST_ARGUMENT_FORMS:
        raise WorkerConfigError(
            f"worker {label!r}: description.hostArguments {form!r} must be one of {', '.join(HOST_ARGUMENT_FORMS)}"
        )
    process_options = document.get("processOptions") or {}
    init_timeout = DEFAULT_INIT_TIMEOUT_SECONDS
    if isinstance(process_options, dict) and process_options.get("initializationTimeout"):
        try:
            init_timeout = parse_timespan(
                process_options["initializationTimeout"],
                field_name=f"worker {label!r} processOptions.initializationTimeout",
            )
        except ValueError as error:
            raise WorkerConfigError(str(error)) from None
    default_version = description.get("defaultRuntimeVersion")
    return WorkerDescription(
        name=label,
        language=language,
        directory=directory.resolve(),
        default_executable_path=executable,
        default_worker_path=worker_path,
        arguments=tuple(_string_list(description.get("arguments"), f"worker {label!r}: description.arguments")),
        worker_arguments=tuple(
            _string_list(description.get("workerArguments"), f"worker {label!r}: description.workerArguments")
        ),
        extensions=tuple(_string_list(description.get("extensions"), f"worker {label!r}: description.extensions")),
        worker_indexing=str(indexing).lower() == "true",
        supported_runtime_versions=tuple(
            _string_list(
                description.get("supportedRuntimeVersions"),
                f"worker {label!r}: description.supportedRuntimeVersions",
            )
        ),
        default_runtime_version=default_version if isinstance(default_version, str) else None,
        init_timeout=init_timeout,
        host_arguments=form,
        source=source,
    )
