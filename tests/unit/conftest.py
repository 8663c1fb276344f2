"""Factories shared by the unit tests, as fixtures: API objects (models and raw bodies as the API
server would hold them) and the renderer's output for an app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from funcplane.api import PRODUCTION, FunctionApp, Slot, WorkerConfig
from funcplane.render.app import production_view, render_app, slot_view
from funcplane.render.deploy import plan_deployments
from funcplane.render.volumes import VolumeMode
from funcplane.render.workers import declared_workers

NAMESPACE = "ns"


def app_body(name: str = "shop", uid: str = "uid-app", **spec: Any) -> dict[str, Any]:
    """A FunctionApp as stored: premium plan, Python 3.12, code from an image."""
    body = {"runtime": {"name": "python", "version": "3.12"}, "code": {"image": {"reference": "code:1"}},
            "plan": "premium"}
    body.update(spec)
    return {"apiVersion": "funcplane.io/v1alpha1", "kind": "FunctionApp",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": body}


def slot_body(slot_name: str, created: str, app: str = "shop", uid: str | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "funcplane.io/v1alpha1", "kind": "Slot",
            "metadata": {"name": f"{app}-{slot_name}", "namespace": NAMESPACE, "uid": uid or f"uid-{slot_name}",
                         "generation": 1, "creationTimestamp": created},
            "spec": {"appRef": app, "slotName": slot_name, **spec}}


def make_function_app(name: str = "shop", uid: str = "uid-app", **spec: Any) -> FunctionApp:
    return FunctionApp.model_validate(app_body(name, uid, **spec))


def make_slot(slot_name: str, created: str, app: str = "shop", uid: str | None = None, **spec: Any) -> Slot:
    return Slot.model_validate(slot_body(slot_name, created, app, uid, **spec))


def make_worker_config(*workers: dict[str, Any], name: str = "workers",
                       created: str = "2026-01-01T00:00:00Z") -> WorkerConfig:
    return WorkerConfig.model_validate({
        "metadata": {"name": name, "namespace": NAMESPACE, "creationTimestamp": created},
        "spec": {"workers": list(workers)}})


def make_worker(name: str, language: str = "python", **extra: Any) -> dict[str, Any]:
    return {"name": name, "language": language, "source": {"image": {"reference": f"{name}:1"}}, **extra}


def render(app: FunctionApp, slots: Any = (), workers: Any = (),
           mode: VolumeMode = VolumeMode.IMAGE) -> dict[tuple[str, str], dict[str, Any]]:
    """Plan the app's deployments into its status, then render it: (kind, name) -> object."""
    views = [production_view(app)] + [slot_view(s) for s in slots]
    app.status = plan_deployments(app.metadata["name"], NAMESPACE, app.status, [v.request for v in views]).status
    objects = render_app(app, views, declared_workers(workers), mode)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def deployment_in(objects: dict[tuple[str, str], dict[str, Any]], app: FunctionApp, slot_name: str = PRODUCTION,
                  suffix: str = "") -> dict[str, Any]:
    return objects[("Deployment", app.status.slots[slot_name].instance + suffix)]


def env_in(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.fixture
def function_app() -> Callable[..., FunctionApp]:
    return make_function_app


@pytest.fixture
def slot() -> Callable[..., Slot]:
    return make_slot


@pytest.fixture
def worker_config() -> Callable[..., WorkerConfig]:
    return make_worker_config


@pytest.fixture
def worker() -> Callable[..., dict[str, Any]]:
    return make_worker


@pytest.fixture
def rendered() -> Callable[..., dict[tuple[str, str], dict[str, Any]]]:
    return render


@pytest.fixture
def deployment_of() -> Callable[..., dict[str, Any]]:
    return deployment_in


@pytest.fixture
def env_of() -> Callable[[dict[str, Any]], dict[str, dict[str, Any]]]:
    return env_in


@pytest.fixture
def app_manifest() -> Callable[..., dict[str, Any]]:
    return app_body


@pytest.fixture
def slot_manifest() -> Callable[..., dict[str, Any]]:
    return slot_body
