"""Real nodes beside the simulated ones: a kubelet, containerd and a CNI bridge per node, and one
kube-proxy for the machine, all under the cluster's directory.

Each real node ``real-node-<i>`` has its own containerd (root, state, socket and runc root under
``<cluster>/nodes/<node>/``), its own bridge ``fpb<k>-<i>`` with a /24 of 10.214.0.0/16 (the
bridge's first address is the node's IP, so nothing on the node listens beyond the machine), and a
kubelet registered with the taint ``funcplane.io/real-node=true:NoSchedule`` and the label
``funcplane.io/node=real``: only pods that ask for it run for real (a FunctionApp's
``spec.nodeSelector`` and ``spec.tolerations``), everything else stays on kwok's nodes.

kube-proxy (iptables mode) programs Services into the machine's nat table. Two kube-proxies on one
machine would rewrite each other's chains, so one cluster at a time may have real nodes (a lease
file naming its directory) and it runs one kube-proxy.

``teardown`` undoes what ``start`` and the node agents did: it kills the pods' containers (runc),
frees their network namespaces, unmounts what lies under the nodes' directories, deletes the
bridges, removes the ``KUBE-`` chains of kubelet and kube-proxy, and writes back every sysctl the
agents may change (recorded before they started).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from funcplane.controllers.context import VOLUME_MODE_ENV

from . import binaries, images

if TYPE_CHECKING:
    from .cluster import LocalCluster

NODE_PREFIX = "real-node-"
NODE_LABEL = ("funcplane.io/node", "real")
TAINT_KEY = "funcplane.io/real-node"
# Pod subnets of real nodes: a /24 each, away from the simulated pods' 10.213.0.0/16.
REAL_POD_NETWORK = ipaddress.ip_network("10.214.0.0/16")
MAX_NODES = 8
RUNTIME_NAMESPACE = "k8s.io"
PAUSE_REPOSITORY = "localhost/funcplane/pause"
# containerd 1.6 has no image volumes: operators of a cluster with real nodes render the copying
# init container (the cluster's env carries it to every operator started for it).
OPERATOR_VOLUME_MODE = (VOLUME_MODE_ENV, "copy")
# Files-only images re-based on the host image, so that the init-container copy has sh and cp.
COPY_TAG_SUFFIX = "-copy"
COPY_FILES_DIR = "/files"
# The images a real node gets: the project's, as `make images` builds them.
NODE_IMAGES = ("host", "python-worker", "example-hello-1.0.0", "example-hello-1.1.0")
FILES_ONLY_IMAGES = ("python-worker", "example-hello-1.0.0", "example-hello-1.1.0")
# What the node agents may change machine-wide: the kubelet's kernel tunables, forwarding (the CNI
# bridge in gateway mode), kube-proxy's conntrack and route_localnet. Recorded before, written back.
SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding", "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait", "net/netfilter/nf_conntrack_tcp_be_liberal",
)
REQUIRED_COMMANDS = {"containerd": "containerd", "ctr": "containerd", "containerd-shim-runc-v2": "containerd",
                     "runc": "runc", "iptables": "iptables", "iptables-save": "iptables", "nft": "nftables"}
# Directories the agents make outside the cluster's directory, deepest first: containerd's shim
# sockets and network namespaces, the kubelet's device-plugin socket and container log links
# (fixed paths). Removed by `down` when they were not there before and are empty.
RUNTIME_DIRS = (Path("/run/containerd/s"), Path("/run/containerd"), Path("/run/netns"),
                Path("/var/lib/kubelet/device-plugins"), Path("/var/lib/kubelet"), Path("/var/log/containers"))
CNI_CACHE = Path("/var/lib/cni/results")  # libcni's cached results, one file per sandbox and network
CNI_BIN_DIR = Path("/usr/lib/cni")
START_TIMEOUT = 90.0


class RealNodeError(RuntimeError):
    """A real node could not be started or cleaned up; the message says why and what to do."""


@dataclass(frozen=True)
class RealNode:
    index: int
    cluster_index: int  # which /20 of the simulated pod network the cluster leased: keeps bridges apart
    root: Path

    @property
    def name(self) -> str:
        return f"{NODE_PREFIX}{self.index}"

    @property
    def directory(self) -> Path:
        return self.root / self.name

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return list(REAL_POD_NETWORK.subnets(new_prefix=24))[self.cluster_index * MAX_NODES + self.index]

    @property
    def ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def bridge(self) -> str:
        return f"fpb{self.cluster_index}-{self.index}"  # at most 15 characters (IFNAMSIZ)

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.directory / "runc"


def require_tools() -> None:
    missing = sorted({package for command, package in REQUIRED_COMMANDS.items() if shutil.which(command) is None})
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise RealNodeError(
            f"real nodes need {', '.join(missing)}: `make real-node-tools` installs them "
            f"(apt-get install {' '.join(missing)})")
    if os.geteuid() != 0:
        raise RealNodeError("real nodes need root: the kubelet and containerd mount, and the CNI bridge and "
                            "kube-proxy change the machine's network")


# ---- images ---------------------------------------------------------------------------------
def pause_reference(base: str) -> str:
    return f"{PAUSE_REPOSITORY}:{base.rsplit(':', 1)[1]}"


def copy_reference(reference: str) -> str:
    return reference + COPY_TAG_SUFFIX


def _build_from(containerfile: str, reference: str) -> None:
    with tempfile.TemporaryDirectory(prefix="funcplane-node-image-") as context:
        (Path(context) / "Containerfile").write_text(containerfile)
        images.podman("build", "--layers", *images.ULIMITS, "-t", reference, context)


def node_images(log: Callable[[str], None] = print) -> list[str]:
    """Build (cached) what real nodes run: the project's images, the sandbox image and the
    copyable variants of the files-only images (containerd 1.6 has no image volumes)."""
    built = {b.spec.name: b.reference for b in images.build_all(NODE_IMAGES, log=log)}
    base = images.ensure_base(log)
    references = [built["host"]]
    pause = pause_reference(base)
    if not images.image_exists(pause):
        # The sandbox only holds the pod's namespaces; any process that sleeps does.
        _build_from(f'FROM {base}\nCMD ["sleep", "infinity"]\n', pause)
    references.append(pause)
    for name in FILES_ONLY_IMAGES:
        variant = copy_reference(built[name])
        _build_from(f"FROM {built['host']}\nCOPY --from={built[name]} / {COPY_FILES_DIR}/\n", variant)
        references.append(variant)
    return references


def node_image_references() -> list[str]:
    """What `node_images` builds and a real node holds, by name, without building anything."""
    host = images.IMAGES["host"].reference()
    return [host, pause_reference(images.base_reference()),
            *(copy_reference(images.IMAGES[name].reference()) for name in FILES_ONLY_IMAGES)]


# ---- apps on real nodes -----------------------------------------------------------------------------
def app_on_real_nodes() -> dict[str, object]:
    """FunctionApp spec fields that run its pods on the real nodes: the host image the nodes hold
    (never pulled: no registry is reachable here), and the label and taint only real nodes carry."""
    return {"image": images.IMAGES["host"].reference(), "imagePullPolicy": "Never",
            "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}


def copy_worker_config(name: str = "workers") -> dict[str, object]:
    """A WorkerConfig naming the Python worker's copyable variant (its files under /files), for the
    copying init container that operators of a cluster with real nodes render."""
    reference = copy_reference(images.IMAGES["python-worker"].reference())
    return {"apiVersion": "funcplane.io/v1alpha1", "kind": "WorkerConfig", "metadata": {"name": name},
            "spec": {"workers": [{"name": "python", "language": "python", "source": {"image": {
                "reference": reference, "path": COPY_FILES_DIR, "pullPolicy": "Never"}}}]}}


def _archive(references: list[str]) -> Path:
    """One docker archive of all the images, cached by their ids: layers they share (the host
    image's, under every copyable variant) are stored, and imported, once."""
    ids = images.podman("image", "inspect", "--format", "{{.Id}}", *references).stdout.split()  # one a line
    key = hashlib.sha256(json.dumps(sorted(zip(references, ids))).encode()).hexdigest()[:24]
    archive = binaries.cache_root() / "node-images" / f"{key}.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        for stale in archive.parent.glob("*.tar"):  # earlier builds' archives: hundreds of MB each
            stale.unlink(missing_ok=True)
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        images.podman("save", "--format", "docker-archive", "--multi-image-archive", "-o", str(partial), *references)
        partial.rename(archive)
    return archive


def load_images(node: RealNode, archive: Path) -> None:
    _run(["ctr", "--address", str(node.socket), "-n", RUNTIME_NAMESPACE, "images", "import", str(archive)])


# ---- machine state ----------------------------------------------------------------------------
def iptables_tables() -> list[str]:
    """The (nf_tables) tables iptables shows, as "<family> <table>" (nft's names: ip, ip6)."""
    tables = []
    for family, save in (("ip", "iptables-save"), ("ip6", "ip6tables-save")):
        dump = _run([save], check=False).stdout if shutil.which(save) else ""
        tables += [f"{family} {line[1:].strip()}" for line in dump.splitlines() if line.startswith("*")]
    return tables


def _machine_record() -> dict[str, object]:
    shims = RUNTIME_DIRS[0]
    return {"sysctls": read_sysctls(), "tables": iptables_tables(),
            "dirs": [str(d) for d in RUNTIME_DIRS if d.exists()],
            "shim sockets": sorted(p.name for p in shims.iterdir()) if shims.is_dir() else []}


def _restore_machine(record: dict[str, object]) -> None:
    """Write back the sysctls; drop what the agents made that was not there: empty iptables tables
    (the nf_tables backend keeps a table once a chain was added to it), the runtime's directories."""
    _write_sysctls(record.get("sysctls", {}))  # type: ignore[arg-type]
    before = set(record.get("tables", []))  # type: ignore[arg-type]
    for table in iptables_tables():
        if table in before:
            continue
        family, name = table.split()
        save = "iptables-save" if family == "ip" else "ip6tables-save"
        dump = _run([save, "-t", name], check=False).stdout.splitlines()
        if not any(line.startswith("-A ") for line in dump):
            _run(["nft", "delete", "table", family, name], check=False)
    existed = set(record.get("dirs", []))  # type: ignore[arg-type]
    listening = _listening_sockets()
    for directory in RUNTIME_DIRS:
        if str(directory) not in existed and directory.is_dir():
            for entry in directory.iterdir():  # a socket whose process is gone (the kubelet's)
                if entry.is_socket() and str(entry) not in listening:
                    entry.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                directory.rmdir()  # only when empty: anything left in it is someone else's


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = (Path("/proc/sys") / key).read_text().strip()
    return values


def _write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = Path("/proc/sys") / key
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")


def _lease_file() -> Path:
    return binaries.cache_root() / "real-nodes.lease"


def lease(directory: Path, alive: Callable[[Path], bool]) -> None:
    """Claim the machine's real-node lease for this cluster (one kube-proxy per machine)."""
    path = _lease_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".real-nodes.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            owner = Path(path.read_text())
            if owner != directory and alive(owner):
                raise RealNodeError(f"the cluster in {owner} has real nodes; one cluster at a time may have them "
                                    "(their kube-proxies would rewrite each other's rules): stop it first")
        path.write_text(str(directory))


def release(directory: Path) -> None:
    path = _lease_file()
    with contextlib.suppress(OSError):
        if path.read_text() == str(directory):
            path.unlink()


def _run(argv: list[str], *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RealNodeError(f"`{shlex.join(argv)}` failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
    return result


# ---- configuration files ------------------------------------------------------------------------
def containerd_config(node: RealNode, pause: str) -> str:
    d = node.directory
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d / 'containerd-root'}"
state = "{d / 'containerd-state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = "{d / 'containerd-ttrpc.sock'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'containerd-opt'}"
[{cri}]
  sandbox_image = "{pause}"
  # Without it every sandbox fails ("can't get final child's PID from pipe"): a pod may not lower
  # its OOM score below containerd's own here.
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{node.runc_root}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d / 'cni'}"
"""


def cni_config(node: RealNode) -> dict[str, object]:
    # The bridge and its address are made by `start` (the node IP must exist before the kubelet);
    # not a gateway and no masquerading, so the plugin turns on no forwarding and adds no rules.
    return {
        "cniVersion": "1.0.0", "name": f"funcplane-{node.bridge}",
        "plugins": [
            {"type": "bridge", "bridge": node.bridge, "isGateway": False, "ipMasq": False,
             "ipam": {"type": "host-local", "dataDir": str(node.directory / "cni-ipam"),
                      "ranges": [[{"subnet": str(node.subnet), "gateway": node.ip}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "loopback"},
        ],
    }


def kubelet_config(node: RealNode, port: int, ca_file: Path) -> dict[str, object]:
    d = node.directory
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # The machine has hybrid cgroups; the kubelet refuses cgroup v1 unless told.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
        "failSwapOn": False, "containerRuntimeEndpoint": f"unix://{node.socket}",
        "address": "127.0.0.1", "port": port, "readOnlyPort": 0, "healthzPort": 0,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "AlwaysAllow"},
        # The machine's disk and memory are shared: never evict or collect images for pressure.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "podLogsDir": str(d / "pod-logs"), "volumePluginDir": str(d / "volume-plugins"),
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        "serializeImagePulls": False, "hairpinMode": "none", "resolvConf": "/etc/resolv.conf",
        "maxPods": 110, "syncFrequency": "10s", "fileCheckFrequency": "0s",
    }


def kube_proxy_config(node: RealNode, kubeconfig: Path, health_port: int, metrics_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)}, "hostnameOverride": node.name, "mode": "iptables",
        "bindAddress": "127.0.0.1", "healthzBindAddress": f"127.0.0.1:{health_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # False, or it turns on route_localnet for the whole machine.
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "0s", "syncPeriod": "30s"},
        # Zeros leave the machine's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "nodePortAddresses": [f"{node.ip}/32"],
    }


# ---- start and teardown --------------------------------------------------------------------------
def nodes_of(cluster: "LocalCluster") -> list[RealNode]:
    index = _cluster_index(cluster)
    return [RealNode(i, index, cluster.directory / "nodes") for i in range(cluster.real_nodes)]


def cluster_pod_networks() -> list[ipaddress.IPv4Network]:
    from .cluster import POD_NETWORKS

    return POD_NETWORKS


def start(cluster: "LocalCluster", log: Callable[[str], None] = print) -> dict[str, float]:
    """Start every real node of the cluster (its control plane is up) and wait until Ready;
    returns how long each step took (seconds)."""
    from .cluster import free_port

    timings: dict[str, float] = {}
    started = time.monotonic()
    require_tools()
    if cluster.real_nodes > MAX_NODES:
        raise RealNodeError(f"--real-nodes {cluster.real_nodes}: at most {MAX_NODES}")
    nodes = nodes_of(cluster)
    lease(cluster.directory, _cluster_alive)
    record = cluster.directory / "nodes" / "machine.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    if not record.exists():
        record.write_text(json.dumps(_machine_record()))
    bins = binaries.ensure_component(binaries.COMPONENTS["kubernetes-node"])
    references = node_images(log)
    pause = references[1]
    timings["images (podman, cached)"] = time.monotonic() - started
    loading = -time.monotonic()
    archive = _archive(references)  # one for every node: its images' ids are looked up once
    loading += time.monotonic()
    for node in nodes:
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "cni").mkdir(exist_ok=True)
        (node.directory / "cni" / "10-funcplane.conflist").write_text(json.dumps(cni_config(node), indent=2))
        (node.directory / "containerd.toml").write_text(containerd_config(node, pause))
        _bridge_up(node)
        containerd = cluster._spawn(f"containerd-{node.name}", [
            shutil.which("containerd") or "containerd", "--config", str(node.directory / "containerd.toml")])
        cluster._wait(containerd, lambda node=node: _ctr_ok(node), "serving", timeout=30)
        loading -= time.monotonic()
        load_images(node, archive)
        loading += time.monotonic()
        port = free_port()
        config = node.directory / "kubelet.yaml"
        config.write_text(json.dumps(kubelet_config(node, port, cluster.directory / "pki" / "ca.crt"), indent=2))
        cluster._spawn(f"kubelet-{node.name}", [
            str(bins / "kubelet"), f"--config={config}", f"--kubeconfig={cluster.kubeconfig}",
            f"--root-dir={node.directory / 'kubelet'}", f"--hostname-override={node.name}",
            f"--node-ip={node.ip}", f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
            f"--cert-dir={node.directory / 'kubelet-pki'}", "--v=1",
        ])
    first = nodes[0]
    proxy_config = first.directory / "kube-proxy.yaml"
    health, metrics = free_port(), free_port()
    proxy_config.write_text(json.dumps(kube_proxy_config(first, cluster.kubeconfig, health, metrics), indent=2))
    proxy = cluster._spawn("kube-proxy", [str(bins / "kube-proxy"), f"--config={proxy_config}", "--v=1"])
    for node in nodes:
        kubelet = cluster.processes[f"kubelet-{node.name}"]
        cluster._wait(kubelet, lambda node=node: _node_ready(cluster, node.name), "a Ready node", timeout=START_TIMEOUT)
    cluster._wait(proxy, lambda: _http_ok(f"http://127.0.0.1:{health}/healthz"), "healthy", timeout=START_TIMEOUT)
    timings["image import (ctr)"] = loading
    timings["nodes Ready"] = time.monotonic() - started - timings["images (podman, cached)"] - loading
    return timings


def _cluster_alive(directory: Path) -> bool:
    from .cluster import LocalCluster

    other = LocalCluster.load(directory=directory)
    return other is not None and len(other.crashed()) < len(other.processes)


def _ctr_ok(node: RealNode) -> bool:
    return node.socket.exists() and _run(["ctr", "--address", str(node.socket), "version"],
                                         check=False, timeout=10).returncode == 0


def _node_ready(cluster: "LocalCluster", name: str) -> bool:
    out = cluster.kubectl("get", "node", name, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _ip(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return _run([shutil.which("ip") or "/usr/sbin/ip", *args], check=check, timeout=30)


def _bridge_up(node: RealNode) -> None:
    if _ip("link", "show", node.bridge).returncode != 0:
        _ip("link", "add", "name", node.bridge, "type", "bridge", check=True)
    if f"{node.ip}/24" not in _ip("-4", "addr", "show", "dev", node.bridge).stdout:
        _ip("addr", "add", f"{node.ip}/24", "dev", node.bridge, check=True)
    _ip("link", "set", node.bridge, "up", check=True)


def stop_agents(cluster: "LocalCluster", stop: Callable[[list[str]], None]) -> None:
    """Stop kube-proxy and the kubelets first (nothing may restart a container while the pods are
    cleaned up), then kill every pod container, then containerd and its shims."""
    nodes = nodes_of(cluster)
    stop(["kube-proxy", *(f"kubelet-{n.name}" for n in nodes)])
    for node in nodes:
        _kill_containers(node)
    stop([f"containerd-{n.name}" for n in nodes])
    # The shims keep waiting for a containerd that is gone; their containers are dead already.
    from .cluster import processes_naming

    for node in nodes:
        for pid in processes_naming(node.socket):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def _cluster_index(cluster: "LocalCluster") -> int:
    with contextlib.suppress(ValueError):
        return [str(n) for n in cluster_pod_networks()].index(cluster.pod_cidr)
    return 0


def _containers(node: RealNode) -> list[str]:
    root = node.runc_root / RUNTIME_NAMESPACE
    if not root.is_dir():
        return []
    out = _run(["runc", "--root", str(root), "list", "-q"], check=False, timeout=30)
    return out.stdout.split()


def _kill_containers(node: RealNode) -> None:
    """Kill the node's containers and free their network namespaces (which takes their veths)."""
    root = str(node.runc_root / RUNTIME_NAMESPACE)
    namespaces: set[int] = set()
    for container in _containers(node):
        state = _run(["runc", "--root", root, "state", container], check=False, timeout=30)
        with contextlib.suppress(ValueError, KeyError, OSError):
            pid = json.loads(state.stdout)["pid"]
            if pid:
                namespaces.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        _run(["runc", "--root", root, "kill", "--all", container, "KILL"], check=False, timeout=30)
    deadline = time.monotonic() + 10
    for container in _containers(node):
        while time.monotonic() < deadline and json.loads(
                _run(["runc", "--root", root, "state", container], check=False, timeout=30).stdout or "{}"
        ).get("status") == "running":
            time.sleep(0.1)
        _run(["runc", "--root", root, "delete", "--force", container], check=False, timeout=30)
    netns = Path("/run/netns")
    for entry in netns.iterdir() if netns.is_dir() else []:
        with contextlib.suppress(OSError):
            if entry.stat().st_ino in namespaces:
                _run(["umount", "-l", str(entry)], check=False)
                entry.unlink()


def teardown(cluster: "LocalCluster") -> None:
    """After every process of the cluster stopped: unmount, delete bridges and chains, restore sysctls."""
    root = cluster.directory / "nodes"
    recorded = root / "machine.json"
    if not recorded.exists():
        return  # written right after the lease: without it this cluster changed nothing on the machine
    nodes = nodes_of(cluster)
    for node in nodes:
        _kill_containers(node)  # anything a dying kubelet started after the first pass
    _unmount_under(root)
    for node in nodes:
        if _ip("link", "show", node.bridge).returncode == 0:
            _ip("link", "delete", node.bridge)
    if nodes:
        proxy = binaries.COMPONENTS["kubernetes-node"].bin_dir / "kube-proxy"
        if proxy.exists():
            _run([str(proxy), "--cleanup"], check=False, timeout=60)
        remove_kube_chains()
        for node in nodes:
            _remove_container_log_links(node)
            _remove_cni_cache(node)
    record = json.loads(recorded.read_text())
    _remove_shim_sockets(set(record.get("shim sockets", [])))
    _restore_machine(record)
    release(cluster.directory)


def _listening_sockets() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:] if len(line.split()) >= 8}


