"""Instance readiness and rollout state read from the instance's Deployments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
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


# Waiting reasons that do not pass by themselves: the pod needs a fix (a Secret, an image, the app).
FAILING_REASONS = frozenset({
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff",
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "ImageInspectError",
})
# A started container that is still not ready after this long is failing its readiness probe.
UNREADY_AFTER_SECONDS = 60


def pod_problems(pods: list[dict[str, Any]], now: float) -> list[str]:
    """Why pods of an instance do not become ready, as the kubelet and scheduler report it:
    one line per pod and container (`now` is epoch seconds, for the unready-too-long check)."""
    problems = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        name, status = pod["metadata"]["name"], pod.get("status", {})
        for condition in status.get("conditions", []):
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                problems.append(f"pod {name}: {condition.get('reason', 'Unschedulable')}: "
                                f"{condition.get('message', '')}".strip())
        for container in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
            state = container.get("state", {})
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in FAILING_REASONS:
                message = waiting.get("message", "")
                if waiting["reason"] == "CrashLoopBackOff":
                    last = (container.get("lastState") or {}).get("terminated") or {}
                    message = f"exit code {last.get('exitCode', '?')}" + (f", {last['reason']}" if last.get("reason") else "")
                problems.append(f"pod {name}: container {container['name']}: {waiting['reason']}"
                                + (f": {message}" if message else ""))
                continue
            started = (state.get("running") or {}).get("startedAt")
            if started and not container.get("ready") and container.get("started") is not False and \
                    now - _epoch(started) > UNREADY_AFTER_SECONDS:
                problems.append(f"pod {name}: container {container['name']}: running for "
                                f"{now - _epoch(started):.0f}s but not ready (its readiness probe fails)")
    return problems


def _epoch(timestamp: str) -> float:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
