"""A real local control plane as processes on loopback: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, with N simulated nodes.

Every cluster lives in its own directory (certs, kubeconfig, data, logs, ``state.json``). The
processes run in their own sessions so ``up`` can return while they keep running; ``down`` stops
exactly the processes recorded in the state file (after checking that each still belongs to the
cluster) and removes the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import binaries, pki, stages

DEFAULT_NAME = "funcplane"
DEFAULT_NODES = 3
STATE_FILE = "state.json"
START_TIMEOUT = 90.0
COMPONENT_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Pod IPs come from a range that is rarely routed elsewhere, because `ensure_pod_network` can make
# it local to this machine so that processes can serve at pod IPs. Each running cluster leases its
# own /20 of it, so clusters side by side never hand out the same pod IP.
POD_NETWORKS = list(ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=20))
KWOK_NODE_IP = "10.1.0.1"


class ClusterError(RuntimeError):
    """The cluster could not be started or used; the message says why and what to do."""


def clusters_root() -> Path:
    return binaries.cache_root() / "clusters"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        if " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]:
            return False
    return True


def _belongs_to(pid: int, directory: Path) -> bool:
    """True if the process was started for this cluster directory (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(directory) in cmdline


def _log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Process:
    name: str
    pid: int
    log: Path


@dataclass
class LocalCluster:
    """One local control plane. Use :meth:`up` / :meth:`down`; :meth:`load` reattaches to one."""

    name: str = DEFAULT_NAME
    directory: Path = field(default_factory=lambda: clusters_root() / DEFAULT_NAME)
    nodes: int = DEFAULT_NODES
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    pod_network_added: bool = False
    pod_cidr: str = ""

    # ---- paths and identity -------------------------------------------------------------
    @classmethod
    def named(cls, name: str = DEFAULT_NAME, nodes: int = DEFAULT_NODES, directory: Path | None = None) -> "LocalCluster":
        return cls(name=name, directory=directory or clusters_root() / name, nodes=nodes)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def env(self) -> dict[str, str]:
        kubectl_dir = str(binaries.COMPONENTS["kubernetes"].bin_dir)
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                    PATH=f"{kubectl_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(binaries.ensure("kubectl", quiet=True)), *args], env=self.env,
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def api_client(self):
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)

    # ---- state --------------------------------------------------------------------------
    def _save(self) -> None:
        state = {"name": self.name, "nodes": self.nodes, "ports": self.ports,
                 "pod_network_added": self.pod_network_added, "pod_cidr": self.pod_cidr,
                 "processes": {p.name: {"pid": p.pid, "log": str(p.log)} for p in self.processes.values()}}
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, name: str = DEFAULT_NAME, directory: Path | None = None) -> "LocalCluster | None":
        directory = directory or clusters_root() / name
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(name=state["name"], directory=directory, nodes=state["nodes"], ports=state["ports"],
                   pod_network_added=state.get("pod_network_added", False), pod_cidr=state.get("pod_cidr", ""),
                   processes={n: Process(n, p["pid"], Path(p["log"])) for n, p in state["processes"].items()})

    def crashed(self) -> list[Process]:
        return [p for p in self.processes.values() if not (_alive(p.pid) and _belongs_to(p.pid, self.directory))]

    def healthy(self) -> bool:
        if len(self.processes) != len(COMPONENT_ORDER) or self.crashed():
            return False
        return self._apiserver_ready()

    def status(self) -> dict[str, object]:
        crashed = self.crashed()
        return {
            "name": self.name,
            "directory": str(self.directory),
            "server": self.server if "kube-apiserver" in self.ports else None,
            "kubeconfig": str(self.kubeconfig),
            "components": {p.name: ("stopped" if p in crashed else "running") for p in self.processes.values()},
            # What a crashed component said last is usually the reason it stopped.
            "crashed_log_tails": {p.name: _log_tail(p.log, 10) for p in crashed},
            "apiserver_ready": self._apiserver_ready() if "kube-apiserver" in self.ports else False,
        }

    # ---- lifecycle ----------------------------------------------------------------------
    def up(self, *, reuse: bool = True) -> "LocalCluster":
        """Start the cluster; an existing healthy one is reused, a stale one is replaced."""
        existing = LocalCluster.load(self.name, self.directory)
        if existing is not None:
            if reuse and existing.healthy() and existing.nodes == self.nodes:
                self.ports, self.processes = existing.ports, existing.processes
                return self
            existing.down()
            self.processes = {}
        elif self.directory.exists():
            shutil.rmtree(self.directory)
        bins = binaries.ensure_all()
        self.directory.mkdir(parents=True)
        try:
            self._start(bins)
        except BaseException:
            self.down(remove=False)
            raise
        return self

    def down(self, *, remove: bool = True, timeout: float = 15.0) -> None:
        """Stop every recorded process (newest first), then remove the cluster directory."""
        ours = [p for p in reversed(list(self.processes.values()))
                if _alive(p.pid) and _belongs_to(p.pid, self.directory)]
        for process in ours:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in ours:
            while _alive(process.pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(process.pid, os.WNOHANG)[0]:
                        break
                time.sleep(0.05)
            if _alive(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        for process in ours:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, 0)
        self.processes = {}
        if self.pod_network_added:
            _ip("addr", "del", self.pod_cidr, "dev", "lo")
            self.pod_network_added = False
        _release_pod_network(self.directory)
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def ensure_pod_network(self) -> None:
        """Make the pod CIDR local on the loopback device, so a process can serve at a pod's IP.

        Needs root (CAP_NET_ADMIN) and iproute2; the address is removed again by `down`.
        """
        try:
            if self.pod_cidr in _ip("-4", "addr", "show", "dev", "lo"):
                return
            _ip("addr", "add", self.pod_cidr, "dev", "lo", check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            raise ClusterError(f"cannot make the pod network {self.pod_cidr} local on the loopback device "
                               f"({detail.strip()}): running hosts at pod IPs needs root and iproute2's `ip`") from None
        self.pod_network_added = True
        self._save()

    # ---- start-up ------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> Process:
        log = self.directory / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("w") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=self.directory)
        process = Process(name, popen.pid, log)
        self.processes[name] = process
        self._save()
        return process

    def _fail(self, process: Process, what: str) -> ClusterError:
        tail = _log_tail(process.log)
        hint = ""
        if "address already in use" in tail:
            hint = " (a port was taken between choosing and binding it: run `funcplane dev cluster up` again)"
        return ClusterError(f"{process.name} {what}{hint}; last lines of {process.log}:\n{tail}")

    def _wait(self, process: Process, check, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(process.pid):
                raise self._fail(process, "exited during start-up")
            if check():
                return
            time.sleep(0.1)
        raise self._fail(process, f"did not become {what} within {timeout:.0f}s")

    def _start(self, bins: dict[str, Path]) -> None:
        d = self.directory
        keys = pki.generate(d / "pki")
        self.pod_cidr = _lease_pod_network(d)
        for name in ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            self.ports.setdefault(name, free_port())
        self.kubeconfig.write_text(pki.kubeconfig(keys, self.server, self.name))
        k8s, etcd_bin, kwok_bin = bins["kubernetes"], bins["etcd"] / "etcd", bins["kwok"] / "kwok"

        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        # No fsync: a test cluster needs no durability, and fsync dominates etcd's latency.
        etcd = self._spawn("etcd", [
            str(etcd_bin), "--name", "default", "--data-dir", str(d / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"default={peer_url}", "--unsafe-no-fsync", "--log-level", "warn",
            "--quota-backend-bytes", str(4 << 30),
        ])
        self._wait(etcd, lambda: _http_ok(f"{etcd_url}/health"), "healthy", timeout=30)

        apiserver = self._spawn("kube-apiserver", [
            str(k8s / "kube-apiserver"),
            f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['kube-apiserver']}", f"--cert-dir={d / 'pki'}",
            f"--tls-cert-file={keys.server_cert}", f"--tls-private-key-file={keys.server_key}",
            f"--client-ca-file={keys.ca_cert}",
            f"--service-account-key-file={keys.sa_pub}", f"--service-account-signing-key-file={keys.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={pki.SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC", "--allow-privileged=true", "--profiling=false",
            "--max-requests-inflight=800", "--max-mutating-requests-inflight=400",
            # No node-lifecycle controller runs to lift the not-ready taint this plugin adds.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--enable-garbage-collector=true", "--v=0",
        ])
        self._wait(apiserver, self._apiserver_ready, "ready")

        kcm = self._spawn("kube-controller-manager", [
            str(k8s / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['kube-controller-manager']}",
            f"--service-account-private-key-file={keys.sa_key}", f"--root-ca-file={keys.ca_cert}",
            "--use-service-account-credentials=false", "--leader-elect=false",
            # Simulated nodes have no IPAM, routes or kubelet heartbeats to police.
            "--controllers=*,-node-lifecycle-controller,-node-ipam-controller,-node-route-controller,"
            "-cloud-node-lifecycle-controller,-service-lb-controller",
            "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10", f"--cert-dir={d / 'kcm-certs'}",
        ])
        scheduler_config = d / "scheduler.yaml"
        scheduler_config.write_text(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
            f"clientConnection:\n  kubeconfig: {self.kubeconfig}\n  qps: 200\n  burst: 400\n"
            "leaderElection:\n  leaderElect: false\n")
        scheduler = self._spawn("kube-scheduler", [
            str(k8s / "kube-scheduler"), f"--config={scheduler_config}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['kube-scheduler']}",
            f"--cert-dir={d / 'scheduler-certs'}",
        ])
        stage_file = d / "kwok-stages.yaml"
        stage_file.write_text(stages.stages_yaml())
        kwok = self._spawn("kwok", [
            str(kwok_bin), f"--kubeconfig={self.kubeconfig}", f"--config={stage_file}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={stages.NODE_MARKER}=fake",
            f"--cidr={self.pod_cidr}", f"--node-ip={KWOK_NODE_IP}", "--node-lease-duration-seconds=40",
        ])
        self._wait(kcm, lambda: _https_ok(self.ports["kube-controller-manager"]), "healthy")
        self._wait(scheduler, lambda: _https_ok(self.ports["kube-scheduler"]), "healthy")
        self._register_nodes()
        self._wait(kwok, self._nodes_ready, "managing the simulated nodes (nodes Ready)")
        self._wait(kcm, self._default_service_account, "creating default service accounts")

    def _apiserver_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.directory / "pki" / "ca.crt"))
        context.load_cert_chain(self.directory / "pki" / "admin.crt", self.directory / "pki" / "admin.key")
        return _http_ok(f"{self.server}/readyz", context)

    def _register_nodes(self) -> None:
        documents = []
        for index in range(self.nodes):
            name = f"kwok-node-{index}"
            documents.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {stages.NODE_MARKER: "fake"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": name,
                                        "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
                "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                           "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"}},
            })
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))

    def _nodes_ready(self) -> bool:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode != 0:
            return False
        items = json.loads(out.stdout)["items"]
        ready = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in n.get("status", {}).get("conditions", []))]
        return len(ready) >= self.nodes

    def _default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0


