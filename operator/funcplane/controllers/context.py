"""What the reconcilers share: the API façade, the object store, the work queue, cluster facts."""

from __future__ import annotations

import logging
import os
from funcplane.render.volumes import VolumeMode

from .kube import Kube
from .store import Store
from .workqueue import WorkQueue

logger = logging.getLogger(__name__)

# Image volumes are on by default from Kubernetes 1.35; older clusters get the copying init container.
IMAGE_VOLUME_MINIMUM = (1, 35)
VOLUME_MODE_ENV = "FUNCPLANE_WORKER_VOLUME_MODE"  # auto | image | copy

APP = "app"
WORKERS = "workers"


class Context:
    def __init__(self, kube: Kube | None = None) -> None:
        from .dispatch import dispatch  # the reconcilers import Context

        self.kube = kube or Kube()
        self.store = Store(self.kube)
        self.queue = WorkQueue(lambda key: dispatch(self, key))
        self._volume_mode: VolumeMode | None = None
        self._primed: set[str] = set()

    async def prime(self, namespace: str) -> None:
        """Fill the store for `namespace` once; then reconcile everything found there, since the
        watch events of objects the listing already stored are not news and queue nothing."""
        await self.store.prime(namespace)
        if namespace not in self._primed:
            self._primed.add(namespace)
            self.queue_apps_of(namespace)
            for slot in self.store.list("Slot", namespace):
                if slot.get("spec", {}).get("appRef"):
                    self.queue_app(namespace, slot["spec"]["appRef"])
            self.queue_worker_status(namespace)

    async def volume_mode(self) -> VolumeMode:
        if self._volume_mode is None:
            setting = os.environ.get(VOLUME_MODE_ENV, "auto").lower()
            if setting in (VolumeMode.IMAGE.value, VolumeMode.COPY.value):
                self._volume_mode = VolumeMode(setting)
            elif setting == "auto":
                version = await self.kube.server_version()
                self._volume_mode = VolumeMode.IMAGE if version >= IMAGE_VOLUME_MINIMUM else VolumeMode.COPY
            else:
                raise ValueError(f"{VOLUME_MODE_ENV}={setting!r}: use auto, image or copy")
            logger.info("worker and code images are mounted with mode %s", self._volume_mode.value)
        return self._volume_mode

    def queue_app(self, namespace: str, name: str) -> None:
        self.queue.add((APP, namespace, name))

    def queue_worker_status(self, namespace: str) -> None:
        self.queue.add((WORKERS, namespace, ""))

    def queue_apps_of(self, namespace: str) -> None:
        for app in self.store.list("FunctionApp", namespace):
            self.queue_app(namespace, app["metadata"]["name"])
