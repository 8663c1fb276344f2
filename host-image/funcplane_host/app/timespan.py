"""Parse .NET TimeSpan strings ("hh:mm:ss", "d.hh:mm:ss", "hh:mm:ss.fff") as used in host.json."""

from __future__ import annotations

import re

_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2}(?:\.\d+)?)$"
)


def timespan_seconds(text: str) -> float:
    """Seconds in `text`; ValueError saying what is wrong (the format, or a part out of range:
    hours 0-23, minutes and seconds 0-59, as .NET's TimeSpan requires)."""
    match = _TIMESPAN.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a time span; write it as hh:mm:ss, e.g. \"00:05:00\"")
    hours, minutes, seconds = int(match["hours"]), int(match["minutes"]), float(match["seconds"])
    if hours > 23 or minutes > 59 or seconds >= 60:
        raise ValueError(
            f"{text!r} is out of range; hours go up to 23, minutes and seconds up to 59 "
            "(write a day count for longer spans, e.g. \"1.00:00:00\")"
        )
    return int(match["days"] or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def parse_timespan(text: str, *, field_name: str) -> float:
    """Seconds in `text`; raises ValueError naming the field when the format is wrong."""
    try:
        return timespan_seconds(text)
    except ValueError as error:
        raise ValueError(f"{field_name}: {error}") from None
