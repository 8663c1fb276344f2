"""Process-level fixtures for the function host: real `funcplane-host` processes, real workers,
real gRPC and HTTP. `start_host(app, ...)` starts a host on a free port and stops it afterwards."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

REPO = Path(__file__).resolve().parents[2]
HOST_APPS = Path(__file__).resolve().parent / "apps"
EXAMPLE_APPS = REPO / "examples" / "apps"
BUNDLED_WORKERS = REPO / "host-image" / "workers"
VENV_BIN = Path(sys.executable).parent
HOST_COMMAND = VENV_BIN / "funcplane-host"
MASTER_KEY = "test-master-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HostProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    app: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = body.encode() if isinstance(body, str) else body
            connection.request(method, path, body=payload, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def admin(self, path: str) -> Any:
        reply = self.get(path, headers={"x-functions-key": MASTER_KEY})
        assert reply.status == 200, f"{path} answered {reply.status}: {reply.text}"
        return reply.json()

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"host exited with {self.process.returncode} while waiting for {what}:\n{self.log_tail()}")
            try:
                if predicate():
                    return
            except (ConnectionError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_until(lambda: self.get("/readyz").status == 200, "/readyz to answer 200", timeout)

    def wait_alive(self, timeout: float = 20.0) -> None:
        self.wait_until(lambda: self.get("/livez").status == 200, "/livez to answer 200", timeout)

    def metrics(self) -> str:
        reply = self.get("/metrics")
        assert reply.status == 200
        return reply.text

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0.0 when absent)."""
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, value = line.rpartition(" ")
        if all(f'{key}="{val}"' in sample for key, val in labels.items()):
            return float(value)
    return 0.0


def echo_at_once(host: HostProcess, bodies: list[bytes]) -> list[bytes]:
    """POST every body to the app's /api/echo at once; the bodies that came back, in order."""
    def echo(body: bytes) -> bytes:
        reply = host.request("POST", "/api/echo", body=body, headers={"Content-Type": "application/octet-stream"})
        assert reply.status == 200, reply.text
        return reply.body

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(echo, bodies))


def launch_host(run_root: Path, app: Path, *, env: dict[str, str] | None = None, args: list[str] | None = None,
                keys: dict[str, Any] | None = None, worker_config: dict[str, Any] | None = None,
                workers_dir: Path | None = None, wait_ready: bool = True, command: Path = HOST_COMMAND,
                port: int | None = None) -> HostProcess:
    """Start a host process with its files under `run_root`; the caller stops it."""
    port = port or free_port()
    run_dir = run_root / f"host-{port}"
    run_dir.mkdir()
    keys_file = run_dir / "keys.json"
    keys_file.write_text(json.dumps(keys or {"masterKey": MASTER_KEY}))
    managed = run_dir / "workers.json"
    if worker_config is not None:
        managed.write_text(json.dumps(worker_config))
    host_env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNCPLANE_", "FUNCTIONS_"))}
    host_env.update({
        "PYTHONUNBUFFERED": "1",
        "FUNCPLANE_HOST_ID": f"test-{port}",
    })
    host_env.update(env or {})
    argv = [
        str(command), "--app", str(app), "--bind", "127.0.0.1", "--port", str(port),
        "--keys-file", str(keys_file), "--worker-config", str(managed),
        "--workers-dir", str(workers_dir or BUNDLED_WORKERS), *(args or []),
    ]
    log_path = run_dir / "host.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=host_env, cwd=run_dir)
    host = HostProcess(process, port, log_path, app, host_env)
    try:
        host.wait_alive()
        if wait_ready:
            host.wait_ready()
    except BaseException:
        host.stop()
        raise
    return host



class HostLauncher:
    """Starts hosts with run directories under `root` (see `launch_host`); `stop_all()` stops them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[HostProcess] = []

    def __call__(self, app: Path, **options: Any) -> HostProcess:
        host = launch_host(self.root, app, **options)
        self.started.append(host)
        return host

    def stop_all(self) -> None:
        for host in self.started:
            host.stop()


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[HostLauncher]:
    launcher = HostLauncher(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def start_module_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostLauncher]:
    """Hosts shared by a module's tests (started once, stopped after the module)."""
    launcher = HostLauncher(tmp_path_factory.mktemp("hosts"))
    yield launcher
    launcher.stop_all()


@pytest.fixture
def copy_app(tmp_path: Path) -> Callable[[Path], Path]:
    """A writable copy of an app folder (tests mutate function.json, host.json, code)."""

    def copy(source: Path, name: str | None = None) -> Path:
        target = tmp_path / "apps" / (name or source.name)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        return target

    return copy


def queue(azurite: Any, name: str) -> QueueClient:
    """A client of Azurite's queue `name` (created if missing) that sends and reads text as the host's
    default base64 message encoding."""
    client = QueueClient.from_connection_string(
        azurite.connection_string, name,
        message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy())
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    return client


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Azurite (blob + queue) on loopback for the session, its data in a temporary directory."""
    from funcplane_dev.azurite import AzuriteServer

    server = AzuriteServer(tmp_path_factory.mktemp("azurite")).start()
    yield server
    server.stop()
