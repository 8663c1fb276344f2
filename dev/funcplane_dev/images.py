"""The project's container images, built on this machine with podman.

Three images, each from its Dockerfile: the function host (``host-image/Dockerfile``), the Python
worker site extension that a WorkerConfig mounts (``host-image/workers/python/Dockerfile``) and the
operator (``operator/Dockerfile``). The Dockerfiles keep a public base (``ARG BASE``) for real
builds; where no image registry can be reached, the base is made here from Debian packages
(mmdebstrap: a minimal root filesystem with python3) and imported as an image whose tag is derived
from its inputs, so it is made once. Python packages come from a wheelhouse that pip downloads on
this machine (build containers do not trust what the machine trusts), mounted into the build and
used offline; it is keyed by the requirements, so it is downloaded once too. Podman's layer cache
makes a rebuild with nothing changed take seconds.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from funcplane.api.functionapp import DEFAULT_HOST_IMAGE

from .binaries import cache_root

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
DEFAULT_REGISTRY = DEFAULT_HOST_IMAGE.rsplit("/", 1)[0]  # ghcr.io/funcplane

# The local base: Debian's Python, no more than the images need. Its Python version decides
# which wheels the wheelhouse holds.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
BASE_PYTHON = "3.11"
# Documentation, manual pages and translations are left out of the base: nothing reads them.
MMDEBSTRAP_OPTIONS = ("--variant=minbase", "--dpkgopt=path-exclude=/usr/share/doc/*",
                      "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*")
BASE_REPOSITORY = "localhost/funcplane/base"
# manylinux tags the base's glibc (2.36) runs; pip download needs them spelled out.
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_31", "manylinux_2_34",
             "manylinux_2_35", "manylinux_2_36")
BUILD_REQUIREMENTS = ("setuptools>=69", "wheel")  # what pip needs to build the project itself

# crun fails on this kind of machine (setrlimit, hybrid cgroups); runc with explicit limits works.
PODMAN = ("podman", "--runtime", "runc")
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
REQUIRED_TOOLS = ("podman", "runc", "mmdebstrap")
WHEELS_MOUNT = "/wheels"


class ImageError(RuntimeError):
    """An image could not be built or inspected; the message says what to do."""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: str  # relative to the repository root, which is the build context
    repository: str  # below the registry
    requirements: tuple[str, ...] = ()  # what its wheelhouse must hold (empty: no Python packages)
    build_args: tuple[tuple[str, str], ...] = ()
    own_tag: str | None = None  # an example's release, independent of the project's version

    def reference(self, registry: str = DEFAULT_REGISTRY, tag: str = VERSION) -> str:
        return f"{registry}/{self.repository}:{self.own_tag or tag}"


def requirements_file(path: str) -> tuple[str, ...]:
    """The requirement lines of a pip requirements file in the repository (comments left out)."""
    lines = (REPO / path).read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


IMAGES: dict[str, ImageSpec] = {
    "host": ImageSpec("host", "host-image/Dockerfile", "host",
                      requirements_file("host-image/requirements.txt") + BUILD_REQUIREMENTS),
    "python-worker": ImageSpec("python-worker", "host-image/workers/python/Dockerfile", "workers/python"),
    "operator": ImageSpec("operator", "operator/Dockerfile", "operator",
                          requirements_file("operator/requirements.txt") + BUILD_REQUIREMENTS),
    # The code images examples/functionapp.yaml and examples/slot-staging.yaml name.
    "example-hello-1.0.0": ImageSpec("example-hello-1.0.0", "examples/apps/Dockerfile", "examples/hello",
                                     build_args=(("APP", "hello-v1"),), own_tag="1.0.0"),
    "example-hello-1.1.0": ImageSpec("example-hello-1.1.0", "examples/apps/Dockerfile", "examples/hello",
                                     build_args=(("APP", "hello-v2"),), own_tag="1.1.0"),
}


@dataclass(frozen=True)
class BuiltImage:
    spec: ImageSpec
    reference: str
    size_bytes: int
    seconds: float

    @property
    def size(self) -> str:
        return f"{self.size_bytes / 1e6:.1f} MB" if self.size_bytes >= 1e6 else f"{self.size_bytes / 1e3:.0f} kB"


def require_tools() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ImageError(
            f"{', '.join(missing)} not found: the images are built with podman (runtime runc) on a base "
            "made by mmdebstrap; `make images` installs them (apt-get install podman runc mmdebstrap uidmap)"
        )


def podman(*args: str, capture: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=capture, text=True, timeout=timeout)
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if capture else "see the output above"
        raise ImageError(f"podman {' '.join(args[:2])} failed ({result.returncode}): {detail}")
    return result


def image_exists(reference: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", reference]).returncode == 0


def image_config(reference: str) -> dict:
    """The image's OCI config (User, Env, Entrypoint, ExposedPorts, Labels, WorkingDir)."""
    (inspected,) = json.loads(podman("image", "inspect", reference).stdout)
    return inspected.get("Config") or {}