def _remove_shim_sockets(existing: set[str]) -> None:
    """A killed shim leaves its socket in /run/containerd/s (containerd 1.6 puts them there whatever
    its state directory). Removed: those made since `up` that no live process listens on."""
    listening = _listening_sockets()
    shims = RUNTIME_DIRS[0]
    for socket in shims.iterdir() if shims.is_dir() else []:
        if socket.name not in existing and str(socket) not in listening and socket.is_socket():
            socket.unlink(missing_ok=True)


def _unmount_under(directory: Path) -> None:
    prefix = str(directory.resolve()) + "/"
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        _run(["umount", "-l", point], check=False)


def remove_kube_chains() -> None:
    """Delete the kubelet's and kube-proxy's chains (KUBE-*) and the rules that jump to them."""
    for family in ("iptables", "ip6tables"):
        if shutil.which(f"{family}-save") is None:
            continue
        for table in ("filter", "nat", "mangle"):
            dump = _run([f"{family}-save", "-t", table], check=False).stdout
            chains = [line[1:].split()[0] for line in dump.splitlines() if line.startswith(":KUBE-")]
            if not chains:
                continue
            jumps = [line for line in dump.splitlines()
                     if line.startswith("-A ") and any(f"-j {c}" in line or f"-g {c}" in line for c in chains)
                     and not line.split()[1].startswith("KUBE-")]
            script = [f"*{table}", *("-D" + line[2:] for line in jumps),
                      *(f"-F {c}" for c in chains), *(f"-X {c}" for c in chains), "COMMIT", ""]
            subprocess.run([f"{family}-restore", "--noflush"], input="\n".join(script), text=True,
                           capture_output=True, timeout=60)


