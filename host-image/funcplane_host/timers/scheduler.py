"""Timer triggers: one asyncio task per timerTrigger function, armed once the host is ready.

Non-HTTP triggers run only where the slot allows them (FUNCPLANE_NON_HTTP_TRIGGERS), so a
staging slot never takes production's scheduled work. Each timer's schedule status (last, next)
is kept per host id under FUNCPLANE_STATE_DIR when that is set: the host id belongs to the slot,
so the status follows the slot through a swap, and a run missed while no host was up is made up
at start with IsPastDue, as on Azure. Inside a cluster only the holder of the slot's timer Lease
(singleton.py) fires scheduled runs, so scaled-out pods do not run a timer once each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from collections.abc import Coroutine
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Protocol

from funcplane_host.app.functions import FunctionDefinition
from funcplane_host.app.indexing import FunctionError
from funcplane_host.invocation import Invocation, InvocationFailed
from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_host.timers.schedule import (
    Schedule,
    ScheduleError,
    parse_schedule,
    resolve_setting_references,
    zone_named,
)
from funcplane_host.services import ExtensionServices, until_ready
from funcplane_host.timers.singleton import ApiAccess, LeaseConfigError, TimerLease, lease_seconds


class TimerServices(ExtensionServices, Protocol):
    """What the timer triggers use of the host besides the shared services."""

    @property
    def config_errors(self) -> list[str]: ...
    async def run_logged(self, invocation: Invocation, what: str) -> InvocationFailed | None: ...
    def spawn(self, work: Coroutine[Any, Any, Any]) -> None: ...


logger = logging.getLogger("funcplane.host.timers")
TIMER_TRIGGER = "timertrigger"
MONITOR_THRESHOLD = timedelta(minutes=1)  # Azure monitors schedules that recur at most once a minute


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_iso(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


@dataclass
class TimerState:
    definition: FunctionDefinition
    schedule: Schedule
    monitored: bool
    last: datetime | None = None
    next: datetime | None = None
    last_updated: datetime | None = None
    last_result: str | None = None
    runs: int = 0
    skipped: int = 0
    running: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.definition.name

    def schedule_status(self) -> dict[str, str | None] | None:
        if self.last is None and self.next is None:
            return None
        return {"Last": _iso(self.last), "Next": _iso(self.next), "LastUpdated": _iso(self.last_updated)}

    def as_json(self) -> dict[str, Any]:
        return {
            "function": self.name,
            "schedule": self.schedule.text,
            "monitored": self.monitored,
            "last": _iso(self.last),
            "next": _iso(self.next),
            "lastResult": self.last_result,
            "runs": self.runs,
            "skipped": self.skipped,
            "running": self.running,
        }


class TimerTriggers:
    def __init__(self, host: TimerServices) -> None:
        self.host = host
        settings = host.settings
        self.enabled = settings.non_http_triggers
        self.state_dir: Path | None = (settings.state_dir / settings.host_id / "timers") if settings.state_dir else None
        self.timers: dict[str, TimerState] = {}
        self.zone: tzinfo | None = None
        self._task: asyncio.Task[None] | None = None
        self.lease: TimerLease | None = None
        try:
            access = ApiAccess.from_environment(host.environment)
            if access is not None:
                # The operator's Role for the app allows exactly this name (render.names.timer_lease).
                self.lease = TimerLease(access, f"{settings.host_id.lower()}-timers", lease_seconds(host.environment))
        except LeaseConfigError as error:
            host.config_errors.append(str(error))

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._arm_when_ready())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *(s.task for s in self.timers.values())) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.lease is not None:
            await self.lease.stop()  # hands the timers to another pod at once

    async def _arm_when_ready(self) -> None:
        if not await until_ready(self.host):
            return
        try:
            self.zone = zone_named(self.host.environment.get("WEBSITE_TIME_ZONE"))
        except ScheduleError as error:
            self.host.config_errors.append(str(error))
            return
        for definition in self.host.catalog.triggered_by(TIMER_TRIGGER):
            try:
                state = self._timer_for(definition)
            except ScheduleError as error:
                self.host.catalog.record_error(FunctionError(definition.name, str(error), "trigger"))
                logger.error("timer %s not scheduled: %s", definition.name, error)
                continue
            self.timers[definition.name] = state
        if not self.enabled or not self.timers:
            if self.timers:
                logger.info("timers %s not scheduled: %s", sorted(self.timers), self.disabled_reason)
            return
        if self.lease is not None:
            self.lease.start()
        for state in self.timers.values():
            state.task = asyncio.get_running_loop().create_task(self._run(state))

    @property
    def disabled_reason(self) -> str:
        return (f"non-HTTP triggers are off in slot {self.host.settings.slot_name!r}; "
                "set nonHttpTriggers: true on the Slot to run them here")

    def _timer_for(self, definition: FunctionDefinition) -> TimerState:
        raw = definition.trigger.get("schedule")
        if not isinstance(raw, str):
            raise ScheduleError(f"function {definition.name!r}: timerTrigger needs a schedule string")
        schedule = parse_schedule(resolve_setting_references(raw, self.host.environment))
        monitor = definition.trigger.get("useMonitor")
        if monitor is None:
            first = schedule.next_after(datetime.now(self.zone))
            monitor = schedule.next_after(first) - first >= MONITOR_THRESHOLD
        return TimerState(definition, schedule, bool(monitor))

    # ---- the schedule loop -------------------------------------------------------------

    def _may_fire(self) -> bool:
        return self.lease is None or self.lease.held

    async def _run(self, state: TimerState) -> None:
        if self.lease is not None:
            await self.lease.decided.wait()
        now = datetime.now(self.zone)
        past_due = self._restore(state, now)
        if past_due and self._may_fire():
            logger.info("timer %s missed its run at %s; running it now", state.name, _iso(state.next))
            await self.fire(state, past_due=True)
        elif state.definition.trigger.get("runOnStartup") is True and self._may_fire():
            await self.fire(state)
        while not self.host.draining:
            # Counted from now, after the previous run ended: runs of one timer never overlap.
            due = state.schedule.next_after(datetime.now(self.zone))
            self._record(state, next_due=due)
            delay = (due - datetime.now(self.zone)).total_seconds()
            while delay > 0:
                await asyncio.sleep(delay)
                delay = (due - datetime.now(self.zone)).total_seconds()
            if self.host.draining:
                return
            if self._may_fire():
                await self.fire(state)
            else:
                state.skipped += 1  # another pod of this slot holds the lease and runs it

    async def fire(self, state: TimerState, *, past_due: bool = False) -> None:
        """Run the function once now. Failures are logged and kept in the status, never raised."""
        started = datetime.now(self.zone)
        info = json.dumps({"Schedule": {"AdjustForDST": True}, "ScheduleStatus": state.schedule_status(),
                           "IsPastDue": past_due})
        state.running = True
        try:
            failure = await self.host.run_logged(
                Invocation.of_trigger(state.definition, rpc.TypedData(json=info)), "timer run")
            state.last_result = "succeeded" if failure is None else \
                f"failed: {failure}" + (f": {failure.detail}" if failure.detail else "")
        finally:
            state.running = False
            state.runs += 1
            self._record(state, last=started)

    # ---- schedule status ---------------------------------------------------------------

    def _status_file(self, state: TimerState) -> Path | None:
        return self.state_dir / f"{state.name}.json" if self.state_dir and state.monitored else None

    def _restore(self, state: TimerState, now: datetime) -> bool:
        """Load the saved status; True when a run fell due while no host was running it."""
        path = self._status_file(state)
        if path is None or not path.is_file():
            return False
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            logger.warning("timer %s: ignoring unreadable schedule status %s: %s", state.name, path, error)
            return False
        if not isinstance(saved, dict) or saved.get("schedule") != state.schedule.text:
            return False  # a new schedule starts afresh
        state.last, state.next = _parse_iso(saved.get("Last")), _parse_iso(saved.get("Next"))
        state.last_updated = _parse_iso(saved.get("LastUpdated"))
        return state.next is not None and state.next < now

    def _record(self, state: TimerState, *, last: datetime | None = None, next_due: datetime | None = None) -> None:
        if last is not None:
            state.last = last
        if next_due is not None:
            state.next = next_due
        state.last_updated = datetime.now(self.zone)
        path = self._status_file(state)
        if path is None:
            return
        payload = {"schedule": state.schedule.text, **(state.schedule_status() or {})}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_suffix(".tmp")
            scratch.write_text(json.dumps(payload))
            scratch.replace(path)
        except OSError as error:
            logger.warning("timer %s: cannot save schedule status to %s: %s", state.name, path, error)

    # ---- admin --------------------------------------------------------------------------

    def run_now(self, name: str) -> bool:
        """Start one run of a timer function outside its schedule (admin API); False if unknown."""
        state = self.timers.get(name)
        if state is None:
            return False
        self.host.spawn(self.fire(state))
        return True

    def as_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reason": None if self.enabled else self.disabled_reason,
            "timeZone": str(self.zone) if self.zone is not None else None,
            "timers": [state.as_json() for state in self.timers.values()],
            "lock": self.lease.as_json() if self.lease is not None else
            {"lease": None, "reason": "not in a Kubernetes cluster: every host runs its own timers"},
        }