def image_size(reference: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", reference).stdout.strip())


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def base_reference() -> str:
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{_digest(BASE_SUITE, BASE_PACKAGES, MMDEBSTRAP_OPTIONS)}"


def ensure_base(log: Callable[[str], None] = print) -> str:
    """The local base image (made once per set of inputs): Debian minbase plus python3."""
    reference = base_reference()
    if image_exists(reference):
        return reference
    log(f"==> base {reference}: mmdebstrap {BASE_SUITE} with {', '.join(BASE_PACKAGES)}")
    with tempfile.TemporaryDirectory(prefix="funcplane-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        result = subprocess.run(
            ["mmdebstrap", "--quiet", *MMDEBSTRAP_OPTIONS, f"--include={','.join(BASE_PACKAGES)}",
             BASE_SUITE, str(rootfs)],
            capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        podman("import", "--change", 'CMD ["python3"]', str(rootfs), reference)
    return reference


def wheelhouse(requirements: Sequence[str], log: Callable[[str], None] = print) -> Path:
    """Wheels for the base's Python and platform, downloaded on this machine once per requirement set."""
    machine = platform.machine()
    directory = cache_root() / "wheels" / _digest(sorted(requirements), BASE_PYTHON, machine, MANYLINUX)
    if directory.is_dir():
        return directory
    log(f"==> wheelhouse {directory}: {len(requirements)} requirements for Python {BASE_PYTHON}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside it and renamed when complete, so a half download is never used.
    partial = Path(tempfile.mkdtemp(prefix=f"{directory.name}-", dir=directory.parent))
    platforms = [arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_{machine}")]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--implementation", "cp", "--python-version", BASE_PYTHON, *platforms,
         "--dest", str(partial), *requirements],
        capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ImageError(f"pip download of the wheelhouse failed: {result.stderr.strip()[-2000:]}")
    partial.chmod(0o755)
    try:
        partial.rename(directory)
    except OSError:  # another build finished the same wheelhouse first
        shutil.rmtree(partial, ignore_errors=True)
    return directory


def build(spec: ImageSpec, *, base: str, registry: str = DEFAULT_REGISTRY, tag: str = VERSION,
          log: Callable[[str], None] = print) -> BuiltImage:
    reference = spec.reference(registry, tag)
    started = time.monotonic()
    arguments = ["build", "--layers", *ULIMITS, "-f", str(REPO / spec.dockerfile), "-t", reference,
                 "--build-arg", f"BASE={base}", "--build-arg", f"VERSION={spec.own_tag or tag}"]
    for key, value in spec.build_args:
        arguments += ["--build-arg", f"{key}={value}"]
    if spec.requirements:
        wheels = wheelhouse(spec.requirements, log)
        arguments += ["-v", f"{wheels}:{WHEELS_MOUNT}:ro", "--build-arg", "PIP_NO_INDEX=1",
                      "--build-arg", f"PIP_FIND_LINKS={WHEELS_MOUNT}"]
    log(f"==> build {reference} ({spec.dockerfile})")
    podman(*arguments, str(REPO), capture=False)
    return BuiltImage(spec, reference, image_size(reference), time.monotonic() - started)


def build_all(names: Sequence[str] = tuple(IMAGES), *, registry: str = DEFAULT_REGISTRY, tag: str = VERSION,
              log: Callable[[str], None] = print) -> list[BuiltImage]:
    unknown = sorted(set(names) - set(IMAGES))
    if unknown:
        raise ImageError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(IMAGES)}")
    require_tools()
    base = ensure_base(log)
    return [build(IMAGES[name], base=base, registry=registry, tag=tag, log=log) for name in names]
