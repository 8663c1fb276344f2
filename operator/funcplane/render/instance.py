"""One instance: the Deployment(s) of host pods and the ConfigMaps they read."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from funcplane.api import PRODUCTION
from funcplane.api.base import Setting
from funcplane.api.functionapp import DeployedContent, FunctionAppSpec
from funcplane.api.workerconfig import WorkerSpec

from . import names
from .volumes import Mounted, VolumeMode, mount_source
from .workers import config_file, mount_workers, split

HTTP_PORT = 8080
APP_ROOT = "/home/site/wwwroot"
HOST_CONFIG_DIR = "/etc/funcplane/host"
WORKER_CONFIG_DIR = "/etc/funcplane/workers"
KEYS_DIR = "/etc/funcplane/keys"
STATE_DIR = "/var/lib/funcplane/state"  # durable SQLite store (and timer status) when spec.durable is set
DURABLE_CONNECTION_SETTING = "FUNCPLANE_DURABLE_CONNECTION"
KEYS_FILE = "keys.json"
KEYS_VOLUME = "keys"  # the pod volume of the slot's keys Secret (the swap's warm-up reads its master key)
# Pods get functionTimeout + this to stop. The preStop drain uses it: the host keeps serving for its
# drain grace period (host.json extensions.http.drainGracePeriod, 10 s by default) while endpoints
# drop the pod, then waits up to functionTimeout for the requests it took; 20 s remain for exit.
DRAIN_GRACE_SECONDS = 30
RUN_AS_USER = 10001  # the host image's user (host-image/Dockerfile)
def drain_command(function_timeout_seconds: int) -> list[str]:
    """preStop: POST /admin/drain (an httpGet hook can only GET); the host image ships Python."""
    url = f"http://127.0.0.1:{HTTP_PORT}/admin/drain?timeout={function_timeout_seconds}"
    return ["python3", "-c",
            f"import urllib.request as u; u.urlopen(u.Request({url!r}, method='POST'), timeout=3600)"]


@dataclass(frozen=True)
class InstanceRequest:
    app_name: str
    namespace: str
    owner: dict[str, Any]
    spec: FunctionAppSpec
    instance: str
    content: DeployedContent
    settings: list[Setting]  # what the pods run: travelling + sticky (content.running_settings)
    slot: str  # the slot whose Service selects it (its keys, its trigger switch)
    non_http_triggers: bool
    workers: list[WorkerSpec]
    volume_mode: VolumeMode
    # Autoscaled: the main Deployment's replicas as they are now (the scaler owns them); None for
    # a Deployment not made yet, which starts at spec.replicas within the bounds.
    live_replicas: int | None = None


def host_json_override(spec: FunctionAppSpec) -> dict[str, Any]:
    """The app's hostJson with the typed spec fields merged in (the typed fields win)."""
    override: dict[str, Any] = json.loads(json.dumps(spec.host_json or {}))
    minutes, seconds = divmod(spec.function_timeout_seconds, 60)
    hours, minutes = divmod(minutes, 60)
    override["functionTimeout"] = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    concurrency = override.setdefault("concurrency", {})
    concurrency["dynamicConcurrencyEnabled"] = spec.concurrency.dynamic
    concurrency["snapshotPersistenceEnabled"] = spec.concurrency.snapshot_persistence
    if spec.concurrency.http_per_instance is not None:
        override.setdefault("extensions", {}).setdefault("http", {})[
            "maxConcurrentRequests"] = spec.concurrency.http_per_instance
    if spec.durable is not None:
        durable_task = override.setdefault("extensions", {}).setdefault("durableTask", {})
        if spec.durable.hub_name:
            durable_task["hubName"] = spec.durable.hub_name
        store = spec.durable.store
        if store.kind == "postgresql":
            durable_task["storageProvider"] = {"type": "postgresql", "leaseSeconds": store.lease_seconds,
                                               "connectionStringName": DURABLE_CONNECTION_SETTING}
    return override


_HUB_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,49}$")
_HUB_SETTING = "AzureFunctionsJobHost__extensions__durableTask__hubName"


