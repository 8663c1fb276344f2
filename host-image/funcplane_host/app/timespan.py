"""Parse .NET TimeSpan strings ("hh:mm:ss", "d.hh:mm:ss", "hh:mm:ss.fff") as used in host.json."""

from __future__ import annotations

import re

_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2}(?:\.\d+)?)$"
)


def parse_timespan(text: str, *, field_name: str) -> float:
    """Seconds in `text`; raises ValueError naming the field when the format is wrong."""
    match = _TIMESPAN.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(
            f"{field_name}: {text!r} is not a time span; write it as hh:mm:ss, e.g. \"00:05:00\""
        )
    days = int(match["days"] or 0)
    return days * 86400 + int(match["hours"]) * 3600 + int(match["minutes"]) * 60 + float(match["seconds"])
