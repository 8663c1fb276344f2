"""Rendering an app into Deployments, ConfigMaps, Services (pure functions)."""

from __future__ import annotations

import json

from funcplane.api import PRODUCTION
from funcplane.render import names
from funcplane_host.app.front_door import DEFAULT_DRAIN_GRACE

SETTINGS = [
    {"name": "GREETING", "value": "hi"},
    {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
    {"name": "ENVIRONMENT", "value": "prod", "sticky": True},
]


def test_instance_deployment_follows_the_host_contract(function_app, rendered, deployment_of, env_of) -> None:
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


def test_each_slot_gets_a_service_selecting_its_instance_and_distinct_host_ids(
        function_app, slot, rendered, deployment_of, env_of) -> None:
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


def test_only_hosts_that_run_timers_get_a_token_and_a_role_for_their_slots_leases(
        function_app, slot, rendered, deployment_of, env_of) -> None:
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


def test_sticky_settings_come_from_the_slot_the_instance_serves(function_app, slot, rendered) -> None:
    app = function_app(settings=SETTINGS)
    staging = slot("staging", "t1", settings=[{"name": "ENVIRONMENT", "value": "staging", "sticky": True}])
    staging.status.cloned_settings = app.spec.settings
    objects = rendered(app, [staging])
    staging_instance = app.status.slots["staging"].instance
    assert objects[("ConfigMap", f"{staging_instance}-settings")]["data"]["ENVIRONMENT"] == "staging"
    assert objects[("ConfigMap", f"{staging_instance}-settings")]["data"]["GREETING"] == "hi"  # cloned


def test_rendering_is_stable_and_stamped(function_app, rendered) -> None:
    app = function_app()
    first, second = rendered(app), rendered(app)
    for key, obj in first.items():
        assert obj["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH] == \
            second[key]["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH]


def test_settings_change_restarts_pods_through_the_template_hash(function_app, rendered, deployment_of) -> None:
    before = deployment_of(rendered(app := function_app(settings=SETTINGS)), app)
    changed = function_app(settings=[{"name": "GREETING", "value": "hello"}])
    after = deployment_of(rendered(changed), changed)
    key = names.ANNOTATION_CONFIG_HASH
    assert before["spec"]["template"]["metadata"]["annotations"][key] != \
        after["spec"]["template"]["metadata"]["annotations"][key]


def test_pods_go_where_the_app_asks_and_nowhere_else_by_default(function_app, rendered, deployment_of) -> None:
    default = function_app()
    plain = deployment_of(rendered(default), default)["spec"]["template"]["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain  # unchanged pods for existing apps
    app = function_app(nodeSelector={"funcplane.io/node": "real"},
                       tolerations=[{"key": "funcplane.io/real-node", "operator": "Exists", "effect": "NoSchedule"}])
    pod = deployment_of(rendered(app), app)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"funcplane.io/node": "real"}
    assert pod["tolerations"] == [{"key": "funcplane.io/real-node", "operator": "Exists", "effect": "NoSchedule"}]
