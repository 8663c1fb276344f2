"""The app's functions as the host knows them: definitions, load state, errors, HTTP routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.app.indexing import FunctionError
from funcplane_host.app.routes import RouteTable


@dataclass
class FunctionState:
    status: str = "indexed"  # indexed -> loaded | error
    error: str | None = None


class FunctionCatalog:
    def __init__(self) -> None:
        self.definitions: dict[str, FunctionDefinition] = {}
        self.states: dict[str, FunctionState] = {}
        self.errors: list[FunctionError] = []
        self.routes: RouteTable[FunctionDefinition] = RouteTable()
        # Languages whose functions come from the worker (FunctionsMetadataRequest).
        self.worker_indexed: set[str] = set()
        self._indexed_languages: set[str] = set()

    def find(self, name: str) -> FunctionDefinition | None:
        """A function by name; names are case-insensitive, as on Azure."""
        key = name.lower()
        return next((d for n, d in self.definitions.items() if n.lower() == key), None)

    def add(self, definition: FunctionDefinition) -> None:
        if self.find(definition.name) is not None:
            self.record_error(FunctionError(definition.name, "a function with this name already exists", "index"))
            return
        self.definitions[definition.name] = definition
        self.states[definition.name] = FunctionState()
        if definition.http is not None and not definition.disabled:
            self.routes.add(definition.http.route, definition.http.methods, definition)

    def record_error(self, error: FunctionError) -> None:
        if error not in self.errors:
            self.errors.append(error)
        if error.name in self.states:
            self.states[error.name] = FunctionState("error", error.reason)

    def triggered_by(self, trigger_type: str) -> list[FunctionDefinition]:
        """The enabled functions of one trigger type (lower-case) that have not failed."""
        return [d for n, d in self.definitions.items()
                if d.trigger_type.lower() == trigger_type and not d.disabled and self.states[n].status != "error"]

    def functions_for(self, language: str) -> list[FunctionDefinition]:
        return [d for d in self.definitions.values() if d.language == language]

    def is_indexed(self, language: str) -> bool:
        return language not in self.worker_indexed or language in self._indexed_languages

    def mark_indexed(self, language: str) -> None:
        self._indexed_languages.add(language)

    def mark_loaded(self, name: str) -> None:
        state = self.states.get(name)
        if state is not None and state.status != "error":
            state.status = "loaded"

    def mark_load_failed(self, name: str, reason: str) -> None:
        self.record_error(FunctionError(name, reason, "load"))
        if name in self.definitions:
            self.routes_without(name)

    def routes_without(self, name: str) -> None:
        """Drop a function's route (it failed to load), keeping the others."""
        remaining = [d for n, d in self.definitions.items() if n != name and self.states[n].status != "error"]
        self.routes.clear()
        for definition in remaining:
            if definition.http is not None and not definition.disabled:
                self.routes.add(definition.http.route, definition.http.methods, definition)

    def all_loaded(self) -> bool:
        return all(
            state.status != "indexed" or self.definitions[name].disabled
            for name, state in self.states.items()
        )

    def as_json(self) -> list[dict[str, Any]]:
        listed = []
        for name, definition in sorted(self.definitions.items()):
            state = self.states[name]
            entry: dict[str, Any] = {
                "name": name,
                "language": definition.language,
                "trigger": definition.trigger_type,
                "indexedBy": definition.indexed_by,
                "status": "disabled" if definition.disabled else state.status,
                "error": state.error,
            }
            if definition.http is not None:
                entry["route"] = definition.http.route
                entry["methods"] = sorted(definition.http.methods) if definition.http.methods else None
                entry["authLevel"] = definition.http.auth_level
            listed.append(entry)
        for error in self.errors:
            if error.name not in self.definitions:
                listed.append({"name": error.name or "(app)", "status": "error", "error": error.reason,
                               "stage": error.stage})
        return listed
