"""Status conditions: set one, keeping lastTransitionTime unless its status changes."""

from __future__ import annotations

from datetime import datetime, timezone

from funcplane.api.base import Condition


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
