"""Status conditions: their types and reasons, the status base class with its mark helpers, and
which changes of a condition are news (an Event).

Setting conditions keeps each one's lastTransitionTime unless its status changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from funcplane.api.base import Condition, Model

# Condition types.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
ABNORMAL_TRUE = frozenset({DEGRADED})  # types whose True is the bad state


class Reason:
    """Condition reasons, by the resource that reports them."""

    # FunctionApp
    ALL_INSTANCES_READY = "AllInstancesReady"
    INSTANCES_NOT_READY = "InstancesNotReady"
    ROLLING_OUT = "RollingOut"
    STABLE = "Stable"
    ROLLOUT_STALLED = "RolloutStalled"
    PODS_FAILING = "PodsFailing"
    AS_EXPECTED = "AsExpected"
    INVALID_SPEC = "InvalidSpec"
    # Slot
    INSTANCE_READY = "InstanceReady"
    INSTANCE_NOT_READY = "InstanceNotReady"
    APP_NOT_FOUND = "AppNotFound"
    DUPLICATE_SLOT_NAME = "DuplicateSlotName"
    SLOT_LIMIT_EXCEEDED = "SlotLimitExceeded"
    # WorkerConfig
    APPLIED = "Applied"
    NAME_CONFLICT = "NameConflict"


# Reasons that are not news when a condition takes them: a rollout in progress, a problem gone.
QUIET_REASONS = frozenset({Reason.INSTANCE_NOT_READY, Reason.AS_EXPECTED})


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(existing: list[Condition], wanted: list[Condition]) -> list[Condition]:
    previous = {condition.type: condition for condition in existing}
    merged = []
    for condition in wanted:
        old = previous.get(condition.type)
        keep_time = old is not None and old.status == condition.status and old.last_transition_time
        merged.append(condition.model_copy(update={"last_transition_time": old.last_transition_time
                                                   if keep_time else now()}))
    return merged


def condition(type_: str, ok: bool, reason: str, message: str, generation: int | None) -> Condition:
    return Condition(type=type_, status="True" if ok else "False", reason=reason, message=message,
                     observed_generation=generation)


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_bad(condition: Condition) -> bool:
    """The condition reports a problem (an Event about it is a Warning)."""
    return (condition.status == "True") == (condition.type in ABNORMAL_TRUE)


class ConditionedStatus(Model):
    """The part every status shares: the generation observed and the conditions."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)

    def set_conditions(self, *wanted: Condition) -> None:
        """The conditions become `wanted`, each keeping its lastTransitionTime unless its status changed."""
        self.conditions = merge(self.conditions, list(wanted))

    def condition(self, type_: str) -> Condition | None:
        return find(self.conditions, type_)

    def status_patch(self, before: ConditionedStatus) -> dict[str, Any]:
        """The merge patch that turns the stored status `before` into this one."""
        return self.wire()

    def transitions(self, before: ConditionedStatus, types: Iterable[str]) -> list[Condition]:
        """Conditions of `types` that took a new status or reason since `before`, quiet reasons left out."""
        news = []
        for type_ in types:
            new, old = self.condition(type_), before.condition(type_)
            if new is None or new.reason in QUIET_REASONS:
                continue
            if old is None or (old.status, old.reason) != (new.status, new.reason):
                news.append(new)
        return news
