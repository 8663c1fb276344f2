"""Shared pieces of the API models: the base class, references, conditions and schema hooks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "funcplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes names: DNS-1123 labels (Services, slot names) and env var names (settings).
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_VAR_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry (a CEL rule the API server enforces)."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def exactly_one_of(*fields: str) -> str:
    """CEL: exactly one of the named optional fields is set."""
    return " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in fields) + " == 1"


IMMUTABLE = "self == oldSelf"
FREE_FORM = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
QUANTITY = {"x-kubernetes-int-or-string": True}


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored (the API server
    prunes them anyway, and statuses may carry fields of newer operators)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class KeyReference(Model):
    name: str = Field(min_length=1, description="Name of the Secret or ConfigMap in the same namespace.")
    key: str = Field(min_length=1, description="Key inside it.")
    optional: bool | None = Field(None, description="Start even when the object or key is missing.")


class ValueFrom(Model):
    secret_key_ref: KeyReference | None = Field(None, description="Take the value from a Secret key.")
    config_map_key_ref: KeyReference | None = Field(None, description="Take the value from a ConfigMap key.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.secretKeyRef) != has(self.configMapKeyRef)",
            "valueFrom needs exactly one of secretKeyRef or configMapKeyRef"),
    ))


class Setting(Model):
    """An app setting: an environment variable of the host, as in Azure."""

    name: str = Field(pattern=ENV_VAR_NAME, max_length=256, description="Setting (environment variable) name.")
    value: str | None = Field(None, description="Literal value. Set either value or valueFrom.")
    value_from: ValueFrom | None = Field(
        None, description="Reference to a Secret or ConfigMap key; stays a reference, never copied.")
    sticky: bool = Field(False, description="A slot setting: stays with its slot on swap.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.value) != has(self.valueFrom)",
            "a setting needs exactly one of value or valueFrom"),
    ))


class ImageSource(Model):
    reference: str = Field(min_length=1, description="OCI image reference holding the files.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Image pull policy.")
    path: str = Field("/", description="Folder inside the image that holds the files (used when copying).")


class VolumeClaimSource(Model):
    claim_name: str = Field(min_length=1, description="PersistentVolumeClaim name.")
    sub_path: str | None = Field(None, description="Folder inside the volume.")


class ConfigMapSource(Model):
    name: str = Field(min_length=1, description="ConfigMap whose keys are the files (small apps).")


class FileSource(Model):
    """Where files come from: an image (image volume), a PVC, or a ConfigMap; exactly one."""

    image: ImageSource | None = None
    persistent_volume_claim: VolumeClaimSource | None = None
    config_map: ConfigMapSource | None = None

    model_config = ConfigDict(json_schema_extra=validations(
        cel(exactly_one_of("image", "persistentVolumeClaim", "configMap"),
            "exactly one of image, persistentVolumeClaim or configMap must be set"),
    ))


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None
