"""Log tails for failure messages: what the operator and the pods said when a test failed.

Fixtures and helpers that start processes register a source (a title and a function returning
the log text) for the running test; the conftest hook appends the last lines of each to the
failure of that test, a timeout included, and forgets them when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable

TAIL_LINES = 40
_sources: list[tuple[str, Callable[[], str]]] = []


def register(title: str, read: Callable[[], str]) -> None:
    _sources.append((title, read))


def forget() -> None:
    _sources.clear()


def tails(lines: int = TAIL_LINES) -> list[tuple[str, str]]:
    found = []
    for title, read in _sources:
        try:
            text = read()
        except Exception as error:  # noqa: BLE001 - a broken source must not hide the failure
            text = f"(could not read: {error})"
        found.append((f"{title}: last {lines} lines", "\n".join(text.splitlines()[-lines:]) or "(empty)"))
    return found
