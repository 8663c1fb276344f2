"""Dynamic concurrency: Azure's per-function adjustment algorithm, plus a saturation signal.

Pure logic driven by an injected clock, so it is unit-tested with a fake one. The constants are
Azure's (azure-webjobs-sdk `ConcurrencyManager` / `ConcurrencyStatus`): every function starts at
1; the limit rises after 5 consecutive healthy throttle checks when the current limit was fully
used, falls after 3 consecutive throttled checks; adjustments are at least min(2 s + latency, 5 s)
apart, steps grow 1, 2, ... 6 while they keep one direction (a run resets after 10 s), and no
increase follows a decrease for min(10 s + 10 x latency, 30 s).

Beyond Azure:
- increases are clamped at the maximum (Azure can overshoot it by up to 5);
- a per-function *saturation* signal from Little's law: with `W_min` the lowest window-mean
  latency seen recently and `L` the window's average in-flight count (latency-seconds per
  second), the work not making progress is `q = L x (1 - W_min / W)`; the function is saturated
  when `q > max(2, sqrt(limit) / 2)`. Saturation blocks increases
  and, after 3 consecutive saturated windows, drives decreases for that function alone (by
  Azure's step, but never more than the queue past the allowance), so a
  function stuck on a slow downstream stops growing even when CPU is idle. It does not pause
  fetching (that is the host throttles' job).
- *busy* throttles (CPU and worker channel latency, when the saturation signal is on): a
  CPU-bound app that keeps its cores at full use (and its GIL-bound workers slow to answer) is
  doing its job, not overloaded, unless its latency grows. Such a throttle neither pauses
  fetching nor admissions below the limit, nor decreases by itself; it combines with the latency
  signal: while it is on, a function grows only as long as its queue estimate is at most half its
  allowance (more slots fill the gaps between one invocation and the next on a worker; past that
  they only wait for a core), and a function whose queue passes the allowance comes down through
  its saturation signal. Azure's algorithm alone (saturation off) keeps them full throttles.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

MIN_CONSECUTIVE_INCREASE = 5
MIN_CONSECUTIVE_DECREASE = 3
MAX_ADJUSTMENT_DELTA = 5
ADJUSTMENT_RUN_WINDOW = 10.0
MIN_ADJUSTMENT_GAP = 2.0
MAX_ADJUSTMENT_GAP = 5.0
FAILED_ADJUSTMENT_QUIET_WINDOW = 30.0
THROTTLE_EVALUATION_INTERVAL = 1.0
# Saturation: a window needs this many completions (or this long) to say anything.
SATURATION_MIN_COMPLETIONS = 8
SATURATION_MIN_WINDOW = 1.0
SATURATION_MAX_WINDOW = 5.0
MIN_LATENCY_MEMORY = 300.0  # W_min is the lowest window mean of the last 5 minutes
SATURATION_QUEUE_FLOOR = 2.0

Clock = Callable[[], float]


class ThrottleState(str, Enum):
    UNKNOWN = "Unknown"
    DISABLED = "Disabled"  # healthy: no throttle is on
    ENABLED = "Enabled"  # a throttle is on


@dataclass
class ThrottleStatus:
    state: ThrottleState = ThrottleState.UNKNOWN  # from the overload throttles (not the busy ones)
    consecutive: int = 0
    enabled: list[str] = field(default_factory=list)  # every throttle that is on, busy ones included
    busy: bool = False  # a busy-only throttle is on: no headroom, keep working


class ThrottleManager:
    """Aggregates throttle providers (name -> callable returning a ThrottleState) at most once a second.

    Providers named in `busy_only` say "no headroom" rather than "overloaded" (see the module doc).
    """

    def __init__(self, providers: dict[str, Callable[[], ThrottleState]], clock: Clock,
                 busy_only: frozenset[str] = frozenset()) -> None:
        self.providers = providers
        self.clock = clock
        self.busy_only = busy_only
        self.status = ThrottleStatus()
        self._evaluated_at: float | None = None

    def get_status(self) -> ThrottleStatus:
        now = self.clock()
        if self._evaluated_at is not None and now - self._evaluated_at < THROTTLE_EVALUATION_INTERVAL:
            return self.status
        self._evaluated_at = now
        results = {name: provider() for name, provider in self.providers.items()}
        enabled = sorted(name for name, state in results.items() if state is ThrottleState.ENABLED)
        busy = any(name in self.busy_only for name in enabled)
        if any(name not in self.busy_only for name in enabled):
            state = ThrottleState.ENABLED
        elif any(state is ThrottleState.UNKNOWN for state in results.values()):
            state = ThrottleState.UNKNOWN
        else:
            state = ThrottleState.DISABLED
        previous = self.status
        consecutive = previous.consecutive + 1 if state is previous.state else 0
        self.status = ThrottleStatus(state, consecutive, enabled, busy)
        return self.status


@dataclass
class SaturationWindow:
    """Completions since the window opened, for the Little's-law estimate."""

    opened_at: float
    completions: int = 0
    latency_sum: float = 0.0


