"""Bringing files into host pods from an image, a PVC or a ConfigMap (pure functions)."""

from __future__ import annotations

from funcplane.api import FileSource
from funcplane.render.volumes import COPY_TARGET, VolumeMode, mount_source


def source(**fields: object) -> FileSource:
    return FileSource.model_validate(fields)


def test_nothing_deployed_yet_mounts_an_empty_dir() -> None:
    mounted = mount_source("code", None, "/home/site/wwwroot", VolumeMode.IMAGE)
    assert mounted.volumes == [{"name": "code", "emptyDir": {}}]
    assert mounted.mounts == [{"name": "code", "mountPath": "/home/site/wwwroot"}] and not mounted.init_containers


def test_claims_and_config_maps_mount_read_only() -> None:
    claim = mount_source("code", source(persistentVolumeClaim={"claimName": "apps", "subPath": "shop"}), "/c",
                         VolumeMode.IMAGE)
    assert claim.volumes == [{"name": "code", "persistentVolumeClaim": {"claimName": "apps", "readOnly": True}}]
    assert claim.mounts == [{"name": "code", "mountPath": "/c", "readOnly": True, "subPath": "shop"}]
    config_map = mount_source("code", source(configMap={"name": "shop-code"}), "/c", VolumeMode.COPY)
    assert config_map.volumes == [{"name": "code", "configMap": {"name": "shop-code"}}]
    assert not config_map.init_containers


def test_images_are_image_volumes_or_copied_by_an_init_container() -> None:
    image = source(image={"reference": "code:1", "path": "/app/"})
    mounted = mount_source("code", image, "/c", VolumeMode.IMAGE)
    assert mounted.volumes == [{"name": "code", "image": {"reference": "code:1", "pullPolicy": "IfNotPresent"}}]
    assert mounted.mounts[0]["subPath"] == "app" and not mounted.init_containers
    copied = mount_source("code", image, "/c", VolumeMode.COPY)
    assert copied.volumes == [{"name": "code", "emptyDir": {}}]
    [copier] = copied.init_containers
    assert copier["image"] == "code:1" and copier["volumeMounts"] == [{"name": "code", "mountPath": COPY_TARGET}]
    assert copier["command"][-1] == f'cp -R "/app/." "{COPY_TARGET}/"'
