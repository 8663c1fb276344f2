"""Slot: a non-production slot of one FunctionApp."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from .base import DNS1123_LABEL, IMMUTABLE, Model, Setting, cel, validations
from .conditions import READY, ConditionedStatus, Reason, condition
from .functionapp import SlotContent


class SwapRequest(Model):
    """A declarative swap of this slot (the source) into a target slot. Executed by the swap engine;
    a new requestId starts a new request."""

    request_id: str = Field(min_length=1, max_length=63, description="Identifies the request; change it to ask again.")
    target: str = Field("production", pattern=DNS1123_LABEL, max_length=20, description="Target slot name.")
    mode: Literal["full", "preview"] = Field("full", description="preview stops after warm-up until completed.")
    action: Literal["start", "complete", "cancel", "rollback"] = Field("start", description="What to do.")


class AutoSwap(Model):
    target: str = Field("production", pattern=DNS1123_LABEL, max_length=20,
                        description="Slot that every new deployment here is swapped into after warm-up.")


class SlotSpec(SlotContent):
    app_ref: str = Field(min_length=1, max_length=40, description="Name of the FunctionApp in this namespace.",
                         json_schema_extra=validations(cel(IMMUTABLE, "appRef is immutable")))
    slot_name: str = Field(
        pattern=DNS1123_LABEL, max_length=20,
        description="Slot name (DNS-1123 label); the slot's Service is <app>-<slotName>.",
        json_schema_extra=validations(
            cel(IMMUTABLE, "slotName is immutable"),
            cel("self != 'production'", "slotName 'production' is the FunctionApp itself"),
        ))
    clone_settings_from_app: bool = Field(
        True, description="On creation, clone the app's settings (sticky ones included).")
    non_http_triggers: bool = Field(False, description="Run non-HTTP triggers in this slot.")
    swap: SwapRequest | None = Field(None, description="Swap request (executed by the swap engine).")
    auto_swap_target: AutoSwap | None = Field(None, description="Auto-swap every new deployment into this target.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("!has(self.swap) || self.swap.target != self.slotName", "swap.target must be another slot",
            ".swap.target"),
    ))


class SwapStatus(Model):
    request_id: str | None = None
    phase: str | None = None
    message: str | None = None


class SlotStatus(ConditionedStatus):
    instance: str | None = Field(None, description="Instance this slot points to.")
    service: str | None = None
    hostname: str | None = None
    cloned_settings: list[Setting] | None = Field(
        None, description="The app's settings cloned at creation (spec settings override them by name).")
    swap: SwapStatus | None = None

    def mark_app_not_found(self, app: str, namespace: str, generation: int | None) -> None:
        self.observed_generation = generation
        self.set_conditions(condition(READY, False, Reason.APP_NOT_FOUND,
                                      f"FunctionApp {app!r} does not exist in namespace {namespace!r}; "
                                      "waiting for it to be created", generation))

    def mark_refused(self, reason: str, message: str, generation: int | None) -> None:
        """Not admitted by its app (a slot limit, a duplicate name): it points to no instance."""
        self.observed_generation = generation
        self.instance = self.service = self.hostname = None
        self.set_conditions(condition(READY, False, reason, message, generation))

    def mark_instance(self, instance: str, service: str, hostname: str, *, ready: bool, ready_replicas: int,
                      replicas: int, generation: int | None) -> None:
        self.observed_generation = generation
        self.instance, self.service, self.hostname = instance, service, hostname
        message = (f"instance {instance} ready ({ready_replicas}/{replicas})" if ready
                   else f"instance {instance}: {ready_replicas}/{replicas} pods ready")
        self.set_conditions(condition(READY, ready, Reason.INSTANCE_READY if ready else Reason.INSTANCE_NOT_READY,
                                      message, generation))

    def status_patch(self, before: ConditionedStatus) -> dict[str, Any]:
        """Everything but `swap` (the swap engine's); a slot that points nowhere clears its pointer fields."""
        patch = self.wire()
        patch.pop("swap", None)
        for field in ("instance", "service", "hostname"):
            patch.setdefault(field, None)
        return patch


class Slot(Model):
    api_version: str = "funcplane.io/v1alpha1"
    kind: str = "Slot"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SlotSpec
    status: SlotStatus = Field(default_factory=SlotStatus)
