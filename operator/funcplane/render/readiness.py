"""Instance readiness and rollout state read from the instance's Deployments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from funcplane.render.names import LABEL_SLICE, SLICE_GRAY


@dataclass
class Rollout:
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    ready: bool = True
    progressing: bool = False
    stalled: str | None = None
    gray_ready: int = 0


def deployment_rollout(deployments: list[dict[str, Any]]) -> Rollout:
    rollout = Rollout()
    if not deployments:
        return Rollout(ready=False, progressing=True)
    for deployment in deployments:
        wanted = deployment["spec"].get("replicas", 1)
        status = deployment.get("status", {})
        observed = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
        ready = status.get("readyReplicas", 0)
        updated = status.get("updatedReplicas", 0)
        total = status.get("replicas", 0)
        rollout.replicas += wanted
        rollout.ready_replicas += ready
        rollout.updated_replicas += updated
        done = observed and updated >= wanted and ready >= wanted and total <= wanted
        rollout.ready &= done
        rollout.progressing |= not done
        if deployment["metadata"].get("labels", {}).get(LABEL_SLICE) == SLICE_GRAY:
            rollout.gray_ready = ready
        for condition in status.get("conditions", []):
            if (condition.get("type") == "Progressing" and condition.get("status") == "False") or \
                    (condition.get("type") == "ReplicaFailure" and condition.get("status") == "True"):
                rollout.stalled = f"{deployment['metadata']['name']}: {condition.get('message', condition.get('reason'))}"
    return rollout
