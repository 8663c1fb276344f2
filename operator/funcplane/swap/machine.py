"""The swap's transitions, free of I/O: requests in, phases forward, the layout each phase wants.

A swap of source slot S (instance s) into target slot T (instance t):
  ApplyingTargetSettings  s runs T's sticky settings; wait for its rollout        (T serves t)
  WarmingUp               every pod of s Ready and answering the warm-up request  (T serves t)
  AwaitingCompletion      preview only: wait for complete (flip) or cancel        (T serves t)
  Flipping                pointers flipped in one write; wait for both Services' endpoints
  ApplyingSourceSettings  t (now S's) runs S's sticky settings; wait for its rollout
  Reverting               failure or cancel before the flip: s gets its own settings back
Each phase's layout (pointers and sticky sources) is re-asserted on every tick, so an engine
that restarts anywhere converges to what the recorded phase asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .journal import PRE_FLIP, Mode, Phase, PodWarmup, Result, SwapJournal, SwapRecord, Trigger

Pointers = dict[str, str]  # slot -> instance
Sticky = dict[str, "str | None"]  # instance -> slot whose sticky settings it runs (None: its own slot's)


@dataclass(frozen=True)
class Request:
    """A Slot's spec.swap (or an auto-swap) as the engine sees it."""

    source: str
    request_id: str
    target: str = "production"
    mode: Mode = "full"
    action: str = "start"
    requested_by: str = "unknown"
    trigger: Trigger = "request"

    @property
    def handled_key(self) -> str:
        return f"{self.source}/{self.request_id}/{self.action}"


@dataclass(frozen=True)
class Layout:
    """The app status fields the swap owns: slot pointers and each instance's sticky source."""

    pointers: Pointers
    sticky: Sticky


@dataclass(frozen=True)
class World:
    """What the engine observed this tick."""

    layout: Layout
    rolled_out: dict[str, bool] = field(default_factory=dict)  # instance -> runs the wanted template, all Ready
    source_pods: list[PodWarmup] = field(default_factory=list)  # with warm-up results (WarmingUp only)
    source_replicas: int = 1
    endpoints: dict[str, frozenset[str]] = field(default_factory=dict)  # slot -> Ready endpoint IPs
    instance_ips: dict[str, frozenset[str]] = field(default_factory=dict)  # instance -> pod IPs
    timeout_seconds: float = 300.0


@dataclass(frozen=True)
class Notice:
    """Something a user must see: an Event on the source Slot."""

    reason: str
    message: str
    warning: bool = False


def _copy(journal: SwapJournal) -> SwapJournal:
    return journal.model_copy(deep=True)


def _refuse(journal: SwapJournal, request: Request, message: str, now: float) -> tuple[SwapJournal, Notice]:
    journal.archive(SwapRecord(request_id=request.request_id, source=request.source, target=request.target,
                               mode=request.mode, action=request.action, requested_by=request.requested_by,
                               result="Refused", message=message, started_at=now, finished_at=now))
    journal.remember(request.handled_key)
    return journal, Notice("SwapRefused", f"swap {request.request_id} ({request.action}): {message}", True)


def _begin(journal: SwapJournal, request: Request, target: str, layout: Layout, now: float,
           trigger: Trigger, rollback_of: str | None = None) -> tuple[SwapJournal, Notice]:
    if target == request.source:
        return _refuse(journal, request, f"target {target!r} is the source slot itself", now)
    for slot in (request.source, target):
        if slot not in layout.pointers:
            return _refuse(journal, request, f"slot {slot!r} does not exist (or is not admitted) in this app", now)
    source_instance, target_instance = layout.pointers[request.source], layout.pointers[target]
    if source_instance == target_instance:
        return _refuse(journal, request, f"slots {request.source!r} and {target!r} point to the same instance "
                       f"{source_instance}", now)
    journal.current = SwapRecord(
        request_id=request.request_id, source=request.source, target=target, mode=request.mode,
        action=request.action, requested_by=request.requested_by, trigger=trigger, rollback_of=rollback_of,
        source_instance=source_instance, target_instance=target_instance,
        original_sticky={source_instance: layout.sticky.get(source_instance),
                         target_instance: layout.sticky.get(target_instance)},
        phase="ApplyingTargetSettings", started_at=now, phase_started_at=now)
    journal.remember(request.handled_key)
    what = "rollback" if trigger == "rollback" else f"{request.mode} swap"
    return journal, Notice("SwapStarted", f"{what} {request.request_id}: slot {request.source!r} "
                           f"({source_instance}) into {target!r} ({target_instance}), by {request.requested_by}")


