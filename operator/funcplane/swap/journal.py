"""What the swap engine records: the swap in progress, the last swaps, the requests handled.

The journal is the engine's single source of truth for resuming after a restart: every phase is
recorded before the changes it makes, so a new operator process finds the intent and re-applies it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from funcplane.api.base import Model

Phase = Literal["ApplyingTargetSettings", "WarmingUp", "AwaitingCompletion", "Flipping",
                "ApplyingSourceSettings", "Reverting"]
Result = Literal["Running", "Succeeded", "Failed", "Cancelled", "Refused"]
Mode = Literal["full", "preview"]
Trigger = Literal["request", "auto-swap", "rollback"]

HISTORY_LIMIT = 20
HANDLED_LIMIT = 200
# The phases before the flip: the target still serves, a failure reverts the source.
PRE_FLIP: tuple[Phase, ...] = ("ApplyingTargetSettings", "WarmingUp", "AwaitingCompletion")


class PodWarmup(Model):
    """One source pod's last check: Ready, and the warm-up answer."""

    pod: str
    ip: str | None = None
    ready: bool = False
    warm: bool = False
    status: int | None = Field(None, description="HTTP status of the warm-up request.")
    message: str = ""


class SwapRecord(Model):
    request_id: str
    source: str = Field(description="Source slot name (its instance goes to the target).")
    target: str
    mode: Mode = "full"
    action: str = Field("start", description="The request's action that made this record.")
    requested_by: str = "unknown"
    trigger: Trigger = "request"
    rollback_of: str | None = None
    source_instance: str = ""
    target_instance: str = ""
    original_sticky: dict[str, str | None] = Field(
        default_factory=dict, description="Instance -> stickySettingsFrom before the swap (for reverting).")
    phase: Phase | None = None
    result: Result = "Running"
    outcome: Result | None = Field(None, description="While Reverting: the result it ends with.")
    message: str = ""
    started_at: float = 0.0
    phase_started_at: float = 0.0
    finished_at: float | None = None
    flipped_at: float | None = None
    durations: dict[str, float] = Field(default_factory=dict, description="Phase -> seconds spent in it.")
    pods: list[PodWarmup] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.source}/{self.request_id}/{self.action}"


class SwapJournal(Model):
    current: SwapRecord | None = None
    history: list[SwapRecord] = Field(default_factory=list, description="Newest first.")
    handled: list[str] = Field(default_factory=list, description="Requests already handled: source/requestId/action.")
    auto_swapped: dict[str, str] = Field(
        default_factory=dict, description="Slot -> deployed content hash last auto-swapped.")

    def remember(self, handled_key: str) -> None:
        if handled_key not in self.handled:
            self.handled = ([handled_key] + self.handled)[:HANDLED_LIMIT]

    def archive(self, record: SwapRecord) -> None:
        self.history = ([record] + [r for r in self.history if r.key != record.key])[:HISTORY_LIMIT]

    def find(self, source: str, request_id: str, action: str | None = None) -> SwapRecord | None:
        """The newest record of a request (of one of its actions, if given)."""
        records = ([self.current] if self.current else []) + self.history
        return next((r for r in records if r.source == source and r.request_id == request_id
                     and action in (None, r.action)), None)
