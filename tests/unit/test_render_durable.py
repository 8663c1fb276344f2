"""spec.durable rendered into what the host reads: host.json's durableTask section, the state
volume for SQLite, the connection string Secret reference for PostgreSQL."""

from __future__ import annotations

import json

import pytest

from funcplane.api import FunctionApp
from funcplane.api.crd import RESOURCES, custom_resource_definition
from funcplane.api.slot import Slot
from funcplane.render.app import production_view, render_app, slot_view, task_hubs
from funcplane.render.deploy import plan_deployments
from funcplane.render.volumes import VolumeMode
from funcplane.render.workers import declared_workers


def rendered(durable: dict, **spec: object) -> tuple[dict, dict, dict]:
    body = {"runtime": {"name": "python"}, "code": {"image": {"reference": "code:1"}}, "durable": durable, **spec}
    app = FunctionApp.model_validate({"metadata": {"name": "shop", "namespace": "ns", "uid": "u"}, "spec": body})
    views = [production_view(app)]
    app.status = plan_deployments("shop", "ns", app.status, [v.request for v in views]).status
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render_app(app, views, declared_workers(()),
                                                                           VolumeMode.IMAGE)}
    instance = app.status.active_instance
    pod = objects[("Deployment", instance)]["spec"]["template"]["spec"]
    host_json = json.loads(objects[("ConfigMap", f"{instance}-host")]["data"]["host.json"])
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    return pod, env, host_json


def test_sqlite_store_gets_a_state_volume_and_the_site_name() -> None:
    pod, env, host_json = rendered({"store": {"kind": "sqlite", "volumeClaim": "shop-durable"}},
                                   scale={"maxReplicas": 1})
    assert env["FUNCPLANE_STATE_DIR"]["value"] == "/var/lib/funcplane/state"
    assert env["WEBSITE_SITE_NAME"]["value"] == "shop"  # the host's default hub: site name + slot
    volume = next(v for v in pod["volumes"] if v["name"] == "durable-state")
    assert volume["persistentVolumeClaim"] == {"claimName": "shop-durable"}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "durable-state")
    assert mount["mountPath"] == "/var/lib/funcplane/state"
    assert "storageProvider" not in host_json["extensions"]["durableTask"]


def test_postgresql_store_refers_to_its_secret_and_names_the_hub() -> None:
    connection = {"name": "pg", "key": "dsn"}
    pod, env, host_json = rendered({"hubName": "Orders", "store": {"kind": "postgresql", "connection": connection,
                                                                    "leaseSeconds": 20}})
    assert env["FUNCPLANE_DURABLE_CONNECTION"] == {"name": "FUNCPLANE_DURABLE_CONNECTION",
                                                   "valueFrom": {"secretKeyRef": connection}}
    assert host_json["extensions"]["durableTask"] == {
        "hubName": "Orders", "storageProvider": {"type": "postgresql", "leaseSeconds": 20,
                                                 "connectionStringName": "FUNCPLANE_DURABLE_CONNECTION"}}
    assert not any(v["name"] == "durable-state" for v in pod["volumes"])


def test_the_crd_says_sqlite_means_one_pod_and_postgresql_needs_a_connection() -> None:
    text = json.dumps([custom_resource_definition(resource) for resource in RESOURCES])
    assert "a sqlite durable store serves one pod" in text
    assert "a postgresql store needs connection" in text


HUB_SETTING = "AzureFunctionsJobHost__extensions__durableTask__hubName"


@pytest.mark.parametrize(("name", "durable", "extra", "wanted"), [
    ("shop", None, {}, {}),
    ("shop", {}, {}, {"production": "shop", "staging": "shopstaging"}),  # site name + slot outside production
    ("2-go", {}, {}, {"production": "Hub2go", "staging": "Hub2gostaging"}),
    ("shop", {"hubName": "Orders"}, {}, {"production": "Orders", "staging": "Orders"}),
    ("shop", {"hubName": "Orders"}, {"settings": [{"name": HUB_SETTING, "value": "FromSetting"}]},
     {"production": "FromSetting", "staging": "Orders"}),  # the app setting wins, as in the host (the
    # staging Slot here has no settings of its own)
    ("shop", {}, {"hostJson": {"extensions": {"durableTask": {"hubName": "%HUB%"}}},
                  "settings": [{"name": "HUB", "value": "Resolved"}]},
     {"production": "Resolved"}),  # staging lacks the setting: its host refuses the hub, none is shown
    ("shop", {}, {"settings": [{"name": HUB_SETTING, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     {"staging": "shopstaging"}),  # production's is in a Secret: not known to the operator
])
def test_task_hub_is_named_as_the_host_names_it(name: str, durable: dict | None, extra: dict,
                                                 wanted: dict[str, str]) -> None:
    body = {"runtime": {"name": "python"}, "code": {"image": {"reference": "code:1"}}, "plan": "premium", **extra}
    if durable is not None:
        body["durable"] = durable
    app = FunctionApp.model_validate({"metadata": {"name": name, "namespace": "ns", "uid": "u"}, "spec": body})
    staging = Slot.model_validate({"metadata": {"name": f"{name}-staging", "namespace": "ns", "uid": "s"},
                                   "spec": {"appRef": name, "slotName": "staging"}})
    views = [production_view(app), slot_view(staging)]
    app.status = plan_deployments(name, "ns", app.status, [v.request for v in views]).status
    hubs = task_hubs(app, views)
    assert {slot: hubs[p.instance] for slot, p in app.status.slots.items() if p.instance in hubs} == wanted