class FunctionConcurrency:
    """One function's learned limit and the counters its adjustments use."""

    def __init__(self, name: str, clock: Clock, maximum: int, saturation_enabled: bool = True) -> None:
        self.name = name
        self.clock = clock
        self.maximum = maximum  # -1: unbounded
        self.saturation_enabled = saturation_enabled
        self.current = 1
        self.outstanding = 0
        self.queued = 0  # callers waiting for a slot (HTTP admission)
        now = clock()
        self._last_adjustment = now
        self._last_decrease: float | None = None
        self._run_length = 0
        self._run_direction = 0
        self.max_outstanding_since_adjustment = 0
        self._completions_since_adjustment = 0
        self._latency_since_adjustment = 0.0
        # totals for reporting
        self.completed = 0
        self._recent: deque[tuple[float, float]] = deque()  # (finished at, latency), last 10 s
        # saturation
        self._window = SaturationWindow(now)
        self._window_means: deque[tuple[float, float]] = deque()  # (at, mean latency)
        self.saturated = False
        self.saturated_consecutive = 0
        self.queue_estimate = 0.0
        self.adjustments = 0

    # ---- invocation events --------------------------------------------------------------

    def started(self) -> None:
        self.outstanding += 1
        if self.outstanding > self.max_outstanding_since_adjustment:
            self.max_outstanding_since_adjustment = self.outstanding

    def completed_one(self, latency: float) -> None:
        self.outstanding -= 1
        self.completed += 1
        self._completions_since_adjustment += 1
        self._latency_since_adjustment += latency
        window = self._window
        window.completions += 1
        window.latency_sum += latency
        now = self.clock()
        recent = self._recent
        recent.append((now, latency))
        while recent and now - recent[0][0] > 10.0:
            recent.popleft()

    # ---- reporting ----------------------------------------------------------------------

    @property
    def average_latency(self) -> float:
        """Mean latency of the completions since the last adjustment (Azure's basis for its gaps)."""
        count = self._completions_since_adjustment
        return self._latency_since_adjustment / count if count else 0.0

    def completions_per_second(self, span: float = 10.0) -> float:
        now = self.clock()
        count = sum(1 for at, _ in self._recent if now - at <= span)
        return count / span

    def recent_latency(self, quantile: float | None = None) -> float:
        """Mean (or the given quantile of) the latencies of the last 10 s."""
        recent = self._recent
        if not recent:
            return 0.0
        if quantile is None:
            return sum(latency for _, latency in recent) / len(recent)
        ordered = sorted(latency for _, latency in recent)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    @property
    def minimum_latency(self) -> float | None:
        return min((mean for _, mean in self._window_means), default=None)

    # ---- adjustment ---------------------------------------------------------------------

    def can_adjust(self) -> bool:
        if self._completions_since_adjustment == 0:
            gap = MAX_ADJUSTMENT_GAP
        else:
            gap = min(MIN_ADJUSTMENT_GAP + self.average_latency, MAX_ADJUSTMENT_GAP)
        return self.clock() - self._last_adjustment >= gap

    def can_increase(self) -> bool:
        if self._last_decrease is not None:
            quiet = min(10.0 + 10.0 * self.average_latency, FAILED_ADJUSTMENT_QUIET_WINDOW)
            if self.clock() - self._last_decrease < quiet:
                return False
        if self.max_outstanding_since_adjustment < self.current:
            return False  # the current limit was not fully used: more would not help
        return self.maximum == -1 or self.current < self.maximum

    def next_delta(self, direction: int) -> int:
        now = self.clock()
        if direction != self._run_direction or now - self._last_adjustment > ADJUSTMENT_RUN_WINDOW:
            self._run_length = 0
        delta = direction * (1 + min(MAX_ADJUSTMENT_DELTA, self._run_length))
        self._run_length += 1
        self._run_direction = direction
        return delta

    def adjust(self, direction: int, most: int | None = None) -> None:
        """Step in `direction` by Azure's run-length rule, by at most `most` when given."""
        delta = self.next_delta(direction)
        if most is not None:
            delta = direction * min(abs(delta), max(1, most))
        target = max(1, self.current + delta)
        if self.maximum != -1:
            target = min(target, self.maximum)  # clamp: never learn past the maximum
        self.current = target
        now = self.clock()
        self._last_adjustment = now
        if direction < 0:
            self._last_decrease = now
        self.max_outstanding_since_adjustment = self.outstanding
        self._completions_since_adjustment = 0
        self._latency_since_adjustment = 0.0
        self.adjustments += 1
        # A new level starts a new saturation window (its latency belongs to the old level).
        self._window = SaturationWindow(now)
        self.saturated_consecutive = 0

    def apply_learned(self, level: int) -> None:
        """Start at a learned level (a snapshot); only ever raises the starting point."""
        if level > self.current:
            self.current = level if self.maximum == -1 else min(level, self.maximum)

    # ---- saturation ---------------------------------------------------------------------

    def evaluate_saturation(self) -> None:
        """Close the current window if it has enough data and update the saturated flag."""
        if not self.saturation_enabled:
            return
        now = self.clock()
        window = self._window
        span = now - window.opened_at
        if span < SATURATION_MIN_WINDOW or (
                window.completions < SATURATION_MIN_COMPLETIONS and span < SATURATION_MAX_WINDOW):
            return
        self._window = SaturationWindow(now)
        if window.completions < SATURATION_MIN_COMPLETIONS or span <= 0:
            self.saturated, self.saturated_consecutive, self.queue_estimate = False, 0, 0.0
            return
        mean = window.latency_sum / window.completions
        means = self._window_means
        means.append((now, mean))
        while means and now - means[0][0] > MIN_LATENCY_MEMORY:
            means.popleft()
        floor = min(m for _, m in means)
        in_flight = window.latency_sum / span  # Little's law: average concurrency in the window
        self.queue_estimate = in_flight * (1.0 - floor / mean) if mean > 0 else 0.0
        # Judged on the concurrency actually reached (L), not on whether the limit was full: a
        # function whose callers or fetches keep it below its limit can still be past its knee.
        saturated = self.queue_estimate > self.allowance
        self.saturated_consecutive = self.saturated_consecutive + 1 if saturated else 0
        self.saturated = saturated

    @property
    def allowance(self) -> float:
        """The queue a function may build before it counts as saturated."""
        return max(SATURATION_QUEUE_FLOOR, math.sqrt(self.current) / 2.0)

    def forget_minimum_latency(self) -> None:
        self._window_means.clear()


