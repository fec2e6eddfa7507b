"""Cron schedules: parsing, and the slots they fire at across daylight-saving changes (Debian cron's rules)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.errors import ValidationFailed
from app.schedules import Schedule, parse


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def slots(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    found, cursor = [], start
    for _ in range(count):
        cursor = schedule.next_after(cursor)
        found.append(cursor)
    return found


@pytest.mark.parametrize("value, field", [
    ("*/5 * * * *", "schedule"),
    ({}, "schedule.cron"),
    ({"cron": 5}, "schedule.cron"),
    ({"cron": "* * * * * *"}, "schedule.cron"),  # 6 fields (seconds): refused
    ({"cron": "* * * *"}, "schedule.cron"),
    ({"cron": "@daily"}, "schedule.cron"),
    ({"cron": "61 * * * *"}, "schedule.cron"),
    ({"cron": "*/0 * * * *"}, "schedule.cron"),
    ({"cron": "0 0 30 2 *"}, "schedule.cron"),  # never fires
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "schedule.timezone"),
    ({"cron": "* * * * *", "timezone": "../../etc/passwd"}, "schedule.timezone"),
    ({"cron": "* * * * *", "timezone": ""}, "schedule.timezone"),
    ({"cron": "* * * * *", "timezone": 1}, "schedule.timezone"),
    ({"cron": "* * * * *", "every": "day"}, "schedule.every"),
])
def test_parse_refuses_bad_schedules_naming_the_field(value, field):
    with pytest.raises(ValidationFailed) as caught:
        parse(value)
    assert caught.value.field == field


def test_parse_defaults_to_utc_and_normalises_spaces():
    assert parse({"cron": "  */5   9-17 * * MON-FRI "}) == Schedule("*/5 9-17 * * MON-FRI", "UTC")


def test_latest_at_or_before_includes_a_slot_at_that_instant():
    every5 = Schedule("*/5 * * * *")
    assert every5.latest_at_or_before(utc(2024, 1, 1, 10, 5)) == utc(2024, 1, 1, 10, 5)
    assert every5.latest_at_or_before(utc(2024, 1, 1, 10, 4, 59)) == utc(2024, 1, 1, 10, 0)
    assert every5.period_at(utc(2024, 1, 1, 10, 5)) == timedelta(minutes=5)


def test_slots_follow_the_zone():
    assert slots(Schedule("0 9 * * *", "Europe/Berlin"), utc(2024, 1, 1), 1) == [utc(2024, 1, 1, 8)]
    assert slots(Schedule("0 9 * * *", "Europe/Berlin"), utc(2024, 7, 1), 1) == [utc(2024, 7, 1, 7)]


# Europe/Berlin: 2024-03-31 02:00 CET -> 03:00 CEST; 2024-10-27 03:00 CEST -> 02:00 CET.
# America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.
@pytest.mark.parametrize("zone, cron, start, expected", [
    # A specific time inside the skipped hour fires once, at the change; the next day as usual.
    ("Europe/Berlin", "30 2 * * *", utc(2024, 3, 30, 12), [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)]),
    ("America/New_York", "30 2 * * *", utc(2024, 3, 9, 12), [utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30)]),
    # Two slots in the skipped hour become the one slot at the change.
    ("Europe/Berlin", "0,30 2 * * *", utc(2024, 3, 30, 12), [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0)]),
    # A cron with a wildcard hour has no slot in the skipped hour.
    ("Europe/Berlin", "30 * * * *", utc(2024, 3, 30, 23, 45),
     [utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 30), utc(2024, 3, 31, 2, 30)]),
    ("America/New_York", "*/30 * * * *", utc(2024, 3, 10, 6, 15),
     [utc(2024, 3, 10, 6, 30), utc(2024, 3, 10, 7), utc(2024, 3, 10, 7, 30)]),
])
def test_spring_forward(zone, cron, start, expected):
    assert slots(Schedule(cron, zone), start, len(expected)) == expected


@pytest.mark.parametrize("zone, cron, start, expected", [
    # A specific time in the repeated hour fires once, at its first (summer-time) occurrence.
    ("Europe/Berlin", "30 2 * * *", utc(2024, 10, 26, 12), [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]),
    ("America/New_York", "30 1 * * *", utc(2024, 11, 2, 12), [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]),
    # A wildcard hour fires in both passes: its slots are distinct instants.
    ("Europe/Berlin", "0 * * * *", utc(2024, 10, 26, 23, 30),
     [utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2)]),
    ("America/New_York", "30 * * * *", utc(2024, 11, 3, 5),
     [utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30), utc(2024, 11, 3, 7, 30)]),
])
def test_fall_back(zone, cron, start, expected):
    assert slots(Schedule(cron, zone), start, len(expected)) == expected


def test_latest_slot_skips_the_repeated_pass_of_a_specific_time():
    schedule = Schedule("30 1 * * *", "America/New_York")
    # 06:40Z is 01:40 EST, after the second 01:30: the latest slot is still the first one (05:30Z).
    assert schedule.latest_at_or_before(utc(2024, 11, 3, 6, 40)) == utc(2024, 11, 3, 5, 30)
    assert schedule.latest_at_or_before(utc(2024, 11, 3, 5, 29)) == utc(2024, 11, 2, 5, 30)
