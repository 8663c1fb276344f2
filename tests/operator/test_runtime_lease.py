"""LeaseElector against the real API server: acquisition, expiry, races, release and loss.

Short lease timings keep these fast; the process-level behaviour with the default timings is in
test_runtime_ha.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from kubernetes import client

from funcplane.controllers import metrics
from funcplane.controllers.leader import Attempt, LeadershipWatchdog, LeaseElector, LeaseTiming

FAST = LeaseTiming(lease_duration=4, renew_deadline=2.4, retry_period=0.5)


@pytest.fixture
def elector(k8s: client.ApiClient, namespace: str):
    def make(identity: str, api_client: client.ApiClient | None = None) -> LeaseElector:
        return LeaseElector(client.CoordinationV1Api(api_client or k8s), name="election", namespace=namespace,
                            identity=identity, timing=FAST)
    return make


def read_lease(k8s: client.ApiClient, namespace: str) -> Any:
    return client.CoordinationV1Api(k8s).read_namespaced_lease("election", namespace).spec


async def acquire(elector: LeaseElector, within: float = 30) -> bool:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(within, stop.set)
    return await elector.acquire(stop)


async def test_the_first_candidate_creates_and_holds_the_lease(elector: Any, k8s: client.ApiClient,
                                                               namespace: str) -> None:
    first, second = elector("first"), elector("second")
    assert await acquire(first)
    assert first.leading and metrics.LEADER._value.get() == 1
    spec = read_lease(k8s, namespace)
    assert spec.holder_identity == "first" and spec.lease_duration_seconds == FAST.lease_duration
    assert await asyncio.to_thread(second._attempt) is Attempt.TAKEN
    assert second.holder == "first" and not second.leading


async def test_an_unrenewed_lease_is_taken_only_a_full_duration_after_it_was_last_seen_changing(
        elector: Any, k8s: client.ApiClient, namespace: str) -> None:
    first, second = elector("first"), elector("second")
    assert await acquire(first)  # and never renewed: the holder is as good as dead
    first_seen = time.monotonic()
    assert await asyncio.to_thread(second._attempt) is Attempt.TAKEN
    assert await acquire(second)
    assert time.monotonic() - first_seen >= FAST.lease_duration
    spec = read_lease(k8s, namespace)
    assert spec.holder_identity == "second" and spec.lease_transitions == 1


async def test_a_renewing_leader_keeps_the_lease(elector: Any, namespace: str) -> None:
    first, second = elector("first"), elector("second")
    assert await acquire(first)
    holding = asyncio.create_task(first.hold())
    try:
        assert not await acquire(second, within=2 * FAST.lease_duration)
        assert first.leading and not holding.done()
    finally:
        holding.cancel()


async def test_racing_candidates_never_both_win(elector: Any) -> None:
    for round_ in range(5):
        old = elector(f"old-{round_}")
        assert await acquire(old)
        assert await old.release()
        candidates = [elector(f"candidate-{round_}-{n}") for n in range(3)]
        barrier = threading.Barrier(len(candidates))

        def attempt(candidate: LeaseElector) -> Attempt:
            barrier.wait()
            return candidate._attempt()

        outcomes = await asyncio.gather(*(asyncio.to_thread(attempt, c) for c in candidates))
        assert outcomes.count(Attempt.HELD) == 1, outcomes
        winner = candidates[outcomes.index(Attempt.HELD)]
        winner._renewed(time.monotonic())
        assert await winner.release()


async def test_release_lets_a_standby_take_over_at_once(elector: Any, k8s: client.ApiClient,
                                                        namespace: str) -> None:
    first, second = elector("first"), elector("second")
    assert await acquire(first)
    assert await asyncio.to_thread(second._attempt) is Attempt.TAKEN
    assert await first.release()
    assert not first.leading and first.deadline() is None
    assert read_lease(k8s, namespace).holder_identity is None
    assert await asyncio.to_thread(second._attempt) is Attempt.HELD  # no waiting for expiry


async def test_the_leader_gives_up_when_another_identity_holds_the_lease(elector: Any, k8s: client.ApiClient,
                                                                         namespace: str) -> None:
    first = elector("first")
    assert await acquire(first)
    holding = asyncio.create_task(first.hold())
    await asyncio.sleep(FAST.retry_period)
    api = client.CoordinationV1Api(k8s)
    api.patch_namespaced_lease("election", namespace, {"spec": {"holderIdentity": "intruder"}})
    await asyncio.wait_for(holding, timeout=10)
    assert not first.leading and metrics.LEADER._value.get() == 0


async def test_the_leader_gives_up_at_its_renewal_limit_when_the_api_is_unreachable(
        elector: Any, k8s: client.ApiClient) -> None:
    first = elector("first")
    assert await acquire(first)
    unreachable = client.Configuration()
    unreachable.host = "https://127.0.0.1:9"  # discard port: connections are refused
    first.api = client.CoordinationV1Api(client.ApiClient(unreachable))
    await asyncio.wait_for(first.hold(), timeout=10)
    deadline = first.deadline()
    assert deadline is not None and time.monotonic() >= deadline + FAST.stop_grace
    assert deadline + FAST.stop_grace < deadline - FAST.renew_deadline + FAST.lease_duration, \
        "the limit falls before a standby may take over"
    assert not first.leading and metrics.LEADER._value.get() == 0


def starved(k8s: client.ApiClient, namespace: str, identity: str) -> tuple[LeaseElector, list[float]]:
    """An elector whose clock can be moved on: as if its process had been starved of CPU that long."""
    lost_time = [0.0]
    return LeaseElector(client.CoordinationV1Api(k8s), name="election", namespace=namespace, identity=identity,
                        timing=FAST, clock=lambda: time.monotonic() + lost_time[0]), lost_time


async def test_a_late_renewal_keeps_leadership_when_nobody_took_over(k8s: client.ApiClient, namespace: str) -> None:
    first, lost_time = starved(k8s, namespace, "first")
    assert await acquire(first)
    version = client.CoordinationV1Api(k8s).read_namespaced_lease("election", namespace).metadata.resource_version
    lost_time[0] = FAST.renew_deadline + FAST.stop_grace / 2  # woke past the renew deadline, before the limit
    assert not first.leading
    holding = asyncio.create_task(first.hold())
    try:
        for _ in range(100):
            if first.leading:
                break
            await asyncio.sleep(0.05)
        assert first.leading and not holding.done(), "a late renewal that succeeded must keep leadership"
        renewed = client.CoordinationV1Api(k8s).read_namespaced_lease("election", namespace)
        assert renewed.spec.holder_identity == "first" and renewed.metadata.resource_version != version
    finally:
        holding.cancel()


async def test_no_renewal_is_tried_past_the_limit(k8s: client.ApiClient, namespace: str) -> None:
    first, lost_time = starved(k8s, namespace, "first")
    assert await acquire(first)
    version = client.CoordinationV1Api(k8s).read_namespaced_lease("election", namespace).metadata.resource_version
    lost_time[0] = FAST.renew_deadline + FAST.stop_grace + 0.1  # a standby may be about to take over
    await asyncio.wait_for(first.hold(), timeout=5)
    assert not first.leading
    assert client.CoordinationV1Api(k8s).read_namespaced_lease("election", namespace).metadata.resource_version == \
        version, "past the limit the holder must not write the Lease"


def test_the_watchdog_ends_leadership_that_lapsed_and_spares_renewed_leadership() -> None:
    fired = threading.Event()
    deadline = [time.monotonic() + 0.3]
    watchdog = LeadershipWatchdog(lambda: deadline[0], grace=0.2, on_expiry=fired.set)
    watchdog.start()
    for _ in range(5):  # renewed in time, five times over
        time.sleep(0.2)
        deadline[0] = time.monotonic() + 0.3
    assert not fired.is_set()
    assert fired.wait(timeout=5)
    released = threading.Event()
    idle = LeadershipWatchdog(lambda: None, grace=0.0, on_expiry=released.set)
    idle.start()
    assert not released.wait(timeout=0.6)
    idle.stop()


def test_lease_timing_refuses_an_unsafe_order() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseTiming(lease_duration=5, renew_deadline=6, retry_period=1)
    assert LeaseTiming().renew_deadline + LeaseTiming().stop_grace < LeaseTiming().lease_duration
    assert (LeaseTiming().lease_duration, LeaseTiming().renew_deadline, LeaseTiming().retry_period) == (15, 10.0, 2.0)
