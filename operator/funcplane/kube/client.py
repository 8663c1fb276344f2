"""A small async façade over the Kubernetes REST API: the calls the reconcilers make, nothing more.

Calls run the official client's synchronous transport in a thread; every write goes through here,
so the field manager is the same everywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

logger = logging.getLogger(__name__)

from funcplane.api.base import GROUP, VERSION
from funcplane.render.names import FIELD_MANAGER

SCALER_FIELD_MANAGER = f"{FIELD_MANAGER}-scaler"  # the scaler's writes show apart in managedFields


@dataclass(frozen=True)
class Kind:
    name: str
    prefix: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        path = f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


CUSTOM = f"/apis/{GROUP}/{VERSION}"
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("Deployment", "/apis/apps/v1", "deployments"),
    Kind("Service", "/api/v1", "services"),
    Kind("ConfigMap", "/api/v1", "configmaps"),
    Kind("Secret", "/api/v1", "secrets"),
    Kind("ServiceAccount", "/api/v1", "serviceaccounts"),
    Kind("Role", "/apis/rbac.authorization.k8s.io/v1", "roles"),
    Kind("RoleBinding", "/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    Kind("FunctionApp", CUSTOM, "functionapps"),
    Kind("Slot", CUSTOM, "slots"),
    Kind("WorkerConfig", CUSTOM, "workerconfigs"),
)}
OWNED_KINDS = ("Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding")

API_REQUESTS = Counter("funcplane_reconciler_api_requests", "REST calls the reconcilers made (watches excluded), "
                       "by HTTP method and status code.", ["method", "code"])


class Conflict(Exception):
    """The object changed since it was read (optimistic concurrency); reconcile again."""


def _load_configuration() -> client.Configuration:
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(client_configuration=configuration)
    return configuration


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api = api_client or client.ApiClient(_load_configuration())
        self.api.configuration.connection_pool_maxsize = max(self.api.configuration.connection_pool_maxsize or 0, 8)

    def _call(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, Any]] | None = None,
              content_type: str | None = None) -> dict[str, Any] | None:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        response.read()
        API_REQUESTS.labels(method, str(response.status)).inc()
        if response.status == 404:
            return None
        if response.status == 409:
            raise Conflict(response.data.decode(errors="replace")[:500])
        if response.status >= 400:
            raise ApiException(status=response.status, reason=response.data.decode(errors="replace")[:2000])
        return json.loads(response.data) if response.data else {}

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._call, method, path, **kwargs)

    async def list(self, kind: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await self.call("GET", KINDS[kind].path(namespace), query=query) or {}
        items = result.get("items", [])
        api_version = result.get("apiVersion", "v1")
        for item in items:  # list items carry no kind/apiVersion
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
        return items

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.call("GET", KINDS[kind].path(namespace, name))

    async def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Pods, read when asked (not a watched kind: the swap, the scaler and a not-ready instance's
        status read an instance's pods through swap.observe.instance_pods)."""
        result = await self.call("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", label_selector)])
        return (result or {}).get("items", [])

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's single field manager."""
        meta = manifest["metadata"]
        result = await self.call("PATCH", KINDS[manifest["kind"]].path(meta["namespace"], meta["name"]),
                                 body=manifest, content_type="application/apply-patch+yaml",
                                 query=[("fieldManager", FIELD_MANAGER), ("force", "true")])
        assert result is not None
        return result

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None if it already exists (create-only objects such as generated keys)."""
        meta = manifest["metadata"]
        try:
            return await self.call("POST", KINDS[manifest["kind"]].path(meta["namespace"]), body=manifest,
                                   query=[("fieldManager", FIELD_MANAGER)])
        except Conflict:
            return None

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self.call("DELETE", KINDS[kind].path(namespace, name),
                        body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any],
                           resource_version: str | None = None) -> dict[str, Any] | None:
        """Replace-by-merge the status; with a resourceVersion the write fails on a concurrent change."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self.call("PATCH", KINDS[kind].path(namespace, name, "status"), body=body,
                               content_type="application/merge-patch+json")

    async def scale(self, kind: str, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
        """Set spec.replicas alone (the scaler's one write to a Deployment)."""
        return await self.call("PATCH", KINDS[kind].path(namespace, name), body={"spec": {"replicas": replicas}},
                               content_type="application/merge-patch+json",
                               query=[("fieldManager", SCALER_FIELD_MANAGER)])

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """Merge annotations into a pod (None removes one); a pod already gone is no error."""
        await self.call("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}",
                        body={"metadata": {"annotations": annotations}},
                        content_type="application/merge-patch+json", query=[("fieldManager", SCALER_FIELD_MANAGER)])

    async def server_version(self) -> tuple[int, int]:
        info = await self.call("GET", "/version") or {}
        major = int("".join(ch for ch in str(info.get("major", "1")) if ch.isdigit()) or 1)
        minor = int("".join(ch for ch in str(info.get("minor", "0")) if ch.isdigit()) or 0)
        return major, minor

    async def event(self, involved: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """Record a core/v1 Event on an object, for `kubectl describe`. Best effort: a lost event
        must not fail (and so repeat) the reconcile that caused it."""
        try:
            await self._post_event(involved, reason, message, warning)
        except Exception as error:  # noqa: BLE001
            logger.warning("could not record event %s on %s: %s", reason, involved["metadata"]["name"], error)

    async def _post_event(self, involved: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        meta = involved["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
        }
        await self.call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
