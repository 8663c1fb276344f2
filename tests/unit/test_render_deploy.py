"""Spec is a deployment request: pointers, deploys and slot admission (pure functions)."""

from __future__ import annotations

from funcplane.api import PRODUCTION
from funcplane.render.app import production_view, slot_view
from funcplane.render.deploy import admit_slots, plan_deployments


def plan(app, slots=()):
    views = [production_view(app)] + [slot_view(s) for s in slots]
    return plan_deployments("shop", "ns", app.status, [v.request for v in views])


def test_new_slots_get_stable_instances_that_are_not_slot_names(function_app, slot) -> None:
    app = function_app()
    staging = slot("staging", "t1")
    first = plan(app, [staging])
    again = plan(app, [staging])
    assert first.status.slots.keys() == {PRODUCTION, "staging"}
    ids = {p.instance for p in first.status.slots.values()}
    assert len(ids) == 2 and all(i.startswith("shop-") and len(i) == len("shop-") + 5 for i in ids)
    assert "staging" not in " ".join(ids) and "production" not in " ".join(ids)
    # Deterministic from the owners' uids: a crash before status is recorded re-plans the same ids.
    assert {p.instance for p in again.status.slots.values()} == ids
    assert first.status.active_instance == first.status.slots[PRODUCTION].instance
    assert first.status.selector == f"funcplane.io/app=shop,funcplane.io/instance={first.status.active_instance}"


def test_unchanged_spec_plans_no_deployment(function_app) -> None:
    app = function_app()
    app.status = plan(app).status
    assert plan(app).deployments == []


def test_content_change_deploys_to_the_instance_the_slot_points_to(function_app, slot) -> None:
    app = function_app()
    staging = slot("staging", "t1", code={"image": {"reference": "code:staged"}})
    app.status = plan(app, [staging]).status
    # A swap (done by the swap engine) exchanges pointers only.
    prod, stage = app.status.slots[PRODUCTION], app.status.slots["staging"]
    prod.instance, stage.instance = stage.instance, prod.instance
    assert plan(app, [staging]).deployments == []  # re-applying the same manifests undoes nothing
    changed = slot("staging", "t1", code={"image": {"reference": "code:2"}})
    result = plan(app, [changed])
    assert [(d.slot, d.instance) for d in result.deployments] == [("staging", stage.instance)]
    assert result.status.instances[stage.instance].content.code.image.reference == "code:2"
    # Production now runs the formerly staged content; the deploy did not touch it.
    assert result.status.instances[prod.instance].content.code.image.reference == "code:staged"


def test_deleted_slot_drops_only_its_instance(function_app, slot) -> None:
    app = function_app()
    staging, qa = slot("staging", "t1"), slot("qa", "t2")
    app.status = plan(app, [staging, qa]).status
    result = plan(app, [staging])
    assert result.removed_instances == [app.status.slots["qa"].instance]
    assert set(result.status.instances) == {app.status.slots[PRODUCTION].instance, app.status.slots["staging"].instance}


def test_premium_admits_two_slots_besides_production_oldest_first(function_app, slot) -> None:
    app = function_app(plan="premium")
    slots = [slot("d", "2026-01-04T00:00:00Z"), slot("a", "2026-01-01T00:00:00Z"),
             slot("c", "2026-01-03T00:00:00Z"), slot("b", "2026-01-02T00:00:00Z")]
    admission = admit_slots("shop", app.spec, slots)
    assert [s.spec.slot_name for s in admission.admitted] == ["a", "b"]
    assert {name: reason for name, (reason, _) in admission.refused.items()} == {
        "shop-c": "SlotLimitExceeded", "shop-d": "SlotLimitExceeded"}
    assert "plan 'premium' allows 3 slots" in admission.refused["shop-c"][1]


def test_consumption_allows_one_slot_and_duplicates_are_refused(function_app, slot) -> None:
    app = function_app(plan="consumption")
    twin = slot("a", "2026-01-02T00:00:00Z", uid="other")
    twin.metadata["name"] = "shop-a-copy"
    admission = admit_slots("shop", app.spec, [slot("a", "2026-01-01T00:00:00Z"), twin])
    assert admission.refused["shop-a-copy"][0] == "DuplicateSlotName"
