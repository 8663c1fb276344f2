"""An instance's rollout state, read from its Deployments (pure function)."""

from __future__ import annotations

from typing import Any

from funcplane.render.names import LABEL_SLICE, SLICE_GRAY
from funcplane.render.readiness import deployment_rollout, pod_problems


def deployment(name: str, wanted: int, ready: int, updated: int | None = None, generation: int = 1,
               observed: int = 1, conditions: list[dict[str, Any]] | None = None,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": generation, "labels": labels or {}},
            "spec": {"replicas": wanted},
            "status": {"observedGeneration": observed, "replicas": wanted, "readyReplicas": ready,
                       "updatedReplicas": wanted if updated is None else updated, "conditions": conditions or []}}


def test_no_deployment_yet_is_a_rollout_in_progress() -> None:
    rollout = deployment_rollout([])
    assert not rollout.ready and rollout.progressing


def test_ready_only_when_observed_updated_and_ready() -> None:
    assert deployment_rollout([deployment("a", 2, 2)]).ready
    assert not deployment_rollout([deployment("a", 2, 1)]).ready
    assert not deployment_rollout([deployment("a", 2, 2, generation=2, observed=1)]).ready
    assert not deployment_rollout([deployment("a", 2, 2, updated=1)]).ready


def test_counts_add_up_and_the_gray_slice_is_reported() -> None:
    rollout = deployment_rollout([deployment("a", 3, 3), deployment("a-gray", 1, 1, labels={LABEL_SLICE: SLICE_GRAY})])
    assert (rollout.replicas, rollout.ready_replicas, rollout.gray_ready, rollout.ready) == (4, 4, 1, True)


def test_a_stalled_rollout_names_the_deployment_and_why() -> None:
    stalled = deployment("a", 1, 0, conditions=[{"type": "Progressing", "status": "False",
                                                 "message": "ReplicaSet has timed out progressing"}])
    assert deployment_rollout([stalled]).stalled == "a: ReplicaSet has timed out progressing"


NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def pod(name: str, *, containers: list[dict[str, Any]] | None = None, init: list[dict[str, Any]] | None = None,
        conditions: list[dict[str, Any]] | None = None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name} | ({"deletionTimestamp": "2027-01-15T07:59:00Z"} if deleting else {})
    return {"metadata": metadata, "status": {"conditions": conditions or [], "containerStatuses": containers or [],
                                             "initContainerStatuses": init or []}}


def test_pods_say_why_they_are_not_ready_as_the_kubelet_reports_it() -> None:
    missing_secret = {"name": "host", "ready": False, "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "db-credentials" not found'}}}
    crashing_copy = {"name": "copy-worker-python", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/2 nodes are available"}
    problems = pod_problems([pod("b", containers=[missing_secret]), pod("a", init=[crashing_copy]),
                             pod("c", conditions=[unschedulable])], NOW)
    assert problems == [
        "pod a: container copy-worker-python: CrashLoopBackOff: exit code 1, Error",
        'pod b: container host: CreateContainerConfigError: secret "db-credentials" not found',
        "pod c: Unschedulable: 0/2 nodes are available",
    ]


def test_starting_pods_and_deleted_pods_are_no_problem_but_a_long_unready_one_is() -> None:
    creating = {"name": "host", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
    started_now = {"name": "host", "ready": False, "started": True, "state": {"running": {"startedAt": "2027-01-15T07:59:50Z"}}}
    started_long_ago = {"name": "host", "ready": False, "started": True,
                        "state": {"running": {"startedAt": "2027-01-15T07:55:00Z"}}}
    broken = {"name": "host", "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}}}
    assert pod_problems([pod("a", containers=[creating]), pod("b", containers=[started_now]),
                         pod("c", containers=[broken], deleting=True)], NOW) == []
    assert pod_problems([pod("d", containers=[started_long_ago])], NOW) == [
        "pod d: container host: running for 300s but not ready (its readiness probe fails)"]
