"""The swap's pure transitions: requests, phase order, failure, preview, rollback, resuming."""

from __future__ import annotations

from funcplane.swap.journal import PodWarmup, SwapJournal
from funcplane.swap.machine import (
    Layout, Request, World, advance, auto_swap_request, changes, converged, desired_layout, intake)

BEFORE = Layout({"production": "app-p", "staging": "app-s"}, {"app-p": None, "app-s": None})


def apply(layout: Layout, journal: SwapJournal) -> Layout:
    """What the engine's status write does: the phase's layout over the observed one."""
    delta = changes(journal.current, layout)
    return Layout(layout.pointers | delta.pointers, layout.sticky | delta.sticky)


def pods(*states: tuple[bool, bool]) -> list[PodWarmup]:
    return [PodWarmup(pod=f"app-s-{i}", ip=f"10.0.0.{i}", ready=ready, warm=warm, status=200 if warm else 503)
            for i, (ready, warm) in enumerate(states)]


def started(mode: str = "full", request_id: str = "r1") -> tuple[SwapJournal, Layout]:
    journal, notice = intake(SwapJournal(), Request("staging", request_id, mode=mode, requested_by="ann"), BEFORE, 0)
    assert notice is not None and notice.reason == "SwapStarted" and "ann" in notice.message
    return journal, apply(BEFORE, journal)


def warm(journal: SwapJournal, layout: Layout, now: float = 2) -> SwapJournal:
    journal, _ = advance(journal, World(layout, rolled_out={"app-s": True}), now)
    journal, _ = advance(journal, World(layout, source_pods=pods((True, True), (True, True)), source_replicas=2), now)
    return journal


def flipped_world(layout: Layout) -> World:
    return World(layout, endpoints={"production": frozenset({"10.0.0.1"}), "staging": frozenset({"10.0.1.1"})},
                 instance_ips={"app-s": frozenset({"10.0.0.1"}), "app-p": frozenset({"10.0.1.1"})})


def test_first_phase_gives_the_source_the_targets_sticky_settings_only() -> None:
    journal, layout = started()
    assert journal.current.phase == "ApplyingTargetSettings"
    assert journal.current.original_sticky == {"app-s": None, "app-p": None}
    assert layout.pointers == BEFORE.pointers  # the target keeps serving its own instance
    assert layout.sticky == {"app-s": "production", "app-p": None}


def test_no_phase_advances_before_its_layout_is_written() -> None:
    journal, _ = started()
    unchanged, notices = advance(journal, World(BEFORE, rolled_out={"app-s": True}), 1)
    assert unchanged.current.phase == "ApplyingTargetSettings" and not notices


def test_full_swap_runs_every_phase_and_records_durations() -> None:
    journal, layout = started()
    journal = warm(journal, layout)
    assert journal.current.phase == "Flipping"
    assert [p.warm for p in journal.current.pods] == [True, True]
    layout = apply(layout, journal)
    assert layout.pointers == {"production": "app-s", "staging": "app-p"}
    assert layout.sticky == {"app-s": "production", "app-p": "production"}  # the flip itself restarts nothing
    stale = World(layout, endpoints={"production": frozenset({"10.0.1.1"})},
                  instance_ips={"app-s": frozenset({"10.0.0.1"}), "app-p": frozenset({"10.0.1.1"})})
    assert advance(journal, stale, 3)[0].current.phase == "Flipping"  # endpoints not flipped yet
    journal, notices = advance(journal, flipped_world(layout), 3)
    assert journal.current.phase == "ApplyingSourceSettings" and notices[0].reason == "SwapFlipped"
    layout = apply(layout, journal)
    assert layout.sticky == {"app-s": None, "app-p": None}
    journal, notices = advance(journal, World(layout, rolled_out={"app-p": True}), 5)
    assert journal.current is None and notices[0].reason == "SwapSucceeded"
    record = journal.history[0]
    assert record.result == "Succeeded" and record.flipped_at == 3 and record.finished_at == 5
    assert set(record.durations) == {"ApplyingTargetSettings", "WarmingUp", "Flipping", "ApplyingSourceSettings"}
    assert record.durations["Flipping"] == 1


def test_a_pod_never_ready_fails_the_swap_and_reverts_the_source() -> None:
    journal, layout = started()
    not_ready = pods((True, False), (False, False))
    journal, _ = advance(journal, World(layout, source_pods=not_ready, source_replicas=2, timeout_seconds=60), 30)
    assert journal.current.phase == "ApplyingTargetSettings"
    journal, notices = advance(journal, World(layout, source_pods=not_ready, source_replicas=2, timeout_seconds=60), 61)
    assert journal.current.phase == "Reverting" and notices[0].warning
    assert "pod app-s-1 is not Ready after 61s" in journal.current.message
    assert desired_layout(journal.current) == BEFORE
    assert advance(journal, World(layout), 62)[0].current.phase == "Reverting"  # until the revert is written
    journal, notices = advance(journal, World(apply(layout, journal)), 62)
    assert journal.current is None and journal.history[0].result == "Failed"
    assert notices[0].reason == "SwapFailed" and "app-s-1" in notices[0].message


