"""History events as the SDK reads them (DTFx shapes, PascalCase) and the time formats around them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

# DTFx EventType numbers.
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
EXECUTION_TERMINATED = 3
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_ORCHESTRATION_CREATED = 7
SUB_ORCHESTRATION_COMPLETED = 8
SUB_ORCHESTRATION_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13
EVENT_SENT = 14
EVENT_RAISED = 15
EXECUTION_SUSPENDED = 19
EXECUTION_RESUMED = 20

EVENT_NAMES = {
    0: "ExecutionStarted", 1: "ExecutionCompleted", 3: "ExecutionTerminated", 4: "TaskScheduled",
    5: "TaskCompleted", 6: "TaskFailed", 7: "SubOrchestrationInstanceCreated",
    8: "SubOrchestrationInstanceCompleted", 9: "SubOrchestrationInstanceFailed", 10: "TimerCreated",
    11: "TimerFired", 12: "OrchestratorStarted", 13: "OrchestratorCompleted", 14: "EventSent",
    15: "EventRaised", 19: "ExecutionSuspended", 20: "ExecutionResumed",
}


def iso_utc(moment: float) -> str:
    """An ISO-8601 UTC timestamp with microseconds and `Z` (what the SDK parses and compares)."""
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(moment: float) -> str:
    """The status API's time format, yyyy-MM-ddTHH:mm:ssZ."""
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO-8601 time (a trailing Z or a naive value means UTC)."""
    cleaned = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    moment = datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def event(event_type: int, event_id: int, now: float, **fields: Any) -> dict[str, Any]:
    return {"EventType": event_type, "EventId": event_id, "IsPlayed": False, "Timestamp": iso_utc(now), **fields}


def parse_json_text(text: str | None) -> Any:
    """A stored JSON text as a value; text that is not JSON is shown as the string it is."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def for_status(history: list[dict[str, Any]], with_output: bool) -> list[dict[str, Any]]:
    """History for humans (showHistory): named event types, inputs and results as JSON values."""
    shown = []
    for item in history:
        entry: dict[str, Any] = {"EventType": EVENT_NAMES.get(item["EventType"], str(item["EventType"])),
                                 "Timestamp": item["Timestamp"]}
        for key in ("Name", "TaskScheduledId", "TimerId", "FireAt", "InstanceId", "Reason", "Details",
                    "OrchestrationStatus"):
            if item.get(key) is not None:
                entry[key] = item[key]
        if with_output:
            for key in ("Input", "Result"):
                if item.get(key) is not None:
                    entry[key] = parse_json_text(item[key])
        shown.append(entry)
    return shown
