"""The scaler's decisions on a fake clock: demand read from host reports, stable and panic
windows, tolerance, delayed and bounded scale-in, bounds, queues, a fresh scaler's caution."""

from __future__ import annotations

import pytest

from funcplane.api.functionapp import FunctionAppSpec
from funcplane.scale.decide import PANIC, STABLE, Autoscaler, Settings, settings_for
from funcplane.scale.demand import HTTP, QUEUE, FunctionLoad, loads

TICK = 2.0


def http_report(in_flight: int, queued: int = 0, limit: int = 4, name: str = "api") -> dict:
    return {"functions": {name: {"trigger": "http", "concurrency": limit, "inFlight": in_flight, "queued": queued}}}


def run(scaler: Autoscaler, start: float, seconds: float, load: list[FunctionLoad], replicas: int,
        changes: list[tuple[float, int]] | None = None) -> tuple[float, int]:
    """Tick every 2 s for `seconds`, applying each decision at once; returns (time, replicas)."""
    now = start
    while now < start + seconds:
        now += TICK
        scaler.record(now, load)
        decision = scaler.decide(now, replicas, replicas)
        if decision.desired != replicas and changes is not None:
            changes.append((now, decision.desired))
        replicas = decision.desired
    return now, replicas


def test_loads_sum_http_over_pods_and_read_a_queue_once() -> None:
    reports = [
        {"functions": {"api": {"trigger": "http", "concurrency": 4, "inFlight": 3, "queued": 2},
                       "orders": {"trigger": "queue", "concurrency": 10, "inFlight": 10, "backlog": 500}}},
        {"functions": {"api": {"trigger": "http", "concurrency": 6, "inFlight": 4, "queued": 0},
                       "orders": {"trigger": "queue", "concurrency": 20, "inFlight": 20, "backlog": 480}}},
    ]
    by_name = {load.name: load for load in loads(reports, target_concurrency=100, utilization=0.5)}
    assert by_name["api"] == FunctionLoad("api", HTTP, 9.0, 2.5)  # (4 + 6) / 2 x 0.5
    # The queue's length is shared: the largest report, over the mean learned concurrency.
    assert by_name["orders"] == FunctionLoad("orders", QUEUE, 500.0, 15.0)


def test_any_entry_with_a_backlog_is_queue_demand_and_unbounded_http_uses_the_target() -> None:
    reports = [{"functions": {"hub": {"trigger": "durable", "concurrency": -1, "inFlight": 1, "backlog": 30},
                              "api": {"trigger": "http", "concurrency": -1, "inFlight": 7, "queued": 0},
                              "broken": "not an object"}}, {}, {"functions": None}]
    by_name = {load.name: load for load in loads(reports, target_concurrency=10, utilization=0.7)}
    assert by_name["hub"].metric == QUEUE and by_name["hub"].demand == 30 and by_name["hub"].per_pod == 10
    assert by_name["api"].metric == HTTP and by_name["api"].per_pod == pytest.approx(7.0)
    assert set(by_name) == {"hub", "api"}


def test_queue_length_read_by_the_operator_counts_when_no_pod_reports() -> None:
    [load] = loads([], target_concurrency=16, utilization=0.7, queue_lengths={"orders": 2000})
    assert load == FunctionLoad("orders", QUEUE, 2000.0, 16.0)


def test_a_step_load_panics_and_scales_out_on_the_first_tick() -> None:
    scaler = Autoscaler(Settings(max_replicas=10), started=0.0)
    now, replicas = run(scaler, 0.0, 120, loads([http_report(1)], target_concurrency=100, utilization=0.7), 1)
    assert replicas == 1
    # 16 / 2.8 = 5.7 pods: the first reading after the step lifts the 6 s window (3 readings) to
    # (1 + 1 + 16) / 3 / 2.8 = 2.1 pods, over twice the one ready pod: panic at once.
    step = loads([http_report(16)], target_concurrency=100, utilization=0.7)
    scaler.record(now + TICK, step)
    decision = scaler.decide(now + TICK, 1, 1)
    assert (decision.desired, decision.mode, decision.function, decision.metric) == (3, PANIC, "api", HTTP)
    assert "panic" in decision.reason
    # The next readings follow the window up; panic never scales in.
    replicas = decision.desired
    for tick in (2, 3):
        scaler.record(now + tick * TICK, step)
        replicas = scaler.decide(now + tick * TICK, replicas, replicas).desired
    assert replicas == 6


