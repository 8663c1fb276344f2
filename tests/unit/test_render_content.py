"""Slot content: effective settings, content hashes and the sticky-settings merge (pure functions)."""

from __future__ import annotations

from funcplane.api import Setting
from funcplane.api.functionapp import DeployedContent
from funcplane.render.content import content_hash, merge_settings, running_settings, slot_content


def setting(name: str, value: str, sticky: bool = False) -> Setting:
    return Setting(name=name, value=value, sticky=sticky)


def test_overrides_replace_by_name_and_keep_the_base_order() -> None:
    merged = merge_settings([setting("A", "1"), setting("B", "2")], [setting("B", "3"), setting("C", "4")])
    assert [(s.name, s.value) for s in merged] == [("A", "1"), ("B", "3"), ("C", "4")]


def test_a_slot_clones_settings_and_its_own_win(slot) -> None:
    staging = slot("staging", "t1", settings=[{"name": "B", "value": "own"}])
    staging.status.cloned_settings = [setting("A", "cloned"), setting("B", "cloned")]
    content = slot_content(staging.spec, staging.status.cloned_settings)
    assert [(s.name, s.value) for s in content.settings] == [("A", "cloned"), ("B", "own")]


def test_sticky_settings_come_from_the_slot_served_and_the_rest_travel() -> None:
    deployed = DeployedContent(settings=[setting("GREETING", "v2"), setting("ENVIRONMENT", "staging", sticky=True)])
    target = [setting("ENVIRONMENT", "production", sticky=True), setting("GREETING", "v1")]
    running = {s.name: s.value for s in running_settings(deployed, target)}
    assert running == {"GREETING": "v2", "ENVIRONMENT": "production"}


def test_content_hash_changes_with_the_content_only() -> None:
    one = DeployedContent(settings=[setting("A", "1")])
    assert content_hash(one) == content_hash(DeployedContent(settings=[setting("A", "1")]))
    assert content_hash(one) != content_hash(DeployedContent(settings=[setting("A", "2")]))
