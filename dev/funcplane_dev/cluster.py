"""A real local control plane as processes on loopback: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, with N simulated nodes (and, with
``real_nodes``, real ones: kubelet, containerd and a CNI bridge each, see ``realnode``).

Every cluster lives in its own directory (certs, kubeconfig, data, logs, ``state.json``). The
processes run in their own sessions so ``up`` can return while they keep running. ``state.json`` is
the cluster's whole record (ports, pod network, component and service processes); every object
for a directory reads it through :meth:`LocalCluster.reload`, so a fresh object made in another
process reuses or stops the cluster exactly as the one that started it would. ``down`` stops the
recorded processes (after checking that each still belongs to the cluster), then any other process
whose command line names the directory, and removes the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import binaries, pki, realnode, stages

DEFAULT_NAME = "funcplane"
DEFAULT_NODES = 3
STATE_FILE = "state.json"
START_TIMEOUT = 90.0
# A service (the pod runner) drains its hosts on SIGTERM before it exits; give it that time.
SERVICE_STOP_TIMEOUT = 45.0
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


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _names_directory(cmdline: bytes, directory: Path) -> bool:
    """True if an argument is the directory or a path inside it (not a sibling sharing its prefix)."""
    pattern = re.escape(str(directory).encode()) + rb"(/|\0|$)"
    return re.search(pattern, cmdline) is not None


def _belongs_to(pid: int, directory: Path) -> bool:
    """True if the process was started for this cluster directory (guards against PID reuse)."""
    return _names_directory(_cmdline(pid), directory)


def _ancestors() -> set[int]:
    """This process and its parents: never stopped by a sweep, whatever their command lines say."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def processes_naming(directory: Path) -> dict[int, str]:
    """Live processes (pid -> command line) whose command line names `directory` or a path in it."""
    found: dict[int, str] = {}
    spared = _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        pid = int(entry.name)
        cmdline = _cmdline(pid)
        if _names_directory(cmdline, directory) and _alive(pid):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


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
    # Background services of the local environment (`funcplane dev up`): the operator, the pod runner.
    services: dict[str, Process] = field(default_factory=dict)
    pod_network_added: bool = False
    pod_cidr: str = ""
    # Real nodes (kubelet, containerd, CNI bridge) beside the simulated ones; see realnode.py.
    real_nodes: int = 0
    # How long the steps of the last `up` took (seconds), for the CLI and the benchmarks.
    timings: dict[str, float] = field(default_factory=dict)

    # ---- paths and identity -------------------------------------------------------------
    @classmethod
    def named(cls, name: str = DEFAULT_NAME, nodes: int = DEFAULT_NODES, directory: Path | None = None,
              real_nodes: int = 0) -> "LocalCluster":
        return cls(name=name, directory=directory or clusters_root() / name, nodes=nodes, real_nodes=real_nodes)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def shell_exports(self) -> str:
        """The line a shell needs to use this cluster: its kubeconfig, and `kubectl`, the `kubectl funcplane`
        plugin and `funcplane` on the PATH (the venv's and the built Kubernetes binaries)."""
        tools = f"{Path(sys.executable).parent}:{binaries.COMPONENTS['kubernetes'].bin_dir}"
        return f"export KUBECONFIG={self.kubeconfig} PATH={tools}:$PATH"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def env(self) -> dict[str, str]:
        kubectl_dir = str(binaries.COMPONENTS["kubernetes"].bin_dir)
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                   PATH=f"{kubectl_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        if self.real_nodes:  # an operator started for this cluster copies image files (see realnode.py)
            env[realnode.OPERATOR_VOLUME_MODE[0]] = realnode.OPERATOR_VOLUME_MODE[1]
        return env

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
        def record(processes: dict[str, Process]) -> dict[str, dict[str, object]]:
            return {p.name: {"pid": p.pid, "log": str(p.log)} for p in processes.values()}
        state = {"name": self.name, "nodes": self.nodes, "ports": self.ports,
                 "pod_network_added": self.pod_network_added, "pod_cidr": self.pod_cidr,
                 "real_nodes": self.real_nodes, "processes": record(self.processes), "services": record(self.services)}
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))

    @contextlib.contextmanager
    def _recording(self) -> Iterator[None]:
        """Read, change and write ``state.json`` under a lock: the services of a running cluster
        and the commands that manage them are separate processes that all record into it."""
        with (self.directory / ".state.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.reload()
            yield
            self._save()

    def reload(self) -> bool:
        """Load the cluster's whole recorded state from its directory; False if there is none.

        The one place that reads ``state.json``: reuse, status and ``down`` all go through it, so
        an object made fresh for a directory knows every process and the pod network it owns."""
        try:
            state = json.loads((self.directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            return False

        def processes(key: str) -> dict[str, Process]:
            return {n: Process(n, p["pid"], Path(p["log"])) for n, p in state.get(key, {}).items()}
        self.name, self.nodes, self.ports = state["name"], state["nodes"], state["ports"]
        self.pod_network_added = state.get("pod_network_added", False)
        self.pod_cidr = state.get("pod_cidr", "")
        self.real_nodes = state.get("real_nodes", 0)
        self.processes, self.services = processes("processes"), processes("services")
        return True

    @classmethod
    def load(cls, name: str = DEFAULT_NAME, directory: Path | None = None) -> "LocalCluster | None":
        cluster = cls.named(name, directory=directory)
        return cluster if cluster.reload() else None

    def crashed(self) -> list[Process]:
        return [p for p in self.processes.values() if not (_alive(p.pid) and _belongs_to(p.pid, self.directory))]

    def crashed_services(self) -> list[Process]:
        return [p for p in self.services.values() if not (_alive(p.pid) and _belongs_to(p.pid, self.directory))]

    def healthy(self) -> bool:
        if set(self.processes) != set(COMPONENT_ORDER) | set(realnode.process_names(self.real_nodes)) \
                or self.crashed():
            return False
        return self._apiserver_ready()

    def status(self) -> dict[str, object]:
        crashed, crashed_services = self.crashed(), self.crashed_services()
        return {
            "name": self.name,
            "directory": str(self.directory),
            "server": self.server if "kube-apiserver" in self.ports else None,
            "kubeconfig": str(self.kubeconfig),
            "components": {p.name: ("stopped" if p in crashed else "running") for p in self.processes.values()},
            "services": {p.name: ("stopped" if p in crashed_services else f"running (pid {p.pid})")
                         for p in self.services.values()},
            # What a crashed component said last is usually the reason it stopped.
            "crashed_log_tails": {p.name: _log_tail(p.log, 10) for p in crashed + crashed_services},
            "apiserver_ready": self._apiserver_ready() if "kube-apiserver" in self.ports else False,
        }

    # ---- lifecycle ----------------------------------------------------------------------
    def up(self, *, reuse: bool = True) -> "LocalCluster":
        """Start the cluster; an existing healthy one is reused, a stale one is replaced."""
        wanted_nodes, wanted_real = self.nodes, self.real_nodes
        if self.reload():
            if reuse and self.healthy() and (self.nodes, self.real_nodes) == (wanted_nodes, wanted_real):
                return self
            self.down()
            self.nodes, self.real_nodes, self.ports = wanted_nodes, wanted_real, {}
        elif self.directory.exists():
            shutil.rmtree(self.directory)
        bins = binaries.ensure_all()
        self.directory.mkdir(parents=True)
        try:
            started = time.monotonic()
            self._start(bins)
            self.timings = {"control plane": time.monotonic() - started}
            if self.real_nodes:
                self._save()
                self.timings |= realnode.start(self)
        except BaseException:
            self.down(remove=False)
            raise
        return self

    def down(self, *, remove: bool = True, timeout: float = 15.0) -> None:
        """Stop the services, then every component (newest first), then anything else that names
        the directory; free the pod network and remove the directory."""
        self.reload()  # what the directory records is the truth, whichever object started it
        _stop(list(reversed(self.services.values())), self.directory, SERVICE_STOP_TIMEOUT)
        if self.real_nodes:
            realnode.stop_agents(self, lambda names: _stop(
                [self.processes[n] for n in names if n in self.processes], self.directory, timeout))
        _stop(list(reversed(self.processes.values())), self.directory, timeout)
        # containerd's shims name its socket, so they are found here.
        leftovers = [Process(f"pid {pid}", pid, Path()) for pid in processes_naming(self.directory)]
        _stop(leftovers, self.directory, timeout)
        self.processes, self.services = {}, {}
        if self.real_nodes:
            realnode.teardown(self)
        if self.pod_network_added:
            _ip("addr", "del", self.pod_cidr, "dev", "lo")
            self.pod_network_added = False
        _release_pod_network(self.directory)
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
        elif self.directory.exists():
            self._save()

    # ---- services -----------------------------------------------------------------------
    def start_service(self, name: str, argv: list[str]) -> Process:
        """Run a background service of the local environment; its command line must name the
        directory (so that `down` recognizes it), its log is appended to across restarts."""
        if not _names_directory("\0".join(argv).encode(), self.directory):
            raise ValueError(f"service {name}: its command line must name {self.directory}")
        with self._recording():
            return self._spawn(name, argv, service=True, record=False)

    def stop_service(self, name: str) -> None:
        with self._recording():
            process = self.services.pop(name, None)
        if process is not None:
            _stop([process], self.directory, SERVICE_STOP_TIMEOUT)

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
        with self._recording():
            self.pod_network_added = True

    # ---- start-up ------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], *, service: bool = False, record: bool = True) -> Process:
        log = self.directory / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("a" if service else "w") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=self.directory, env=self.env if service else None)
        process = Process(name, popen.pid, log)
        (self.services if service else self.processes)[name] = process
        if record:
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


def _stop(processes: list[Process], directory: Path, timeout: float) -> None:
    """SIGTERM each process group that still belongs to the cluster, SIGKILL what outlives `timeout`."""
    ours = [p for p in processes if _alive(p.pid) and _belongs_to(p.pid, directory)]
    for process in ours:
        _signal(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in ours:
        while _alive(process.pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(process.pid, os.WNOHANG)[0]:
                    break
            time.sleep(0.05)
        if _alive(process.pid):
            _signal(process.pid, signal.SIGKILL)
    for process in ours:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, 0)


def _signal(pid: int, signum: int) -> None:
    """Signal the process's group when it leads one (our spawns do), else the process alone."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


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
