"""Small helpers shared by the test suites."""

from __future__ import annotations

import json
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def eventually(probe: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> T:
    """Poll until `probe` returns a truthy value and return it; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def json_lines(path: Path) -> list[Any]:
    """The records of a JSON-lines file that test functions append to (none while it is missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
