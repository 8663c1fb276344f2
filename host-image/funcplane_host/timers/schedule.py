"""Timer schedules: NCRONTAB expressions and TimeSpan intervals, as a timerTrigger's `schedule`.

NCRONTAB has six fields, `{second} {minute} {hour} {day} {month} {day-of-week}`; the classic
five-field form (no seconds) is accepted too and fires at second 0. Like Azure's scheduler, a day
must match both the day-of-month and the day-of-week fields when both are restricted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from funcplane_host.app.timespan import parse_timespan

SEARCH_YEARS = 28  # weekday and leap-day patterns repeat every 28 years (1901-2099)


class ScheduleError(ValueError):
    """A schedule that cannot be parsed or never fires; the message says which part and why."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    aliases: tuple[str, ...] = ()


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    _Field("day-of-week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_ITEM = re.compile(r"^(?P<range>\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>\d+))?$")


class Schedule(Protocol):
    text: str

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (an aware datetime)."""
        ...


def _value(field: _Field, token: str, expression: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token.upper() in field.aliases:
        number = field.aliases.index(token.upper()) + field.low
    else:
        raise ScheduleError(f"schedule {expression!r}: {field.name} field has {token!r}, which is not a number"
                            + (f" or one of {', '.join(field.aliases)}" if field.aliases else ""))
    if field.name == "day-of-week" and number == 7:
        number = 0  # both 0 and 7 mean Sunday
    if not field.low <= number <= field.high:
        raise ScheduleError(f"schedule {expression!r}: {field.name} {number} is outside {field.low}-{field.high}")
    return number


def _parse_field(field: _Field, text: str, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise ScheduleError(f"schedule {expression!r}: {field.name} field {text!r} is not a value, range "
                                "(a-b), list (a,b) or step (*/n, a-b/n)")
        step = int(match["step"]) if match["step"] else 1
        if step == 0:
            raise ScheduleError(f"schedule {expression!r}: {field.name} step must be at least 1")
        span = match["range"]
        if span == "*":
            first, last = field.low, field.high
        elif "-" in span:
            start, end = span.split("-", 1)
            first, last = _value(field, start, expression), _value(field, end, expression)
            if last < first:
                raise ScheduleError(f"schedule {expression!r}: {field.name} range {span!r} runs backwards")
        else:
            first = _value(field, span, expression)
            last = field.high if match["step"] else first  # "a/n" means from a to the end, every n
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def _day_matches(self, moment: datetime) -> bool:
        return moment.day in self.days and (moment.weekday() + 1) % 7 in self.weekdays

    def next_after(self, moment: datetime) -> datetime:
        zone = moment.tzinfo
        # Walk local wall-clock time field by field, jumping whole units where a field cannot match.
        wall = moment.replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        limit = wall + timedelta(days=366 * SEARCH_YEARS)
        while wall < limit:
            if wall.month not in self.months:
                wall = (wall.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(wall):
                wall = wall.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if wall.hour not in self.hours:
                wall = wall.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if wall.minute not in self.minutes:
                wall = wall.replace(second=0) + timedelta(minutes=1)
                continue
            if wall.second not in self.seconds:
                wall += timedelta(seconds=1)
                continue
            return wall.replace(tzinfo=zone)
        raise ScheduleError(f"schedule {self.text!r} never occurs (no matching date within {SEARCH_YEARS} years)")


@dataclass(frozen=True)
class IntervalSchedule:
    """A constant interval (TimeSpan "hh:mm:ss"), counted from the previous run."""

    text: str
    seconds: float

    def next_after(self, moment: datetime) -> datetime:
        return moment + timedelta(seconds=self.seconds)


def parse_schedule(expression: str) -> Schedule:
    """A schedule from a timerTrigger's `schedule` value (already resolved from %AppSetting%)."""
    text = expression.strip() if isinstance(expression, str) else ""
    if not text:
        raise ScheduleError("schedule is empty; write an NCRONTAB expression such as \"0 */5 * * * *\"")
    parts = text.split()
    if len(parts) == 1 and ":" in text:
        try:
            seconds = parse_timespan(text, field_name="schedule")
        except ValueError as error:
            raise ScheduleError(str(error)) from None
        if seconds <= 0:
            raise ScheduleError(f"schedule {text!r}: the interval must be longer than zero")
        return IntervalSchedule(text, seconds)
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ScheduleError(
            f"schedule {text!r} has {len(parts)} fields; NCRONTAB needs six: "
            "{second} {minute} {hour} {day} {month} {day-of-week}, e.g. \"0 */5 * * * *\""
        )
    values = [_parse_field(field, part, text) for field, part in zip(_FIELDS, parts)]
    schedule = CronSchedule(text, *values)
    schedule.next_after(datetime(2000, 1, 1, tzinfo=timezone.utc))  # rejects schedules that never fire
    return schedule


def resolve_setting_references(value: str, settings: Mapping[str, str] | None) -> str:
    """Replace %Name% with the app setting Name, as binding expressions in function.json allow."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if settings is None or name not in settings:
            raise ScheduleError(f"schedule refers to app setting %{name}%, which is not set; add it to the "
                                "app's settings or write the expression directly")
        return settings[name]

    return re.sub(r"%([^%]+)%", lookup, value)


def zone_named(name: str | None) -> tzinfo:
    """The zone schedules run in: WEBSITE_TIME_ZONE (an IANA name such as Europe/Berlin) or UTC."""
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"WEBSITE_TIME_ZONE={name!r} is not a known time zone; use an IANA name such as "
                            "\"Europe/Berlin\", or unset it for UTC") from None
