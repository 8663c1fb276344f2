"""Host throttle signals for dynamic concurrency, each sampled by a small asyncio task.

- CPU of the host process and its worker processes (Azure's HostHealthThrottleProvider): a
  sample a second from /proc, 10 kept, the verdict needs 5 and compares their mean with
  `cpuThreshold` x 100 % of the effective cores (CPU affinity, capped by a cgroup v2 quota).
- Event-loop lag (the analogue of Azure's thread-pool starvation canary): a tick every 100 ms;
  more than half the expected ticks missed since the last check means the loop is starved.
- Worker channel latency (Azure left this one as a stub): a WorkerStatusRequest round trip per
  worker each second, 6 kept per worker; throttled when 30 % or more took 100 ms or longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from funcplane_host.concurrency.manager import ThrottleState

CPU_SAMPLE_INTERVAL = 1.0
CPU_HISTORY = 10
CPU_MIN_SAMPLES = 5
LOOP_TICK = 0.1
LOOP_FAILURE_THRESHOLD = 0.5
CHANNEL_SAMPLE_INTERVAL = 1.0
CHANNEL_HISTORY = 6
CHANNEL_SLOW = 0.1
CHANNEL_SLOW_SHARE = 0.3
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def effective_cores() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, round(int(quota) / int(period))))
    return max(1, cores)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuThrottle:
    def __init__(self, pids: Callable[[], Iterable[int]], threshold: float, cores: int) -> None:
        self.pids = pids
        self.threshold = threshold
        self.cores = cores
        self.samples: deque[float] = deque(maxlen=CPU_HISTORY)
        self._previous: dict[int, float] = {}
        self._previous_at: float | None = None

    def sample(self) -> None:
        now = time.monotonic()
        current: dict[int, float] = {}
        used = 0.0
        for pid in set(self.pids()):
            seconds = process_cpu_seconds(pid)
            if seconds is None:
                continue
            current[pid] = seconds
            if pid in self._previous:
                used += max(0.0, seconds - self._previous[pid])
        if self._previous_at is not None and now > self._previous_at:
            self.samples.append(min(100.0, 100.0 * used / (self.cores * (now - self._previous_at))))
        self._previous, self._previous_at = current, now

    @property
    def load(self) -> float | None:
        if len(self.samples) < CPU_MIN_SAMPLES:
            return None
        recent = list(self.samples)[-CPU_MIN_SAMPLES:]
        return sum(recent) / len(recent)

    def state(self) -> ThrottleState:
        load = self.load
        if load is None:
            return ThrottleState.UNKNOWN
        return ThrottleState.ENABLED if round(load) >= 100 * self.threshold else ThrottleState.DISABLED


class LoopLagThrottle:
    def __init__(self) -> None:
        self.ticks = 0
        self._checked_at = time.monotonic()
        self._ticks_at_check = 0
        self.missed_share = 0.0

    def tick(self) -> None:
        self.ticks += 1

    def state(self) -> ThrottleState:
        now = time.monotonic()
        expected = (now - self._checked_at) / LOOP_TICK
        if expected < 5:
            return ThrottleState.DISABLED if self.missed_share <= LOOP_FAILURE_THRESHOLD else ThrottleState.ENABLED
        seen = self.ticks - self._ticks_at_check
        self.missed_share = max(0.0, 1.0 - seen / expected)
        self._checked_at, self._ticks_at_check = now, self.ticks
        return ThrottleState.ENABLED if self.missed_share > LOOP_FAILURE_THRESHOLD else ThrottleState.DISABLED


class ChannelLatencyThrottle:
    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {}

    def record(self, worker_id: str, seconds: float) -> None:
        self.samples.setdefault(worker_id, deque(maxlen=CHANNEL_HISTORY)).append(seconds)

    def forget_others(self, live: set[str]) -> None:
        for worker_id in set(self.samples) - live:
            del self.samples[worker_id]

    def state(self) -> ThrottleState:
        values = [s for samples in self.samples.values() for s in samples]
        if not values:
            return ThrottleState.DISABLED  # no worker that answers status requests: no signal
        slow = sum(1 for s in values if s >= CHANNEL_SLOW)
        return ThrottleState.ENABLED if slow / len(values) >= CHANNEL_SLOW_SHARE else ThrottleState.DISABLED


async def run_every(interval: float, action: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(interval)
        result = action()
        if asyncio.iscoroutine(result):
            await result
