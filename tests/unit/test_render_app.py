"""What one FunctionApp reconciles into: slot views, cloned settings, Services, access, keys (pure)."""

from __future__ import annotations

import json

from funcplane.api import PRODUCTION
from funcplane.render.app import app_views, clone_settings, keys_secret, render_app
from funcplane.render.volumes import VolumeMode

SETTINGS = [{"name": "GREETING", "value": "hi"}, {"name": "ENVIRONMENT", "value": "prod", "sticky": True}]


def test_views_are_production_first_then_the_admitted_slots(function_app, slot) -> None:
    app = function_app(settings=SETTINGS)
    staging = slot("staging", "t1", settings=[{"name": "GREETING", "value": "staging"}])
    staging.status.cloned_settings = clone_settings(app)
    views = app_views(app, [staging])
    assert [(v.name, v.owner_uid, v.non_http_triggers) for v in views] == [
        (PRODUCTION, "uid-app", True), ("staging", "uid-staging", False)]
    assert {s.name: s.value for s in views[1].settings} == {"GREETING": "staging", "ENVIRONMENT": "prod"}


def test_a_new_slot_clones_every_setting_sticky_ones_included(function_app) -> None:
    cloned = clone_settings(function_app(settings=SETTINGS))
    assert [(s.name, s.sticky) for s in cloned] == [("GREETING", False), ("ENVIRONMENT", True)]


def test_keys_belong_to_their_slot(function_app) -> None:
    secret = keys_secret(function_app(), "staging", "master", "function")
    assert secret["metadata"]["name"] == "shop-staging-keys"
    assert secret["metadata"]["labels"]["funcplane.io/slot"] == "staging"
    assert json.loads(secret["stringData"]["keys.json"]) == {
        "masterKey": "master", "functionKeys": {"default": "function"}, "functions": {}}


def test_a_slot_without_an_admitted_view_renders_nothing(function_app, slot, rendered) -> None:
    app = function_app()
    objects = rendered(app, [slot("staging", "t1")])
    assert ("Service", "shop-staging") in objects
    only_production = render_app(app, app_views(app, []), [], VolumeMode.IMAGE)
    kinds_and_names = {(o["kind"], o["metadata"]["name"]) for o in only_production}
    assert ("Service", "shop") in kinds_and_names and ("Service", "shop-staging") not in kinds_and_names
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-app" for o in only_production)
