"""The images `make images` builds carry the names that the operator's default, the chart and the
examples use, so a cluster the local builds were loaded into needs no overrides; and what they
install is the project's own dependencies."""

from __future__ import annotations

import tomllib

import yaml

from funcplane.api.functionapp import DEFAULT_HOST_IMAGE
from funcplane_dev.images import BUILD_REQUIREMENTS, IMAGES, VERSION
from support import REPO


def _documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((REPO / "examples" / name).read_text()) if doc]


def test_host_image_is_the_operators_default() -> None:
    assert IMAGES["host"].reference() == DEFAULT_HOST_IMAGE


def test_operator_image_is_the_charts_default() -> None:
    chart = yaml.safe_load((REPO / "charts" / "funcplane" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "funcplane" / "values.yaml").read_text())
    assert chart["appVersion"] == VERSION
    assert IMAGES["operator"].reference() == f"{values['image']['repository']}:{chart['appVersion']}"


def test_examples_name_images_that_are_built() -> None:
    built = {spec.reference() for spec in IMAGES.values()}
    named = set()
    for name in ("functionapp.yaml", "slot-staging.yaml", "workerconfig.yaml"):
        for doc in _documents(name):
            spec = doc.get("spec", {})
            if "image" in spec:
                named.add(spec["image"])
            if "code" in spec:
                named.add(spec["code"]["image"]["reference"])
            named.update(worker["source"]["image"]["reference"] for worker in spec.get("workers", [])
                         if worker["language"] == "python")
    assert named == {DEFAULT_HOST_IMAGE, "ghcr.io/funcplane/examples/hello:1.0.0",
                     "ghcr.io/funcplane/examples/hello:1.1.0", IMAGES["python-worker"].reference()}
    assert named <= built


def test_image_requirements_are_project_dependencies() -> None:
    project = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    for spec in IMAGES.values():
        extra = set(spec.requirements) - set(BUILD_REQUIREMENTS) - project
        assert not extra, f"{spec.name} installs {sorted(extra)}, which pyproject.toml does not depend on"
    assert set(IMAGES["operator"].requirements) < project | set(BUILD_REQUIREMENTS)
