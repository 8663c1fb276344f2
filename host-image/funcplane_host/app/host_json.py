"""host.json: the app's file, the operator's override deep-merged over it, validated with pydantic.

Sections the host does not use (extensionBundle, logging.applicationInsights, ...) pass through;
every option it does use is checked, and a wrong one is an error naming its field: the host never
serves with a default silently put in place of what the app asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from funcplane_host.app.timespan import timespan_seconds
from funcplane_host.jsonfile import JsonFileError, read_json_object
from funcplane_host.app.front_door import FrontDoorOptions
from funcplane_host.app.scaling_options import ScalingOptions, parse_scaling_options

DEFAULT_FUNCTION_TIMEOUT_SECONDS = 300.0
DEFAULT_ROUTE_PREFIX = "api"
SUPPORTED_VERSION = "2.0"
UNBOUNDED = "-1"
LOG_LEVEL_NAMES = ("Trace", "Debug", "Information", "Warning", "Error", "Critical", "None")


class HostJsonError(ValueError):
    """host.json (or its override) cannot be used; the message names the field."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` wins; nested objects merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _positive_timespan(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} must be a time span string like \"00:05:00\"")
    seconds = timespan_seconds(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


def _timeout(value: Any) -> float | None:
    if value == UNBOUNDED or value == -1:
        return None
    try:
        return _positive_timespan(value)
    except ValueError as error:
        raise ValueError(f"{error}; use \"-1\" for no limit") from None


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise ValueError(f"{value!r} must be a positive integer or -1 (unbounded)")
    return value


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in {name.lower() for name in LOG_LEVEL_NAMES}:
        raise ValueError(f"{value!r} is not a level; use one of {', '.join(LOG_LEVEL_NAMES)}")
    return value


PositiveTimeSpan = Annotated[float, BeforeValidator(_positive_timespan)]
Limit = Annotated[int, BeforeValidator(_limit)]
LevelName = Annotated[str, BeforeValidator(_level)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class HttpSection(_Section):
    route_prefix: StrictStr = Field(DEFAULT_ROUTE_PREFIX, alias="routePrefix")
    max_concurrent_requests: Limit = Field(-1, alias="maxConcurrentRequests")
    max_outstanding_requests: Limit = Field(-1, alias="maxOutstandingRequests")


class ExtensionsSection(_Section):
    http: HttpSection = Field(default_factory=HttpSection)


class LoggingSection(_Section):
    log_level: dict[str, LevelName] = Field(default_factory=dict, alias="logLevel")


class WorkerHealthSection(BaseModel):
    """funcplane's own host.json section: worker status checks and restart back-off."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    status_interval: PositiveTimeSpan | None = Field(None, alias="statusInterval")
    status_timeout: PositiveTimeSpan | None = Field(None, alias="statusTimeout")
    restart_backoff_initial: PositiveTimeSpan | None = Field(None, alias="restartBackoffInitial")
    restart_backoff_max: PositiveTimeSpan | None = Field(None, alias="restartBackoffMax")


class FuncplaneSection(_Section):
    worker_health: WorkerHealthSection = Field(default_factory=WorkerHealthSection, alias="workerHealth")


class HostJson(_Section):
    version: StrictStr = SUPPORTED_VERSION
    function_timeout: Annotated[float | None, BeforeValidator(_timeout)] = Field(
        DEFAULT_FUNCTION_TIMEOUT_SECONDS, alias="functionTimeout")
    extensions: ExtensionsSection = Field(default_factory=ExtensionsSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    functions: list[StrictStr] | None = None
    funcplane: FuncplaneSection = Field(default_factory=FuncplaneSection)


@dataclass(frozen=True)
class HttpOptions:
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    max_concurrent_requests: int = -1  # -1: unbounded
    max_outstanding_requests: int = -1


@dataclass(frozen=True)
class HostConfig:
    raw: dict[str, Any] = field(default_factory=dict)
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT_SECONDS
    http: HttpOptions = HttpOptions()
    log_levels: dict[str, str] = field(default_factory=dict)
    # Explicit list of functions to load ("functions": [...] in host.json); None = all.
    functions: tuple[str, ...] | None = None
    # funcplane's own section "funcplane.workerHealth": time spans in seconds by option name.
    worker_health: dict[str, float] = field(default_factory=dict)
    # extensions.queues, concurrency, funcplane.queues/functions (app/scaling_options.py).
    scaling: ScalingOptions = field(default_factory=ScalingOptions)
    # extensions.http limits and timeouts of the front door (app/front_door.py).
    front_door: FrontDoorOptions = field(default_factory=FrontDoorOptions)


def _field_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


_EXPECTED_TYPES = {"string_type": "a string", "int_type": "an integer", "list_type": "a list",
                   "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object"}


def _error_text(error: ValidationError) -> str:
    """`host.json <field>: <problem>` for each problem pydantic found."""
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown option"
            if item["loc"][:2] == ("funcplane", "workerHealth"):
                message += "; use " + ", ".join(f.alias or n for n, f in WorkerHealthSection.model_fields.items())
        elif item["type"] in _EXPECTED_TYPES:
            message = f"{item['input']!r} has the wrong type; it must be {_EXPECTED_TYPES[item['type']]}"
        problems.append(f"host.json {_field_path(item['loc'])}: {message}")
    return "; ".join(problems)


def parse_host_config(raw: dict[str, Any]) -> HostConfig:
    try:
        document = HostJson.model_validate(raw)
    except ValidationError as error:
        raise HostJsonError(_error_text(error)) from None
    if document.version != SUPPORTED_VERSION:
        raise HostJsonError(f"host.json version: {document.version!r} is not supported; set \"version\": \"2.0\"")
    http = document.extensions.http
    health = document.funcplane.worker_health
    try:
        scaling = parse_scaling_options(raw)
        front_door = FrontDoorOptions.from_host_json(raw)
    except ValueError as error:  # HttpOptionsError included
        raise HostJsonError(str(error)) from None
    return HostConfig(
        raw=raw,
        function_timeout=document.function_timeout,
        http=HttpOptions(http.route_prefix.strip("/"), http.max_concurrent_requests, http.max_outstanding_requests),
        log_levels=dict(document.logging.log_level),
        functions=tuple(document.functions) if document.functions is not None else None,
        worker_health={field_info.alias or name: value for name, field_info in WorkerHealthSection.model_fields.items()
                       if (value := getattr(health, name)) is not None},
        scaling=scaling,
        front_door=front_door,
    )


def _read_object(path: Path, what: str) -> dict[str, Any]:
    try:
        return read_json_object(path, f"{what} {path}")
    except JsonFileError as error:
        raise HostJsonError(str(error)) from None


def load_host_config(app_root: Path, override_path: Path | None) -> HostConfig:
    app_file = app_root / "host.json"
    raw = _read_object(app_file, "host.json") if app_file.is_file() else {"version": SUPPORTED_VERSION}
    if override_path is not None:
        raw = deep_merge(raw, _read_object(override_path, "host.json override"))
    return parse_host_config(raw)