def _remove_cni_cache(node: RealNode) -> None:
    """Sandboxes killed without a CNI DEL leave their cached results: the bridge network's (named
    after the node's bridge) and the loopback's of the same sandboxes."""
    network = str(cni_config(node)["name"])
    sandboxes = set()
    for entry in CNI_CACHE.glob(f"{network}-*") if CNI_CACHE.is_dir() else []:
        sandboxes.add(entry.name.removeprefix(f"{network}-").rsplit("-", 1)[0])
        entry.unlink(missing_ok=True)
    for sandbox in sandboxes:
        (CNI_CACHE / f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)


def _remove_container_log_links(node: RealNode) -> None:
    """The kubelet links each container's log into /var/log/containers; drop links into this node."""
    links = Path("/var/log/containers")
    for link in links.iterdir() if links.is_dir() else []:
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(node.directory)):
                link.unlink()


def node_names(count: int) -> list[str]:
    """The names of a cluster's `count` real nodes (their kubelets' --hostname-override)."""
    return [f"{NODE_PREFIX}{i}" for i in range(count)]


def process_names(count: int) -> list[str]:
    """The processes a cluster with `count` real nodes records beside its control plane."""
    if not count:
        return []
    nodes = node_names(count)
    return [*(f"containerd-{n}" for n in nodes), *(f"kubelet-{n}" for n in nodes), "kube-proxy"]


