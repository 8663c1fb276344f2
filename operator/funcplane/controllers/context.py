"""What the reconcilers share: the API façade, the object store, the work queue, the swap engine,
cluster facts.

The queue's keys are `(kind, namespace, name)`: `app` reconciles a FunctionApp with its Slots,
`workers` the WorkerConfig statuses of a namespace, `swap` one tick of an app's swap engine;
`scale` keys carry a fourth part, the instance the scaler ticks for.
Which function handles a key is given to the constructor (`dispatch.dispatch`), so that this
module, imported by every reconciler, imports none of them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Hashable

from funcplane.kube.client import Kube
from funcplane.kube.store import Store
from funcplane.kube.workqueue import WorkQueue
from funcplane.render.volumes import VolumeMode
from funcplane.scale.decide import Autoscaler
from funcplane.swap.engine import SwapEngine

logger = logging.getLogger(__name__)

# Image volumes are on by default from Kubernetes 1.35; older clusters get the copying init container.
IMAGE_VOLUME_MINIMUM = (1, 35)
VOLUME_MODE_ENV = "FUNCPLANE_WORKER_VOLUME_MODE"  # auto | image | copy

APP = "app"
WORKERS = "workers"
SWAP = "swap"
SCALE = "scale"  # ("scale", namespace, app, instance): one scaler tick of an autoscaled instance


class Context:
    def __init__(self, dispatch: Callable[[Context, Hashable], Awaitable[None]], kube: Kube | None = None) -> None:
        self.kube = kube or Kube()
        self.store = Store(self.kube)
        self.queue = WorkQueue(lambda key: dispatch(self, key))
        self.swap_engine = SwapEngine(self)
        # (namespace, app, instance) -> the decision state of an instance the scaler ticks for.
        self.scalers: dict[tuple[str, str, str], Autoscaler] = {}
        self._volume_mode: VolumeMode | None = None
        self._primed: set[str] = set()

    async def prime(self, namespace: str) -> None:
        """Fill the store for `namespace` once; then reconcile everything found there, since the
        watch events of objects the listing already stored are not news and queue nothing."""
        await self.store.prime(namespace)
        if namespace not in self._primed:
            self._primed.add(namespace)
            self.queue_apps_of(namespace)
            for app in self.store.list("FunctionApp", namespace):
                self.queue_swap(namespace, app["metadata"]["name"])
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

    def queue_swap(self, namespace: str, app: str) -> None:
        self.queue.add((SWAP, namespace, app))

    def queue_worker_status(self, namespace: str) -> None:
        self.queue.add((WORKERS, namespace, ""))

    def queue_apps_of(self, namespace: str) -> None:
        for app in self.store.list("FunctionApp", namespace):
            self.queue_app(namespace, app["metadata"]["name"])
