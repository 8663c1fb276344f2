"""WorkerConfig: language workers decoupled from the host image (managed worker config)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import FREE_FORM, FileSource, Model
from .conditions import READY, ConditionedStatus, Reason, condition

SITE_EXTENSIONS = "/siteextensions"


class WorkerSpec(Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40,
                      description="Worker name; mounted at /siteextensions/<name>.")
    language: str = Field(min_length=1, description="Runtime name it serves (FunctionApp spec.runtime.name).")
    version: str | None = Field(None, description="Runtime version it serves; unset = every version.")
    source: FileSource = Field(description="Where the worker's files come from.")
    enabled: bool = Field(True, description="false removes the worker from the apps' pods.")
    arguments: list[str] = Field(default_factory=list, max_length=32, description="Extra worker arguments.")
    options: dict[str, Any] | None = Field(None, json_schema_extra=FREE_FORM,
                                           description="Extra entries of the worker's managed config.")
    rollout_fraction: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Share of each app's pods that get this worker first (gray release); 1 = all.")

    def serves(self, language: str, version: str | None) -> bool:
        if self.language != language:
            return False
        return self.version is None or version is None or self.version == version

    @property
    def mount_path(self) -> str:
        return f"{SITE_EXTENSIONS}/{self.name}"


class WorkerConfigSpec(Model):
    workers: list[WorkerSpec] = Field(
        default_factory=list, max_length=32, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Declared workers.")


class WorkerRollout(Model):
    name: str
    language: str
    enabled: bool
    rollout_fraction: float
    apps: list[str] = Field(default_factory=list, description="Apps whose language it serves.")
    pods_with_worker: int = 0
    pods_total: int = 0


class WorkerConfigStatus(ConditionedStatus):
    workers: list[WorkerRollout] = Field(default_factory=list)

    def mark_applied(self, shadowed: list[str], generation: int | None) -> None:
        """Ready unless some of its workers are shadowed by an older WorkerConfig declaring the same names."""
        self.observed_generation = generation
        self.set_conditions(condition(
            READY, not shadowed, Reason.NAME_CONFLICT if shadowed else Reason.APPLIED,
            f"workers {', '.join(shadowed)} are declared by an older WorkerConfig, which wins" if shadowed else
            "workers applied to the apps of their language", generation))


class WorkerConfig(Model):
    api_version: str = "funcplane.io/v1alpha1"
    kind: str = "WorkerConfig"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: WorkerConfigSpec
    status: WorkerConfigStatus = Field(default_factory=WorkerConfigStatus)
