"""One host per slot runs the timers: a coordination.k8s.io Lease named after the host id.

Every pod of a slot shares the slot's host id, so scaled-out pods (and, during a swap's warm-up,
the source pods running the target's settings) compete for one Lease and only its holder fires
scheduled runs, as Azure's singleton lock does. The host talks to the API server with its pod's
service-account token (in-cluster configuration); outside a cluster there is no lock and each
host runs its own timers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import aiohttp

logger = logging.getLogger("funcplane.host.timers")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_LEASE_SECONDS = 15
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class LeaseConfigError(ValueError):
    """The lock's settings are unusable; the message names the setting."""


@dataclass(frozen=True)
class ApiAccess:
    """In-cluster access: the API server's address and the pod's service-account files."""

    server: str
    token_file: Path
    ca_file: Path
    namespace: str

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> ApiAccess | None:
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        account = Path(env.get("FUNCPLANE_SERVICEACCOUNT_DIR") or SERVICE_ACCOUNT_DIR)
        if not host or not (account / "token").is_file():
            return None
        namespace_file = account / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.is_file() else ""
        if not namespace:
            raise LeaseConfigError(f"{namespace_file} is missing or empty; the timer lock needs the pod's "
                                   "namespace (mount the service-account token as Kubernetes does)")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(server, account / "token", account / "ca.crt", namespace)


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_seconds(env: Mapping[str, str]) -> int:
    raw = env.get("FUNCPLANE_TIMER_LEASE_SECONDS") or str(DEFAULT_LEASE_SECONDS)
    if not raw.isdigit() or not 2 <= int(raw) <= 300:
        raise LeaseConfigError(f"FUNCPLANE_TIMER_LEASE_SECONDS={raw!r} must be a whole number of seconds, 2..300")
    return int(raw)


class TimerLease:
    """Acquire and renew one Lease; `held` says whether this host may fire scheduled runs now."""

    def __init__(self, access: ApiAccess, name: str, duration: int) -> None:
        self.access = access
        self.name = name
        self.duration = duration
        self.identity = f"{socket.gethostname()}_{os.getpid()}"
        self.held = False
        self.holder: str | None = None
        self.error: str | None = None
        self.decided = asyncio.Event()  # set after the first attempt, held or not
        self._held_until: datetime | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.held:
            try:
                await self._release()
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                logger.warning("could not release timer lease %s: %s", self.name, error)
        self.held = False
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        # Renew well inside the duration; a standby retries often enough to take over soon after
        # the holder's lease runs out.
        while True:
            try:
                await self._attempt()
                self._set_error(None)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                self._set_error(f"cannot reach the API server for lease {self.name}: {error}")
            if self.held and self._held_until is not None and datetime.now(timezone.utc) >= self._held_until:
                logger.warning("timer lease %s expired without renewal; pausing scheduled runs", self.name)
                self.held = False
            self.decided.set()
            await asyncio.sleep(self.duration / 3 if self.held else max(1.0, self.duration / 5))

    def _set_error(self, error: str | None) -> None:
        if error != self.error and error is not None:
            logger.error("%s", error)
        self.error = error

    # ---- API calls -------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(cafile=str(self.access.ca_file))
            self._session = aiohttp.ClientSession(
                base_url=self.access.server, connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=max(2.0, self.duration / 3)))
        return self._session

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        token = self.access.token_file.read_text().strip()  # projected tokens rotate: read each time
        async with self._client().request(method, path, json=body,
                                          headers={"Authorization": f"Bearer {token}"}) as response:
            text = await response.text()
            payload = json.loads(text) if text.strip().startswith("{") else {}
            if response.status in (401, 403):
                raise ValueError(f"{response.status} {payload.get('message', text)[:300]}; the app's "
                                 "ServiceAccount needs get, create and update on this Lease")
            return response.status, payload

    def _spec(self, now: datetime, transitions: int, acquired: datetime) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                "acquireTime": _micro_time(acquired), "renewTime": _micro_time(now),
                "leaseTransitions": transitions}

    async def _attempt(self) -> None:
        collection = LEASES.format(namespace=self.access.namespace)
        now = datetime.now(timezone.utc)
        status, lease = await self._call("GET", f"{collection}/{self.name}")
        if status == 404:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.access.namespace},
                    "spec": self._spec(now, 0, now)}
            status, lease = await self._call("POST", collection, body)
            self._took(status in (200, 201), now, self.identity if status in (200, 201) else None)
            return
        if status != 200:
            raise ValueError(f"reading lease {self.name} answered {status}: {lease.get('message', '')}")
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        renewed = _parse_micro_time(spec.get("renewTime"))
        expired = renewed is None or now > renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
        if holder not in (None, self.identity) and not expired:
            self._took(False, now, holder)
            return
        mine = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquired = _parse_micro_time(spec.get("acquireTime")) if mine else now
        lease["spec"] = self._spec(now, transitions, acquired or now)
        status, _ = await self._call("PUT", f"{collection}/{self.name}", lease)  # resourceVersion guards races
        self._took(status == 200, now, self.identity if status == 200 else holder)

    def _took(self, success: bool, now: datetime, holder: str | None) -> None:
        if success and not self.held:
            logger.info("holding timer lease %s as %s: this host runs the slot's timers", self.name, self.identity)
        elif not success and self.held:
            logger.warning("lost timer lease %s to %s", self.name, holder)
        self.held = success
        self.holder = holder
        # Stop firing well before others may call the lease expired (their clocks, our latency).
        self._held_until = now + timedelta(seconds=self.duration * 2 / 3) if success else None

    async def _release(self) -> None:
        path = f"{LEASES.format(namespace=self.access.namespace)}/{self.name}"
        status, lease = await self._call("GET", path)
        if status != 200 or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"] |= {"holderIdentity": None, "leaseDurationSeconds": 1}
        await self._call("PUT", path, lease)
        logger.info("released timer lease %s", self.name)

    def as_json(self) -> dict[str, Any]:
        return {"lease": self.name, "namespace": self.access.namespace, "identity": self.identity,
                "held": self.held, "holder": self.holder, "error": self.error}