class ConcurrencyManager:
    """Per-function limits under one set of host throttles."""

    def __init__(self, throttles: ThrottleManager, clock: Clock, *, maximum: int = 500,
                 saturation_enabled: bool = True) -> None:
        self.throttles = throttles
        self.clock = clock
        self.maximum = maximum
        self.saturation_enabled = saturation_enabled
        self.functions: dict[str, FunctionConcurrency] = {}

    def function(self, name: str, maximum: int | None = None) -> FunctionConcurrency:
        status = self.functions.get(name)
        if status is None:
            cap = self.maximum if maximum is None else (maximum if self.maximum == -1 else min(maximum, self.maximum))
            status = self.functions[name] = FunctionConcurrency(name, self.clock, cap, self.saturation_enabled)
        return status

    def get_status(self, name: str) -> FunctionConcurrency:
        """Azure's GetStatus: adjust the function's limit if it is time to."""
        status = self.function(name)
        if not status.can_adjust():
            return status
        status.evaluate_saturation()
        throttle = self.throttles.get_status()
        if throttle.state is ThrottleState.ENABLED:
            if throttle.consecutive >= MIN_CONSECUTIVE_DECREASE and status.current > 1:
                status.adjust(-1)
            return status
        if status.saturated:
            if status.saturated_consecutive >= MIN_CONSECUTIVE_DECREASE and status.current > 1:
                # Remove the queue past the allowance, no more: Azure's growing steps (1, 2, 3 ...)
                # would cut a CPU-bound function from just past its knee to 1.
                status.adjust(-1, most=round(status.queue_estimate - status.allowance))
            return status
        if throttle.busy and status.queue_estimate > status.allowance / 2:
            return status  # no spare cores and invocations begin to wait for one: hold
        if (throttle.state is ThrottleState.DISABLED and throttle.consecutive >= MIN_CONSECUTIVE_INCREASE
                and status.can_increase()):
            status.adjust(+1)
        return status

    def throttled(self) -> bool:
        """An overload throttle is on: fetch nothing, admit nothing (busy-only throttles do not count)."""
        return self.throttles.get_status().state is ThrottleState.ENABLED

    def available(self, name: str, pending: int) -> int:
        """How many new invocations the function may start now (0 while the host is throttled)."""
        status = self.get_status(name)
        pending = max(pending, status.outstanding)
        if self.throttled() or pending >= status.current:
            return 0
        return status.current - pending

    def snapshot(self) -> dict[str, int]:
        return {name: status.current for name, status in self.functions.items()}

    def apply_snapshot(self, levels: dict[str, int], snapshot_cores: int, cores: int) -> dict[str, int]:
        """Azure's rule: scale by the core ratio, skip levels above the maximum, only raise."""
        applied = {}
        for name, level in levels.items():
            if snapshot_cores and cores and snapshot_cores != cores:
                level = max(1, int(cores * level / snapshot_cores))
            if self.maximum != -1 and level > self.maximum:
                continue
            status = self.function(name)
            status.apply_learned(level)
            applied[name] = status.current
        return applied
