"""Run the host container of simulated pods as real local processes.

kwok simulates pods; nothing runs in them. For the demo and for tests that need a real host behind
a pod (swap warm-ups, requests through a Service's endpoints), this runner plays the kubelet's part
for pods labelled ``funcplane.io/app`` on kwok's nodes (a real node's kubelet runs its own pods): it
materializes the pod's ConfigMap, Secret, emptyDir and
projected volumes (service-account tokens from the TokenRequest API) under a per-pod directory,
resolves its environment (values, ConfigMap/Secret references, the downward API), starts ``funcplane-host`` bound to the pod's own IP (the pod CIDR is made local
on the loopback device) and, when the pod goes away, runs the preStop drain before stopping it.

A pod's deletion is seen the moment it gets its deletionTimestamp (the runner's finalizer keeps the
pod, and its IP, until the host stopped), at the same time as the endpoints controller drops it:
as a kubelet runs the preStop hook then, the runner drains with the host's own grace period, so
requests that clients still send on the way out are served. Pods drain in parallel, each in its
own thread. When the runner itself stops (a test or the demo ends), nothing waits on its hosts
any more: they drain without grace.

Volumes it cannot provide locally (image volumes, PVCs) are reported on the pod as a Warning event
naming the volume, and the pod is not run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from funcplane.render import names
from funcplane.swap.observe import KEY_HEADER
from . import realnode
from .cluster import LocalCluster
from .stages import RUNNER_FINALIZER

LOG = logging.getLogger("funcplane.podrunner")
APP_LABEL = "funcplane.io/app"
HOST_CONTAINER = "host"
DEFAULT_PORT = 8080
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _local_alternative(volume: str) -> str:
    """What to change so that a pod with this volume runs here, by what the volume carries."""
    if volume == names.CODE_VOLUME:
        return "use a ConfigMap for the app's code to run it on the local cluster"
    if volume.startswith(names.WORKER_VOLUME_PREFIX):
        return ("its worker comes from a WorkerConfig's image: without a WorkerConfig the host's bundled "
                "workers run locally, or run the app on a real node (`funcplane dev up --real-nodes 1`)")
    return "run the app on a real node (`funcplane dev up --real-nodes 1`)"


class UnsupportedPod(Exception):
    """The pod needs something a local process cannot be given."""


@dataclass
class RunningPod:
    uid: str
    namespace: str
    name: str
    ip: str
    port: int
    process: subprocess.Popen[bytes]
    root: Path
    grace_seconds: int
    keys_file: Path | None = None  # the pod's keys.json: the drain is an admin call to the pod's IP
    restarts: int = 0
    restart_at: float = 0.0  # set when an exit is noticed: when to start it again

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


def _host_command() -> str:
    script = Path(sys.executable).with_name("funcplane-host")
    return str(script) if script.exists() else shutil.which("funcplane-host") or "funcplane-host"


class PodRunner:
    """Keeps one host process per Running pod of a namespace (or of every namespace), until stopped."""

    def __init__(self, cluster: LocalCluster, namespace: str | None, workdir: Path, *,
                 interval: float = 0.3, drain: bool = True) -> None:
        """`drain=False` kills a deleted pod's host at once (SIGKILL, no preStop): only for measuring
        what draining saves (benchmarks/bench_drain.py)."""
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.interval = interval
        self.running: dict[str, RunningPod] = {}
        self.refused: set[str] = set()
        self.drain = drain
        # Deleted pods whose host drains (uid -> the pod and the thread stopping it).
        self.stopping: dict[str, tuple[RunningPod, threading.Thread]] = {}
        # Pods on real nodes have a kubelet of their own (see realnode.py): never run them twice. A cluster
        # whose real nodes change is brought up anew, and its pod runner with it.
        self._real_nodes = set(realnode.node_names(cluster.real_nodes))
        self._api = client.CoreV1Api(cluster.api_client())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> "PodRunner":
        self.cluster.ensure_pod_network()
        self._thread = threading.Thread(target=self._loop, name=f"podrunner-{self.namespace}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            # All at once, as a kubelet stops a node's pods. No grace: nothing routes to them now, and
            # a second drain without grace also cuts short the grace of pods already draining.
            pods = [*self.running.values(), *(pod for pod, _ in self.stopping.values())]
            stopping = [threading.Thread(target=self._terminate, args=(pod, 0.0)) for pod in pods]
            for thread in stopping:
                thread.start()
            for thread in [*stopping, *(thread for _, thread in self.stopping.values())]:
                thread.join()
            self.running.clear()
            self.stopping.clear()

    def __enter__(self) -> "PodRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url_of(self, pod_name: str) -> str | None:
        with self._lock:
            for pod in self.running.values():
                if pod.name == pod_name:
                    return pod.url
        return None

    def logs(self, lines: int = 20) -> str:
        """The last lines of each running host's log, for failure reports."""
        with self._lock:
            pods = list(self.running.values())
        parts = []
        for pod in pods:
            log = pod.root / "host.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log yet)"]
            parts.append(f"--- pod {pod.name} at {pod.url} (restarts {pod.restarts}) ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no pods running)"

    # ---- reconcile loop -------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # the loop must outlive a transient API error
                LOG.exception("pod runner sync failed")
            self._stop.wait(self.interval)

    def sync(self) -> None:
        if self.namespace is None:
            pods = self._api.list_pod_for_all_namespaces(label_selector=APP_LABEL).items
        else:
            pods = self._api.list_namespaced_pod(self.namespace, label_selector=APP_LABEL).items
        pods = [p for p in pods if p.spec.node_name not in self._real_nodes]
        wanted = {p.metadata.uid: p for p in pods
                  if p.metadata.deletion_timestamp is None and p.status.phase == "Running" and p.status.pod_ip}
        with self._lock:
            for uid in [uid for uid, (_, thread) in self.stopping.items() if not thread.is_alive()]:
                del self.stopping[uid]
            for uid in [uid for uid in self.running if uid not in wanted]:
                pod = self.running.pop(uid)
                thread = threading.Thread(target=self._terminate, args=(pod, None),
                                          name=f"stop-{pod.name}", daemon=True)
                self.stopping[uid] = (pod, thread)
                thread.start()
            # A pod deleted while no runner ran its host (a runner that was killed) is let go.
            for pod in pods:
                if pod.metadata.deletion_timestamp is not None and pod.metadata.uid not in self.running and \
                        pod.metadata.uid not in self.stopping and RUNNER_FINALIZER in (pod.metadata.finalizers or []):
                    self._let_go(pod.metadata.namespace, pod.metadata.name)
            for uid, pod in wanted.items():
                if uid in self.running or uid in self.refused:
                    continue
                try:
                    self.running[uid] = self._launch(pod)
                except UnsupportedPod as reason:
                    self.refused.add(uid)
                    self._warn(pod, str(reason))
            for uid, pod in list(self.running.items()):
                if pod.process.poll() is not None and time.monotonic() >= pod.restart_at:
                    self._restart(uid, pod, wanted[uid])

    # ---- one pod -----------------------------------------------------------------------
    def _restart(self, uid: str, pod: RunningPod, spec: client.V1Pod) -> None:
        """Like a kubelet: an exited host is started again, with a doubling back-off."""
        if pod.restart_at == 0.0:  # first time this exit is seen: say why, then wait
            tail = (pod.root / "host.log").read_text(errors="replace").splitlines()[-8:]
            LOG.warning("host of pod %s exited with %s; last lines:\n%s", pod.name, pod.process.returncode,
                        "\n".join(tail))
            pod.restart_at = time.monotonic() + min(2 ** pod.restarts, 30)
            return
        restarted = self._launch(spec)
        restarted.restarts = pod.restarts + 1
        self.running[uid] = restarted

    def _launch(self, pod: client.V1Pod) -> RunningPod:
        container = next((c for c in pod.spec.containers if c.name == HOST_CONTAINER), pod.spec.containers[0])
        root = self.workdir / pod.metadata.name if self.namespace else \
            self.workdir / pod.metadata.namespace / pod.metadata.name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        mounts = self._materialize(pod, container, root)
        env = self._environment(pod, container, mounts)
        port = int(env.get("FUNCPLANE_HTTP_PORT", DEFAULT_PORT))
        env |= {"FUNCPLANE_HTTP_HOST": pod.status.pod_ip, "FUNCPLANE_HTTP_PORT": str(port),
                "PATH": os.environ.get("PATH", ""), "HOME": str(root), "PYTHONUNBUFFERED": "1"}
        self._hold(pod)
        log = (root / "host.log").open("wb")
        process = subprocess.Popen([_host_command(), *(container.args or [])], env=env, cwd=root,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        LOG.info("started host for pod %s at %s:%d (pid %d)", pod.metadata.name, pod.status.pod_ip, port, process.pid)
        keys_file = env.get("FUNCPLANE_KEYS_FILE")
        return RunningPod(pod.metadata.uid, pod.metadata.namespace, pod.metadata.name, pod.status.pod_ip, port,
                          process, root, pod.spec.termination_grace_period_seconds or 30,
                          Path(keys_file) if keys_file else None)

    def _materialize(self, pod: client.V1Pod, container: client.V1Container, root: Path) -> dict[str, Path]:
        """Write each mounted volume under the pod's root; returns mountPath -> local directory."""
        namespace = pod.metadata.namespace
        volumes = {v.name: v for v in pod.spec.volumes or []}
        mounts: dict[str, Path] = {}
        for mount in container.volume_mounts or []:
            volume = volumes[mount.name]
            target = root / "fs" / mount.mount_path.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            if volume.config_map is not None:
                data = self._api.read_namespaced_config_map(volume.config_map.name, namespace).data or {}
                self._write_items(target, {k: v.encode() for k, v in data.items()}, volume.config_map.items)
            elif volume.secret is not None:
                data = self._api.read_namespaced_secret(volume.secret.secret_name, namespace).data or {}
                self._write_items(target, {k: base64.b64decode(v) for k, v in data.items()}, volume.secret.items)
            elif volume.projected is not None:
                for projection in volume.projected.sources or []:
                    if projection.service_account_token is not None:
                        # As the kubelet does: a token bound to this pod, from the TokenRequest API.
                        path = projection.service_account_token.path or "token"
                        self._write_items(target, {path: self._pod_token(pod, projection)}, None)
                        continue
                    if projection.downward_api is not None:
                        fields = self._pod_fields(pod)
                        for item in projection.downward_api.items or []:
                            if item.field_ref is not None and item.field_ref.field_path in fields:
                                self._write_items(target, {item.path: fields[item.field_ref.field_path].encode()}, None)
                        continue
                    if projection.config_map is not None:
                        data = self._api.read_namespaced_config_map(projection.config_map.name, namespace).data or {}
                        self._write_items(target, {k: v.encode() for k, v in data.items()}, projection.config_map.items)
                    elif projection.secret is not None:
                        data = self._api.read_namespaced_secret(projection.secret.name, namespace).data or {}
                        self._write_items(target, {k: base64.b64decode(v) for k, v in data.items()},
                                          projection.secret.items)
            elif volume.empty_dir is None:
                kind = next((k for k, v in volume.to_dict().items() if k != "name" and v is not None), "unknown")
                raise UnsupportedPod(f"volume {mount.name!r} is of type {kind}, which a local process cannot mount; "
                                     f"{_local_alternative(mount.name)}")
            mounts[mount.mount_path.rstrip("/") or "/"] = target
        return mounts

    def _pod_fields(self, pod: client.V1Pod) -> dict[str, str]:
        """The downward API's fields, for environment variables and projected volumes alike."""
        return {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
                "status.podIP": pod.status.pod_ip, "spec.nodeName": pod.spec.node_name or ""}

    def _pod_token(self, pod: client.V1Pod, projection: Any) -> bytes:
        token = projection.service_account_token
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[token.audience] if token.audience else [],
            expiration_seconds=max(token.expiration_seconds or 3600, 3600),
            bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod.metadata.name,
                                                           uid=pod.metadata.uid)))
        issued = self._api.create_namespaced_service_account_token(pod.spec.service_account_name or "default",
                                                                   pod.metadata.namespace, request)
        return issued.status.token.encode()

    @staticmethod
    def _write_items(target: Path, data: dict[str, bytes], items: list[Any] | None) -> None:
        paths = {item.key: item.path for item in items} if items else {key: key for key in data}
        for key, path in paths.items():
            if key in data:
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                (target / path).write_bytes(data[key])

    def _environment(self, pod: client.V1Pod, container: client.V1Container,
                     mounts: dict[str, Path]) -> dict[str, str]:
        namespace = pod.metadata.namespace
        env: dict[str, str] = {}
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.config_map_ref is not None:
                data = self._api.read_namespaced_config_map(source.config_map_ref.name, namespace).data or {}
                env |= {prefix + k: v for k, v in data.items()}
            elif source.secret_ref is not None:
                data = self._api.read_namespaced_secret(source.secret_ref.name, namespace).data or {}
                env |= {prefix + k: base64.b64decode(v).decode() for k, v in data.items()}
        fields = self._pod_fields(pod)
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = _relocate(var.value or "", mounts)
            elif var.value_from.field_ref is not None:
                env[var.name] = fields.get(var.value_from.field_ref.field_path, "")
            elif var.value_from.config_map_key_ref is not None:
                ref = var.value_from.config_map_key_ref
                data = self._api.read_namespaced_config_map(ref.name, namespace).data or {}
                if ref.key in data:
                    env[var.name] = data[ref.key]
            elif var.value_from.secret_key_ref is not None:
                ref = var.value_from.secret_key_ref
                data = self._api.read_namespaced_secret(ref.name, namespace).data or {}
                if ref.key in data:
                    env[var.name] = base64.b64decode(data[ref.key]).decode()
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        # The kubelet points pods at the API server; here it is the local one on loopback.
        server = urllib.parse.urlsplit(self.cluster.server)
        env |= {"KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}
        if SERVICE_ACCOUNT_DIR in mounts:
            env["FUNCPLANE_SERVICEACCOUNT_DIR"] = str(mounts[SERVICE_ACCOUNT_DIR])
        return env

    def _terminate(self, pod: RunningPod, grace: float | None) -> None:
        """preStop drain (serving for `grace` seconds, the host's own when None, then in-flight work
        finishes), then SIGTERM, then SIGKILL after the pod's termination grace period. Without
        draining (`drain=False`), SIGKILL at once."""
        if pod.process.poll() is None:
            if self.drain:
                self._pre_stop(pod, grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGTERM if self.drain else signal.SIGKILL)
            try:
                pod.process.wait(timeout=pod.grace_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pod.process.pid, signal.SIGKILL)
                pod.process.wait()
        LOG.info("stopped host of pod %s", pod.name)
        self._let_go(pod.namespace, pod.name)

    @staticmethod
    def _pre_stop(pod: RunningPod, grace: float | None) -> None:
        """POST /admin/drain as the pod's preStop hook does. The hook calls from inside the pod (loopback,
        no key needed); this runner calls the pod's IP, so it presents the pod's master key. A pod
        without keys is drained by SIGTERM alone (without grace)."""
        master = None
        if pod.keys_file is not None and pod.keys_file.exists():
            with contextlib.suppress(ValueError):
                master = json.loads(pod.keys_file.read_text()).get("masterKey")
        if not isinstance(master, str):
            LOG.debug("pod %s has no master key: no preStop drain", pod.name)
            return
        query = "" if grace is None else f"?grace={grace:g}"
        request = urllib.request.Request(f"{pod.url}/admin/drain{query}", method="POST", headers={KEY_HEADER: master})
        try:
            urllib.request.urlopen(request, timeout=pod.grace_seconds).close()
        except OSError as error:  # a host that cannot drain is stopped all the same
            LOG.warning("preStop drain of pod %s failed: %s", pod.name, error)

    # The finalizer makes a deleted pod wait for its host to stop before kwok removes it and hands
    # its IP to another pod, as a kubelet's pods keep their IPs until their containers have exited.
    def _hold(self, pod: client.V1Pod) -> None:
        if RUNNER_FINALIZER in (pod.metadata.finalizers or []):
            return
        patch = [{"op": "add", "path": "/metadata/finalizers", "value": [RUNNER_FINALIZER]}] \
            if not pod.metadata.finalizers else [{"op": "add", "path": "/metadata/finalizers/-", "value": RUNNER_FINALIZER}]
        self._api.patch_namespaced_pod(pod.metadata.name, pod.metadata.namespace, patch)

    def _let_go(self, namespace: str, name: str) -> None:
        try:
            finalizers = self._api.read_namespaced_pod(name, namespace).metadata.finalizers or []
            if RUNNER_FINALIZER in finalizers:
                index = finalizers.index(RUNNER_FINALIZER)
                self._api.patch_namespaced_pod(name, namespace, [
                    {"op": "test", "path": f"/metadata/finalizers/{index}", "value": RUNNER_FINALIZER},
                    {"op": "remove", "path": f"/metadata/finalizers/{index}"}])
        except client.ApiException as error:
            if error.status != 404:  # gone already: nothing to let go of
                LOG.warning("could not remove the finalizer of pod %s/%s: %s", namespace, name, error.reason)

    def _warn(self, pod: client.V1Pod, message: str) -> None:
        LOG.warning("pod %s not run locally: %s", pod.metadata.name, message)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{pod.metadata.name}.", namespace=pod.metadata.namespace),
            involved_object=client.V1ObjectReference(kind="Pod", name=pod.metadata.name, namespace=pod.metadata.namespace,
                                                     uid=pod.metadata.uid, api_version="v1"),
            reason="LocalRunUnsupported", message=message, type="Warning",
            source=client.V1EventSource(component="funcplane-podrunner"))
        with contextlib.suppress(client.ApiException):
            self._api.create_namespaced_event(pod.metadata.namespace, event)


def _relocate(value: str, mounts: dict[str, Path]) -> str:
    """Point a path inside the pod's filesystem at its local copy (longest mount path wins)."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(mounts[mount_path]) + value[len(mount_path.rstrip("/")):]
    return value


def wait_until_serving(url: str, timeout: float = 60.0) -> None:
    """Block until the host at `url` answers /readyz with 200."""
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as error:
            last = str(error)
        time.sleep(0.2)
    raise TimeoutError(f"host at {url} not ready within {timeout:.0f}s ({last})")