def test_a_pod_not_warm_names_the_pod_and_its_answer() -> None:
    journal, layout = started()
    journal, _ = advance(journal, World(layout, rolled_out={"app-s": True}), 1)
    journal, _ = advance(journal, World(layout, source_pods=pods((True, True), (True, False)), source_replicas=2,
                                        timeout_seconds=10), 11)
    assert "pod app-s-1 is not warm after 11s: warm-up answered 503" in journal.current.message


def test_preview_waits_then_complete_flips_and_cancel_restores() -> None:
    journal, layout = started(mode="preview")
    journal = warm(journal, layout)
    assert journal.current.phase == "AwaitingCompletion"
    assert advance(journal, World(layout), 100)[0].current.phase == "AwaitingCompletion"  # waits, no timeout
    completed, notice = intake(journal, Request("staging", "r1", mode="preview", action="complete"), layout, 101)
    assert notice.reason == "SwapCompleting"
    assert advance(completed, World(layout), 101)[0].current.phase == "Flipping"
    cancelled, notice = intake(journal, Request("staging", "r1", mode="preview", action="cancel"), layout, 101)
    assert cancelled.current.phase == "Reverting" and cancelled.current.outcome == "Cancelled"
    done, _ = advance(cancelled, World(apply(layout, cancelled)), 102)
    assert done.history[0].result == "Cancelled" and done.current is None


def test_a_second_swap_is_refused_while_one_runs_and_a_handled_request_never_runs_again() -> None:
    journal, layout = started()
    refused, notice = intake(journal, Request("qa", "q1"), layout, 1)
    assert notice.reason == "SwapRefused" and "r1" in notice.message and "in progress" in notice.message
    assert refused.current.request_id == "r1" and refused.history[0].result == "Refused"
    again, notice = intake(refused, Request("qa", "q1"), layout, 2)
    assert notice is None and again is refused
    same, notice = intake(journal, Request("staging", "r1", requested_by="ann"), layout, 3)
    assert notice is None and same is journal


def test_refusals_name_the_problem() -> None:
    for request, expected in ((Request("staging", "a", target="staging"), "is the source slot itself"),
                              (Request("staging", "b", target="nope"), "'nope' does not exist"),
                              (Request("staging", "c", action="complete"), "no swap before its flip to complete"),
                              (Request("staging", "d", action="cancel"), "no swap before its flip to cancel"),
                              (Request("staging", "e", action="rollback"), "nothing to roll back")):
        journal, notice = intake(SwapJournal(), request, BEFORE, 0)
        assert expected in notice.message and journal.current is None, (request, notice)


def test_rollback_swaps_back_after_a_swap() -> None:
    journal, layout = started()
    journal = warm(journal, layout)
    layout = apply(layout, journal)
    journal, _ = advance(journal, flipped_world(layout), 3)
    layout = apply(layout, journal)
    journal, _ = advance(journal, World(layout, rolled_out={"app-p": True}), 4)
    journal, notice = intake(journal, Request("staging", "back", action="rollback"), layout, 5)
    record = journal.current
    assert record.rollback_of == "r1" and record.trigger == "rollback"
    assert (record.source_instance, record.target_instance) == ("app-p", "app-s")


def test_resuming_from_any_phase_rewrites_only_what_is_missing() -> None:
    journal, layout = started()
    journal = warm(journal, layout)
    # A restart after the Flipping phase was recorded but before its status write: the flip is redone.
    assert changes(journal.current, layout).pointers == {"production": "app-s", "staging": "app-p"}
    layout = apply(layout, journal)
    assert converged(journal.current, layout) and not changes(journal.current, layout).sticky


def test_auto_swap_once_per_deployment_and_waits_for_a_running_swap() -> None:
    request = auto_swap_request(SwapJournal(), "staging", "production", "h1")
    assert request.request_id == "auto-h1" and request.trigger == "auto-swap"
    assert auto_swap_request(SwapJournal(auto_swapped={"staging": "h1"}), "staging", "production", "h1") is None
    journal, _ = started()
    assert auto_swap_request(journal, "staging", "production", "h2") is None


def test_a_slot_removed_mid_swap_ends_the_swap_without_writing_its_pointer() -> None:
    journal, layout = started()
    journal = warm(journal, layout)
    without_staging = Layout({"production": "app-p"}, {"app-p": None, "app-s": "production"})
    assert changes(journal.current, without_staging) == Layout({}, {})
    journal, notices = advance(journal, World(without_staging), 9)
    assert journal.current is None and journal.history[0].result == "Failed"
    assert "'staging' was removed" in notices[0].message


def test_complete_applies_to_previews_only() -> None:
    journal, layout = started(mode="full")
    refused, notice = intake(journal, Request("staging", "r1", action="complete"), layout, 1)
    assert notice.reason == "SwapRefused" and "is not a preview" in notice.message
    assert refused.current.mode == "full" and refused.current.phase == "ApplyingTargetSettings"
