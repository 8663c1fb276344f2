"""Slot: a non-production slot of one FunctionApp."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from .base import DNS1123_LABEL, IMMUTABLE, Condition, Model, Setting, cel, validations
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


class SlotStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    instance: str | None = Field(None, description="Instance this slot points to.")
    service: str | None = None
    hostname: str | None = None
    cloned_settings: list[Setting] | None = Field(
        None, description="The app's settings cloned at creation (spec settings override them by name).")
    swap: SwapStatus | None = None


class Slot(Model):
    api_version: str = "funcplane.io/v1alpha1"
    kind: str = "Slot"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SlotSpec
    status: SlotStatus = Field(default_factory=SlotStatus)