def _pod_network_leases() -> Path:
    leases = binaries.cache_root() / "pod-networks"
    leases.mkdir(parents=True, exist_ok=True)
    return leases


def _lease_pod_network(directory: Path) -> str:
    """Lease a pod network no live cluster uses; the lease file names the cluster directory."""
    leases = _pod_network_leases()
    with (leases / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for network in POD_NETWORKS:
            lease = leases / str(network).replace("/", "_")
            if lease.exists():
                owner = Path(lease.read_text())
                other = LocalCluster.load(directory=owner) if owner != directory else None
                if other is not None and len(other.crashed()) < len(other.processes):
                    continue  # some process of that cluster still runs
            lease.write_text(str(directory))
            return str(network)
    raise ClusterError(f"all {len(POD_NETWORKS)} local pod networks are leased by running clusters; "
                       "stop one with `funcplane dev cluster down --name NAME`")


def _release_pod_network(directory: Path) -> None:
    leases = _pod_network_leases()
    with (leases / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for lease in leases.iterdir():
            if lease.name != ".lock" and lease.read_text() == str(directory):
                lease.unlink()


def _ip(*args: str, check: bool = False) -> str:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    return subprocess.run([ip, *args], capture_output=True, text=True, check=check).stdout


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _https_ok(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return _http_ok(f"https://127.0.0.1:{port}/healthz", context)
