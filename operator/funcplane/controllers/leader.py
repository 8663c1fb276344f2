"""Leader election on a coordination.k8s.io/v1 Lease.

One process holds the Lease and reconciles; the others poll it. Safety comes from the clocks each
side uses, never from comparing timestamps written by another machine:

* The holder counts its leadership from the moment it *sent* its last successful renewal (S). It
  renews every `retry_period`; `leading` turns false at S + `renew_deadline`, and it keeps trying
  until S + `renew_deadline` + `stop_grace`, when a watchdog thread ends the process even if the
  event loop is stuck. So nothing reconciles after that limit without a renewal.
* A candidate counts expiry from the moment it *observed* the Lease change (a new resourceVersion),
  which is after the holder sent that renewal, and takes the Lease only `lease_duration` later.
* Every write carries the resourceVersion it was based on. A renewal therefore succeeds only if
  nobody wrote the Lease since the holder's own last write: no one else can have taken over.

Hence a renewal that is merely late (the process was starved, or the API server answered slowly)
does not end leadership: if it succeeds before the limit, nobody took over in between (the
conditional write proves it) and nobody can before another `lease_duration` from the new write.
With `renew_deadline + stop_grace < lease_duration` the limit falls before any candidate may take
over, so a holder that could not renew has stopped before anyone else may start. Two candidates
racing for an expired or released Lease cannot both win: the API server refuses the second.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from funcplane.controllers import metrics

logger = logging.getLogger("funcplane.leader")

# Exit status of a process that lost the Lease: its supervisor restarts it as a candidate.
EXIT_LEASE_LOST = 3


@dataclass(frozen=True)
class LeaseTiming:
    """Seconds. Defaults are client-go's (15 s lease, 10 s renew deadline, 2 s retry): a standby
    takes over 15-17.4 s after the holder dies; a holder survives 12.5 s without a renewal."""

    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "lease timing: need 0 < retry period < renew deadline < lease duration, got "
                f"retry={self.retry_period}s, renew-deadline={self.renew_deadline}s, "
                f"lease-duration={self.lease_duration}s")

    @property
    def stop_grace(self) -> float:
        """How long past its renew deadline a holder may still renew (a late renewal); the
        watchdog ends the process then. Half the margin to `lease_duration` stays in reserve."""
        return (self.lease_duration - self.renew_deadline) / 2

    @property
    def request_timeout(self) -> float:
        # Per API request; a renewal round is also cut off when the renew deadline arrives.
        return self.renew_deadline / 2


class Attempt(enum.Enum):
    HELD = "held"            # we hold the Lease (acquired or renewed)
    TAKEN = "taken"          # another identity holds a live Lease, or won the race for it
    FAILED = "failed"        # the API could not be asked or refused for another reason


def _micro_time(moment: datetime) -> str:
    # MicroTime always carries six fractional digits; isoformat() drops them when they are zero.
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Acquires, renews and releases one Lease for one identity."""

    def __init__(self, api: client.CoordinationV1Api, *, name: str, namespace: str, identity: str,
                 timing: LeaseTiming = LeaseTiming(), clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.holder: str | None = None           # last holder seen, for logs and health
        self.last_contact: float | None = None   # when the API last answered us (health)
        self._leading = False
        self._renewed_at: float | None = None    # when the last successful write was sent
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._written_version: str | None = None
        # API rounds run in worker threads; a round abandoned by a timeout may still be running.
        # The lock orders rounds and the release; `_closed` stops rounds after the release.
        self._api_lock = threading.Lock()
        self._closed = False

    # -- leadership state -----------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        deadline = self.deadline()
        return self._leading and deadline is not None and self.clock() < deadline

    def deadline(self) -> float | None:
        """When the last renewal stops covering us. Kept after a loss (the watchdog needs it);
        None before the first acquisition and after a release."""
        renewed_at = self._renewed_at
        return None if renewed_at is None else renewed_at + self.timing.renew_deadline

    def _renewed(self, started: float) -> None:
        if not self._leading:
            logger.info("became leader", extra={"lease": f"{self.namespace}/{self.name}"})
        self._leading = True
        self._renewed_at = started
        metrics.LEADER.set(1)

    def _lost(self) -> None:
        self._leading = False
        metrics.LEADER.set(0)

    # -- public coroutines ----------------------------------------------------------------------

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Poll until this identity holds the Lease (True) or `stop` is set (False)."""
        logger.info("waiting for the leader lease", extra={"lease": f"{self.namespace}/{self.name}"})
        while not stop.is_set():
            started = self.clock()
            if await asyncio.to_thread(self._attempt) is Attempt.HELD:
                self._renewed(started)
                return True
            # Jitter keeps candidates that started together from hitting the API in lockstep.
            pause = self.timing.retry_period * random.uniform(1.0, 1.2)
            try:
                await asyncio.wait_for(stop.wait(), timeout=pause)
            except TimeoutError:
                pass
        return False

    async def hold(self) -> None:
        """Renew every retry period; return once leadership is lost (never while still leading).

        Leadership ends when another identity holds the Lease, or when no renewal succeeded by
        the renew deadline plus the stop grace (see the module docstring); a late renewal that
        succeeds before then keeps it."""
        while True:
            deadline = self.deadline()
            if deadline is None:
                break
            started = self.clock()
            remaining = deadline + self.timing.stop_grace - started
            if remaining <= 0:
                break
            try:
                outcome = await asyncio.wait_for(asyncio.to_thread(self._attempt), timeout=remaining)
            except TimeoutError:
                outcome = Attempt.FAILED
            if outcome is Attempt.HELD:
                if started > deadline:
                    logger.warning("lease renewed %.1fs past its renew deadline (this process or the API server "
                                   "was slow); nobody took over, so leadership continues", started - deadline)
                self._renewed(started)
            else:
                metrics.LEASE_RENEW_FAILURES.inc()
                if outcome is Attempt.TAKEN:
                    logger.error("the lease is held by %s now", self.holder)
                    break
                logger.warning("lease renewal failed; leadership ends in %.1fs without a renewal",
                               max(0.0, deadline + self.timing.stop_grace - self.clock()))
            # Up to the deadline at the usual pace; past it (a late renewal) a little faster, never spinning.
            deadline = self.deadline() or 0.0
            await asyncio.sleep(min(self.timing.retry_period, max(0.1, deadline - self.clock())))
        self._lost()
        logger.error("lost the leader lease", extra={"lease": f"{self.namespace}/{self.name}"})

    async def release(self) -> bool:
        """Hand the Lease back so that a standby takes over at once; True if it was released.

        Call only once this process has stopped reconciling."""
        if not self.leading:
            return False
        remaining = (self.deadline() or 0.0) - self.clock()
        try:
            released = await asyncio.wait_for(asyncio.to_thread(self._release), timeout=max(0.1, remaining))
        except TimeoutError:
            released = False
        self._lost()
        self._renewed_at = None
        logger.info("released the leader lease" if released else "could not release the leader lease; it expires",
                    extra={"lease": f"{self.namespace}/{self.name}"})
        return released

    # -- blocking API calls (run in a worker thread) --------------------------------------------

    def _timeout(self) -> tuple[float, float]:
        return (self.timing.request_timeout, self.timing.request_timeout)

    def _spec(self, *, acquire_time: Any, transitions: int) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.timing.lease_duration,
            "acquireTime": acquire_time or _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def _attempt(self) -> Attempt:
        """One read-then-write round: create, renew, or take over a free or expired Lease."""
        with self._api_lock:
            if self._closed:
                return Attempt.FAILED
            return self._attempt_locked()

    def _attempt_locked(self) -> Attempt:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout())
        except ApiException as error:
            if error.status == 404:
                return self._create()
            return self._failed("read", error)
        except Exception as error:  # noqa: BLE001 - network errors of any kind count as a failed attempt
            return self._failed("read", error)
        self.last_contact = self.clock()
        version = lease.metadata.resource_version
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, self.clock()
        spec = lease.spec
        self.holder = spec.holder_identity or None
        if self.holder and self.holder != self.identity:
            duration = spec.lease_duration_seconds or self.timing.lease_duration
            if self.clock() - self._observed_at < duration:
                return Attempt.TAKEN
            logger.info("the lease of %s expired; taking over", self.holder)
        ours = self.holder == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if ours else 1)
        acquire_time = _micro_time(spec.acquire_time) if ours and spec.acquire_time else None
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": version},
                "spec": self._spec(acquire_time=acquire_time, transitions=transitions)}
        return self._write(lambda: self.api.replace_namespaced_lease(
            self.name, self.namespace, body, _request_timeout=self._timeout()))

    def _create(self) -> Attempt:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(acquire_time=None, transitions=0)}
        return self._write(lambda: self.api.create_namespaced_lease(
            self.namespace, body, _request_timeout=self._timeout()))

    def _write(self, call: Callable[[], Any]) -> Attempt:
        try:
            written = call()
        except ApiException as error:
            if error.status == 409:  # someone else wrote first: their write stands
                return Attempt.TAKEN
            return self._failed("write", error)
        except Exception as error:  # noqa: BLE001
            return self._failed("write", error)
        self.last_contact = self.clock()
        self.holder = self.identity
        self._written_version = self._observed_version = written.metadata.resource_version
        self._observed_at = self.clock()
        return Attempt.HELD

    def _release(self) -> bool:
        with self._api_lock:
            self._closed = True
            return self._release_locked()

    def _release_locked(self) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": self._written_version},
                "spec": {"leaseDurationSeconds": 1, "renewTime": _micro_time(datetime.now(timezone.utc))}}
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self._timeout())
        except Exception as error:  # noqa: BLE001 - a failed release only delays the takeover
            logger.warning("lease release failed: %s", _describe(error))
            return False
        return True

    def _failed(self, what: str, error: Exception) -> Attempt:
        logger.warning("lease %s failed: %s", what, _describe(error),
                       extra={"lease": f"{self.namespace}/{self.name}"})
        return Attempt.FAILED


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


class LeadershipWatchdog:
    """Ends the process when leadership has lapsed for `grace` seconds, even if the loop is stuck.

    A thread, not a task: an event loop blocked by a misbehaving handler cannot stop it.
    """

    def __init__(self, deadline: Callable[[], float | None], *, grace: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_expiry: Callable[[], None] | None = None) -> None:
        self._deadline = deadline
        self._grace = grace
        self._clock = clock
        self._on_expiry = on_expiry or _exit_lease_lost
        self._thread = threading.Thread(target=self._watch, name="leadership-watchdog", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(0.2):
            deadline = self._deadline()
            if deadline is not None and self._clock() > deadline + self._grace:
                self._on_expiry()
                return


def _exit_lease_lost() -> None:
    logger.critical("leadership lapsed and reconciling did not stop in time; exiting now")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_LEASE_LOST)
