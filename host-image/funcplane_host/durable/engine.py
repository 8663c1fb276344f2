"""The durable engine: orchestration episodes, activities, timers, entities, all through the store.

An episode takes an instance's visible messages, turns them into history events, replays the
whole history to the orchestrator function (the SDK answers with every action it has scheduled
since the execution began), materialises the actions beyond those already in history, and
commits all of it in one store transaction. Work created by an episode is dispatched in memory
right after the commit; after a restart the same work is found in the store and dispatched again
(activities run at least once, state transitions happen exactly once).

Sequence numbers follow DTFx: one per activity, timer, sub-orchestration and entity message, in
action order, plus one per retry attempt and one timer after every failed attempt. The SDK
numbers its tasks while it walks the history, so retry bookkeeping that allocates numbers (a
failed attempt, a retry timer that starts the next attempt) is placed ahead of the events that
can resume the orchestrator's code within the same episode.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from funcplane_host.durable import history as h
from funcplane_host.durable.store import Changes, InstanceRow, LeaseLost, Message, SqlStore, WorkItem
from funcplane_host.invocation import Invocation, InvocationFailed
from funcplane_protocol import FunctionRpc_pb2 as rpc

if TYPE_CHECKING:
    from funcplane_host.app.functions import FunctionDefinition
    from funcplane_host.services import ExtensionServices

logger = logging.getLogger("funcplane.host.durable")

ORCHESTRATION_TRIGGER = "orchestrationtrigger"
ACTIVITY_TRIGGER = "activitytrigger"
ENTITY_TRIGGER = "entitytrigger"
TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
OUT_OF_PROC_LABEL = "$OutOfProcData$:"
HTTP_ACTIVITY = "BuiltIn::HttpActivity"
MESSAGE_BATCH = 5000
# Events the Python SDK never reads (it numbers tasks itself and keys them by completion events);
# replay cost grows with history length, so Python orchestrators get the history without them.
PYTHON_SDK_UNREAD = frozenset({h.TASK_SCHEDULED, h.TIMER_CREATED, h.SUB_ORCHESTRATION_CREATED,
                               h.ORCHESTRATOR_COMPLETED, h.EXECUTION_COMPLETED})
TRANSIENT_RETRY_SECONDS = 1.0
# While an instance waits on many calls (fan-in), an episode per completion replays the whole
# history again and again; waiting a few times the last episode's own duration (capped) lets
# completions gather, so replay takes at most about a quarter of the worker's time.
GATHER_FACTOR = 3.0
GATHER_LIMIT_SECONDS = 2.0
# Rows of instances between episodes, with their history already encoded: the next episode
# reuses them while the store holds the same version, instead of decoding and encoding the
# whole history again (the cost that grows with every step of a long orchestration).
HOT_INSTANCES = 512
HOT_CHARACTERS = 32_000_000  # and at most this much encoded history (about 3x that in memory)
PENDING_REFRESH_SECONDS = 2.0  # how often the hub's pending work is counted for the scaler
POLL_SECONDS = 0.2  # shared stores: how often a host looks for work other hosts left
# The instance whose episode this task runs under a lease (shared stores); its commit is fenced.
_LEASED: contextvars.ContextVar[str | None] = contextvars.ContextVar("durable_leased", default=None)
# What Azure Storage advertises for timers; with schema V3 the SDK splits longer timers.
LONG_TIMER_INTERVAL = "3.00:00:00"
MAX_SHORT_TIMER = "6.00:00:00"


class DurableRequestError(ValueError):
    """A management request the engine refuses; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Transient(Exception):
    """The worker could not be reached; the work stays in the store and is tried again."""


@dataclass
class Options:
    max_activities: int = 100
    max_orchestrations: int = 100
    entity_batch: int = 50
    payload_limit: int = 4 * 1024 * 1024
    full_history: bool = False  # send Python orchestrators every history event


@dataclass
class _Episode:
    """What one orchestration episode builds before it commits."""

    row: InstanceRow
    now: float
    changes: Changes = field(default_factory=Changes)
    wake: set[str] = field(default_factory=set)
    work: list[WorkItem] = field(default_factory=list)
    restarted: bool = False  # continued as new: the history starts over
    dirty: bool = False  # the instance row changed without new history (rewind)

    def allocate(self) -> int:
        seq = int(self.row.state["seq"])
        self.row.state["seq"] = seq + 1
        return seq

    def send(self, instance_id: str, body: dict[str, Any], visible_at: float = 0.0) -> None:
        self.changes.messages.append(Message(instance_id, body, visible_at))
        self.wake.add(instance_id)


def new_state() -> dict[str, Any]:
    return {"seq": 0, "actions": 0, "tasks": {}}


def entity_id_of(name: str, key: str) -> str:
    return f"@{name.lower()}@{key}"


def split_entity_id(entity_id: str) -> tuple[str, str]:
    _, name, key = entity_id.split("@", 2)
    return name, key


def flatten_actions(actions: Iterable[Any]) -> list[dict[str, Any]]:
    """Every leaf action in order: the outer lists, then compound actions depth-first."""
    flat: list[dict[str, Any]] = []

    def walk(item: Any) -> None:
        if isinstance(item, list):
            for child in item:
                walk(child)
        elif isinstance(item, dict):
            if item.get("actionType") in (11, 12):
                walk(item.get("compoundActions") or [])
            else:
                flat.append(item)

    walk(list(actions))
    return flat


def typed_json_text(typed: Any) -> str | None:
    """A function's return value (TypedData) as a JSON text; None when it returned nothing."""
    if typed is None:
        return None
    kind = typed.WhichOneof("data")
    if kind is None:
        return None
    if kind == "json":
        return typed.json
    if kind == "string":
        return json.dumps(typed.string)
    if kind in ("int", "double"):
        return json.dumps(getattr(typed, kind))
    if kind == "bytes":
        return json.dumps(typed.bytes.decode("utf-8", "replace"))
    return None


