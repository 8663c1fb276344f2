"""Reading the world for one tick: rollouts checked against the renderer, pods, warm-ups, endpoints."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp

from funcplane.api.functionapp import FunctionApp, Warmup
from funcplane.api.slot import Slot
from funcplane.api.workerconfig import WorkerConfig
from funcplane.kube.client import Kube
from funcplane.render.readiness import deployment_rollout
from funcplane.render import names
from funcplane.render.app import HTTP_PORT, app_views, render_app
from funcplane.render.deploy import admit_slots
from funcplane.render.instance import KEYS_FILE, KEYS_VOLUME
from funcplane.render.volumes import VolumeMode
from funcplane.render.workers import declared_workers

from .journal import PodWarmup

WARMUP_REQUEST_TIMEOUT = 10.0
KEY_HEADER = "x-functions-key"  # where the host reads a key
MESSAGE_LIMIT = 200


async def expected_deployments(kube: Kube, app: FunctionApp, slots: list[Slot],
                               volume_mode: VolumeMode) -> dict[str, dict[str, str]]:
    """Instance -> {Deployment name: applied hash} that the app reconciler renders for `app.status`,
    so a rollout is judged against the template the status asks for, not whatever runs now."""
    namespace = app.metadata["namespace"]
    admission = admit_slots(app.metadata["name"], app.spec, slots)
    views = app_views(app, admission.admitted)
    workers = declared_workers(WorkerConfig.model_validate(w) for w in await kube.list("WorkerConfig", namespace))
    expected: dict[str, dict[str, str]] = {}
    for manifest in render_app(app, views, workers, volume_mode):
        if manifest["kind"] == "Deployment":
            meta = manifest["metadata"]
            expected.setdefault(meta["labels"][names.LABEL_INSTANCE], {})[meta["name"]] = \
                meta["annotations"][names.ANNOTATION_APPLIED_HASH]
    return expected


async def rolled_out(kube: Kube, namespace: str, app: str, instance: str, expected: dict[str, str]) -> bool:
    """The instance's Deployments are the expected ones, observed, fully updated and Ready."""
    live = await kube.list("Deployment", namespace, names.selector_string(names.instance_selector(app, instance)))
    hashes = {d["metadata"]["name"]: d["metadata"].get("annotations", {}).get(names.ANNOTATION_APPLIED_HASH)
              for d in live if not d["metadata"].get("deletionTimestamp")}
    return bool(expected) and hashes == expected and deployment_rollout(live).ready


async def instance_pods(kube: Kube, namespace: str, app: str, instance: str) -> list[dict[str, Any]]:
    """The instance's pods that are not terminating, read from the API (pods are not watched)."""
    pods = await kube.pods(namespace, names.selector_string(names.instance_selector(app, instance)))
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_readiness(pod: dict[str, Any]) -> PodWarmup:
    status = pod.get("status", {})
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    waiting = [s.get("state", {}).get("waiting", {}) for s in status.get("containerStatuses", [])]
    reason = next((w.get("reason", "") + (f" ({w['message']})" if w.get("message") else "") for w in waiting if w),
                  "") or ready.get("message", "") or ready.get("reason", "") or status.get("phase", "")
    is_ready = ready.get("status") == "True" and bool(status.get("podIP"))
    return PodWarmup(pod=pod["metadata"]["name"], ip=status.get("podIP"), ready=is_ready,
                     message="" if is_ready else reason[:MESSAGE_LIMIT])


def keys_secret_of(pod: dict[str, Any]) -> str | None:
    """The keys Secret a pod mounts (its slot's, or the target's while it warms up as the target)."""
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == KEYS_VOLUME and volume.get("secret"):
            return volume["secret"].get("secretName")
    return None


async def master_key(kube: Kube, namespace: str, secret_name: str) -> str | None:
    """The master key in a slot's keys Secret (keys.json), None if absent or unreadable."""
    return master_key_in(await kube.get("Secret", namespace, secret_name))


def master_key_in(secret: dict[str, Any] | None) -> str | None:
    """The master key in a keys Secret's body (as read or watched)."""
    encoded = ((secret or {}).get("data") or {}).get(KEYS_FILE)
    if not encoded:
        return None
    try:
        keys = json.loads(base64.b64decode(encoded))
    except ValueError:
        return None
    key = keys.get("masterKey") if isinstance(keys, dict) else None
    return key if isinstance(key, str) and key else None


async def warm_up(session: aiohttp.ClientSession, pod: PodWarmup, warmup: Warmup, timeout: float,
                  key: str | None) -> PodWarmup:
    """One warm-up request to the pod itself (not through a Service), as the swap requires, with the
    master key of the keys the pod runs with (the host's warm-up endpoint is an admin endpoint)."""
    url = f"http://{pod.ip}:{HTTP_PORT}{warmup.path}"
    headers = {KEY_HEADER: key} if key else {}
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            body = (await response.text())[:MESSAGE_LIMIT]
            warm = response.status in warmup.accepted_statuses
            return pod.model_copy(update={"warm": warm, "status": response.status, "message": "" if warm else body})
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
        return pod.model_copy(update={"warm": False, "status": None,
                                      "message": f"GET {url}: {type(error).__name__} {error}"[:MESSAGE_LIMIT]})


async def read_concurrency(session: aiohttp.ClientSession, ip: str, key: str | None,
                           timeout: float) -> dict[str, Any] | None:
    """The host's `GET /admin/concurrency` at the pod itself, with the master key; None when it
    does not answer in time or answers anything but a JSON object (the pod then counts as unread)."""
    url = f"http://{ip}:{HTTP_PORT}/admin/concurrency"
    headers = {KEY_HEADER: key} if key else {}
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return None
            body = await response.json(content_type=None)
            return body if isinstance(body, dict) else None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
        return None


async def source_pods(kube: Kube, namespace: str, app: str, instance: str, *, warmup: Warmup | None,
                      previous: list[PodWarmup], remaining: float) -> list[PodWarmup]:
    """Readiness of every pod of the instance; with `warmup`, each Ready pod not yet warm is warmed
    (a pod found warm stays warm while its IP is the same)."""
    bodies = await instance_pods(kube, namespace, app, instance)
    pods = [pod_readiness(p) for p in bodies]
    if warmup is None:
        return sorted(pods, key=lambda p: p.pod)
    secrets = {pod.pod: keys_secret_of(body) for pod, body in zip(pods, bodies)}
    keys = {name: await master_key(kube, namespace, name) for name in set(secrets.values()) if name}
    known = {(p.pod, p.ip): p for p in previous}
    timeout = max(1.0, min(WARMUP_REQUEST_TIMEOUT, remaining))
    async with aiohttp.ClientSession() as session:
        async def check(pod: PodWarmup) -> PodWarmup:
            before = known.get((pod.pod, pod.ip))
            if not pod.ready:
                return pod
            if before is not None and before.warm:
                return before.model_copy(update={"ready": True})
            secret = secrets.get(pod.pod)
            return await warm_up(session, pod, warmup, timeout, keys.get(secret) if secret else None)
        return sorted(await asyncio.gather(*(check(p) for p in pods)), key=lambda p: p.pod)


async def ready_endpoints(kube: Kube, namespace: str, service: str) -> frozenset[str]:
    """Addresses a Service routes to now: Ready endpoints of its EndpointSlices."""
    result = await kube.call("GET", f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                             query=[("labelSelector", f"kubernetes.io/service-name={service}")])
    addresses: set[str] = set()
    for endpoint_slice in (result or {}).get("items", []):
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True):
                addresses.update(endpoint.get("addresses", []))
    return frozenset(addresses)

