"""The CRDs are generated from the API models; crds/ must match them, and be structural."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from funcplane.api.crd import RESOURCES, custom_resource_definition, render_files
from funcplane.cli.crds import drifted_files, generate

REPO = Path(__file__).resolve().parents[2]


def test_crds_directory_matches_the_models() -> None:
    drift = drifted_files(REPO / "crds")
    assert not drift, f"crds/ is out of date ({drift}); run `funcplane crds generate`"


def test_check_mode_reports_drift_and_generate_fixes_it(tmp_path: Path) -> None:
    assert generate(tmp_path, check=True) == 1  # nothing there yet
    assert generate(tmp_path, check=False) == 0
    assert generate(tmp_path, check=True) == 0
    name = next(iter(render_files()))
    (tmp_path / name).write_text((tmp_path / name).read_text().replace("shortNames", "shortnames"))
    assert drifted_files(tmp_path) == [name]


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def test_schemas_are_structural() -> None:
    for resource in RESOURCES:
        schema = custom_resource_definition(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
                assert forbidden not in node or path.endswith(".properties"), f"{resource.kind} {path}: {forbidden}"
            if "properties" in node and not path.endswith(".properties"):
                assert node.get("type") == "object", f"{resource.kind} {path} lacks type: object"


def test_names_subresources_and_columns() -> None:
    crds = {r.kind: custom_resource_definition(r) for r in RESOURCES}
    assert crds["FunctionApp"]["spec"]["names"]["shortNames"] == ["fa"]
    assert crds["Slot"]["spec"]["names"]["shortNames"] == ["fslot"]
    assert crds["WorkerConfig"]["spec"]["names"]["shortNames"] == ["wcfg"]
    for crd in crds.values():
        assert "status" in crd["spec"]["versions"][0]["subresources"]
        assert "funcplane" in crd["spec"]["names"]["categories"]
    app = crds["FunctionApp"]["spec"]["versions"][0]
    assert app["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas",
                                            "statusReplicasPath": ".status.replicas",
                                            "labelSelectorPath": ".status.selector"}
    columns = [c["name"] for c in app["additionalPrinterColumns"]]
    assert {"Ready", "Slots", "Active Instance", "Age"} <= set(columns)


def test_cross_field_rules_are_in_the_schema() -> None:
    text = json.dumps([yaml.safe_load(t) for t in render_files().values()])
    for rule in ("has(self.value) != has(self.valueFrom)",
                 "self.minReplicas <= self.maxReplicas",
                 "(has(self.image) ? 1 : 0) + (has(self.persistentVolumeClaim) ? 1 : 0)",
                 "!has(self.slotLimit) || self.plan == 'dedicated'",
                 "self == oldSelf"):
        assert rule in text, rule


def test_nested_defaults_are_filled_by_the_api_server() -> None:
    app = custom_resource_definition(RESOURCES[0])
    spec = app["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {k: v for k, v in spec["scale"]["default"].items() if k != "autoscale"} == \
        {"minReplicas": 1, "maxReplicas": 10}
    assert spec["scale"]["default"]["autoscale"]["enabled"] is False  # the scaler is opt-in
    assert spec["plan"]["default"] == "consumption"
    assert "default" not in spec["code"]  # required, never defaulted