def _failure_text(failure: InvocationFailed) -> str:
    return (failure.detail or str(failure)).strip()


class DurableEngine:
    def __init__(self, host: ExtensionServices, store: SqlStore, options: Options) -> None:
        self.host = host
        self.store = store
        self.options = options
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._timers: list[tuple[float, str]] = []
        self._timer_changed = asyncio.Event()
        self._activity_slots = asyncio.Semaphore(options.max_activities)
        self._episode_slots = asyncio.Semaphore(options.max_orchestrations)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self.counters = {"episodes": 0, "activities": 0, "entityBatches": 0}
        # The hub's work waiting or running (counted in the store; None until first counted):
        # instances and entities with messages due, and activity work items not yet finished.
        self.pending: dict[str, int | None] = {"orchestrations": None, "activities": None}
        self.activities_running = 0
        self._outstanding: dict[str, int] = {}  # instance -> calls it is waiting on
        self._episode_cost: dict[str, float] = {}  # instance -> seconds its last episode took
        self._work_in_flight: set[int] = set()
        self._arrived: dict[str, int] = {}  # instance -> completions since its last episode began
        self._leases_held: set[str] = set()
        # instance -> (its row as last committed here, the encoded history a Python orchestrator replays)
        self._hot: dict[str, tuple[InstanceRow, list[str], int]] = {}  # ..., its encoded size
        self._hot_characters = 0

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.store.shared:
            # Other hosts share the hub: pending work is claimed by polling, not taken wholesale.
            self._loops = [loop.create_task(self._dispatch()), loop.create_task(self._fire_timers()),
                           loop.create_task(self._poll_shared()), loop.create_task(self._renew_leases()),
                           loop.create_task(self._count_pending())]
            return
        work, inboxes = await self.store.recovery()
        now = time.time()
        for instance_id, visible_at in inboxes:
            if visible_at <= now:
                self.wake(instance_id)
            else:
                self._arm(visible_at, instance_id)
        for item in work:
            self._spawn(self._run_work(item))
        self._loops = [loop.create_task(self._dispatch()), loop.create_task(self._fire_timers()),
                       loop.create_task(self._count_pending())]
        if work or inboxes:
            logger.info("durable hub %s: resumed %d work items, %d inboxes", self.store.hub, len(work), len(inboxes))

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)

    @property
    def episodes_running(self) -> int:
        return len(self._running)

    async def _count_pending(self) -> None:
        while True:
            try:
                orchestrations, activities = await self.store.pending(time.time())
                self.pending = {"orchestrations": orchestrations, "activities": activities}
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the figures go stale; the next round retries
                logger.warning("durable hub %s: counting pending work failed: %s", self.store.hub, error)
            await asyncio.sleep(PENDING_REFRESH_SECONDS)

    def _spawn(self, work: Any) -> None:
        # A fresh context: work started from an episode must not inherit its instance lease.
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- functions of the app ------------------------------------------------------------------

    def functions(self, trigger: str) -> dict[str, FunctionDefinition]:
        """Durable name (lower-case) -> function, for one durable trigger type."""
        found: dict[str, FunctionDefinition] = {}
        property_name = {ORCHESTRATION_TRIGGER: "orchestration", ACTIVITY_TRIGGER: "activity",
                         ENTITY_TRIGGER: "entityName"}[trigger]
        for definition in self.host.catalog.definitions.values():
            if definition.trigger_type.lower() != trigger or definition.disabled:
                continue
            name = definition.trigger.get(property_name) or definition.name
            found[str(name).lower()] = definition
        return found

    # ---- scheduling ----------------------------------------------------------------------------

    def wake(self, instance_id: str) -> None:
        if instance_id in self._running:
            self._again.add(instance_id)
        elif instance_id not in self._queued:
            self._queued.add(instance_id)
            self._ready.put_nowait(instance_id)

    def _arm(self, at: float, instance_id: str) -> None:
        heapq.heappush(self._timers, (at, instance_id))
        self._timer_changed.set()

    async def _fire_timers(self) -> None:
        while True:
            self._timer_changed.clear()
            now = time.time()
            while self._timers and self._timers[0][0] <= now:
                self.wake(heapq.heappop(self._timers)[1])
            delay = (self._timers[0][0] - now) if self._timers else 3600.0
            try:
                await asyncio.wait_for(self._timer_changed.wait(), max(delay, 0.001))
            except TimeoutError:
                pass

    async def _dispatch(self) -> None:
        while True:
            instance_id = await self._ready.get()
            while self.host.draining:
                # A draining host starts no episodes; the store keeps them for the next host.
                await asyncio.sleep(POLL_SECONDS)
            await self._episode_slots.acquire()
            self._queued.discard(instance_id)
            self._running.add(instance_id)
            self._spawn(self._run_instance(instance_id))

    async def _run_instance(self, instance_id: str) -> None:
        more = False
        leased = False
        try:
            await self._gather(instance_id)
            if self.store.shared:
                leased = await self.store.claim_instance(instance_id, time.time())  # type: ignore[attr-defined]
                if not leased:
                    return  # another host runs it; polling brings it back if work remains
                self._leases_held.add(instance_id)
                _LEASED.set(instance_id)
            if instance_id.startswith("@"):
                more = await self._entity_episode(instance_id)
            else:
                began = time.perf_counter()
                more = await self._orchestration_episode(instance_id)
                self._episode_cost[instance_id] = time.perf_counter() - began
        except LeaseLost as error:
            logger.warning("%s; its episode here is dropped", error)
        except _Transient as error:
            logger.warning("durable %s: %s; trying again", instance_id, error)
            self._arm(time.time() + TRANSIENT_RETRY_SECONDS, instance_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one instance's bug must not stop the hub
            logger.exception("durable episode of %s failed; trying again", instance_id)
            self._arm(time.time() + TRANSIENT_RETRY_SECONDS, instance_id)
        finally:
            if leased:
                self._leases_held.discard(instance_id)
            if leased and _LEASED.get() is not None:
                try:
                    await self.store.release_instance(instance_id)  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001 - the lease runs out by itself
                    logger.warning("durable %s: could not release the instance lease", instance_id)
            self._running.discard(instance_id)
            self._episode_slots.release()
            if instance_id in self._again or more:
                self._again.discard(instance_id)
                self.wake(instance_id)

    async def _gather(self, instance_id: str) -> None:
        """Let completions for an instance waiting on many calls pile up before replaying it."""
        outstanding = self._outstanding.get(instance_id, 0)
        if outstanding > 1:
            deadline = time.monotonic() + min(GATHER_FACTOR * self._episode_cost.get(instance_id, 0.0),
                                              GATHER_LIMIT_SECONDS)
            while time.monotonic() < deadline and self._arrived.get(instance_id, 0) < outstanding:
                await asyncio.sleep(0.005)
        self._arrived.pop(instance_id, None)

    async def _commit(self, changes: Changes, wake: Iterable[str], work: Iterable[WorkItem]) -> None:
        now = time.time()
        if self.store.shared:
            leased = _LEASED.get()
            if leased is not None:
                changes.fence = self.store.fence(leased)  # type: ignore[attr-defined]
            changes.work_owner = (self.store.owner, now + self.store.lease_seconds)  # type: ignore[attr-defined]
        await self.store.apply(changes, now)
        if changes.fence is not None:
            _LEASED.set(None)  # the commit released the lease
        for message in changes.messages:
            if message.visible_at > now:
                self._arm(message.visible_at, message.instance_id)
        for instance_id in wake:
            self.wake(instance_id)
        for item in work:
            self._spawn(self._run_work(item))

    # ---- starting and controlling instances --------------------------------------------------------

    async def start_instance(self, name: str, instance_id: str | None, input_text: str | None,
                             parent: dict[str, Any] | None = None) -> str:
        """Create an instance (Pending) and its start message; a running instance is not replaced."""
        if self.functions(ORCHESTRATION_TRIGGER).get(name.lower()) is None:
            known = ", ".join(sorted(self.functions(ORCHESTRATION_TRIGGER))) or "none"
            raise DurableRequestError(400, f"The function '{name}' doesn't exist, is disabled, or is not an "
                                           f"orchestrator function. Orchestrator functions of this app: {known}")
        self.check_size(input_text, "orchestration input")
        instance_id = instance_id or uuid.uuid4().hex
        if instance_id.startswith("@") or not instance_id.strip():
            raise DurableRequestError(400, f"instance id {instance_id!r} is not allowed (it must not be empty "
                                           "or start with '@')")
        existing = await self.store.instance(instance_id, history=False)
        if existing is not None and existing.status not in TERMINAL:
            raise DurableRequestError(409, f"an instance with id {instance_id!r} already exists and is "
                                           f"{existing.status}")
        changes = self._creation(name, instance_id, input_text, parent, time.time())
        await self._commit(changes, [instance_id], [])
        return instance_id

    def _creation(self, name: str, instance_id: str, input_text: str | None, parent: dict[str, Any] | None,
                  now: float) -> Changes:
        row = InstanceRow(instance_id, name, uuid.uuid4().hex, "Pending", input_text, None, None, now, now,
                          parent, [], new_state())
        changes = Changes(instances=[row], drop_messages_of=[instance_id])
        changes.messages.append(Message(instance_id, {"kind": "start", "executionId": row.execution_id}))
        return changes

    async def send_control(self, instance_id: str, kind: str, **fields: Any) -> InstanceRow:
        """Queue terminate / suspend / resume / an external event for an instance."""
        row = await self.store.instance(instance_id, history=False)
        if row is None:
            raise DurableRequestError(404, f"no instance with id {instance_id!r}")
        if row.status in TERMINAL:
            raise DurableRequestError(410, f"instance {instance_id!r} is already {row.status}")
        if kind == "event":
            self.check_size(fields.get("input"), "event data")
        changes = Changes(messages=[Message(instance_id, {"kind": kind, **fields})])
        await self._commit(changes, [instance_id], [])
        return row

    async def rewind(self, instance_id: str, reason: str) -> None:
        """A failed instance runs again from its history minus the failures that ended it."""
        row = await self.store.instance(instance_id)
        if row is None:
            raise DurableRequestError(404, f"no instance with id {instance_id!r}")
        if row.status != "Failed":
            raise DurableRequestError(410, f"instance {instance_id!r} is {row.status}; only Failed instances "
                                           "can be rewound")
        changes = Changes(messages=[Message(instance_id, {"kind": "rewind", "reason": reason})])
        row.status = "Running"
        row.updated = time.time()
        changes.instances.append(row)
        await self._commit(changes, [instance_id], [])

    async def signal_entity(self, entity_id: str, operation: str, input_text: str | None) -> None:
        name, _ = split_entity_id(entity_id)
        if self.functions(ENTITY_TRIGGER).get(name) is None:
            raise DurableRequestError(400, f"no entity function named {name!r} in this app")
        self.check_size(input_text, "entity operation input")
        body = {"kind": "entityOp", "op": operation, "signal": True, "input": input_text or "null",
                "id": str(uuid.uuid4()), "parent": None}
        await self._commit(Changes(messages=[Message(entity_id, body)]), [entity_id], [])

    def check_size(self, payload: str | int | None, what: str) -> None:
        """Refuse a payload (text, or its size in bytes) over the configured limit."""
        size = len(payload.encode()) if isinstance(payload, str) else (payload or 0)
        if size > self.options.payload_limit:
            raise DurableRequestError(413, f"{what} is {size} bytes; the limit is "
                                           f"{self.options.payload_limit} bytes (extensions.durableTask."
                                           "funcplane.maxPayloadBytes)")

    # ---- orchestration episodes --------------------------------------------------------------------

    async def _orchestration_episode(self, instance_id: str) -> bool:
        now = time.time()
        hot_row, hot_replay = self._take_hot(instance_id)  # kept again only after a commit
        row, messages = await self.store.episode_input(instance_id, now, MESSAGE_BATCH, hot_row)
        if not messages:
            if row is not None and row is hot_row and hot_replay is not None:
                self._keep_hot(row, hot_replay)
            return False
        more = len(messages) >= MESSAGE_BATCH
        if row is None or row.status in TERMINAL:
            await self._commit(Changes(consumed_messages=[m.id for m in messages]), [], [])
            return more
        self.counters["episodes"] += 1
        episode = _Episode(row, max(now, _last_time(row.history)))
        changes = episode.changes
        consumed: list[int] = []
        resuming: list[dict[str, Any]] = []   # events that may resume the orchestrator's code
        bookkeeping: list[dict[str, Any]] = []  # retry events: they allocate numbers, resume nothing
        state = row.state
        tasks: dict[str, Any] = state["tasks"]
        suspended = row.status == "Suspended"
        for message in messages:
            body = message.body
            kind = body["kind"]
            if kind == "terminate":
                consumed.append(message.id)
                return await self._terminate(episode, str(body.get("reason") or ""), more)
            if kind == "resume" and suspended:
                consumed.append(message.id)
                suspended = False
                row.status = "Running"
                resuming.append(h.event(h.EXECUTION_RESUMED, -1, episode.now, Reason=body.get("reason")))
                continue
            if suspended:
                continue  # everything else waits for resume
            consumed.append(message.id)
            if kind == "suspend":
                row.status = "Suspended"
                suspended = True
                resuming.append(h.event(h.EXECUTION_SUSPENDED, -1, episode.now, Reason=body.get("reason")))
            elif kind == "start":
                if row.history or body.get("executionId") != row.execution_id:
                    continue
                resuming.insert(0, h.event(
                    h.EXECUTION_STARTED, -1, episode.now, Name=row.name, Version="", Input=row.input,
                    OrchestrationInstance={"InstanceId": row.instance_id, "ExecutionId": row.execution_id},
                    ParentInstance=({"Name": None, "OrchestrationInstance": {"InstanceId": row.parent["instanceId"],
                                                                              "ExecutionId": row.parent["executionId"]},
                                     "TaskScheduleId": row.parent["seq"]} if row.parent else None),
                    Tags=None))
                row.status = "Running"
            elif kind == "event":
                resuming.append(h.event(h.EVENT_RAISED, -1, episode.now, Name=body["name"], Input=body.get("input")))
            elif kind == "rewind":
                self._rewind(episode, str(body.get("reason") or ""))
                tasks = state["tasks"]
            elif body.get("executionId") != row.execution_id:
                continue  # a result for an execution that has continued as new
            elif kind in ("completed", "failed"):
                task = tasks.pop(str(body["seq"]), None)
                if task is None:
                    continue  # a duplicate delivery (activities run at least once)
                self._task_outcome(episode, task, body, resuming, bookkeeping)
            elif kind == "timer":
                task = tasks.pop(str(body["seq"]), None)
                if task is None:
                    continue
                fired = h.event(h.TIMER_FIRED, -1, episode.now, TimerId=body["seq"], FireAt=task["fireAt"])
                retry = task.get("retry")
                if retry is not None and not task.get("final"):
                    bookkeeping.append(fired)
                    bookkeeping.extend(self._schedule(episode, retry, attempt=retry["attempt"] + 1))
                else:
                    resuming.append(fired)
        changes.consumed_messages = consumed
        leftover = not suspended and len(consumed) < len(messages)
        if not resuming and not bookkeeping:
            if episode.dirty:
                row.updated = time.time()
                changes.instances.append(row)
            if consumed or episode.dirty:
                await self._commit(changes, episode.wake, episode.work)
            if not episode.dirty and row is hot_row and hot_replay is not None:
                self._keep_hot(row, hot_replay)
            return more or leftover
        past = row.history
        # What a Python orchestrator replays of the past, encoded: kept from the last episode, or
        # encoded once from a history just read (stored events are all played).
        orchestrator = self.functions(ORCHESTRATION_TRIGGER).get(row.name.lower())
        python = self._sends_python_history(orchestrator)
        if row is not hot_row or hot_replay is None or row.encoded is None:
            row.encoded = [_encode(e) for e in past]
            hot_replay = [text for e, text in zip(past, row.encoded) if _replayed(e, python)]
        replay = hot_replay
        started = h.event(h.ORCHESTRATOR_STARTED, -1, episode.now)
        new_events = [started, *bookkeeping, *resuming]
        if resuming and not suspended and row.status not in TERMINAL:
            outcome = await self._invoke_orchestrator(row, orchestrator, replay, new_events, python)
            self._apply_outcome(episode, outcome, new_events)
        if episode.restarted:
            row.history, row.encoded, replay = [], [], []
        else:
            if row.status not in TERMINAL and new_events[-1]["EventType"] != h.ORCHESTRATOR_COMPLETED:
                new_events.append(h.event(h.ORCHESTRATOR_COMPLETED, -1, episode.now))
            for item in new_events:
                item["IsPlayed"] = True
                text = _encode(item)
                row.encoded.append(text)
                if _replayed(item, python):
                    replay.append(text)
            past.extend(new_events)
        row.updated = time.time()
        changes.instances.append(row)
        await self._commit(changes, episode.wake, episode.work)
        if row.status in TERMINAL:
            self._outstanding.pop(instance_id, None)
            self._episode_cost.pop(instance_id, None)
        else:
            self._outstanding[instance_id] = sum(1 for t in row.state["tasks"].values() if t["kind"] != "timer")
            self._keep_hot(row, replay)
        return more or leftover

    def _take_hot(self, instance_id: str) -> tuple[InstanceRow | None, list[str] | None]:
        row, replay, size = self._hot.pop(instance_id, (None, None, 0))
        self._hot_characters -= size
        return row, replay

    def _keep_hot(self, row: InstanceRow, replay: list[str]) -> None:
        size = sum(map(len, row.encoded or ()))
        if size > HOT_CHARACTERS // 4:
            return  # one huge history would push out all others; it is read from the store instead
        while self._hot and (len(self._hot) >= HOT_INSTANCES or self._hot_characters + size > HOT_CHARACTERS):
            self._take_hot(next(iter(self._hot)))  # the least recently committed
        self._hot[row.instance_id] = (row, replay, size)
        self._hot_characters += size

    def _sends_python_history(self, definition: FunctionDefinition | None) -> bool:
        """True when the orchestrator is a Python function that gets only the events its SDK reads."""
        return definition is not None and definition.language == "python" and not self.options.full_history

    def _task_outcome(self, episode: _Episode, task: dict[str, Any], body: dict[str, Any],
                      resuming: list[dict[str, Any]], bookkeeping: list[dict[str, Any]]) -> None:
        seq = body["seq"]
        sub = task["kind"] == "suborchestration"
        if body["kind"] == "completed":
            resuming.append(h.event(h.SUB_ORCHESTRATION_COMPLETED if sub else h.TASK_COMPLETED, -1, episode.now,
                                    TaskScheduledId=seq, Result=body.get("result")))
            return
        failed = h.event(h.SUB_ORCHESTRATION_FAILED if sub else h.TASK_FAILED, -1, episode.now,
                         TaskScheduledId=seq, Reason=body.get("reason"), Details=body.get("details"))
        retry = task.get("retry")
        if retry is None:
            resuming.append(failed)
            return
        # A failed attempt of a retried call: a timer follows every failure, the last one included
        # (DTFx's RetryInterceptor waits on a zero-length timer before it gives up).
        options = retry["options"]
        attempt = retry["attempt"]
        final = attempt >= int(options.get("maxNumberOfAttempts") or 1)
        delay_ms = 0.0
        if not final:
            delay_ms = float(options.get("firstRetryIntervalInMilliseconds") or 0) * (
                float(options.get("backoffCoefficient") or 1.0) ** (attempt - 1))
            cap = options.get("maxRetryIntervalInMilliseconds")
            if cap:
                delay_ms = min(delay_ms, float(cap))
        fire_at = episode.now + delay_ms / 1000.0
        timer_seq = episode.allocate()
        episode.row.state["tasks"][str(timer_seq)] = {"kind": "timer", "fireAt": h.iso_utc(fire_at),
                                                      "retry": retry, "final": final}
        bookkeeping.append(failed)
        bookkeeping.append(h.event(h.TIMER_CREATED, timer_seq, episode.now, FireAt=h.iso_utc(fire_at)))
        episode.send(episode.row.instance_id, {"kind": "timer", "seq": timer_seq,
                                               "executionId": episode.row.execution_id}, fire_at)

    def _schedule(self, episode: _Episode, call: dict[str, Any], attempt: int) -> list[dict[str, Any]]:
        """Schedule one attempt of an activity or sub-orchestration call; returns its history event."""
        row = episode.row
        seq = episode.allocate()
        call = {**call, "attempt": attempt}
        task = {"kind": call["kind"], "retry": call if call.get("options") is not None else None}
        row.state["tasks"][str(seq)] = task
        if call["kind"] == "suborchestration":
            child_id = call.get("instanceId") or f"{row.execution_id}:{seq}"
            parent = {"instanceId": row.instance_id, "executionId": row.execution_id, "seq": seq}
            if self.functions(ORCHESTRATION_TRIGGER).get(str(call["name"]).lower()) is None:
                episode.send(row.instance_id, {"kind": "failed", "seq": seq, "executionId": row.execution_id,
                                               "reason": f"The orchestrator function '{call['name']}' doesn't "
                                                         "exist, is disabled, or is not an orchestrator function.",
                                               "details": None})
            else:
                child_input = json.dumps(call.get("input")) if call.get("input") is not None else None
                created = self._creation(call["name"], child_id, child_input, parent, episode.now)
                episode.changes.instances.extend(created.instances)
                episode.changes.drop_messages_of.extend(created.drop_messages_of)
                episode.changes.messages.extend(created.messages)
                episode.wake.add(child_id)
            return [h.event(h.SUB_ORCHESTRATION_CREATED, seq, episode.now, Name=call["name"], Version=None,
                            InstanceId=child_id, Input=call.get("input"))]
        item = WorkItem(row.instance_id, {"kind": call["kind"], "name": call["name"], "input": call.get("input"),
                                          "request": call.get("request"), "seq": seq,
                                          "executionId": row.execution_id})
        episode.changes.work.append(item)
        episode.work.append(item)
        return [h.event(h.TASK_SCHEDULED, seq, episode.now, Name=call["name"], Version=None, Input=call.get("input"))]

    async def _invoke_orchestrator(self, row: InstanceRow, definition: FunctionDefinition | None, replay: list[str],
                                   new_events: list[dict[str, Any]], python: bool) -> dict[str, Any]:
        """Run one episode of the orchestrator `definition` (None: not found): `replay` is the past
        history as JSON texts, as sent."""
        if definition is None:
            return {"failed": f"The orchestrator function '{row.name}' doesn't exist, is disabled, or is not an "
                              "orchestrator function."}
        context = {
            "input": h.parse_json_text(row.input),
            "instanceId": row.instance_id,
            "isReplaying": bool(row.history),
            "parentInstanceId": row.parent["instanceId"] if row.parent else None,
            "upperSchemaVersion": 1,
            "upperSchemaVersionNew": 2,
            "longRunningTimerIntervalDuration": LONG_TIMER_INTERVAL,
            "maximumShortTimerDuration": MAX_SHORT_TIMER,
            "defaultHttpAsyncRequestSleepTimeMillseconds": 30000,
        }
        # The history goes in as text: the past's encoding is kept between episodes, only the
        # new events are encoded here.
        events = ",".join([*replay, *(_encode(e) for e in new_events if _replayed(e, python))])
        text = json.dumps(context, separators=(",", ":"))[:-1] + ',"history":[' + events + "]}"
        invocation = Invocation.of_trigger(definition, rpc.TypedData(string=text))
        try:
            response = await self.host.invoke(invocation)
        except InvocationFailed as failure:
            if failure.status in (502, 503):
                raise _Transient(str(failure)) from None
            text = _failure_text(failure)
            position = text.find(OUT_OF_PROC_LABEL)
            if position < 0:
                return {"failed": text}
            try:
                state = json.loads(text[position + len(OUT_OF_PROC_LABEL):])
            except ValueError:
                return {"failed": text}
            error = state.get("error") or text[:position].strip()
            return {"state": state, "failed": error}
        text = typed_json_text(response.return_value if response.HasField("return_value") else None)
        try:
            state = json.loads(text) if text else None
            if isinstance(state, str):
                state = json.loads(state)
        except ValueError:
            state = None
        if not isinstance(state, dict):
            return {"failed": f"orchestrator function '{row.name}' returned {text!r}, not an orchestration state"}
        return {"state": state}

    def _apply_outcome(self, episode: _Episode, outcome: dict[str, Any], new_events: list[dict[str, Any]]) -> None:
        row = episode.row
        state = outcome.get("state") or {}
        flat = flatten_actions(state.get("actions") or [])
        continue_as_new = next((a for a in flat if a.get("actionType") == 4), None)
        for index in range(row.state["actions"], len(flat)):
            new_events.extend(self._materialise(episode, flat[index], index))
        row.state["actions"] = len(flat)
        self._forget_cancelled_timers(row, flat)
        custom = state.get("customStatus")
        row.custom_status = json.dumps(custom) if custom is not None else None
        if outcome.get("failed") is not None:
            reason = f"Orchestrator function '{row.name}' failed: {outcome['failed']}"
            self._finish(episode, "Failed", json.dumps(reason), new_events,
                         {"kind": "failed", "reason": reason, "details": None})
        elif state.get("isDone") and continue_as_new is not None:
            input_text = continue_as_new.get("input")
            row.execution_id = uuid.uuid4().hex
            row.input = json.dumps(input_text) if input_text is not None else None
            row.history, row.state, row.output = [], new_state(), None
            new_events.clear()
            episode.changes.drop_messages_of.append(row.instance_id)
            episode.changes.messages = [m for m in episode.changes.messages if m.instance_id != row.instance_id]
            episode.changes.work = [w for w in episode.changes.work if w.instance_id != row.instance_id]
            episode.work = [w for w in episode.work if w.instance_id != row.instance_id]
            episode.send(row.instance_id, {"kind": "start", "executionId": row.execution_id})
            episode.restarted = True
            row.status = "Running"
        elif state.get("isDone"):
            output = json.dumps(state.get("output"))
            self._finish(episode, "Completed", output, new_events, {"kind": "completed", "result": output})

    def _finish(self, episode: _Episode, status: str, output: str, new_events: list[dict[str, Any]],
                to_parent: dict[str, Any]) -> None:
        row = episode.row
        row.status = status
        row.output = output
        new_events.append(h.event(h.ORCHESTRATOR_COMPLETED, -1, episode.now))
        new_events.append(h.event(h.EXECUTION_COMPLETED, -1, episode.now, OrchestrationStatus=status,
                                  Result=output if status == "Completed" else None,
                                  FailureDetails=h.parse_json_text(output) if status == "Failed" else None))
        row.state["tasks"] = {}
        episode.changes.drop_messages_of.append(row.instance_id)
        episode.changes.messages = [m for m in episode.changes.messages
                                    if m.instance_id != row.instance_id or m.body["kind"] == "start"]
        if row.parent:
            episode.send(row.parent["instanceId"], {**to_parent, "seq": row.parent["seq"],
                                                    "executionId": row.parent["executionId"]})

    @staticmethod
    def _forget_cancelled_timers(row: InstanceRow, flat: list[dict[str, Any]]) -> None:
        """A timer the orchestrator cancelled (the losing side of task_any) fires no event."""
        timers: dict[str, int] = row.state.get("timers", {})
        for index, seq in list(timers.items()):
            action = flat[int(index)] if int(index) < len(flat) else {}
            if action.get("isCanceled"):
                row.state["tasks"].pop(str(seq), None)
            if action.get("isCanceled") or str(seq) not in row.state["tasks"]:
                del timers[index]

    def _materialise(self, episode: _Episode, action: dict[str, Any], index: int) -> list[dict[str, Any]]:
        """History events (and work) for one action the SDK scheduled for the first time."""
        kind = action.get("actionType")
        row = episode.row
        if kind in (0, 1):
            call = {"kind": "activity", "name": action.get("functionName"), "input": action.get("input"),
                    "options": action.get("retryOptions") if kind == 1 else None}
            return self._schedule(episode, call, attempt=1)
        if kind in (2, 3):
            call = {"kind": "suborchestration", "name": action.get("functionName"), "input": action.get("input"),
                    "instanceId": action.get("instanceId"),
                    "options": action.get("retryOptions") if kind == 3 else None}
            return self._schedule(episode, call, attempt=1)
        if kind == 8:
            call = {"kind": "http", "name": HTTP_ACTIVITY, "input": None, "request": action.get("httpRequest")}
            return self._schedule(episode, call, attempt=1)
        if kind == 5:
            seq = episode.allocate()
            fire_text = str(action.get("fireAt"))
            try:
                fire_at = h.parse_time(fire_text)
            except ValueError:
                fire_at = episode.now
            row.state["tasks"][str(seq)] = {"kind": "timer", "fireAt": fire_text}
            row.state.setdefault("timers", {})[str(index)] = seq
            if not action.get("isCanceled"):
                episode.send(row.instance_id, {"kind": "timer", "seq": seq, "executionId": row.execution_id},
                             fire_at)
            return [h.event(h.TIMER_CREATED, seq, episode.now, FireAt=fire_text)]
        if kind in (7, 9, 10):
            seq = episode.allocate()
            entity_id = str(action.get("instanceId"))
            request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{row.instance_id}/{row.execution_id}/{seq}"))
            request = {"op": action.get("operation"), "signal": kind != 7, "input": action.get("input"),
                       "id": request_id, "parent": row.instance_id, "parentExecution": row.execution_id}
            visible_at = 0.0
            if kind == 10 and action.get("fireAt"):
                try:
                    visible_at = h.parse_time(str(action["fireAt"]))
                except ValueError:
                    visible_at = 0.0
            episode.send(entity_id, {"kind": "entityOp", **request}, visible_at)
            return [h.event(h.EVENT_SENT, seq, episode.now, InstanceId=entity_id, Name="op",
                            Input=json.dumps(request))]
        return []  # WaitForExternalEvent and ContinueAsNew take no number

    async def _terminate(self, episode: _Episode, reason: str, more: bool) -> bool:
        row = episode.row
        row.history.append(h.event(h.EXECUTION_TERMINATED, -1, episode.now, Input=reason))
        for item in row.history:
            item["IsPlayed"] = True
        row.status = "Terminated"
        row.output = json.dumps(reason)
        row.state["tasks"] = {}
        row.updated = time.time()
        episode.changes.instances.append(row)
        episode.changes.drop_messages_of.append(row.instance_id)
        if row.parent:
            episode.send(row.parent["instanceId"], {
                "kind": "failed", "seq": row.parent["seq"], "executionId": row.parent["executionId"],
                "reason": f"The sub-orchestration '{row.instance_id}' was terminated: {reason}", "details": None})
        await self._commit(episode.changes, episode.wake, episode.work)
        return False

    def _rewind(self, episode: _Episode, reason: str) -> None:
        """Drop the failures from history and schedule the failed calls again."""
        row = episode.row
        failed_ids = {e.get("TaskScheduledId") for e in row.history
                      if e["EventType"] in (h.TASK_FAILED, h.SUB_ORCHESTRATION_FAILED)}
        kept = [e for e in row.history if e["EventType"] not in (h.TASK_FAILED, h.SUB_ORCHESTRATION_FAILED,
                                                                  h.EXECUTION_COMPLETED)]
        row.history = kept
        row.encoded = None
        row.output = None
        episode.dirty = True
        for event in kept:
            seq = event.get("EventId")
            if event["EventType"] == h.TASK_SCHEDULED and seq in failed_ids:
                row.state["tasks"][str(seq)] = {"kind": "activity", "retry": None}
                item = WorkItem(row.instance_id, {"kind": "activity", "name": event["Name"], "input": event.get("Input"),
                                                  "seq": seq, "executionId": row.execution_id})
                episode.changes.work.append(item)
                episode.work.append(item)
        logger.info("durable %s rewound: %s", row.instance_id, reason)

    # ---- many hosts on one hub ------------------------------------------------------------------------

    async def _poll_shared(self) -> None:
        store: Any = self.store
        while True:
            try:
                now = time.time()
                for instance_id in await store.due_instances(now, 500):
                    self.wake(instance_id)
                room = self.options.max_activities - len(self._work_in_flight)
                if room > 0:
                    for item in await store.claim_work(now, room):
                        if item.id not in self._work_in_flight:
                            self._spawn(self._run_work(item))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be back on the next round
                logger.exception("durable hub %s: polling the shared store failed", store.hub)
            await asyncio.sleep(POLL_SECONDS)

    async def _renew_leases(self) -> None:
        store: Any = self.store
        while True:
            await asyncio.sleep(store.lease_seconds / 3)
            try:
                await store.renew(sorted(self._work_in_flight), sorted(self._leases_held), time.time())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - unrenewed leases pass to other hosts, as designed
                logger.exception("durable hub %s: renewing leases failed", store.hub)

    # ---- activities ---------------------------------------------------------------------------------

    async def _run_work(self, item: WorkItem) -> None:
        self._work_in_flight.add(item.id)
        try:
            await self._run_work_item(item)
        finally:
            self._work_in_flight.discard(item.id)

    async def _run_work_item(self, item: WorkItem) -> None:
        body = item.body
        if self.host.draining:
            return  # left in the store: the next host (or, shared, another one) runs it
        while True:
            try:
                async with self._activity_slots:
                    self.activities_running += 1
                    try:
                        outcome = await (self._call_http(body) if body["kind"] == "http"
                                         else self._call_activity(body))
                    finally:
                        self.activities_running -= 1
                break
            except _Transient as error:
                logger.warning("activity %s of %s: %s; trying again", body["name"], item.instance_id, error)
                await asyncio.sleep(TRANSIENT_RETRY_SECONDS)
        self.counters["activities"] += 1
        message = Message(item.instance_id, {**outcome, "seq": body["seq"], "executionId": body["executionId"]})
        await self._commit(Changes(finished_work=[item.id], messages=[message]), [item.instance_id], [])
        self._arrived[item.instance_id] = self._arrived.get(item.instance_id, 0) + 1

    async def _call_activity(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body["name"])
        definition = self.functions(ACTIVITY_TRIGGER).get(name.lower())
        if definition is None:
            return {"kind": "failed", "reason": f"The activity function '{name}' doesn't exist, is disabled, "
                                                "or is not an activity function.", "details": None}
        input_text = body.get("input")
        data = rpc.TypedData(string=input_text if input_text is not None else "null")
        try:
            response = await self.host.invoke(Invocation.of_trigger(definition, data))
        except InvocationFailed as failure:
            if failure.status in (502, 503):
                raise _Transient(str(failure)) from None
            message = _failure_text(failure)
            return {"kind": "failed", "reason": f"Activity function '{name}' failed: {message}", "details": message}
        result = typed_json_text(response.return_value if response.HasField("return_value") else None)
        if result is not None and len(result.encode()) > self.options.payload_limit:
            return {"kind": "failed", "reason": f"Activity function '{name}' failed: its result is "
                                                f"{len(result.encode())} bytes, over the limit of "
                                                f"{self.options.payload_limit}", "details": None}
        return {"kind": "completed", "result": result}

    async def _call_http(self, body: dict[str, Any]) -> dict[str, Any]:
        request = body.get("request") or {}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.request(str(request.get("method") or "GET"), str(request.get("uri")),
                                           data=request.get("content"),
                                           headers=request.get("headers") or None) as response:
                    content = await response.text()
                    result = {"statusCode": response.status, "headers": dict(response.headers), "content": content}
        except (aiohttp.ClientError, ValueError) as error:
            return {"kind": "failed", "reason": f"Activity function '{HTTP_ACTIVITY}' failed: {error}",
                    "details": None}
        return {"kind": "completed", "result": json.dumps(result)}

    # ---- entities ---------------------------------------------------------------------------------

    async def _entity_episode(self, entity_id: str) -> bool:
        state_text, exists, messages = await self.store.entity_input(entity_id, self.options.entity_batch)
        now = time.time()
        visible = [m for m in messages if m.visible_at <= now]
        later = [m for m in messages if m.visible_at > now]
        for message in later:
            self._arm(message.visible_at, entity_id)
        if not visible:
            return False
        self.counters["entityBatches"] += 1
        name, key = split_entity_id(entity_id)
        operations = [m.body for m in visible]
        changes = Changes(consumed_messages=[m.id for m in visible])
        wake: set[str] = set()
        definition = self.functions(ENTITY_TRIGGER).get(name)
        results: list[dict[str, Any]]
        if definition is None:
            results = [{"isError": True, "result": json.dumps(f"no entity function named {name!r}")}
                       for _ in operations]
        else:
            batch = [{"name": op.get("op"), "input": json.dumps(op.get("input") or "null"),
                      "isSignal": bool(op.get("signal"))} for op in operations]
            context = {"self": {"name": name, "key": key}, "exists": exists, "state": state_text, "batch": batch}
            try:
                response = await self.host.invoke(Invocation.of_trigger(
                    definition, rpc.TypedData(string=json.dumps(context))))
                text = typed_json_text(response.return_value if response.HasField("return_value") else None)
                outcome = json.loads(text) if text else {}
                if isinstance(outcome, str):
                    outcome = json.loads(outcome)
                results = list(outcome.get("results") or [])
                if outcome.get("entityExists"):
                    changes.entity_states[entity_id] = outcome.get("entityState")
                elif exists:
                    changes.dropped_entities.append(entity_id)
            except InvocationFailed as failure:
                if failure.status in (502, 503):
                    raise _Transient(str(failure)) from None
                results = [{"isError": True, "result": json.dumps(_failure_text(failure))} for _ in operations]
        for index, op in enumerate(operations):
            if op.get("signal") or not op.get("parent"):
                continue
            result = results[index] if index < len(results) else {"isError": True, "result": json.dumps("no result")}
            reply: dict[str, Any] = {"result": result.get("result")}
            if result.get("isError"):
                reply["exceptionType"] = "System.Exception"
            changes.messages.append(Message(op["parent"], {"kind": "event", "name": op["id"],
                                                           "input": json.dumps(reply)}))
            wake.add(op["parent"])
        await self._commit(changes, wake, [])
        return len(messages) >= self.options.entity_batch


def _encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def _replayed(event: dict[str, Any], python: bool) -> bool:
    """Whether an orchestrator is sent this event when it replays."""
    return not python or event["EventType"] not in PYTHON_SDK_UNREAD


def _last_time(history: list[dict[str, Any]]) -> float:
    """The newest timestamp in history, so an episode's clock never goes backwards."""
    for item in reversed(history):
        if item["EventType"] == h.ORCHESTRATOR_STARTED:
            try:
                return h.parse_time(item["Timestamp"])
            except ValueError:
                return 0.0
    return 0.0


def status_payload(row: InstanceRow, *, show_input: bool = True, show_history: bool = False,
                   show_history_output: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": row.name,
        "instanceId": row.instance_id,
        "runtimeStatus": row.status,
        "input": h.parse_json_text(row.input) if show_input else None,
        "customStatus": h.parse_json_text(row.custom_status),
        "output": h.parse_json_text(row.output),
        "createdTime": h.iso_seconds(row.created),
        "lastUpdatedTime": h.iso_seconds(row.updated),
    }
    if show_history:
        payload["historyEvents"] = h.for_status(row.history, show_history_output)
    return payload