def test_steady_noisy_load_never_flaps() -> None:
    scaler = Autoscaler(Settings(max_replicas=10), started=0.0)
    changes: list[tuple[float, int]] = []
    replicas, now = 3, 0.0
    for tick in range(450):  # 15 minutes; in-flight 6..10 around 8 (2.86 pods at 2.8 a pod)
        now += TICK
        in_flight = 8 + (-2, 1, 2, -1, 0, 2, -2)[tick % 7]
        scaler.record(now, loads([http_report(in_flight)], target_concurrency=100, utilization=0.7))
        decision = scaler.decide(now, replicas, replicas)
        if decision.desired != replicas:
            changes.append((now, decision.desired))
            replicas = decision.desired
    assert changes == []
    assert replicas == 3


def test_without_windows_the_same_noise_flaps() -> None:
    # The control: 2 s windows, no delay, no tolerance margin to speak of -> the noise moves replicas.
    scaler = Autoscaler(Settings(max_replicas=10, stable_window=2.1, panic_window=2.0, scale_down_delay=0,
                                 max_scale_down_rate=100), started=-1000.0)
    replicas, changes, now = 3, 0, 0.0
    for tick in range(60):
        now += TICK
        in_flight = 8 + (-2, 1, 2, -1, 0, 2, -2)[tick % 7]
        scaler.record(now, loads([http_report(in_flight)], target_concurrency=100, utilization=0.7))
        decision = scaler.decide(now, replicas, replicas)
        changes += decision.desired != replicas
        replicas = decision.desired
    assert changes > 5


