"""An autoscaled instance's Deployment: its replicas as the scaler left them, outside the applied
hash, so neither a scale decision nor a re-applied manifest makes the reconciler reset them."""

from __future__ import annotations

from funcplane.render import names
from funcplane.render.app import app_views, render_app
from funcplane.render.volumes import VolumeMode

AUTOSCALE = {"minReplicas": 1, "maxReplicas": 8, "autoscale": {"enabled": True}}


def deployment(app, live: dict[str, int] | None, rendered) -> dict:
    rendered(app)  # plans the pointers into app.status
    objects = render_app(app, app_views(app, []), [], VolumeMode.IMAGE, live)
    instance = app.status.slots["production"].instance
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == instance)


def test_autoscaled_replicas_come_from_the_live_deployment_and_stay_out_of_the_hash(function_app, rendered) -> None:
    app = function_app(replicas=2, scale=AUTOSCALE)
    fresh = deployment(app, None, rendered)
    assert fresh["spec"]["replicas"] == 2  # a new Deployment starts at spec.replicas
    assert fresh["metadata"]["annotations"][names.ANNOTATION_AUTOSCALED] == "true"
    instance_live = {app.status.slots["production"].instance: 7}
    scaled = deployment(app, instance_live, rendered)
    assert scaled["spec"]["replicas"] == 7
    hashes = {d["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH] for d in (fresh, scaled)}
    assert len(hashes) == 1  # the scaler's write is no change for the reconciler


def test_without_autoscaling_spec_replicas_rule_and_change_the_hash(function_app, rendered) -> None:
    two, three = function_app(replicas=2), function_app(replicas=3)
    first = deployment(two, {"anything": 9}, rendered)
    second = deployment(three, None, rendered)
    assert (first["spec"]["replicas"], second["spec"]["replicas"]) == (2, 3)
    assert names.ANNOTATION_AUTOSCALED not in first["metadata"].get("annotations", {})
    assert first["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH] != \
        second["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH]
