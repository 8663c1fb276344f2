"""The cluster binaries: built once from Go modules, cached by version, verified before use.

Each component is built in a small wrapper Go module under the cache directory and installed into
``~/.cache/funcplane/<component>-<version>/bin``. A manifest beside the binaries records their
SHA-256 digests; a cached binary whose digest no longer matches is rebuilt, never trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.19.0"

MANIFEST = "manifest.json"
# The oldest Go that builds every pinned component (Kubernetes 1.36 needs 1.26).
MINIMUM_GO = (1, 26)


class BinaryError(RuntimeError):
    """A binary could not be provided; the message says what to do."""


def cache_root() -> Path:
    override = os.environ.get("FUNCPLANE_CACHE_DIR")
    base = Path(override) if override else Path.home() / ".cache" / "funcplane"
    return base


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    binaries: tuple[str, ...]
    build: Callable[["Component", Path, Path], None]

    @property
    def directory(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.directory / "bin"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _go_version() -> tuple[int, int]:
    go = shutil.which("go")
    if go is None:
        raise BinaryError(
            "the Go toolchain is not on PATH: install Go >= "
            f"{MINIMUM_GO[0]}.{MINIMUM_GO[1]} (the cluster binaries are built from Go modules)"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if not match:
        raise BinaryError(f"cannot read the Go version from {out.stdout.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def _go(args: list[str], workdir: Path, log: Path, **extra_env: str) -> str:
    """Run go, appending its stderr to the build log; returns stdout."""
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN=os.environ.get("GOTOOLCHAIN", "auto"), **extra_env)
    with log.open("a") as err:
        err.write(f"$ go {' '.join(args)}\n")
        err.flush()
        result = subprocess.run(["go", *args], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BinaryError(f"`go {' '.join(args)}` failed in {workdir} (full log: {log}):\n{tail}")
    return result.stdout


def _module_file(module: str, version: str, workdir: Path, log: Path) -> Path:
    """Download one module version and return the path of its go.mod in the module cache."""
    return Path(json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], workdir, log))["GoMod"])


def _build_kubernetes(component: Component, workdir: Path, out: Path) -> None:
    """k8s.io/kubernetes is consumed through a wrapper module pinning every staging module."""
    log = workdir / "build.log"
    (workdir / "go.mod").write_text("module funcplane.dev/kubebuild\n\ngo 1.26.0\n")
    upstream = _module_file("k8s.io/kubernetes", component.version, workdir, log).read_text()
    staging_version = "v0." + component.version.removeprefix("v1.")
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", upstream, re.M)))
    lines = ["module funcplane.dev/kubebuild", "", "go 1.26.0", "",
             f"require k8s.io/kubernetes {component.version}", "", "replace ("]
    lines += [f"\t{module} => {module} {staging_version}" for module in staging]
    lines += [")", ""]
    (workdir / "go.mod").write_text("\n".join(lines))
    major, minor = component.version.removeprefix("v").split(".")[:2]
    stamp = [
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in (("gitVersion", component.version), ("gitMajor", major),
                           ("gitMinor", minor), ("gitTreeState", "clean"))
    ]
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in component.binaries]
    _go(["build", "-ldflags", " ".join(["-s", "-w", *stamp]), "-o", f"{out}/", *packages], workdir, log)


def _build_etcd(component: Component, workdir: Path, out: Path) -> None:
    """etcd's server module has replace directives, so it is required from a wrapper module."""
    log = workdir / "build.log"
    (workdir / "go.mod").write_text(
        f"module funcplane.dev/etcdbuild\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 {component.version}\n"
    )
    (workdir / "main.go").write_text(
        "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\n"
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    _go(["build", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."], workdir, log)


def _go_install(package: str) -> Callable[[Component, Path, Path], None]:
    def build(component: Component, workdir: Path, out: Path) -> None:
        _go(["install", "-ldflags", "-s -w", f"{package}@{component.version}"], workdir,
            workdir / "build.log", GOBIN=str(out))

    return build


COMPONENTS: dict[str, Component] = {
    component.name: component
    for component in (
        Component("kubernetes", KUBERNETES_VERSION,
                  ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
                  _build_kubernetes),
        # The node agents of real nodes (`cluster up --real-nodes N`), built like the control plane
        # but cached apart, so clusters without real nodes never wait for them.
        Component("kubernetes-node", KUBERNETES_VERSION, ("kubelet", "kube-proxy"), _build_kubernetes),
        Component("etcd", ETCD_VERSION, ("etcd",), _build_etcd),
        Component("kwok", KWOK_VERSION, ("kwok",), _go_install("sigs.k8s.io/kwok/cmd/kwok")),
        Component("helm", HELM_VERSION, ("helm",), _go_install("helm.sh/helm/v3/cmd/helm")),
    )
}
BINARY_TO_COMPONENT = {binary: c for c in COMPONENTS.values() for binary in c.binaries}


# Files this process has hashed and found matching, by their identity (inode, size, mtime): every
# `kubectl` call asks for its binary, and hashing hundreds of megabytes each time costs seconds.
_checked: dict[Path, tuple[int, int, int]] = {}


def _identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _verified(component: Component) -> bool:
    manifest = component.directory / MANIFEST
    if not manifest.exists():
        return False
    try:
        recorded = json.loads(manifest.read_text())["sha256"]
    except (ValueError, KeyError):
        return False
    for binary in component.binaries:
        path = component.bin_dir / binary
        if not path.is_file() or not os.access(path, os.X_OK):
            return False
        if _checked.get(path) == _identity(path):
            continue
        if recorded.get(binary) != _sha256(path):
            return False
        _checked[path] = _identity(path)
    return True


def build(component: Component, *, quiet: bool = False) -> None:
    go = _go_version()
    if go < MINIMUM_GO:
        raise BinaryError(
            f"Go {go[0]}.{go[1]} is too old to build {component.name} {component.version}: "
            f"install Go >= {MINIMUM_GO[0]}.{MINIMUM_GO[1]}"
        )
    workdir = cache_root() / "build" / f"{component.name}-{component.version}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    staging = component.directory.with_name(component.directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "bin").mkdir(parents=True)
    if not quiet:
        print(f"building {component.name} {component.version} from Go modules (one time; log: "
              f"{workdir / 'build.log'})", file=sys.stderr, flush=True)
    started = time.monotonic()
    component.build(component, workdir, staging / "bin")
    missing = [b for b in component.binaries if not (staging / "bin" / b).is_file()]
    if missing:
        raise BinaryError(f"building {component.name} produced no {', '.join(missing)} (log: {workdir / 'build.log'})")
    digests = {b: _sha256(staging / "bin" / b) for b in component.binaries}
    (staging / MANIFEST).write_text(json.dumps(
        {"component": component.name, "version": component.version, "sha256": digests,
         "build_seconds": round(time.monotonic() - started, 1)}, indent=2))
    shutil.rmtree(component.directory, ignore_errors=True)
    staging.rename(component.directory)
    if not quiet:
        print(f"built {component.name} {component.version} in {time.monotonic() - started:.0f}s",
              file=sys.stderr, flush=True)


def ensure_component(component: Component, *, quiet: bool = False) -> Path:
    """Return the component's bin dir, building it under a lock if it is missing or corrupt."""
    cache_root().mkdir(parents=True, exist_ok=True)
    lock_path = cache_root() / f".{component.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _verified(component):
            build(component, quiet=quiet)
    return component.bin_dir


def ensure(name: str, *, quiet: bool = False) -> Path:
    """Path of one cached, verified binary (``kube-apiserver``, ``etcd``, ``kwok``, ``helm`` ...)."""
    component = BINARY_TO_COMPONENT.get(name)
    if component is None:
        raise BinaryError(f"unknown binary {name!r}; known: {', '.join(sorted(BINARY_TO_COMPONENT))}")
    return ensure_component(component, quiet=quiet) / name


def ensure_all(names: tuple[str, ...] = ("kubernetes", "etcd", "kwok"), *, quiet: bool = False) -> dict[str, Path]:
    return {name: ensure_component(COMPONENTS[name], quiet=quiet) for name in names}
