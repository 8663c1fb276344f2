"""The CustomResourceDefinitions, generated from the pydantic models (their single source).

pydantic's JSON schema is turned into a Kubernetes structural schema: references are inlined,
optional fields lose their ``null`` branch, titles go, free-form objects keep unknown fields, and
object-valued fields with nested defaults get ``default: {}`` so the API server fills them in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from .base import GROUP, VERSION
from .conditions import READY
from .functionapp import FunctionAppSpec, FunctionAppStatus
from .slot import SlotSpec, SlotStatus
from .workerconfig import WorkerConfigSpec, WorkerConfigStatus

DROPPED_KEYS = {"title", "$defs"}


@dataclass(frozen=True)
class ResourceDefinition:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: tuple[dict[str, Any], ...]
    scale: bool = False
    root_validations: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


def _age() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _ready() -> dict[str, Any]:
    return {"name": READY, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="{READY}")].status'}


RESOURCES: tuple[ResourceDefinition, ...] = (
    ResourceDefinition(
        kind="FunctionApp", plural="functionapps", short_names=("fa",),
        spec=FunctionAppSpec, status=FunctionAppStatus, scale=True,
        root_validations=({"rule": "size(self.metadata.name) <= 40",
                           "message": "metadata.name: a FunctionApp name has at most 40 characters "
                                      "(instance and Service names are derived from it)"},),
        printer_columns=(
            _ready(),
            {"name": "Slots", "type": "integer", "jsonPath": ".status.slotCount"},
            {"name": "Active Instance", "type": "string", "jsonPath": ".status.activeInstance"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Plan", "type": "string", "jsonPath": ".spec.plan", "priority": 1},
            {"name": "Task Hub", "type": "string", "jsonPath": ".status.taskHub", "priority": 1},
            _age(),
        ),
    ),
    ResourceDefinition(
        kind="Slot", plural="slots", short_names=("fslot",),
        spec=SlotSpec, status=SlotStatus,
        printer_columns=(
            {"name": "App", "type": "string", "jsonPath": ".spec.appRef"},
            {"name": "Slot", "type": "string", "jsonPath": ".spec.slotName"},
            _ready(),
            {"name": "Instance", "type": "string", "jsonPath": ".status.instance"},
            {"name": "Hostname", "type": "string", "jsonPath": ".status.hostname", "priority": 1},
            _age(),
        ),
    ),
    ResourceDefinition(
        kind="WorkerConfig", plural="workerconfigs", short_names=("wcfg",),
        spec=WorkerConfigSpec, status=WorkerConfigStatus,
        printer_columns=(
            _ready(),
            {"name": "Workers", "type": "string", "jsonPath": ".spec.workers[*].name"},
            _age(),
        ),
    ),
)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unions are not structural: {branches}")
        merged = dict(branches[0])
        merged.update(node)
        return _resolve(merged, defs)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        target.update(node)  # field-level description wins
        return _resolve(target, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = dict(node.pop("allOf")[0])
        merged.update(node)
        return _resolve(merged, defs)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED_KEYS:
            continue
        if key == "properties":
            result[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            result[key] = _resolve(value, defs)
        else:
            result[key] = value
    if result.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
    if result.get("x-kubernetes-preserve-unknown-fields"):
        result.pop("additionalProperties", None)
        result.pop("properties", None)
    elif result.get("type") == "object" and "properties" in result:
        required = set(result.get("required", []))
        for name, prop in result["properties"].items():
            if "default" in prop and prop["default"] is None:
                prop.pop("default")  # an optional field: absent, not defaulted
            elif (name not in required and "default" not in prop and prop.get("type") == "object"
                    and "properties" in prop):
                # Filled by a default factory: default to the nested defaults so the API server
                # fills them in (and CEL rules see them).
                prop["default"] = _nested_defaults(prop)
    if result.get("type") == "object" and "properties" not in result and "additionalProperties" not in result \
            and not result.get("x-kubernetes-preserve-unknown-fields"):
        result["x-kubernetes-preserve-unknown-fields"] = True
    return result


def _nested_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    return {name: prop["default"] for name, prop in schema.get("properties", {}).items() if "default" in prop}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(raw, raw.get("$defs", {}))


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = structural_schema(model)
    # Status is written by the operator only: defaults there would fight its writes, and its
    # content is validated by the models before it is written.
    _strip_keys(schema, {"default", "x-kubernetes-validations"})
    return schema


def _strip_keys(node: Any, keys: set[str]) -> None:
    if isinstance(node, dict):
        for key in keys & node.keys():
            if not isinstance(node.get("properties"), dict) or key not in node["properties"]:
                node.pop(key)
        for value in node.values():
            _strip_keys(value, keys)
    elif isinstance(node, list):
        for value in node:
            _strip_keys(value, keys)


def custom_resource_definition(resource: ResourceDefinition) -> dict[str, Any]:
    root: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(resource.spec),
            "status": _status_schema(resource.status),
        },
    }
    if resource.root_validations:
        root["x-kubernetes-validations"] = list(resource.root_validations)
    subresources: dict[str, Any] = {"status": {}}
    if resource.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.name, "labels": {"app.kubernetes.io/part-of": "funcplane"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": list(resource.short_names),
                "categories": ["funcplane", "all"] if resource.kind != "WorkerConfig" else ["funcplane"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": subresources,
                "additionalPrinterColumns": list(resource.printer_columns),
            }],
        },
    }


HEADER = "# Generated by `funcplane crds generate` from operator/funcplane/api; do not edit.\n"


def render_files() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {
        resource.file_name: HEADER + yaml.safe_dump(custom_resource_definition(resource), sort_keys=False, width=100)
        for resource in RESOURCES
    }