def intake(journal: SwapJournal, request: Request, layout: Layout, now: float) -> tuple[SwapJournal, Notice | None]:
    """Accept or refuse one request. A request already handled is never run again."""
    if request.handled_key in journal.handled:
        return journal, None
    journal = _copy(journal)
    current = journal.current
    if request.action == "start":
        if current is not None:
            return _refuse(journal, request, f"swap {current.request_id} of slot {current.source!r} into "
                           f"{current.target!r} is in progress (phase {current.phase}); only one swap per app "
                           "runs at a time: request again with a new requestId when it has finished", now)
        return _begin(journal, request, request.target, layout, now, request.trigger)
    if request.action == "rollback":
        if current is not None:
            return _refuse(journal, request, f"swap {current.request_id} is in progress (phase {current.phase}); "
                           "roll back after it has finished", now)
        last = next((r for r in journal.history if r.result == "Succeeded"), None)
        if last is None or last.source != request.source:
            return _refuse(journal, request, "nothing to roll back: the app's last successful swap was "
                           + (f"of slot {last.source!r}" if last else "never") +
                           f", not of slot {request.source!r}", now)
        return _begin(journal, request, last.target, layout, now, "rollback", last.request_id)
    if request.action not in ("complete", "cancel"):
        return _refuse(journal, request, f"unknown action {request.action!r}: use start, complete, cancel or "
                       "rollback", now)
    if current is None or current.source != request.source or current.phase not in PRE_FLIP:
        return _refuse(journal, request, f"slot {request.source!r} has no swap before its flip to {request.action}",
                       now)
    journal.remember(request.handled_key)
    if request.action == "complete":
        if current.mode != "preview":
            return _refuse(journal, request, f"swap {current.request_id} is not a preview: it flips once warm", now)
        current.mode = "full"
        return journal, Notice("SwapCompleting", f"preview swap {current.request_id} completed by "
                               f"{request.requested_by}: flipping once warm")
    _enter(current, "Reverting", now)
    current.outcome = "Cancelled"
    current.message = f"cancelled by {request.requested_by}; restoring slot {request.source!r}'s settings"
    return journal, Notice("SwapCancelling", current.message)


def auto_swap_request(journal: SwapJournal, slot: str, target: str, deployed_hash: str) -> Request | None:
    """A new deployment to a slot with an auto-swap target: swap it in (waits while a swap runs)."""
    if not deployed_hash or journal.auto_swapped.get(slot) == deployed_hash or journal.current is not None:
        return None
    return Request(source=slot, request_id=f"auto-{deployed_hash}", target=target, requested_by="auto-swap",
                   trigger="auto-swap")


def desired_layout(record: SwapRecord) -> Layout:
    """The pointers and sticky sources the record's phase wants."""
    source, target, s, t = record.source, record.target, record.source_instance, record.target_instance
    if record.phase == "Reverting":
        return Layout({source: s, target: t}, dict(record.original_sticky))
    if record.phase == "Flipping":
        # t keeps running the target's sticky settings through the flip, so the flip restarts nothing.
        return Layout({source: t, target: s}, {s: target, t: target})
    if record.phase == "ApplyingSourceSettings":
        return Layout({source: t, target: s}, {s: None, t: None})  # each runs the slot that points to it
    return Layout({source: s, target: t}, {s: target, t: record.original_sticky.get(t)})


def changes(record: SwapRecord, layout: Layout) -> Layout:
    """Only what differs between the observed layout and the phase's: nothing when converged.
    Slots and instances that no longer exist (a Slot deleted mid-swap) are never written."""
    if record.source not in layout.pointers or record.target not in layout.pointers:
        return Layout({}, {})
    wanted = desired_layout(record)
    return Layout({slot: inst for slot, inst in wanted.pointers.items() if layout.pointers[slot] != inst},
                  {inst: src for inst, src in wanted.sticky.items()
                   if inst in layout.sticky and layout.sticky[inst] != src})


def converged(record: SwapRecord, layout: Layout) -> bool:
    delta = changes(record, layout)
    return not delta.pointers and not delta.sticky


def _enter(record: SwapRecord, phase: Phase | None, now: float) -> None:
    """Close the running phase's clock (durations add up across resumed runs) and start the next."""
    if record.phase is not None:
        spent = now - record.phase_started_at
        record.durations[record.phase] = round(record.durations.get(record.phase, 0.0) + spent, 3)
    record.phase = phase
    record.phase_started_at = now


def _finish(journal: SwapJournal, result: Result, message: str, now: float) -> Notice:
    record = journal.current
    assert record is not None
    _enter(record, None, now)
    record.result, record.outcome, record.finished_at = result, None, now
    record.message = message
    journal.current = None
    journal.archive(record)
    warning = result == "Failed"
    return Notice(f"Swap{result}", f"swap {record.request_id} of slot {record.source!r} into {record.target!r}: "
                  f"{message}", warning)


