"""The project's images in tests: built once per session, and run with podman the way a kubelet
would run the operator's rendered pod (its env, volumes, user, read-only root, published port)."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from funcplane_dev import images


def build_images() -> dict[str, str]:
    """Image name -> reference of every project image, built (or found cached) with podman."""
    try:
        return {built.spec.name: built.reference for built in images.build_all()}
    except images.ImageError as error:
        pytest.fail(f"the project's images cannot be built on this machine: {error}", pytrace=False)


@dataclass
class Container:
    name: str

    def logs(self) -> str:
        result = subprocess.run([*images.PODMAN, "logs", self.name], capture_output=True, text=True)
        return result.stdout + result.stderr

    def running(self) -> bool:
        result = subprocess.run([*images.PODMAN, "inspect", "--format", "{{.State.Running}}", self.name],
                                capture_output=True, text=True)
        return result.stdout.strip() == "true"

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*images.PODMAN, "exec", self.name, *command], capture_output=True, text=True,
                              timeout=120)

    def remove(self) -> None:
        subprocess.run([*images.PODMAN, "rm", "--force", "--time", "10", self.name], capture_output=True)


def run(reference: str, *options: str, arguments: tuple[str, ...] = (), prefix: str = "funcplane-test") -> Container:
    """Start a detached container; the caller removes it (Container.remove)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([*images.PODMAN, "run", "--detach", "--name", name, *images.ULIMITS, *options, reference,
                             *arguments], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"podman run {reference} failed ({result.returncode}): {result.stderr.strip()}", pytrace=False)
    return Container(name)


def output_of(reference: str, *options: str, arguments: tuple[str, ...] = ()) -> str:
    """Run a container to completion and return what it printed (its standard output)."""
    result = subprocess.run([*images.PODMAN, "run", "--rm", *images.ULIMITS, *options, reference, *arguments],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"podman run {reference} failed ({result.returncode}): {result.stderr.strip()}", pytrace=False)
    return result.stdout


def pod_options(pod_spec: dict[str, Any], config_maps: dict[str, dict[str, Any]], secrets: dict[str, dict[str, str]],
                local_volumes: dict[str, Path], work_dir: Path, host_port: int) -> list[str]:
    """`podman run` options that give the pod's only container what a kubelet would give it.

    ConfigMap and Secret volumes become files under `work_dir`, emptyDirs tmpfs mounts, image volumes
    podman image mounts; `local_volumes` replaces a volume with a directory of this machine.
    """
    (container,) = pod_spec["containers"]
    security = pod_spec.get("securityContext", {})
    options = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if container.get("securityContext", {}).get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    options += [f"--cap-drop={cap}" for cap in container.get("securityContext", {}).get("capabilities", {}).get("drop", [])]
    for entry in container.get("env", []):
        if "value" in entry:
            options += ["--env", f"{entry['name']}={entry['value']}"]
    for source in container.get("envFrom", []):
        for key, value in config_maps[source["configMapRef"]["name"]].get("data", {}).items():
            options += ["--env", f"{key}={value}"]
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    for mount in container["volumeMounts"]:
        volume, target = volumes[mount["name"]], mount["mountPath"]
        if mount["name"] in local_volumes:
            options += ["--volume", f"{local_volumes[mount['name']]}:{target}:ro"]
        elif "configMap" in volume or "secret" in volume:
            if "configMap" in volume:
                data = config_maps[volume["configMap"]["name"]].get("data", {})
                items = volume["configMap"].get("items")
            else:
                data = secrets[volume["secret"]["secretName"]]
                items = volume["secret"].get("items")
            files = {item["path"]: data[item["key"]] for item in items} if items else dict(data)
            directory = work_dir / mount["name"]
            directory.mkdir(parents=True)
            for path, text in files.items():
                (directory / path).write_text(text)
            directory.chmod(0o755)
            options += ["--volume", f"{directory}:{target}:ro"]
        elif "emptyDir" in volume:
            options += ["--tmpfs", f"{target}:rw,mode=1777"]
        elif "image" in volume:
            options += ["--mount", f"type=image,source={volume['image']['reference']},destination={target}"]
        else:
            raise AssertionError(f"volume {mount['name']} has a kind this runner does not know: {sorted(volume)}")
    for port in container["ports"]:
        options += ["--publish", f"127.0.0.1:{host_port}:{port['containerPort']}"]
    return options


def kubeconfig_with_embedded_credentials(kubeconfig: Path, target: Path) -> Path:
    """The same kubeconfig with its certificate files inlined, readable by a container's user."""
    config = yaml.safe_load(kubeconfig.read_text())
    for section, keys in (("clusters", ("certificate-authority",)), ("users", ("client-certificate", "client-key"))):
        for entry in config[section]:
            body = entry["cluster" if section == "clusters" else "user"]
            for key in keys:
                if key in body:
                    body[f"{key}-data"] = base64.b64encode(Path(body.pop(key)).read_bytes()).decode()
    target.write_text(json.dumps(config))
    target.chmod(0o644)
    return target
