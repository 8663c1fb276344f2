"""host.json: the app's file, the operator's override deep-merged over it, and typed defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funcplane_host.app.scaling_options import ScalingOptions, parse_scaling_options
from funcplane_host.app.timespan import parse_timespan

DEFAULT_FUNCTION_TIMEOUT_SECONDS = 300.0
DEFAULT_ROUTE_PREFIX = "api"


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


WORKER_HEALTH_OPTIONS = ("statusInterval", "statusTimeout", "restartBackoffInitial", "restartBackoffMax")


def _worker_health(raw: dict[str, Any]) -> dict[str, float]:
    section = (raw.get("funcplane") or {}).get("workerHealth") if isinstance(raw.get("funcplane"), dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise HostJsonError("host.json funcplane.workerHealth: must be an object")
    parsed = {}
    for key, value in section.items():
        if key not in WORKER_HEALTH_OPTIONS:
            raise HostJsonError(
                f"host.json funcplane.workerHealth.{key}: unknown option; use {', '.join(WORKER_HEALTH_OPTIONS)}"
            )
        try:
            parsed[key] = parse_timespan(value, field_name=f"host.json funcplane.workerHealth.{key}")
        except ValueError as error:
            raise HostJsonError(str(error)) from None
    return parsed


def _read_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise HostJsonError(f"{what} {path}: invalid JSON at line {error.lineno}: {error.msg}") from None
    except OSError as error:
        raise HostJsonError(f"{what} {path}: cannot read ({error.strerror})") from None
    if not isinstance(data, dict):
        raise HostJsonError(f"{what} {path}: must contain a JSON object")
    return data


def _int_option(section: dict[str, Any], key: str, path: str) -> int:
    value = section.get(key, -1)
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise HostJsonError(f"{path}.{key}: {value!r} must be a positive integer or -1 (unbounded)")
    return value


def parse_host_config(raw: dict[str, Any]) -> HostConfig:
    timeout_value = raw.get("functionTimeout")
    if timeout_value is None:
        function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT_SECONDS
    elif timeout_value == "-1" or timeout_value == -1:
        function_timeout = None
    else:
        try:
            function_timeout = parse_timespan(timeout_value, field_name="host.json functionTimeout")
        except ValueError as error:
            raise HostJsonError(str(error)) from None
    extensions = raw.get("extensions") or {}
    http_section = extensions.get("http") or {} if isinstance(extensions, dict) else {}
    if not isinstance(http_section, dict):
        raise HostJsonError("host.json extensions.http: must be an object")
    prefix = http_section.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise HostJsonError("host.json extensions.http.routePrefix: must be a string (\"\" for none)")
    http = HttpOptions(
        route_prefix=prefix.strip("/"),
        max_concurrent_requests=_int_option(http_section, "maxConcurrentRequests", "host.json extensions.http"),
        max_outstanding_requests=_int_option(http_section, "maxOutstandingRequests", "host.json extensions.http"),
    )
    logging_section = raw.get("logging") or {}
    levels = logging_section.get("logLevel") or {} if isinstance(logging_section, dict) else {}
    if not isinstance(levels, dict) or not all(isinstance(v, str) for v in levels.values()):
        raise HostJsonError("host.json logging.logLevel: must map categories to level names")
    functions = raw.get("functions")
    if functions is not None and not (
        isinstance(functions, list) and all(isinstance(name, str) for name in functions)
    ):
        raise HostJsonError("host.json functions: must be a list of function names")
    try:
        scaling = parse_scaling_options(raw)
    except ValueError as error:
        raise HostJsonError(str(error)) from None
    return HostConfig(
        raw=raw,
        function_timeout=function_timeout,
        http=http,
        log_levels=dict(levels),
        functions=tuple(functions) if functions is not None else None,
        worker_health=_worker_health(raw),
        scaling=scaling,
    )


def load_host_config(app_root: Path, override_path: Path | None) -> HostConfig:
    app_file = app_root / "host.json"
    raw = _read_object(app_file, "host.json") if app_file.is_file() else {"version": "2.0"}
    if override_path is not None:
        raw = deep_merge(raw, _read_object(override_path, "host.json override"))
    return parse_host_config(raw)
