"""Names, labels and hashes every renderer shares (pure functions)."""

from __future__ import annotations

from funcplane.api import PRODUCTION
from funcplane.render import names


def test_instance_ids_are_stable_per_owner_and_avoid_taken_ones() -> None:
    first = names.instance_id("shop", "uid-1")
    assert first == names.instance_id("shop", "uid-1") and first.startswith("shop-") and len(first) == len("shop-") + 5
    assert names.instance_id("shop", "uid-2") != first
    other = names.instance_id("shop", "uid-1", taken={first})
    assert other != first and other.startswith("shop-")


def test_slot_names_map_to_services_keys_and_hostnames() -> None:
    assert names.slot_service("shop", PRODUCTION) == "shop"
    assert names.slot_service("shop", "staging") == "shop-staging"
    assert names.slot_keys_secret("shop", "staging") == "shop-staging-keys"
    assert names.hostname("shop", PRODUCTION, "ns") == "shop.ns.svc"
    assert names.timer_lease("shop", "staging") == "shop-staging-timers"


def test_host_ids_stay_within_azures_32_characters() -> None:
    assert names.host_id("shop", "staging") == "shop-staging"
    long_id = names.host_id("a-rather-long-application-name", "staging")
    assert len(long_id) <= 32
    assert long_id != names.host_id("a-rather-long-application-name", "staging2")


def test_selectors_are_sorted_and_stamps_follow_the_content() -> None:
    selector = names.instance_selector("shop", "shop-abcde")
    assert names.selector_string(selector) == "funcplane.io/app=shop,funcplane.io/instance=shop-abcde"
    first = names.stamp({"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}})
    same = names.stamp({"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}})
    changed = names.stamp({"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "2"}})
    applied = names.ANNOTATION_APPLIED_HASH
    assert first["metadata"]["annotations"][applied] == same["metadata"]["annotations"][applied]
    assert first["metadata"]["annotations"][applied] != changed["metadata"]["annotations"][applied]
