"""Managed worker configuration: which declared workers an app's pods get, and the config file."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from funcplane.api.functionapp import Runtime
from funcplane.api.workerconfig import WorkerConfig, WorkerSpec

from . import names
from .volumes import Mounted, VolumeMode, mount_source


def declared_workers(configs: Iterable[WorkerConfig]) -> list[WorkerSpec]:
    """Every worker of the namespace's WorkerConfigs; on a name clash the oldest config wins."""
    ordered = sorted(configs, key=lambda c: (c.metadata.get("creationTimestamp", ""), c.metadata.get("name", "")))
    chosen: dict[str, WorkerSpec] = {}
    for config in ordered:
        for worker in config.spec.workers:
            chosen.setdefault(worker.name, worker)
    return list(chosen.values())


def workers_for(runtime: Runtime, workers: Iterable[WorkerSpec]) -> list[WorkerSpec]:
    """Enabled workers serving the app's language (and version); disabled ones are removed."""
    return sorted((w for w in workers if w.enabled and w.serves(runtime.name, runtime.version)), key=lambda w: w.name)


@dataclass(frozen=True)
class Slices:
    """Gray release: the main slice runs the fully rolled-out workers; the gray slice (if any)
    also runs the workers still being rolled out, on a share of the pods."""

    main: list[WorkerSpec]
    gray: list[WorkerSpec] | None
    gray_replicas: int


def split(workers: list[WorkerSpec], replicas: int) -> Slices:
    complete = [w for w in workers if w.rollout_fraction >= 1.0]
    partial = [w for w in workers if w.rollout_fraction < 1.0]
    if not partial:
        return Slices(complete, None, 0)
    fraction = min(w.rollout_fraction for w in partial)
    gray_replicas = min(replicas, math.ceil(replicas * fraction)) if fraction > 0 else 0
    return Slices(complete, workers, gray_replicas)


def config_file(workers: Iterable[WorkerSpec]) -> dict[str, Any]:
    """The managed config file the host reads ({"workers": {name: {path, enabled, ...}}})."""
    entries: dict[str, Any] = {}
    for worker in workers:
        entry: dict[str, Any] = dict(worker.options or {})
        entry.update({"path": worker.mount_path, "enabled": True, "language": worker.language})
        if worker.version:
            entry["version"] = worker.version
        if worker.arguments:
            entry["arguments"] = list(worker.arguments)
        entries[worker.name] = entry
    return {"workers": entries}


def mount_workers(workers: Iterable[WorkerSpec], mode: VolumeMode) -> Mounted:
    mounted = Mounted()
    for worker in workers:
        mounted.extend(mount_source(f"{names.WORKER_VOLUME_PREFIX}{worker.name}", worker.source, worker.mount_path, mode))
    return mounted