def test_scale_in_waits_for_the_delay_and_is_bounded_per_step() -> None:
    scaler = Autoscaler(Settings(max_replicas=20), started=0.0)
    heavy = loads([http_report(40)], target_concurrency=100, utilization=0.7)  # 14.3 -> 15 pods
    now, replicas = run(scaler, 0.0, 120, heavy, 1)
    assert replicas == 15
    changes: list[tuple[float, int]] = []
    idle = loads([http_report(0)], target_concurrency=100, utilization=0.7)
    end, replicas = run(scaler, now, 300, idle, replicas, changes)
    assert replicas == 1
    first_in = changes[0][0] - now
    # Not before the panic's stable window plus the delay of the stable window's tail.
    assert first_in >= 60
    # Each step keeps at least half: 15 -> >= 7 -> >= 3 -> >= 1.
    counts = [15] + [count for _, count in changes]
    assert all(after >= before // 2 for before, after in zip(counts, counts[1:])), counts


def test_bounds_and_the_plan_ceiling() -> None:
    spec = FunctionAppSpec.model_validate({"runtime": {"name": "python"}, "code": {"configMap": {"name": "c"}},
                                           "plan": "dedicated", "scale": {"minReplicas": 2, "maxReplicas": 30,
                                                                          "autoscale": {"enabled": True}}})
    settings = settings_for(spec)
    assert (settings.min_replicas, settings.max_replicas, settings.stable_window, settings.panic_threshold) == \
        (2, 30, 60.0, 2.0)
    scaler = Autoscaler(settings, started=0.0)
    scaler.record(2.0, loads([http_report(1000)], target_concurrency=100, utilization=0.7))
    decision = scaler.decide(2.0, 2, 2)
    assert decision.desired == 30 and "bounded to 30" in decision.reason
    quiet = Autoscaler(settings, started=-1000.0)
    _, replicas = run(quiet, 0.0, 400, loads([http_report(0)], target_concurrency=100, utilization=0.7), 5)
    assert replicas == 2


def test_http_keeps_one_pod_queues_scale_to_zero_and_back() -> None:
    http = Autoscaler(Settings(min_replicas=0, max_replicas=4), started=-1000.0)
    _, replicas = run(http, 0.0, 400, loads([http_report(0)], target_concurrency=100, utilization=0.7), 2)
    assert replicas == 1
    queue = Autoscaler(Settings(min_replicas=0, max_replicas=4), started=-1000.0)
    report = {"functions": {"orders": {"trigger": "queue", "concurrency": 16, "inFlight": 0, "backlog": 0}}}
    now, replicas = run(queue, 0.0, 400, loads([report], target_concurrency=100, utilization=0.7), 2)
    assert replicas == 0
    # No pods: the operator's own reading of the queue (2000 messages / 16 a pod, the concurrency the
    # pods last reported) brings it back at once.
    assert queue.last_per_pod() == {"orders": 16.0}
    backlog = loads([], target_concurrency=100, utilization=0.7, queue_lengths={"orders": 2000},
                    known_limits=queue.last_per_pod())
    assert backlog[0].per_pod == 16.0
    queue.record(now + TICK, backlog)
    decision = queue.decide(now + TICK, 0, 0)
    assert (decision.desired, decision.mode, decision.metric) == (4, PANIC, QUEUE)


def test_an_instance_no_pod_has_reported_gets_one_pod_to_learn_its_functions() -> None:
    # A queue app created at 0 replicas: nothing to read, no queue recorded. It gets one pod, whose
    # report names the queue; once idle and known, it goes back to zero.
    scaler = Autoscaler(Settings(min_replicas=0, max_replicas=4), started=-1000.0)
    scaler.record(2.0, [])
    decision = scaler.decide(2.0, 0, 0)
    assert decision.desired == 1 and "until a pod reports the functions" in decision.reason
    report = {"functions": {"orders": {"trigger": "queue", "concurrency": 16, "inFlight": 0, "backlog": 0}}}
    _, replicas = run(scaler, 2.0, 400, loads([report], target_concurrency=100, utilization=0.7), 1)
    assert replicas == 0


def test_the_most_demanding_function_decides() -> None:
    scaler = Autoscaler(Settings(max_replicas=10), started=0.0)
    report = {"functions": {"light": {"trigger": "http", "concurrency": 50, "inFlight": 10},
                            "heavy": {"trigger": "http", "concurrency": 2, "inFlight": 6}}}
    scaler.record(2.0, loads([report], target_concurrency=100, utilization=1.0))
    decision = scaler.decide(2.0, 3, 3)
    assert (decision.function, decision.desired, decision.mode) == ("heavy", 3, STABLE)


def test_a_fresh_scaler_does_not_scale_in_before_one_stable_window() -> None:
    # A new leader: demand fell meanwhile, but its windows are empty; it keeps the count for 60 s.
    scaler = Autoscaler(Settings(max_replicas=10, scale_down_delay=0), started=100.0)
    idle = loads([http_report(0)], target_concurrency=100, utilization=0.7)
    changes: list[tuple[float, int]] = []
    run(scaler, 100.0, 90, idle, 6, changes)
    assert changes and changes[0][0] >= 160.0


def test_settings_refuse_bad_bounds() -> None:
    with pytest.raises(ValueError, match="minReplicas 5 must be within 0..maxReplicas 2"):
        Settings(min_replicas=5, max_replicas=2)


def test_queue_sources_and_setting_references() -> None:
    from funcplane.scale.demand import QueueSource, queue_sources, resolve_setting_references

    reports = [{"functions": {"orders": {"trigger": "queue", "queueName": "%Q%-in", "connection": "Storage"},
                              "other": {"trigger": "queue", "queueName": "plain"},
                              "api": {"trigger": "http"}}}]
    assert queue_sources(reports) == {"orders": QueueSource("%Q%-in", "Storage"),
                                      "other": QueueSource("plain", "AzureWebJobsStorage")}
    assert resolve_setting_references("%Q%-in", {"Q": "Orders"}) == "orders-in"
    with pytest.raises(ValueError, match="app setting 'Q' is not set"):
        resolve_setting_references("%Q%", {})
    with pytest.raises(ValueError, match="unbalanced %"):
        resolve_setting_references("%Q", {"Q": "x"})


def test_a_new_role_restarts_the_windows() -> None:
    # A swap moved the instance to production: its idle readings as staging must not scale it in.
    scaler = Autoscaler(Settings(max_replicas=10, scale_down_delay=0), started=0.0)
    scaler.role = "staging"
    run(scaler, 0.0, 120, loads([http_report(0)], target_concurrency=100, utilization=0.7), 4)
    scaler.restart(122.0, "production")
    assert scaler.role == "production" and not scaler.series
    changes: list[tuple[float, int]] = []
    run(scaler, 122.0, 30, loads([http_report(0)], target_concurrency=100, utilization=0.7), 4, changes)
    assert changes == []  # idle, but less than one stable window since the new role