def _pod_problem(pods: list[PodWarmup], replicas: int, instance: str, waited: float, warming: bool) -> str:
    """Why the source is not ready to serve: the first pod not Ready, else (warming up) not warm."""
    for pod in pods:
        if not pod.ready:
            return f"pod {pod.pod} is not Ready after {waited:.0f}s{': ' + pod.message if pod.message else ''}"
    for pod in pods if warming else []:
        if not pod.warm:
            answer = f"answered {pod.status}" if pod.status is not None else "did not answer"
            return f"pod {pod.pod} is not warm after {waited:.0f}s: warm-up {answer}" + (
                f" ({pod.message})" if pod.message else "")
    if len(pods) < replicas:
        return f"instance {instance} has {len(pods)}/{replicas} pods after {waited:.0f}s"
    return f"instance {instance} did not finish rolling out within {waited:.0f}s"


def _flipped(record: SwapRecord, world: World) -> bool:
    for slot, instance in ((record.target, record.source_instance), (record.source, record.target_instance)):
        endpoints, ips = world.endpoints.get(slot, frozenset()), world.instance_ips.get(instance, frozenset())
        if not endpoints <= ips or (ips and not endpoints):
            return False
    return True


def advance(journal: SwapJournal, world: World, now: float) -> tuple[SwapJournal, list[Notice]]:
    """Move the current swap forward as far as the observed world allows (one phase per call)."""
    record = journal.current
    if record is None or not converged(record, world.layout):
        return journal, []  # the phase's layout is not written yet: the engine writes it first
    journal = _copy(journal)
    record = journal.current
    assert record is not None
    gone = [slot for slot in (record.source, record.target) if slot not in world.layout.pointers]
    if gone:
        return journal, [_finish(journal, "Failed", f"slot {gone[0]!r} was removed during the swap", now)]
    waited = now - record.started_at
    timed_out = waited > world.timeout_seconds
    if record.phase == "ApplyingTargetSettings":
        if world.rolled_out.get(record.source_instance, False):
            _enter(record, "WarmingUp", now)
            return journal, []
        if timed_out:
            return _fail(journal, _pod_problem(world.source_pods, world.source_replicas, record.source_instance,
                                               waited, warming=False), now)
        return journal, []
    if record.phase == "WarmingUp":
        record.pods = list(world.source_pods)
        pods = world.source_pods
        if len(pods) >= world.source_replicas and all(p.ready and p.warm for p in pods):
            _enter(record, "AwaitingCompletion" if record.mode == "preview" else "Flipping", now)
            if record.mode == "preview":
                return journal, [Notice("SwapPreviewReady", f"preview swap {record.request_id}: slot "
                                        f"{record.source!r} runs {record.target!r}'s settings and is warm; "
                                        "complete or cancel it")]
            return journal, []
        if timed_out:
            return _fail(journal, _pod_problem(pods, world.source_replicas, record.source_instance, waited,
                                               warming=True), now)
        return journal, []
    if record.phase == "AwaitingCompletion":
        if record.mode == "full":
            _enter(record, "Flipping", now)
        return journal, []
    if record.phase == "Flipping":
        if _flipped(record, world):
            record.flipped_at = now
            _enter(record, "ApplyingSourceSettings", now)
            return journal, [Notice("SwapFlipped", f"swap {record.request_id}: slot {record.target!r} now serves "
                                    f"{record.source_instance}, slot {record.source!r} serves "
                                    f"{record.target_instance}")]
        return journal, []
    if record.phase == "ApplyingSourceSettings":
        if world.rolled_out.get(record.target_instance, False):
            return journal, [_finish(journal, "Succeeded", "swapped", now)]
        if now - record.phase_started_at > world.timeout_seconds:
            return journal, [_finish(journal, "Succeeded", f"swapped; instance {record.target_instance} is still "
                                     f"rolling out slot {record.source!r}'s settings", now)]
        return journal, []
    if record.phase == "Reverting":
        outcome = record.outcome or "Failed"
        return journal, [_finish(journal, outcome, record.message or "reverted", now)]
    return journal, []


def _fail(journal: SwapJournal, reason: str, now: float) -> tuple[SwapJournal, list[Notice]]:
    record = journal.current
    assert record is not None
    _enter(record, "Reverting", now)
    record.outcome = "Failed"
    record.message = f"{reason}; reverted slot {record.source!r}, slot {record.target!r} kept serving"
    return journal, [Notice("SwapReverting", f"swap {record.request_id}: {record.message}", True)]
