"""Rendering an app into Deployments, ConfigMaps, Services (pure functions)."""

from __future__ import annotations

import json
from typing import Any

from funcplane.api import PRODUCTION, FunctionApp, Slot, WorkerConfig
from funcplane.render import names
from funcplane.render.app import production_view, render_app, slot_view
from funcplane.render.deploy import plan_deployments
from funcplane.render.volumes import VolumeMode
from funcplane.render.workers import declared_workers
from funcplane_host.http.options import DEFAULT_DRAIN_GRACE



def function_app(name: str = "shop", uid: str = "uid-app", **spec: Any) -> FunctionApp:
    body = {"runtime": {"name": "python", "version": "3.12"}, "code": {"image": {"reference": "code:1"}},
            "plan": "premium"}
    body.update(spec)
    return FunctionApp.model_validate({"metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": body})


def slot(slot_name: str, created: str, app: str = "shop", uid: str | None = None, **spec: Any) -> Slot:
    return Slot.model_validate({
        "metadata": {"name": f"{app}-{slot_name}", "namespace": "ns", "uid": uid or f"uid-{slot_name}",
                     "creationTimestamp": created},
        "spec": {"appRef": app, "slotName": slot_name, **spec}})


def worker_config(*workers: dict[str, Any], name: str = "workers", created: str = "2026-01-01T00:00:00Z") -> WorkerConfig:
    return WorkerConfig.model_validate({"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                                        "spec": {"workers": list(workers)}})


def worker(name: str, language: str = "python", **extra: Any) -> dict[str, Any]:
    return {"name": name, "language": language, "source": {"image": {"reference": f"{name}:1"}}, **extra}


SETTINGS = [
    {"name": "GREETING", "value": "hi"},
    {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
    {"name": "ENVIRONMENT", "value": "prod", "sticky": True},
]


def rendered(app, slots=(), workers=(), mode=VolumeMode.IMAGE):
    views = [production_view(app)] + [slot_view(s) for s in slots]
    app.status = plan_deployments("shop", "ns", app.status, [v.request for v in views]).status
    objects = render_app(app, views, declared_workers(workers), mode)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def deployment_of(objects, app, slot_name=PRODUCTION, suffix=""):
    return objects[("Deployment", app.status.slots[slot_name].instance + suffix)]


def env_of(deployment):
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_instance_deployment_follows_the_host_contract() -> None:
    app = function_app(settings=SETTINGS, podAnnotations={"sim.funcplane.dev/ready-after": "2s"})
    objects = rendered(app)
    deployment = deployment_of(objects, app)
    pod = deployment["spec"]["template"]["spec"]
    host = pod["containers"][0]
    env = env_of(deployment)
    instance = app.status.active_instance
    assert env["FUNCPLANE_HOST_ID"]["value"] == "shop"  # the slot's host id: production is the app's
    assert env["FUNCPLANE_SLOT_NAME"]["value"] == PRODUCTION
    assert env["FUNCPLANE_NON_HTTP_TRIGGERS"]["value"] == "true"
    assert env["FUNCTIONS_WORKER_RUNTIME"]["value"] == "python"
    assert env["FUNCPLANE_WORKER_CONFIG"]["value"] == "/etc/funcplane/workers/workers.json"
    # Secret references stay references, never copied into a ConfigMap.
    assert env["DB"] == {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}
    settings = objects[("ConfigMap", f"{instance}-settings")]["data"]
    assert settings == {"GREETING": "hi", "ENVIRONMENT": "prod"}
    assert host["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert host["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # preStop drains: the host's serving grace, then up to functionTimeout for in-flight work,
    # all within the termination grace period.
    assert "/admin/drain?timeout=300'" in " ".join(host["lifecycle"]["preStop"]["exec"]["command"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert host["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["terminationGracePeriodSeconds"] == 300 + 30
    assert pod["terminationGracePeriodSeconds"] >= 300 + DEFAULT_DRAIN_GRACE + 10
    assert host["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert deployment["spec"]["template"]["metadata"]["annotations"]["sim.funcplane.dev/ready-after"] == "2s"
    code = next(v for v in pod["volumes"] if v["name"] == "code")
    assert code["image"]["reference"] == "code:1"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-app"
    assert deployment["metadata"]["labels"][names.LABEL_INSTANCE] == instance
    host_json = json.loads(objects[("ConfigMap", f"{instance}-host")]["data"]["host.json"])
    assert host_json["functionTimeout"] == "00:05:00"


def test_each_slot_gets_a_service_selecting_its_instance_and_distinct_host_ids() -> None:
    app = function_app()
    objects = rendered(app, [slot("staging", "t1")])
    production, staging = objects[("Service", "shop")], objects[("Service", "shop-staging")]
    assert production["spec"]["selector"][names.LABEL_INSTANCE] == app.status.slots[PRODUCTION].instance
    assert staging["spec"]["selector"][names.LABEL_INSTANCE] == app.status.slots["staging"].instance
    ids = {env_of(deployment_of(objects, app, s))["FUNCPLANE_HOST_ID"]["value"] for s in (PRODUCTION, "staging")}
    assert len(ids) == 2
    staging_env = env_of(deployment_of(objects, app, "staging"))
    assert staging_env["FUNCPLANE_NON_HTTP_TRIGGERS"]["value"] == "false"
    assert ("ServiceAccount", "shop") in objects


def test_only_hosts_that_run_timers_get_a_token_and_a_role_for_their_slots_leases() -> None:
    app = function_app()
    objects = rendered(app, [slot("staging", "t1"), slot("qa", "t2", nonHttpTriggers=True)])
    pods = {s: deployment_of(objects, app, s)["spec"]["template"]["spec"] for s in (PRODUCTION, "staging", "qa")}
    assert {s: p["automountServiceAccountToken"] for s, p in pods.items()} == \
        {PRODUCTION: True, "staging": False, "qa": True}
    # The host names its timer Lease after its host id; the Role must allow exactly those names.
    leases = {s: env_of(deployment_of(objects, app, s))["FUNCPLANE_HOST_ID"]["value"] + "-timers" for s in pods}
    assert leases == {PRODUCTION: "shop-timers", "staging": "shop-staging-timers", "qa": "shop-qa-timers"}
    role, binding = objects[("Role", "shop-host")], objects[("RoleBinding", "shop-host")]
    named = next(rule for rule in role["rules"] if "resourceNames" in rule)
    assert named["resourceNames"] == sorted(leases.values()) and named["verbs"] == ["get", "update"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "shop", "namespace": "ns"}]
    assert binding["roleRef"]["name"] == "shop-host"
    assert objects[("ServiceAccount", "shop")]["automountServiceAccountToken"] is False


def test_sticky_settings_come_from_the_slot_the_instance_serves() -> None:
    app = function_app(settings=SETTINGS)
    staging = slot("staging", "t1", settings=[{"name": "ENVIRONMENT", "value": "staging", "sticky": True}])
    staging.status.cloned_settings = app.spec.settings
    objects = rendered(app, [staging])
    staging_instance = app.status.slots["staging"].instance
    assert objects[("ConfigMap", f"{staging_instance}-settings")]["data"]["ENVIRONMENT"] == "staging"
    assert objects[("ConfigMap", f"{staging_instance}-settings")]["data"]["GREETING"] == "hi"  # cloned


def test_rendering_is_stable_and_stamped() -> None:
    app = function_app()
    first, second = rendered(app), rendered(app)
    for key, obj in first.items():
        assert obj["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH] == \
            second[key]["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH]


def test_settings_change_restarts_pods_through_the_template_hash() -> None:
    before = deployment_of(rendered(app := function_app(settings=SETTINGS)), app)
    changed = function_app(settings=[{"name": "GREETING", "value": "hello"}])
    after = deployment_of(rendered(changed), changed)
    key = names.ANNOTATION_CONFIG_HASH
    assert before["spec"]["template"]["metadata"]["annotations"][key] != \
        after["spec"]["template"]["metadata"]["annotations"][key]
