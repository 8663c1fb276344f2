"""Slot content: effective settings, content hashes, and the sticky-settings merge."""

from __future__ import annotations

from collections.abc import Iterable

from funcplane.api.base import Setting
from funcplane.api.functionapp import DeployedContent, SlotContent

from .names import digest


def merge_settings(base: Iterable[Setting], overrides: Iterable[Setting]) -> list[Setting]:
    """Settings of `base` overridden by name by `overrides` (order: base first, then new names)."""
    merged: dict[str, Setting] = {setting.name: setting for setting in base}
    for setting in overrides:
        merged[setting.name] = setting
    return list(merged.values())


def slot_content(spec: SlotContent, cloned: Iterable[Setting] = ()) -> DeployedContent:
    """What a slot's spec asks to be deployed: its code and its effective settings."""
    return DeployedContent(code=spec.code, settings=merge_settings(cloned, spec.settings))


def content_hash(content: DeployedContent) -> str:
    return digest(content.wire())


def running_settings(instance_content: DeployedContent, sticky_source: Iterable[Setting]) -> list[Setting]:
    """Settings an instance runs with: its deployed non-sticky settings travel with it; sticky
    ones come from the slot it serves (on a swap the instance takes the target slot's)."""
    travelling = [s for s in instance_content.settings if not s.sticky]
    sticky = [s for s in sticky_source if s.sticky]
    return merge_settings(travelling, sticky)

