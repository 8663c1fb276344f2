"""Files mounted into host pods: app code and language workers, from an image, a PVC or a ConfigMap.

Image sources become image volumes where the cluster supports them; otherwise an init container
from the same image copies the files into an emptyDir (``VolumeMode.COPY``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from funcplane.api.base import FileSource


class VolumeMode(str, enum.Enum):
    IMAGE = "image"
    COPY = "copy"


@dataclass
class Mounted:
    """Volumes, mounts and init containers that bring one file source into the pod."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: "Mounted") -> None:
        self.volumes += other.volumes
        self.mounts += other.mounts
        self.init_containers += other.init_containers


COPY_TARGET = "/target"
INIT_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def mount_source(volume: str, source: FileSource | None, mount_path: str, mode: VolumeMode) -> Mounted:
    if source is None:  # an empty slot: nothing deployed yet
        return Mounted([{"name": volume, "emptyDir": {}}], [{"name": volume, "mountPath": mount_path}])
    mount = {"name": volume, "mountPath": mount_path, "readOnly": True}
    if source.persistent_volume_claim is not None:
        claim = source.persistent_volume_claim
        if claim.sub_path:
            mount["subPath"] = claim.sub_path
        return Mounted([{"name": volume, "persistentVolumeClaim": {"claimName": claim.claim_name, "readOnly": True}}],
                       [mount])
    if source.config_map is not None:
        return Mounted([{"name": volume, "configMap": {"name": source.config_map.name}}], [mount])
    image = source.image
    assert image is not None, "FileSource has exactly one source (CRD rule)"
    if mode is VolumeMode.IMAGE:
        if image.path.strip("/"):
            mount["subPath"] = image.path.strip("/")
        return Mounted([{"name": volume, "image": {"reference": image.reference, "pullPolicy": image.pull_policy}}],
                       [mount])
    source_dir = image.path.rstrip("/") or ""
    copier = {
        "name": f"copy-{volume}",
        "image": image.reference,
        "imagePullPolicy": image.pull_policy,
        # -R, not -a: the pod's user does not own the emptyDir, so preserving its times fails.
        "command": ["sh", "-c", f'cp -R "{source_dir}/." "{COPY_TARGET}/"'],
        "volumeMounts": [{"name": volume, "mountPath": COPY_TARGET}],
        "securityContext": INIT_SECURITY,
    }
    return Mounted([{"name": volume, "emptyDir": {}}], [mount], [copier])
