"""Schedule parsing and next-run times, checked against hand-computed calendars.

Calendar facts used: 2024-01-01 is a Monday; 2024 is a leap year, the next one is 2028; New York
springs forward on 2021-03-14 (02:00 EST -> 03:00 EDT) and falls back on 2021-11-07 (02:00 EDT -> 01:00 EST);
Santiago (Chile) springs forward at midnight on 2022-09-11 (00:00 -04 -> 01:00 -03).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from dkron_exec.schedule import Schedule, ScheduleError

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def nxt(spec: str, after: datetime, **kw: str) -> datetime | None:
    return Schedule.parse(spec, **kw).next(after)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _utc_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Specs without a zone use the process's local zone; pin it so results don't depend on the host.
    monkeypatch.setenv("TZ", "UTC")


# ---------------------------------------------------------------------------------------------- cron fields


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("* * * * * *", JAN1, utc(2024, 1, 1, 0, 0, 1)),
        ("0 30 9 * * *", JAN1, utc(2024, 1, 1, 9, 30)),
        ("0 30 9 * * *", utc(2024, 1, 1, 9, 30), utc(2024, 1, 2, 9, 30)),  # strictly after
        # steps: */15, N/step means N-max/step, ranges with steps
        ("*/15 * * * * *", JAN1, utc(2024, 1, 1, 0, 0, 15)),
        ("5/15 * * * * *", utc(2024, 1, 1, 0, 0, 50), utc(2024, 1, 1, 0, 1, 5)),
        ("0 1-10/3 * * * *", utc(2024, 1, 1, 0, 7), utc(2024, 1, 1, 0, 10)),
        ("0 1-10/3 * * * *", utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 1, 1)),
        # lists
        ("0 0 6,18 * * *", utc(2024, 1, 1, 7), utc(2024, 1, 1, 18)),
        ("0 0 0 1,,15 * *", utc(2024, 1, 2), utc(2024, 1, 15)),  # robfig skips empty list items
        # names, case-insensitive, in ranges
        ("0 0 0 1 jan-MAR *", JAN1, utc(2024, 2, 1)),
        ("0 0 0 1 Jan-Mar *", utc(2024, 3, 1), utc(2025, 1, 1)),
        ("0 30 9 * * mon-FRI", utc(2024, 1, 5, 10), utc(2024, 1, 8, 9, 30)),  # Fri after 9:30 -> Mon
        ("0 0 0 * * sun", JAN1, utc(2024, 1, 7)),
        ("0 0 12 * DEC SAT", JAN1, utc(2024, 12, 7, 12)),
        # Feb 29
        ("0 0 0 29 2 *", JAN1, utc(2024, 2, 29)),
        ("0 0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),
        ("0 0 0 31 * *", utc(2024, 4, 1), utc(2024, 5, 31)),  # April has no 31st
        # '?' is the same as '*'
        ("0 0 0 ? * MON", utc(2024, 1, 2), utc(2024, 1, 8)),
        ("0 0 0 13 * ?", JAN1, utc(2024, 1, 13)),
        # sub-second `after`: the next whole second
        ("* * * * * *", utc(2024, 1, 1, 0, 0, 0) + timedelta(microseconds=999_999), utc(2024, 1, 1, 0, 0, 1)),
    ],
)
def test_cron_fields(spec: str, after: datetime, expected: datetime) -> None:
    assert nxt(spec, after) == expected


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        # Both day fields restricted: a day matches when EITHER matches (13th OR a Friday).
        ("0 0 0 13 * FRI", JAN1, utc(2024, 1, 5)),
        ("0 0 0 13 * FRI", utc(2024, 1, 12), utc(2024, 1, 13)),
        ("0 0 0 13 * FRI", utc(2024, 1, 13), utc(2024, 1, 19)),
        # A stepped '*' is restricted too (robfig clears the star bit when step > 1): odd days OR Mondays.
        ("0 0 0 */2 * MON", JAN1, utc(2024, 1, 3)),
        ("0 0 0 */2 * MON", utc(2024, 1, 7), utc(2024, 1, 8)),
        # One side unrestricted: both must match.
        ("0 0 0 13 * *", JAN1, utc(2024, 1, 13)),
        ("0 0 0 * * FRI", JAN1, utc(2024, 1, 5)),
        ("0 0 0 */1 * FRI", JAN1, utc(2024, 1, 5)),  # */1 keeps the star
        ("0 0 0 13 * FRI", utc(2024, 9, 1), utc(2024, 9, 6)),
        ("0 0 0 13 9 5", utc(2024, 9, 7), utc(2024, 9, 13)),  # Sept 13 2024 is itself a Friday
    ],
)
def test_dom_dow_rule(spec: str, after: datetime, expected: datetime) -> None:
    assert nxt(spec, after) == expected


def test_impossible_date_gives_up_after_five_years() -> None:
    assert nxt("0 0 0 30 2 *", JAN1) is None
    assert nxt("0 0 0 31 4 *", JAN1) is None


def test_result_keeps_the_zone_of_after_and_naive_means_utc() -> None:
    after = datetime(2024, 1, 1, 12, 0, tzinfo=NY)  # 17:00Z
    got = nxt("0 0 18 * * *", after)  # 18:00 UTC (local zone pinned to UTC)
    assert got == utc(2024, 1, 1, 18)
    assert got is not None and got.tzinfo is NY
    naive = nxt("0 0 18 * * *", datetime(2024, 1, 1, 12))
    assert naive == utc(2024, 1, 1, 18) and naive is not None and naive.tzinfo is UTC


# ---------------------------------------------------------------------------------------------- the ~ hash


def test_hash_replaces_tilde_by_field() -> None:
    # h = ord('a') + ord('b') + ord('c') = 294: sec/min 294 % 60 = 54, hour 294 % 24 = 6,
    # dom 294 % 28 + 1 = 15, month 294 % 12 + 1 = 7, dow 294 % 7 = 0 (Sunday).
    assert nxt("~ ~ ~ * * *", JAN1, job_name="abc") == utc(2024, 1, 1, 6, 54, 54)
    assert nxt("0 0 0 ~ * *", JAN1, job_name="abc") == utc(2024, 1, 15)
    assert nxt("0 0 0 1 ~ *", JAN1, job_name="abc") == utc(2024, 7, 1)
    assert nxt("0 0 0 * * ~", JAN1, job_name="abc") == utc(2024, 1, 7)
    assert nxt("~/20 * * * * *", JAN1, job_name="abc") == utc(2024, 1, 1, 0, 0, 54)


def test_hash_skips_tz_prefix_and_leaves_descriptors_alone() -> None:
    assert nxt("CRON_TZ=UTC 0 ~ * * * *", JAN1, job_name="abc") == utc(2024, 1, 1, 0, 54)
    with pytest.raises(ScheduleError):
        Schedule.parse("@every ~", job_name="abc")


def test_hash_of_unicode_name() -> None:
    # 'é' is U+00E9 = 233: minutes 233 % 60 = 53
    assert nxt("0 ~ * * * *", JAN1, job_name="é") == utc(2024, 1, 1, 0, 53)


# ---------------------------------------------------------------------------------------------- time zones


def test_cron_tz_prefix() -> None:
    # 09:00 in Tokyo (UTC+9) is 00:00Z; JAN1 is exactly such a time, so the next is a day later.
    assert nxt("CRON_TZ=Asia/Tokyo 0 0 9 * * *", JAN1) == utc(2024, 1, 2, 0)
    assert nxt("TZ=Asia/Tokyo 0 0 9 * * *", utc(2024, 1, 1, 1)) == utc(2024, 1, 2, 0)


def test_job_timezone_prepends_cron_tz_unless_the_spec_has_one() -> None:
    assert nxt("0 0 9 * * *", JAN1, timezone="Asia/Tokyo") == utc(2024, 1, 2, 0)
    assert nxt("0 0 0 * * *", JAN1, timezone="America/New_York") == utc(2024, 1, 1, 5)
    # The spec's own zone wins.
    assert nxt("CRON_TZ=UTC 0 0 9 * * *", JAN1, timezone="Asia/Tokyo") == utc(2024, 1, 1, 9)


def test_descriptors_ignore_job_timezone_and_use_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nxt("@daily", JAN1, timezone="Asia/Tokyo") == utc(2024, 1, 2)
    monkeypatch.setenv("TZ", "America/New_York")
    assert nxt("@daily", JAN1, timezone="Asia/Tokyo") == utc(2024, 1, 1, 5)
    assert nxt("0 0 0 * * *", utc(2024, 1, 1, 6)) == utc(2024, 1, 2, 5)  # no zone at all: local too
    assert nxt("CRON_TZ=UTC @daily", JAN1) == utc(2024, 1, 2)


def test_dst_gap_skips_the_missing_wall_time() -> None:
    ny = {"timezone": "America/New_York"}
    # 02:30 does not exist on 2021-03-14: robfig skips that day.
    got = nxt("0 30 2 * * *", datetime(2021, 3, 13, 3, 0, tzinfo=NY), **ny)
    assert got == datetime(2021, 3, 15, 2, 30, tzinfo=NY)
    # Hourly across the gap: 01:00 EST -> 03:00 EDT, one real hour later.
    got = nxt("0 0 * * * *", datetime(2021, 3, 14, 1, 0, tzinfo=NY), **ny)
    assert got == utc(2021, 3, 14, 7)
    assert got is not None and got.astimezone(NY).hour == 3


def test_dst_overlap_fires_twice_like_robfig() -> None:
    # Compare in UTC: Python never calls an ambiguous wall time equal to a time in another zone.
    ny = {"timezone": "America/New_York"}
    first = nxt("0 30 1 * * *", datetime(2021, 11, 7, 0, 0, tzinfo=NY), **ny)
    assert first is not None
    assert first.astimezone(UTC) == utc(2021, 11, 7, 5, 30)  # 01:30 EDT
    second = nxt("0 30 1 * * *", first, **ny)
    assert second is not None
    assert second.astimezone(UTC) == utc(2021, 11, 7, 6, 30)  # 01:30 EST, the same wall time an hour later
    assert (second.hour, second.minute, second.fold) == (1, 30, 1)
    assert nxt("0 30 1 * * *", second, **ny) == utc(2021, 11, 8, 6, 30)


def test_missing_midnight_skips_the_day() -> None:
    santiago = ZoneInfo("America/Santiago")
    got = nxt("0 0 0 * * *", datetime(2022, 9, 10, 12, tzinfo=santiago), timezone="America/Santiago")
    assert got == datetime(2022, 9, 12, 0, 0, tzinfo=santiago)


# ---------------------------------------------------------------------------------------------- descriptors


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("@yearly", JAN1, utc(2025, 1, 1)),
        ("@annually", utc(2024, 6, 1), utc(2025, 1, 1)),
        ("@monthly", JAN1, utc(2024, 2, 1)),
        ("@weekly", JAN1, utc(2024, 1, 7)),  # Sunday midnight
        ("@daily", utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 2)),
        ("@midnight", JAN1, utc(2024, 1, 2)),
        ("@hourly", utc(2024, 1, 1, 0, 59, 59), utc(2024, 1, 1, 1)),
        ("@minutely", utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 1)),
        ("  @daily  ", JAN1, utc(2024, 1, 2)),
    ],
)
def test_descriptors(spec: str, after: datetime, expected: datetime) -> None:
    assert nxt(spec, after) == expected


def test_every_is_a_constant_delay_in_whole_seconds() -> None:
    after = utc(2024, 1, 1, 0, 0, 0) + timedelta(microseconds=500_000)
    assert nxt("@every 1m30.7s", after) == utc(2024, 1, 1, 0, 1, 30)  # 90.7s -> 90s, from 00:00:00
    assert nxt("@every 1h", after) == utc(2024, 1, 1, 1)
    assert nxt("@every 500ms", after) == utc(2024, 1, 1, 0, 0, 1)  # minimum 1s
    assert nxt("@every 0", after) == utc(2024, 1, 1, 0, 0, 1)
    assert Schedule.parse("@every 2m").interval == 120.0
    assert Schedule.parse("@every 2m").kind == "every"


def test_every_counts_elapsed_time_across_dst() -> None:
    got = nxt("@every 1h", datetime(2021, 3, 14, 1, 30, tzinfo=NY))
    assert got == datetime(2021, 3, 14, 3, 30, tzinfo=NY)


def test_at_fires_once_if_in_the_future() -> None:
    at = Schedule.parse("@at 2030-05-01T10:00:00+02:00")
    assert at.kind == "at"
    assert at.next(JAN1) == utc(2030, 5, 1, 8)
    assert at.next(utc(2030, 5, 1, 8)) is None  # strictly after
    assert nxt("@at 2020-01-01T00:00:00Z", JAN1) is None
    assert nxt("@at 2024-01-01T00:00:00.25Z", JAN1) == JAN1 + timedelta(milliseconds=250)


def test_manually_never_fires() -> None:
    s = Schedule.parse("@manually")
    assert s.kind == "never"
    assert s.next(JAN1) is None


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "empty schedule"),
        ("* * * * *", "expected exactly 6 fields"),
        ("* * * * * * *", "found 7"),
        ("0 0 25 * * *", "field 'hour' value '25' out of range 0-23"),
        ("60 * * * * *", "field 'second' value '60' out of range 0-59"),
        ("0 60 * * * *", "field 'minute' value '60' out of range 0-59"),
        ("0 0 0 0 * *", "field 'day-of-month' value '0' out of range 1-31"),
        ("0 0 0 32 * *", "field 'day-of-month' value '32' out of range 1-31"),
        ("0 0 0 * 13 *", "field 'month' value '13' out of range 1-12"),
        ("0 0 0 * * 7", "field 'day-of-week' value '7' out of range 0-6"),
        ("0 0 0 * FOO *", "field 'month' value 'FOO' is not a number or name"),
        ("0 0 0 * * MON-FOO", "field 'day-of-week' value 'FOO'"),
        ("0 0 x * * *", "field 'hour' value 'x' is not a number"),
        ("0 0 0 * MON *", "field 'month' value 'MON'"),  # weekday names only in day-of-week
        ("0 5-2 * * * *", "field 'minute' range '5-2' starts after it ends"),
        ("*/0 * * * * *", "field 'second' step in '*/0' must be a positive number"),
        ("*/x * * * * *", "field 'second' step 'x'"),
        ("1-2-3 * * * * *", "more than one '-'"),
        ("1/2/3 * * * * *", "more than one '/'"),
        ("0 0 0 L * *", "field 'day-of-month' value 'L'"),
        ("0 0 0 , * *", "field 'day-of-month' is empty"),
        ("@often", "unknown descriptor '@often'"),
        ("@daily 5", "unknown descriptor"),
        ("@every", "invalid Go duration"),
        ("@every 5x", "unknown unit 'x'"),
        ("@at tomorrow", "not an RFC 3339 time"),
        ("@at 2024-13-01T00:00:00Z", "bad date or time"),
        ("TZ=Mars/Olympus 0 0 0 * * *", "unknown time zone 'Mars/Olympus'"),
        ("CRON_TZ=UTC", "must be followed by a space and a schedule"),
    ],
)
def test_bad_specs(spec: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(spec)
    assert reason in info.value.reason
    assert info.value.spec == spec
    assert isinstance(info.value, ValueError)
    assert repr(spec) in str(info.value)


def test_bad_job_timezone_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone"):
        Schedule.parse("0 0 0 * * *", timezone="Nowhere/Town")
    # ... but descriptors ignore the job timezone entirely, as in Dkron.
    assert Schedule.parse("@daily", timezone="Nowhere/Town").kind == "cron"


def test_compat_quirks_of_robfig() -> None:
    assert nxt("+5 * * * * *", JAN1) == utc(2024, 1, 1, 0, 0, 5)  # Go's Atoi takes a sign
    assert nxt("*-5 * * * * *", JAN1) == utc(2024, 1, 1, 0, 0, 1)  # "*-5" is "*" in robfig
    assert nxt("0 0 0 * * *", JAN1, timezone="UTC") == utc(2024, 1, 2)
    assert nxt("0 0 0 * * *", JAN1, timezone="Local") == utc(2024, 1, 2)


def test_next_is_fast_enough_for_sparse_schedules() -> None:
    s = Schedule.parse("0 0 0 29 2 MON", timezone="America/New_York")  # Feb 29 OR any Monday in Feb
    t = JAN1
    seen = []
    for _ in range(50):
        got = s.next(t)
        assert got is not None and got > t
        seen.append(got)
        t = got
    assert all(d.astimezone(NY).month == 2 for d in seen)
    assert all(d.astimezone(NY).weekday() == 0 or d.astimezone(NY).day == 29 for d in seen)
