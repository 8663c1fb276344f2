"""Route templates of HTTP triggers ("products/{id:int}/{name?}") compiled to matchers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

Target = TypeVar("Target")

# Constraint name -> regex for one segment value.
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[0-9T:\-\.\+Z ]+",
}
_PARAMETER = re.compile(r"^\{(?P<star>\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>[a-z]+))?(?P<optional>\?)?\}$")


class RouteTemplateError(ValueError):
    """A route template cannot be parsed."""


@dataclass(frozen=True)
class CompiledRoute:
    template: str
    regex: re.Pattern[str]
    parameters: tuple[str, ...]
    literal_segments: int

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}


def compile_route(template: str) -> CompiledRoute:
    """Compile a template; segments are literals or one `{name[:constraint][?]}` / `{*name}`."""
    cleaned = template.strip().strip("/")
    if not cleaned:
        return CompiledRoute(template, re.compile(r"^/?$"), (), 0)
    pattern = "^"
    parameters: list[str] = []
    literals = 0
    segments = cleaned.split("/")
    for index, segment in enumerate(segments):
        if "{" not in segment and "}" not in segment:
            pattern += "/" + re.escape(segment)
            literals += 1
            continue
        parsed = _PARAMETER.match(segment)
        if not parsed:
            raise RouteTemplateError(
                f"route {template!r}: segment {segment!r} must be a literal or one parameter "
                "like {id}, {id:int}, {name?} or {*rest}"
            )
        name = parsed["name"]
        if name in parameters:
            raise RouteTemplateError(f"route {template!r}: parameter {name!r} appears twice")
        parameters.append(name)
        constraint = parsed["constraint"]
        if constraint is not None and constraint not in _CONSTRAINTS:
            raise RouteTemplateError(
                f"route {template!r}: unknown constraint {constraint!r}; use one of "
                + ", ".join(sorted(_CONSTRAINTS))
            )
        if parsed["star"]:
            if index != len(segments) - 1:
                raise RouteTemplateError(f"route {template!r}: catch-all {{*{name}}} must be last")
            pattern += f"(?:/(?P<{name}>.*))?"
            continue
        value = _CONSTRAINTS.get(constraint or "", r"[^/]+")
        if parsed["optional"]:
            if index != len(segments) - 1:
                raise RouteTemplateError(f"route {template!r}: optional {{{name}?}} must be last")
            pattern += f"(?:/(?P<{name}>{value}))?"
        else:
            pattern += f"/(?P<{name}>{value})"
    pattern += "/?$"
    return CompiledRoute(template, re.compile(pattern, re.IGNORECASE), tuple(parameters), literals)


@dataclass
class RouteEntry(Generic[Target]):
    route: CompiledRoute
    methods: frozenset[str] | None  # None: any method
    target: Target


class RouteTable(Generic[Target]):
    """Finds the target for (method, path); literal-heavy routes win over parameterised ones."""

    def __init__(self) -> None:
        self._entries: list[RouteEntry[Target]] = []
        self._exact: dict[str, list[RouteEntry[Target]]] = {}

    def add(self, template: str, methods: frozenset[str] | None, target: Target) -> None:
        entry = RouteEntry(compile_route(template), methods, target)
        if not entry.route.parameters:
            key = "/" + template.strip().strip("/").lower()
            self._exact.setdefault(key.rstrip("/") or "/", []).append(entry)
        self._entries.append(entry)
        self._entries.sort(key=lambda e: (-e.route.literal_segments, len(e.route.parameters)))

    def clear(self) -> None:
        self._entries.clear()
        self._exact.clear()

    def resolve(self, method: str, path: str) -> tuple[Target, dict[str, str]] | None | bool:
        """(target, params) on a match; False when the path matches but not the method; None otherwise."""
        path_matched = False
        exact = self._exact.get(path.rstrip("/").lower() or "/")
        if exact:
            for entry in exact:
                if entry.methods is None or method in entry.methods:
                    return entry.target, {}
            path_matched = True
        for entry in self._entries:
            params = entry.route.match(path)
            if params is None:
                continue
            if entry.methods is None or method in entry.methods:
                return entry.target, params
            path_matched = True
        return False if path_matched else None
