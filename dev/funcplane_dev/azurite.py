"""Azurite, the Azure Storage emulator: installed once from npm into the cache, run on loopback.

The queue trigger's broker in tests, benchmarks and local runs. The version is pinned to one
whose package declares support for this machine's Node (3.35.0 declares Node >= 10; newer
releases want Node 22). ``ensure_installed()`` is idempotent and fast once the package is there;
``AzuriteServer`` starts blob and queue services on free loopback ports with their data in a
directory the caller owns, and stops them by pid.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .binaries import cache_root

AZURITE_VERSION = "3.35.0"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's fixed, publicly documented development account key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 60.0


class AzuriteError(RuntimeError):
    """Azurite could not be installed or started; the message says what to do."""


def install_dir() -> Path:
    return cache_root() / f"azurite-{AZURITE_VERSION}"


def executable() -> Path:
    return install_dir() / "node_modules" / ".bin" / "azurite"


def ensure_installed(*, quiet: bool = False) -> Path:
    """The `azurite` launcher, installed with `npm install --prefix` under a lock if missing."""
    target = executable()
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteError("npm is not installed: install Node.js 20+ with npm to run the queue trigger's emulator")
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / ".azurite.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        staging = install_dir().with_name(install_dir().name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        log = staging.parent / f"azurite-{AZURITE_VERSION}-install.log"
        if not quiet:
            print(f"installing azurite {AZURITE_VERSION} from npm into {install_dir()} (one time)", flush=True)
        with log.open("wb") as out:
            result = subprocess.run(
                [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--omit=dev",
                 f"azurite@{AZURITE_VERSION}"],
                stdout=out, stderr=subprocess.STDOUT, check=False,
            )
        if result.returncode != 0 or not (staging / "node_modules" / ".bin" / "azurite").is_file():
            raise AzuriteError(f"npm install azurite@{AZURITE_VERSION} failed (exit {result.returncode}); log: {log}")
        shutil.rmtree(install_dir(), ignore_errors=True)
        staging.rename(install_dir())
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AzuriteServer:
    """One Azurite process (blob + queue) on loopback; `connection_string` is what apps set."""

    data_dir: Path
    blob_port: int = 0
    queue_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT_NAME};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT_NAME};"
        )

    def start(self) -> AzuriteServer:
        launcher = ensure_installed(quiet=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_port = self.blob_port or _free_port()
        self.queue_port = self.queue_port or _free_port()
        log = (self.data_dir / "azurite.log").open("wb")
        # --skipApiVersionCheck: the Python SDK speaks a newer API version than the emulator knows.
        argv = [str(launcher), "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(_free_port()),
                "--location", str(self.data_dir), "--disableTelemetry", "--skipApiVersionCheck", "--loose"]
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AzuriteError(f"azurite exited with {self.process.returncode}: {self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise AzuriteError(f"azurite did not answer on 127.0.0.1:{self.queue_port} within {START_TIMEOUT:.0f}s")

    def _answers(self) -> bool:
        for port in (self.blob_port, self.queue_port):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{ACCOUNT_NAME}?comp=list", timeout=1)
            except urllib.error.HTTPError:
                pass  # any HTTP answer (403 without a signature) means it is serving
            except OSError:
                return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        path = self.data_dir / "azurite.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