def task_hub(request: InstanceRequest) -> str | None:
    """The durable task hub the instance's hosts use, named as the host names it
    (funcplane_host.durable.extension.hub_name): the hub app setting, else host.json hubName
    (a %Setting% reference resolved), else the site name plus the slot outside production.
    None without spec.durable, or when the name comes from a Secret or is not a valid hub name.
    A hubName only in the packaged host.json is not visible here."""
    if request.spec.durable is None:
        return None
    settings = {s.name: s.value for s in request.settings}  # None: the value is in a Secret or ConfigMap
    if _HUB_SETTING in settings and settings[_HUB_SETTING] is None:
        return None
    section = host_json_override(request.spec).get("extensions", {}).get("durableTask", {})
    configured = settings.get(_HUB_SETTING) or section.get("hubName")
    if configured is not None:
        reference = re.fullmatch(r"%([^%]+)%", str(configured))
        if reference:
            configured = settings.get(reference.group(1))
        return configured if isinstance(configured, str) and _HUB_PATTERN.match(configured) else None
    site = re.sub(r"[^A-Za-z0-9]", "", request.app_name) or "TestHubName"
    if not site[0].isalpha():
        site = "Hub" + site
    if request.slot.lower() != PRODUCTION:
        site += re.sub(r"[^A-Za-z0-9]", "", request.slot)
    return site[:50] if len(site) >= 3 else site + "Hub"


