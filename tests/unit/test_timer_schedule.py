"""NCRONTAB and interval schedules of timer triggers (pure functions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from funcplane_host.timers.schedule import (
    ScheduleError,
    parse_schedule,
    resolve_setting_references,
    zone_named,
)

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("0 */5 * * * *", "2026-11-30T10:02:30", "2026-11-30T10:05:00"),
    ("*/15 * * * * *", "2026-11-30T10:00:14", "2026-11-30T10:00:15"),
    ("*/15 * * * * *", "2026-11-30T10:00:45", "2026-11-30T10:01:00"),
    ("*/15 * * * * *", "2026-11-30T10:00:15", "2026-11-30T10:00:30"),  # strictly after
    ("0 30 9 * * 1-5", "2026-11-28T12:00:00", "2026-11-30T09:30:00"),  # Saturday -> Monday
    ("0 0 0 29 2 *", "2027-03-01T00:00:00", "2028-02-29T00:00:00"),
    ("30 9 * * MON", "2026-11-25T00:00:00", "2026-11-30T09:30:00"),  # five fields: second 0
    ("0 0 12 1 JAN-MAR/2 *", "2026-01-02T00:00:00", "2026-03-01T12:00:00"),
    ("0 0 8 * * 7", "2026-11-30T09:00:00", "2026-12-06T08:00:00"),  # 7 is Sunday, like 0
    ("0 0 0 13 * FRI", "2026-01-01T00:00:00", "2026-02-13T00:00:00"),  # both day fields must match
    ("5,10 0 0 * * *", "2026-11-30T00:00:05", "2026-11-30T00:00:10"),
    ("10/20 * * * * *", "2026-11-30T00:00:31", "2026-11-30T00:00:50"),  # a/n: from a to the end
    ("0 59 23 31 12 *", "2026-12-31T23:59:00", "2027-12-31T23:59:00"),
])
def test_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert parse_schedule(expression).next_after(at(after)) == at(expected)


def test_interval_schedule_counts_from_the_given_moment() -> None:
    schedule = parse_schedule("00:00:05")
    assert schedule.next_after(at("2026-11-30T10:00:00")) == at("2026-11-30T10:00:05")
    assert parse_schedule("1.00:00:00").next_after(at("2026-11-30T10:00:00")) == at("2026-12-01T10:00:00")


def test_schedule_runs_in_the_configured_zone() -> None:
    berlin = zone_named("Europe/Berlin")
    moment = at("2026-11-30T07:00:00").astimezone(berlin)
    due = parse_schedule("0 0 9 * * *").next_after(moment)
    assert due.astimezone(UTC) == at("2026-11-30T08:00:00")  # 09:00 CET is 08:00 UTC
    assert zone_named(None) == UTC


@pytest.mark.parametrize(("expression", "message"), [
    ("", "schedule is empty"),
    ("* * * *", "has 4 fields; NCRONTAB needs six"),
    ("61 * * * * *", "second 61 is outside 0-59"),
    ("0 0 25 * * *", "hour 25 is outside 0-23"),
    ("0 0 0 * FOO *", "month field has 'FOO'"),
    ("0 0 0 10-2 * *", "day range '10-2' runs backwards"),
    ("*/0 * * * * *", "second step must be at least 1"),
    ("0 0 0 30 2 *", "never occurs"),
    ("0 0 0 ? * *", "day field '?' is not a value"),
    ("00:00:00", "must be longer than zero"),
    ("5:xx:00", "is not a time span"),
])
def test_bad_schedules_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("?", r"\?").replace("*", r"\*")):
        parse_schedule(expression)


def test_setting_references_resolve_from_app_settings() -> None:
    assert resolve_setting_references("%Every%", {"Every": "0 */5 * * * *"}) == "0 */5 * * * *"
    assert resolve_setting_references("0 0 * * * *", None) == "0 0 * * * *"
    with pytest.raises(ScheduleError, match="app setting %Missing%, which is not set"):
        resolve_setting_references("%Missing%", {})


def test_unknown_time_zone_is_named() -> None:
    with pytest.raises(ScheduleError, match="WEBSITE_TIME_ZONE='Mars/Olympus' is not a known time zone"):
        zone_named("Mars/Olympus")


def test_every_second_schedule_fires_every_second() -> None:
    schedule = parse_schedule("* * * * * *")
    moment = at("2026-11-30T10:00:00")
    for _ in range(3):
        following = schedule.next_after(moment)
        assert following - moment == timedelta(seconds=1)
        moment = following
