"""An instance's rollout state, read from its Deployments (pure function)."""

from __future__ import annotations

from typing import Any

from funcplane.render.names import LABEL_SLICE, SLICE_GRAY
from funcplane.render.readiness import deployment_rollout


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