def _metadata(request: InstanceRequest, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = names.app_labels(request.app_name) | {names.LABEL_INSTANCE: request.instance}
    return {"name": name, "namespace": request.namespace, "labels": labels | (extra_labels or {}),
            "ownerReferences": [request.owner]}


def _config_map(request: InstanceRequest, suffix: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _metadata(request, f"{request.instance}-{suffix}"), "data": data}


def _env(request: InstanceRequest) -> list[dict[str, Any]]:
    runtime = request.spec.runtime
    env = [
        {"name": "AzureWebJobsScriptRoot", "value": APP_ROOT},
        {"name": "FUNCPLANE_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "FUNCPLANE_HOST_ID", "value": names.host_id(request.app_name, request.slot)},
        {"name": "FUNCPLANE_SLOT_NAME", "value": request.slot},
        {"name": "FUNCPLANE_NON_HTTP_TRIGGERS", "value": "true" if request.non_http_triggers else "false"},
        {"name": "FUNCPLANE_WORKER_CONFIG", "value": f"{WORKER_CONFIG_DIR}/workers.json"},
        {"name": "FUNCPLANE_HOST_JSON_OVERRIDE", "value": f"{HOST_CONFIG_DIR}/host.json"},
        {"name": "FUNCPLANE_KEYS_FILE", "value": f"{KEYS_DIR}/{KEYS_FILE}"},
        {"name": "FUNCTIONS_WORKER_RUNTIME", "value": runtime.name},
    ]
    if runtime.version:
        env.append({"name": "FUNCTIONS_WORKER_RUNTIME_VERSION", "value": runtime.version})
    if runtime.worker_process_count:
        env.append({"name": "FUNCTIONS_WORKER_PROCESS_COUNT", "value": str(runtime.worker_process_count)})
    durable = request.spec.durable
    if durable is not None:
        # The default task hub is the site name plus the slot the instance serves.
        env.append({"name": "WEBSITE_SITE_NAME", "value": request.app_name})
        if durable.store.kind == "sqlite":
            env.append({"name": "FUNCPLANE_STATE_DIR", "value": STATE_DIR})
        elif durable.store.connection is not None:
            env.append({"name": DURABLE_CONNECTION_SETTING,
                        "valueFrom": {"secretKeyRef": durable.store.connection.wire()}})
    # Secret/ConfigMap-backed settings stay references; literal ones come from the settings ConfigMap.
    for setting in request.settings:
        if setting.value_from is not None:
            env.append({"name": setting.name, "valueFrom": setting.value_from.wire()})
    return env


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures}


def _pod_template(request: InstanceRequest, slice_name: str, workers: list[WorkerSpec],
                  config_hash: str) -> dict[str, Any]:
    spec = request.spec
    mounted = Mounted(
        volumes=[
            {"name": "host-config", "configMap": {"name": f"{request.instance}-host"}},
            {"name": "worker-config", "configMap": {"name": f"{request.instance}-workers",
                                                    "items": [{"key": f"{slice_name}.json", "path": "workers.json"}]}},
            {"name": KEYS_VOLUME, "secret": {"secretName": names.slot_keys_secret(request.app_name, request.slot)}},
            {"name": "tmp", "emptyDir": {}},
        ],
        mounts=[
            {"name": "host-config", "mountPath": HOST_CONFIG_DIR, "readOnly": True},
            {"name": "worker-config", "mountPath": WORKER_CONFIG_DIR, "readOnly": True},
            {"name": KEYS_VOLUME, "mountPath": KEYS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    )
    durable = spec.durable
    if durable is not None and durable.store.kind == "sqlite":
        claim = durable.store.volume_claim
        mounted.volumes.append({"name": "durable-state", **(
            {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}})})
        mounted.mounts.append({"name": "durable-state", "mountPath": STATE_DIR})
    mounted.extend(mount_source(names.CODE_VOLUME, request.content.code, APP_ROOT, request.volume_mode))
    mounted.extend(mount_workers(workers, request.volume_mode))
    resources: dict[str, Any] = {"requests": spec.resources.requests}
    if spec.resources.limits:
        resources["limits"] = spec.resources.limits
    container = {
        "name": "host",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": _env(request),
        "envFrom": [{"configMapRef": {"name": f"{request.instance}-settings"}}],
        "volumeMounts": mounted.mounts,
        "resources": resources,
        "livenessProbe": _http_probe("/livez", 10, 3),
        "readinessProbe": _http_probe("/readyz", 5, 2),
        "startupProbe": _http_probe("/livez", 2, 60),
        "lifecycle": {"preStop": {"exec": {"command": drain_command(spec.function_timeout_seconds)}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": request.app_name,
        # Only hosts that run timers talk to the API server (their slot's timer Lease).
        "automountServiceAccountToken": request.non_http_triggers,
        "terminationGracePeriodSeconds": spec.function_timeout_seconds + DRAIN_GRACE_SECONDS,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                            "fsGroup": RUN_AS_USER, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": mounted.volumes,
    }
    if mounted.init_containers:
        pod_spec["initContainers"] = mounted.init_containers
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in spec.tolerations]
    labels = names.instance_selector(request.app_name, request.instance) | {names.LABEL_SLICE: slice_name}
    annotations = dict(spec.pod_annotations) | {names.ANNOTATION_CONFIG_HASH: config_hash}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def _deployment(request: InstanceRequest, slice_name: str, replicas: int, workers: list[WorkerSpec],
                config_hash: str) -> dict[str, Any]:
    name = request.instance if slice_name == names.SLICE_MAIN else f"{request.instance}-{slice_name}"
    selector = names.instance_selector(request.app_name, request.instance) | {names.LABEL_SLICE: slice_name}
    metadata = _metadata(request, name, {names.LABEL_SLICE: slice_name})
    if request.spec.autoscaled and slice_name == names.SLICE_MAIN:
        metadata["annotations"] = {names.ANNOTATION_AUTOSCALED: "true"}
        if request.live_replicas is not None:
            replicas = request.live_replicas
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            # Never below the desired count while rolling: new pods are Ready before old ones drain.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": _pod_template(request, slice_name, workers, config_hash),
        },
    }


def render_instance(request: InstanceRequest) -> list[dict[str, Any]]:
    """ConfigMaps and Deployment(s) of one instance (a gray slice when a worker is rolling out)."""
    replicas = request.spec.clamped_replicas()
    slices = split(request.workers, replicas)
    settings_data = {s.name: s.value for s in request.settings if s.value is not None}
    worker_files = {f"{names.SLICE_MAIN}.json": json.dumps(config_file(slices.main), indent=2, sort_keys=True)}
    if slices.gray is not None:
        worker_files[f"{names.SLICE_GRAY}.json"] = json.dumps(config_file(slices.gray), indent=2, sort_keys=True)
    host_file = {"host.json": json.dumps(host_json_override(request.spec), indent=2, sort_keys=True)}
    objects = [
        _config_map(request, "settings", settings_data),
        _config_map(request, "host", host_file),
        _config_map(request, "workers", worker_files),
    ]
    # Pods restart when what they read changes (ConfigMap contents do not reach running env).
    shared_hash = names.digest([settings_data, host_file])
    objects.append(_deployment(request, names.SLICE_MAIN, replicas - slices.gray_replicas, slices.main,
                               names.digest([shared_hash, worker_files[f"{names.SLICE_MAIN}.json"]])))
    if slices.gray is not None:
        objects.append(_deployment(request, names.SLICE_GRAY, slices.gray_replicas, slices.gray,
                                   names.digest([shared_hash, worker_files[f"{names.SLICE_GRAY}.json"]])))
    return objects
