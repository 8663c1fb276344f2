"""An in-memory view of the objects the reconcilers read, fed by watch events and by the
operator's own write responses, so a reconcile reads nothing from the API server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from funcplane.render.names import LABEL_APP, LABEL_MANAGED_BY, MANAGED_BY

from .client import KINDS, OWNED_KINDS, Kube

Key = tuple[str, str, str]  # kind, namespace, name


def _version(body: dict[str, Any]) -> int:
    try:
        return int(body.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


class Store:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.objects: dict[Key, dict[str, Any]] = {}
        self._primed: dict[str, asyncio.Task[None]] = {}

    def put(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (body["kind"], meta["namespace"], meta["name"])
        current = self.objects.get(key)
        if current is None or current["metadata"].get("uid") != meta.get("uid") or _version(body) >= _version(current):
            self.objects[key] = body

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.objects.pop((kind, namespace, name), None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return [body for (k, ns, _), body in self.objects.items() if k == kind and ns == namespace]

    def owned_by(self, app: str, namespace: str) -> Iterable[dict[str, Any]]:
        for (kind, ns, _), body in list(self.objects.items()):
            if ns == namespace and kind in OWNED_KINDS and body["metadata"].get("labels", {}).get(LABEL_APP) == app:
                yield body

    async def prime(self, namespace: str) -> None:
        """List every kind once per namespace before the first reconcile there, so nothing is
        mistaken for missing (and re-created or pruned) before its watch event arrives."""
        task = self._primed.get(namespace)
        if task is None or (task.done() and task.exception() is not None):
            task = self._primed[namespace] = asyncio.ensure_future(self._list_all(namespace))
        await asyncio.shield(task)

    async def _list_all(self, namespace: str) -> None:
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        for kind in KINDS:
            for body in await self.kube.list(kind, namespace, selector if kind in OWNED_KINDS else None):
                self.put(body)
