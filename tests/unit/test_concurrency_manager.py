"""The dynamic concurrency algorithm with a fake clock: Azure's constants, the clamp at the maximum,
the saturation signal on a degrading downstream, and snapshot application."""

from __future__ import annotations

from collections.abc import Callable

from funcplane_host.concurrency.manager import ConcurrencyManager, ThrottleManager, ThrottleState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager_with(throttle: Callable[[], ThrottleState], clock: FakeClock, **options) -> ConcurrencyManager:
    return ConcurrencyManager(ThrottleManager({"test": throttle}, clock), clock, **options)


def run_closed_loop(manager: ConcurrencyManager, clock: FakeClock, latency_at: Callable[[int], float],
                    seconds: float, step: float = 0.01, finishing: list[tuple[float, float]] | None = None) -> list[int]:
    """Keep the function's limit fully used; each invocation takes latency_at(in-flight) seconds.
    Returns the limit sampled every second. `finishing` carries the in-flight ones across calls."""
    status = manager.function("f")
    if finishing is None:
        finishing = []  # (finish at, started at)
    levels = []
    end = clock.now + seconds
    next_sample = clock.now
    while clock.now < end:
        for _ in range(manager.available("f", 0)):
            status.started()
            finishing.append((clock.now + latency_at(status.outstanding), clock.now))
        still = []
        for finish, began in finishing:
            if finish <= clock.now:
                status.completed_one(clock.now - began)
            else:
                still.append((finish, began))
        finishing[:] = still
        if clock.now >= next_sample:
            levels.append(status.current)
            next_sample += 1.0
        clock.now += step
    return levels


def test_increases_follow_azure_steps_while_healthy_and_the_limit_is_used() -> None:
    clock = FakeClock()
    manager = manager_with(lambda: ThrottleState.DISABLED, clock, saturation_enabled=False)
    levels = run_closed_loop(manager, clock, lambda k: 0.01, 40)
    distinct = sorted(set(levels))
    # 1, then +1, +2, +3, +4, +5, +6, +6 ... (steps grow while they run in one direction)
    assert distinct[:8] == [1, 2, 4, 7, 11, 16, 22, 28], distinct
    # First increase only after 5 consecutive healthy checks (one per second) and the 2 s gap.
    assert levels[:5] == [1] * 5


def test_no_increase_when_the_limit_is_not_fully_used() -> None:
    clock = FakeClock()
    manager = manager_with(lambda: ThrottleState.DISABLED, clock)
    for _ in range(60):
        manager.get_status("f")
        clock.now += 1
    assert manager.function("f").current == 1


def test_throttle_decreases_after_three_checks_then_waits_the_quiet_window() -> None:
    clock = FakeClock()
    state = {"value": ThrottleState.DISABLED}
    manager = manager_with(lambda: state["value"], clock, saturation_enabled=False)
    run_closed_loop(manager, clock, lambda k: 0.01, 20)
    before = manager.function("f").current
    assert before > 10
    state["value"] = ThrottleState.ENABLED
    clock.now += 1.0  # throttles are re-evaluated at most once a second
    assert manager.available("f", 0) == 0  # throttled: fetch nothing
    run_closed_loop(manager, clock, lambda k: 0.01, 6)
    after_decrease = manager.function("f").current
    assert after_decrease < before
    decreased_at = clock.now
    assert run_closed_loop(manager, clock, lambda k: 0.0, 0.5)[-1] == after_decrease
    # The last decrease happened within the throttled period; find it and the next increase.
    last_decrease = manager.function("f")._last_decrease
    assert last_decrease is not None and last_decrease <= decreased_at
    state["value"] = ThrottleState.DISABLED
    levels = run_closed_loop(manager, clock, lambda k: 0.01, 30)
    first_increase = next(i for i, level in enumerate(levels) if level > after_decrease)
    # min(10 s + 10 x latency, 30 s) without an increase after a decrease
    assert decreased_at + 0.5 + first_increase - last_decrease >= 10.0


def test_increase_is_clamped_at_the_maximum() -> None:
    clock = FakeClock()
    manager = manager_with(lambda: ThrottleState.DISABLED, clock, maximum=10, saturation_enabled=False)
    levels = run_closed_loop(manager, clock, lambda k: 0.01, 40)
    assert max(levels) == 10  # Azure's own algorithm would step 7 -> 11


def degrading_downstream(k: int) -> float:
    """50 ms up to 8 concurrent calls, then 1.5 x 50 ms more per 8 extra calls."""
    return 0.05 if k <= 8 else 0.05 * (1 + 1.5 * (k - 8) / 8)


def test_saturation_holds_a_degrading_downstream_near_its_knee_while_cpu_is_idle() -> None:
    clock = FakeClock()
    manager = manager_with(lambda: ThrottleState.DISABLED, clock)
    levels = run_closed_loop(manager, clock, degrading_downstream, 120)
    settled = levels[60:]
    assert 7 <= min(settled) and max(settled) <= 12, levels
    throughput = [k / degrading_downstream(k) for k in settled]
    assert sum(throughput) / len(throughput) >= 0.9 * 160  # 160/s at the knee (8)