# ---- traffic to Service VIPs ---------------------------------------------------------------------
def service_dnat_targets(cluster_ip: str, port: int) -> set[str]:
    """Where kube-proxy's nat rules send ClusterIP:port ("ip:port" of each endpoint); empty while
    no rule for the Service exists."""
    lines = _run(["iptables-save", "-t", "nat"], check=False).stdout.splitlines()

    def jumps(chain: str, *needles: str) -> list[str]:
        found = []
        for line in lines:
            words = line.split()
            if words[:2] == ["-A", chain] and all(n in words for n in needles) and "-j" in words:
                found.append(words[words.index("-j") + 1])
        return found

    services = [c for c in jumps("KUBE-SERVICES", f"{cluster_ip}/32", str(port)) if c.startswith("KUBE-SVC-")]
    targets = set()
    for service in services:
        for endpoint in (c for c in jumps(service) if c.startswith("KUBE-SEP-")):
            for line in lines:
                words = line.split()
                if words[:2] == ["-A", endpoint] and "DNAT" in words and "--to-destination" in words:
                    targets.add(words[words.index("--to-destination") + 1])
    return targets


@dataclass(frozen=True)
class Vip:
    ip: str
    port: int


class VipClient:
    """HTTP GETs to a Service's ClusterIP, through kube-proxy's rules on this machine.

    The service range is not local: a request no local rule catches would leave the machine. So the
    client is made only once the Service's DNAT rules exist and point into the real nodes' pod
    network (their bridges); from then on kube-proxy DNATs or rejects every packet to the VIP here."""

    def __init__(self, cluster_ip: str, port: int, *, timeout: float = 10.0, wait: float = 60.0) -> None:
        deadline = time.monotonic() + wait
        targets: set[str] = set()
        while time.monotonic() < deadline:
            targets = service_dnat_targets(cluster_ip, port)
            if targets:
                break
            time.sleep(0.2)
        outside = [t for t in targets if ipaddress.ip_address(t.rsplit(":", 1)[0]) not in REAL_POD_NETWORK]
        if not targets or outside:
            raise RealNodeError(f"no request sent to {cluster_ip}:{port}: its DNAT rules "
                                f"({sorted(targets) or 'none after %.0fs' % wait}) do not all lead to pods of the real "
                                f"nodes ({REAL_POD_NETWORK}); a request no local rule catches would leave the machine")
        self.vip, self.timeout = Vip(cluster_ip, port), timeout

    def get(self, path: str, *, wait: float = 0.0) -> tuple[Vip, int, bytes]:
        """(the VIP, the status, the body); a new connection per request, so each is routed anew."""
        import http.client

        connection = http.client.HTTPConnection(self.vip.ip, self.vip.port, timeout=self.timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return self.vip, response.status, response.read()
        finally:
            connection.close()
