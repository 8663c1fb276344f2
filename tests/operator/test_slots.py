"""Slots: plan limits, waiting for the app, deletion, and deploys that touch only their slot."""

from __future__ import annotations

from typing import Any

from operator_helpers import apply, app, condition, get, items, pod_uids, slot, wait_app_ready
from support import eventually



def wait_slot(cluster, namespace, name: str, status: str = "True", reason: str | None = None) -> dict[str, Any]:
    def probe():
        body = get(cluster, namespace, "slot", name)
        entry = condition(body)
        return body if entry.get("status") == status and (reason is None or entry.get("reason") == reason) else None
    return eventually(probe, timeout=90, interval=0.5, what=f"Slot {name} Ready={status} {reason or ''}")


def test_fourth_slot_on_premium_is_refused_and_nothing_else_moves(cluster, namespace, operator) -> None:
    apply(cluster, namespace, [app(), slot("staging"), slot("qa")])
    wait_slot(cluster, namespace, "shop-staging")
    wait_slot(cluster, namespace, "shop-qa")
    before_app = wait_app_ready(cluster, namespace, "shop")
    pods_before = pod_uids(cluster, namespace, "funcplane.io/app=shop")
    deployments_before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"]
                          for d in items(cluster, namespace, "deployments")}

    apply(cluster, namespace, slot("canary"))
    refused = wait_slot(cluster, namespace, "shop-canary", "False", "SlotLimitExceeded")
    assert "plan 'premium' allows 3 slots" in condition(refused)["message"]
    assert refused["status"].get("instance") is None
    events = eventually(lambda: [e for e in items(cluster, namespace, "events")
                                 if e["involvedObject"]["name"] == "shop-canary"
                                 and e["reason"] == "SlotLimitExceeded"], what="SlotLimitExceeded event")
    assert events[0]["type"] == "Warning"
    after_app = wait_app_ready(cluster, namespace, "shop")
    assert after_app["status"]["slots"] == before_app["status"]["slots"]
    assert get(cluster, namespace, "service", "shop-canary") is None
    assert pod_uids(cluster, namespace, "funcplane.io/app=shop") == pods_before
    assert {d["metadata"]["name"]: d["metadata"]["resourceVersion"]
            for d in items(cluster, namespace, "deployments")} == deployments_before


def test_slot_waits_for_its_app_then_clones_its_settings(cluster, namespace, operator) -> None:
    apply(cluster, namespace, slot("staging", settings=[{"name": "MODE", "value": "test", "sticky": True}]))
    waiting = wait_slot(cluster, namespace, "shop-staging", "False", "AppNotFound")
    assert "does not exist" in condition(waiting)["message"]
    assert not items(cluster, namespace, "deployments")

    apply(cluster, namespace, app())
    ready = wait_slot(cluster, namespace, "shop-staging")
    cloned = {s["name"]: s for s in ready["status"]["clonedSettings"]}
    assert cloned["MODE"]["sticky"] is True and cloned["COLOR"]["value"] == "blue"
    settings = get(cluster, namespace, "configmap", f"{ready['status']['instance']}-settings")["data"]
    assert settings == {"MODE": "test", "COLOR": "blue"}  # own setting overrides the clone by name


def test_deleting_a_slot_removes_only_its_instance_and_service(cluster, namespace, operator) -> None:
    apply(cluster, namespace, [app(), slot("staging"), slot("qa")])
    qa = wait_slot(cluster, namespace, "shop-qa")
    wait_slot(cluster, namespace, "shop-staging")
    before = wait_app_ready(cluster, namespace, "shop")
    qa_instance = qa["status"]["instance"]
    keep = {s: p["instance"] for s, p in before["status"]["slots"].items() if s != "qa"}
    kept_pods = {i: pod_uids(cluster, namespace, f"funcplane.io/instance={i}") for i in keep.values()}

    cluster.kubectl("-n", namespace, "delete", "slot", "shop-qa")
    eventually(lambda: get(cluster, namespace, "deployment", qa_instance) is None
               and get(cluster, namespace, "service", "shop-qa") is None
               and get(cluster, namespace, "configmap", f"{qa_instance}-settings") is None
               and get(cluster, namespace, "secret", "shop-qa-keys") is None, what="qa's objects gone")
    after = wait_app_ready(cluster, namespace, "shop")
    assert {s: p["instance"] for s, p in after["status"]["slots"].items()} == keep
    assert qa_instance not in after["status"]["instances"]
    for instance, uids in kept_pods.items():
        assert pod_uids(cluster, namespace, f"funcplane.io/instance={instance}") == uids
    assert get(cluster, namespace, "service", "shop-staging") is not None


def test_content_change_redeploys_only_that_slot(cluster, namespace, operator) -> None:
    apply(cluster, namespace, [app(), slot("staging", code={"image": {"reference": "shop:2"}})])
    staged = wait_slot(cluster, namespace, "shop-staging")
    before = wait_app_ready(cluster, namespace, "shop")
    production = before["status"]["slots"]["production"]["instance"]
    production_pods = pod_uids(cluster, namespace, f"funcplane.io/instance={production}")
    production_version = get(cluster, namespace, "deployment", production)["metadata"]["resourceVersion"]

    apply(cluster, namespace, slot("staging", code={"image": {"reference": "shop:3"}}))
    instance = staged["status"]["instance"]

    def redeployed():
        body = get(cluster, namespace, "functionapp", "shop")
        record = body["status"]["instances"][instance]
        return record["content"]["code"]["image"]["reference"] == "shop:3" and record["ready"] and body
    after = eventually(redeployed, timeout=90, what="staging redeployed with shop:3")
    assert after["status"]["slots"]["staging"]["instance"] == instance  # same instance, new content
    assert after["status"]["slots"]["staging"]["deployedHash"] != before["status"]["slots"]["staging"]["deployedHash"]
    volumes = get(cluster, namespace, "deployment", instance)["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "code")["image"]["reference"] == "shop:3"
    assert pod_uids(cluster, namespace, f"funcplane.io/instance={production}") == production_pods
    assert get(cluster, namespace, "deployment", production)["metadata"]["resourceVersion"] == production_version