def test_without_saturation_azure_alone_grows_past_the_knee() -> None:
    clock = FakeClock()
    manager = manager_with(lambda: ThrottleState.DISABLED, clock, saturation_enabled=False)
    levels = run_closed_loop(manager, clock, degrading_downstream, 60)
    assert levels[-1] > 40, levels


def test_snapshot_scaled_by_cores_skips_above_maximum_and_only_raises() -> None:
    clock = FakeClock()
    manager = manager_with(lambda: ThrottleState.DISABLED, clock, maximum=50)
    manager.function("d").current = 9
    applied = manager.apply_snapshot({"a": 10, "b": 120, "c": 1, "d": 4}, snapshot_cores=4, cores=2)
    # a: 10 x 2/4; b: 60 > maximum, skipped as Azure does; d keeps its higher level
    assert applied == {"a": 5, "c": 1, "d": 9}
    assert manager.function("b").current == 1
    assert manager.apply_snapshot({"a": 7}, snapshot_cores=2, cores=2) == {"a": 7}


CPU_WORK = 0.1  # seconds of CPU per invocation (long against the 10 ms simulation step)
CORES = 2


def cpu_bound(k: int) -> float:
    """k invocations share 2 cores: each needs CPU_WORK seconds of CPU."""
    return CPU_WORK * max(1.0, k / CORES)


def cpu_throttle_of(manager: ConcurrencyManager) -> Callable[[], ThrottleState]:
    """Azure's CPU verdict on the simulated cores: mean use over the last 5 s >= 80 %."""
    def state() -> ThrottleState:
        used = manager.function("f").completions_per_second(5.0) * CPU_WORK / CORES
        return ThrottleState.ENABLED if used >= 0.8 else ThrottleState.DISABLED
    return state


def cpu_bound_run(busy_only: frozenset[str] | None, clock: FakeClock) -> tuple[ConcurrencyManager, list[int], float]:
    """Two minutes closed loop; the throughput of the second. None: a static limit of 4 (the knee)."""
    if busy_only is None:
        manager = manager_with(lambda: ThrottleState.DISABLED, clock, maximum=4, saturation_enabled=False)
        manager.function("f").apply_learned(4)
    else:
        manager = ConcurrencyManager(ThrottleManager({}, clock, busy_only=busy_only), clock,
                                     saturation_enabled=bool(busy_only))
        manager.throttles.providers["cpu"] = cpu_throttle_of(manager)
    in_flight: list[tuple[float, float]] = []
    levels = run_closed_loop(manager, clock, cpu_bound, 60, finishing=in_flight)
    before = manager.function("f").completed
    levels += run_closed_loop(manager, clock, cpu_bound, 60, finishing=in_flight)
    return manager, levels, (manager.function("f").completed - before) / 60


def test_full_cpu_holds_a_cpu_bound_function_without_pausing_it() -> None:
    manager, levels, throughput = cpu_bound_run(frozenset({"cpu"}), FakeClock())
    status = manager.throttles.get_status()
    # The cores are full (the CPU throttle is on) yet nothing waits: it only holds the level.
    assert status.enabled == ["cpu"] and status.busy and not manager.throttled()
    assert 2 <= min(levels[60:]) and max(levels[60:]) <= 4, levels  # the cores' knee, not past it
    static = cpu_bound_run(None, FakeClock())[2]
    assert throughput >= 0.95 * static, (throughput, static)


def test_azure_cpu_throttle_stops_a_cpu_bound_function_that_uses_its_cores() -> None:
    funcplane = cpu_bound_run(frozenset({"cpu"}), FakeClock())[2]
    manager, levels, azure = cpu_bound_run(frozenset(), FakeClock())
    # Azure's rule: full CPU is an overload and fetching pauses while it lasts: stop-go.
    assert azure < 0.9 * funcplane, (azure, funcplane)


def test_full_cpu_lets_a_function_grow_while_nothing_waits_for_a_core() -> None:
    # The cores are full (say, another function), but this one's latency does not grow with its
    # concurrency: no queue of its own, so full CPU alone does not hold it.
    clock = FakeClock()
    manager = ConcurrencyManager(ThrottleManager({"cpu": lambda: ThrottleState.ENABLED}, clock,
                                                 busy_only=frozenset({"cpu"})), clock)
    levels = run_closed_loop(manager, clock, lambda k: 0.05, 40)
    assert manager.throttles.get_status().busy and not manager.throttled()
    assert levels[-1] > 20, levels


def test_saturation_decreases_by_no_more_than_the_excess_queue() -> None:
    clock = FakeClock()
    manager = manager_with(lambda: ThrottleState.DISABLED, clock)
    status = manager.function("f")
    status.current = 12
    levels = []
    for second in range(40):
        # 20 completions a second: 100 ms each in the first window (the floor), then 250 ms, so
        # a window's queue estimate is L x (1 - W_min / W) = 5 x 0.6 = 3, one past the allowance.
        latency = 0.1 if second < 3 else 0.25
        for _ in range(20):
            status.started()
            clock.now += 0.05
            status.completed_one(latency)
        manager.get_status("f")
        levels.append(status.current)
    drops = [a - b for a, b in zip(levels, levels[1:]) if b < a]
    assert len(drops) >= 3, levels
    assert set(drops) == {1}, levels  # Azure's growing steps would take 1, 2, 3 ...
