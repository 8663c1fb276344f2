"""Function definitions built from bindings (function.json or worker-reported raw bindings)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funcplane_host.jsonfile import JsonFileError, read_json_object
from funcplane_host.app.routes import RouteTemplateError, compile_route

AUTH_LEVELS = ("anonymous", "function", "admin")
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"})
_DIRECTIONS = ("in", "out", "inout")
_ID_NAMESPACE = uuid.UUID("5b0ed4b6-50a4-4b61-9f0e-3f1f2c1c6a10")


class FunctionDefinitionError(ValueError):
    """A function's bindings are unusable; the message names the field."""


@dataclass(frozen=True)
class HttpTrigger:
    binding_name: str
    route: str
    methods: frozenset[str] | None
    auth_level: str
    output_binding: str | None  # name of the "http" out binding ("$return" included)


@dataclass
class FunctionDefinition:
    name: str
    bindings: list[dict[str, Any]]
    directory: str = ""
    script_file: str = ""
    entry_point: str = ""
    language: str | None = None
    disabled: bool = False
    indexed_by: str = "host"  # "host" (function.json) or "worker"
    function_id: str = ""
    retry_options: Any = None
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.function_id:
            self.function_id = str(uuid.uuid5(_ID_NAMESPACE, self.name.lower()))
        self.trigger: dict[str, Any] = _single_trigger(self.name, self.bindings)
        self.http: HttpTrigger | None = _http_trigger(self.name, self.trigger, self.bindings)

    @property
    def trigger_type(self) -> str:
        return str(self.trigger.get("type", ""))


def _single_trigger(name: str, bindings: list[dict[str, Any]]) -> dict[str, Any]:
    triggers = [b for b in bindings if str(b.get("type", "")).lower().endswith("trigger")]
    if len(triggers) != 1:
        raise FunctionDefinitionError(
            f"function {name!r}: bindings must contain exactly one trigger, found {len(triggers)}"
        )
    return triggers[0]


def _http_trigger(name: str, trigger: dict[str, Any], bindings: list[dict[str, Any]]) -> HttpTrigger | None:
    if str(trigger.get("type", "")).lower() != "httptrigger":
        return None
    auth_level = str(trigger.get("authLevel", "function")).lower()
    if auth_level not in AUTH_LEVELS:
        raise FunctionDefinitionError(
            f"function {name!r}: authLevel {trigger.get('authLevel')!r} must be one of "
            + ", ".join(AUTH_LEVELS)
        )
    raw_methods = trigger.get("methods")
    methods: frozenset[str] | None = None
    if raw_methods:
        if not isinstance(raw_methods, list) or not all(isinstance(m, str) for m in raw_methods):
            raise FunctionDefinitionError(f"function {name!r}: methods must be a list of HTTP methods")
        methods = frozenset(m.upper() for m in raw_methods)
        unknown = methods - HTTP_METHODS
        if unknown:
            raise FunctionDefinitionError(
                f"function {name!r}: unknown HTTP method(s) {sorted(unknown)} in methods"
            )
    route = trigger.get("route") or name
    if not isinstance(route, str):
        raise FunctionDefinitionError(f"function {name!r}: route must be a string")
    try:
        compile_route(route)
    except RouteTemplateError as error:
        raise FunctionDefinitionError(f"function {name!r}: {error}") from None
    outputs = [
        b["name"] for b in bindings
        if str(b.get("type", "")).lower() == "http" and b.get("direction") == "out"
    ]
    return HttpTrigger(
        binding_name=str(trigger["name"]),
        route=route,
        methods=methods,
        auth_level=auth_level,
        output_binding=outputs[0] if outputs else None,
    )


def validate_bindings(name: str, bindings: Any) -> list[dict[str, Any]]:
    if not isinstance(bindings, list) or not bindings:
        raise FunctionDefinitionError(f"function {name!r}: 'bindings' must be a non-empty list")
    for index, binding in enumerate(bindings):
        where = f"function {name!r}: bindings[{index}]"
        if not isinstance(binding, dict):
            raise FunctionDefinitionError(f"{where} must be an object")
        for key in ("type", "name"):
            if not isinstance(binding.get(key), str) or not binding[key]:
                raise FunctionDefinitionError(f"{where}.{key} is required (a non-empty string)")
        direction = binding.get("direction")
        if isinstance(direction, str) and direction.lower() in _DIRECTIONS:
            # Decorator-based apps emit upper-case names ("IN"); the host treats them alike.
            binding["direction"] = direction = direction.lower()
        if direction not in _DIRECTIONS:
            raise FunctionDefinitionError(
                f"{where}.direction is {direction!r}; use one of {', '.join(_DIRECTIONS)}"
            )
    return bindings


def definition_from_raw_bindings(
    name: str, raw_bindings: list[str], **fields: Any
) -> FunctionDefinition:
    """Build a definition from a worker's raw_bindings (each a JSON object text)."""
    parsed = []
    for index, text in enumerate(raw_bindings):
        try:
            parsed.append(json.loads(text))
        except json.JSONDecodeError as error:
            raise FunctionDefinitionError(
                f"function {name!r}: raw_bindings[{index}] is not JSON ({error.msg})"
            ) from None
    return FunctionDefinition(name=name, bindings=validate_bindings(name, parsed), **fields)


def definition_from_function_json(folder: Path, default_script: str | None) -> FunctionDefinition:
    """Read <folder>/function.json (host indexing)."""
    name = folder.name
    path = folder / "function.json"
    try:
        document = read_json_object(path, path.name)
    except JsonFileError as error:
        raise FunctionDefinitionError(f"function {name!r}: {error}") from None
    bindings = validate_bindings(name, document.get("bindings"))
    script = document.get("scriptFile") or default_script
    if not isinstance(script, str) or not script:
        raise FunctionDefinitionError(
            f"function {name!r}: no script file; set \"scriptFile\" in function.json"
        )
    script_path = (folder / script).resolve()
    if not script_path.is_file():
        raise FunctionDefinitionError(
            f"function {name!r}: scriptFile {script!r} does not exist ({script_path})"
        )
    entry_point = document.get("entryPoint", "")
    if not isinstance(entry_point, str):
        raise FunctionDefinitionError(f"function {name!r}: entryPoint must be a string")
    disabled = document.get("disabled", False)
    if not isinstance(disabled, bool):
        raise FunctionDefinitionError(f"function {name!r}: disabled must be true or false")
    return FunctionDefinition(
        name=name,
        bindings=bindings,
        directory=str(folder.resolve()),
        script_file=str(script_path),
        entry_point=entry_point,
        disabled=disabled,
        indexed_by="host",
    )
