"""Replicas from demand: Knative's KPA windows with HPA's tolerance and Azure's queue formula.

Every tick (2 s) each function's demand is recorded. The stable window (60 s) averages it for the
normal decision; the panic window (6 s) reacts to a step: when it asks for at least the panic
threshold (2x) of the ready pods, the scaler panics, scales on the short window and never scales
in until a whole stable window has passed without a panic-level reading. The most demanding
function decides. A decision within 10 % of the current count keeps it (no flapping on noise);
scale-in waits for the delay (the highest count wanted over the last 60 s wins) and keeps at least
current / maxScaleDownRate pods per step. A scaler that just started (a new leader) has empty
windows, so it does not scale in before one stable window of its own readings.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from funcplane.api.functionapp import PLAN_MAX_REPLICAS, FunctionAppSpec

from .demand import HTTP, FunctionLoad, QueueSource

TOLERANCE = 0.1  # as HPA's default --horizontal-pod-autoscaler-tolerance
STABLE = "stable"
PANIC = "panic"


@dataclass(frozen=True)
class Settings:
    min_replicas: int = 1
    max_replicas: int = 10
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    scale_down_delay: float = 60.0
    max_scale_down_rate: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} must be within 0..maxReplicas {self.max_replicas}")
        if not 0 < self.panic_window < self.stable_window:
            raise ValueError("panic window must be positive and shorter than the stable window")


def settings_for(spec: FunctionAppSpec) -> Settings:
    """The decision constants of an app: its autoscale fields, bounds and plan ceiling."""
    auto = spec.scale.autoscale
    ceiling = min(spec.scale.max_replicas, PLAN_MAX_REPLICAS[spec.plan])
    return Settings(min_replicas=min(spec.scale.min_replicas, ceiling), max_replicas=ceiling,
                    stable_window=float(auto.stable_window_seconds), panic_window=float(auto.panic_window_seconds),
                    panic_threshold=auto.panic_threshold_percent / 100.0,
                    scale_down_delay=float(auto.scale_down_delay_seconds),
                    max_scale_down_rate=auto.max_scale_down_rate)


@dataclass(frozen=True)
class Decision:
    desired: int
    function: str
    metric: str
    value: float  # the averaged demand that decided
    mode: str
    reason: str


@dataclass
class _Series:
    metric: str
    samples: deque[tuple[float, float, float]] = field(default_factory=deque)  # (time, demand, per pod)

    def average(self, now: float, window: float) -> tuple[float, float] | None:
        """(mean demand, mean per-pod capacity) over the readings of the last `window` seconds."""
        chosen = [(d, p) for t, d, p in self.samples if t > now - window]
        if not chosen:
            return None
        return sum(d for d, _ in chosen) / len(chosen), sum(p for _, p in chosen) / len(chosen)


@dataclass(frozen=True)
class _Busiest:
    pods: float
    function: str
    metric: str
    demand: float


def pods_for(demand: float, per_pod: float) -> float:
    return demand / per_pod if per_pod > 0 else 0.0


class Autoscaler:
    """The decision state of one instance. Pure: time comes in with every call."""

    def __init__(self, settings: Settings, started: float) -> None:
        self.settings = settings
        self.started = started
        self.series: dict[str, _Series] = {}
        self.panic_until: float | None = None  # panicking while now < panic_until
        self.panic_floor = 0
        self.wanted: deque[tuple[float, int]] = deque()  # (time, count wanted before the delay)
        self.queues: dict[str, QueueSource] = {}  # queue functions' sources, for reading with no pod
        self.role = ""  # the slot the instance serves: its load moves with a swap

    def restart(self, now: float, role: str) -> None:
        """A new role (a swap moved the instance to another slot): its readings are history, so the
        windows start empty and, as for a fresh scaler, no scale-in before one stable window."""
        self.series.clear()
        self.wanted.clear()
        self.panic_until, self.panic_floor = None, 0
        self.started, self.role = now, role

    def _busiest(self, now: float, window: float) -> _Busiest:
        """The function asking for the most pods on this window's averages."""
        best = _Busiest(0.0, "", "", 0.0)
        for name, series in sorted(self.series.items()):
            averaged = series.average(now, window)
            if averaged is not None:
                pods = pods_for(*averaged)
                if pods > best.pods or not best.function:
                    best = _Busiest(pods, name, series.metric, averaged[0])
        return best

    def last_per_pod(self) -> dict[str, float]:
        """Each queue-like function's per-pod concurrency last recorded (for reading with no pod)."""
        return {name: series.samples[-1][2] for name, series in self.series.items()
                if series.metric != HTTP and series.samples}

    def record(self, now: float, loads: list[FunctionLoad]) -> None:
        seen = set()
        for load in loads:
            series = self.series.setdefault(load.name, _Series(load.metric))
            series.metric = load.metric
            series.samples.append((now, load.demand, load.per_pod))
            seen.add(load.name)
        # A function no pod reports any more (scaled to zero, removed) counts as no demand.
        for name, series in self.series.items():
            if name not in seen:
                last_per_pod = series.samples[-1][2] if series.samples else 1.0
                series.samples.append((now, 0.0, last_per_pod))
        horizon = now - max(self.settings.stable_window, self.settings.scale_down_delay)
        for series in self.series.values():
            while series.samples and series.samples[0][0] <= horizon:
                series.samples.popleft()

    def decide(self, now: float, current: int, ready: int) -> Decision:
        """The replica count for an instance with `current` replicas of which `ready` were read."""
        s = self.settings
        stable, panic = self._busiest(now, s.stable_window), self._busiest(now, s.panic_window)
        has_http = any(series.metric == HTTP for series in self.series.values())

        over_panic = panic.pods > 0 and (ready == 0 or panic.pods / ready >= s.panic_threshold)
        if over_panic:
            if self.panic_until is None:
                self.panic_floor = current
            self.panic_until = now + s.stable_window
        elif self.panic_until is not None and now >= self.panic_until:
            self.panic_until, self.panic_floor = None, 0

        if self.panic_until is not None:
            pods, function, metric, value = panic.pods, panic.function, panic.metric, panic.demand
            mode = PANIC
            wanted = max(math.ceil(pods), self.panic_floor, current)  # never scale in while panicking
            self.panic_floor = wanted
            reason = f"panic: {function} {metric} demand {value:.1f} over {s.panic_window:g}s asks {pods:.2f} pods"
        else:
            pods, function, metric, value = stable.pods, stable.function, stable.metric, stable.demand
            mode = STABLE
            wanted = math.ceil(pods)
            if current > 0 and abs(pods / current - 1.0) <= TOLERANCE:
                wanted = current  # within tolerance: keep
            reason = f"{function} {metric} demand {value:.1f} over {s.stable_window:g}s asks {pods:.2f} pods" \
                if function else "no demand reported"

        # Scale-in waits for the delay: the highest count wanted over it wins.
        self.wanted.append((now, wanted))
        while self.wanted and self.wanted[0][0] <= now - s.scale_down_delay:
            self.wanted.popleft()
        desired = max(count for _, count in self.wanted) if s.scale_down_delay > 0 else wanted
        if desired < current:
            if now - self.started < s.stable_window:
                desired = current  # a fresh scaler's windows are too short to scale in on
                reason += "; no scale-in before one stable window of readings"
            else:
                desired = max(desired, math.floor(current / s.max_scale_down_rate))
        # HTTP keeps a pod to answer; an instance whose functions no pod has reported yet (created at
        # 0 replicas, or a new leader with nothing recorded) keeps one so that its queues become known.
        learning = not self.series and not self.queues
        floor = max(s.min_replicas, 1) if has_http or learning else s.min_replicas
        bounded = min(max(desired, floor), s.max_replicas)
        if bounded != desired:
            why = "one pod until a pod reports the functions" if learning and bounded == floor else \
                f"bounded to {bounded} (min {floor}, max {s.max_replicas})"
            reason += f"; {why}"
        return Decision(bounded, function, metric, round(value, 3), mode, reason)
