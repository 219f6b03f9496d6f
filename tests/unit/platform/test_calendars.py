"""Business calendars: refusals at load with their line, China's 2026 calendar and the provisional 2027
against independent sources, working-time arithmetic against brute force, and daylight-saving days in
Berlin."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.platform.calendars import (
    BeyondCalendar,
    BusinessCalendar,
    Duration,
    load_calendar,
    load_calendar_versions,
    load_calendars,
    notices,
    parse_duration,
)
from services.platform.settings import PROJECT_ROOT
from services.platform.yamlconfig import ConfigError

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
CN_GOV_FILE = PROJECT_ROOT / "deploy" / "calendars" / "cn-gov-2026.yaml"
CN_GOV_NEXT_FILE = PROJECT_ROOT / "deploy" / "calendars" / "cn-gov-2026-2027.yaml"
ZONES = st.sampled_from([UTC, SHANGHAI, BERLIN, ZoneInfo("America/New_York")])

DESK = """\
calendar: test-desk
version: 1
time_zone: Asia/Shanghai
covers: {from: 2026-01-01, to: 2026-12-31}
working_day: 8h
weekly:
  monday:
    - "09:00-12:00"
    - "13:00-18:00"
  tuesday: ["09:00-12:00", "13:00-18:00"]
  wednesday: ["09:00-12:00", "13:00-18:00"]
  thursday: ["09:00-12:00", "13:00-18:00"]
  friday: ["09:00-12:00", "13:00-18:00"]
holidays:
  - {date: 2026-01-01, name: New Year's Day}
  - {from: 2026-02-15, to: 2026-02-23, name: Spring Festival}
extra_working_days:
  - {date: 2026-02-14, name: Spring Festival make-up day}
"""

BERLIN_OFFICE = """\
calendar: berlin-office
version: 1
time_zone: Europe/Berlin
covers: {from: 2026-01-01, to: 2026-12-31}
working_day: 8h
weekly:
  monday: ["09:00-17:00"]
  tuesday: ["09:00-17:00"]
  wednesday: ["09:00-17:00"]
  thursday: ["09:00-17:00"]
  friday: ["09:00-17:00"]
  saturday: ["09:00-17:00"]
  sunday: ["01:00-04:00", "09:00-17:00"]
"""

BERLIN_AROUND_THE_CLOCK = """\
calendar: berlin-24-7
version: 1
time_zone: Europe/Berlin
covers: {from: 2026-01-01, to: 2026-12-31}
working_day: 24h
weekly:
  monday: ["00:00-24:00"]
  tuesday: ["00:00-24:00"]
  wednesday: ["00:00-24:00"]
  thursday: ["00:00-24:00"]
  friday: ["00:00-24:00"]
  saturday: ["00:00-24:00"]
  sunday: ["00:00-02:15", "02:15-02:45", "02:45-24:00"]
"""


def _write(directory: Path, text: str, name: str = "calendar.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def _line_of(text: str, fragment: str) -> int:
    (line,) = [number for number, line in enumerate(text.splitlines(), 1) if fragment in line]
    return line


def _at(zone: ZoneInfo, *fields: int) -> datetime:
    return datetime(*fields, tzinfo=zone)


@pytest.fixture(scope="module", params=[CN_GOV_FILE, CN_GOV_NEXT_FILE], ids=["version-1", "version-2"])
def cn_gov(request: pytest.FixtureRequest) -> BusinessCalendar:
    """China's government calendar in each deployed version: both hold the same 2026."""
    return load_calendar(request.param)


@pytest.fixture(scope="module")
def cn_gov_2026() -> BusinessCalendar:
    """Version 1, which ends with 2026."""
    return load_calendar(CN_GOV_FILE)


@pytest.fixture(scope="module")
def cn_gov_next() -> BusinessCalendar:
    return load_calendar(CN_GOV_NEXT_FILE)


@pytest.fixture(scope="module")
def berlin_office(tmp_path_factory: pytest.TempPathFactory) -> BusinessCalendar:
    return load_calendar(_write(tmp_path_factory.mktemp("berlin"), BERLIN_OFFICE))


@pytest.fixture(scope="module")
def berlin_around_the_clock(tmp_path_factory: pytest.TempPathFactory) -> BusinessCalendar:
    return load_calendar(_write(tmp_path_factory.mktemp("berlin"), BERLIN_AROUND_THE_CLOCK))


# Loading: every refusal at the line of the entry at fault.

REFUSALS = {
    "unparseable hours": ('    - "13:00-18:00"', '    - "1pm-6pm"', "1pm-6pm", "HH:MM-HH:MM"),
    "hours past midnight": ('    - "13:00-18:00"', '    - "13:00-25:00"', "25:00", "within 00:00-24:00"),
    "hours ending before they begin": (
        '    - "13:00-18:00"',
        '    - "18:00-13:00"',
        "18:00-13",
        "end before",
    ),
    "overlapping hours": ('    - "13:00-18:00"', '    - "11:00-18:00"', "11:00-18:00", "overlaps"),
    "unsorted hours": ('    - "13:00-18:00"', '    - "08:00-08:30"', "08:00-08:30", "earliest first"),
    "an unknown weekday": ("  tuesday:", "  tuesdy:", "tuesdy", "weekly.tuesdy: unknown key"),
    "a holiday outside covers": (
        "{date: 2026-01-01,",
        "{date: 2027-01-01,",
        "2027-01-01",
        "holidays[0].date: 2027-01-01 is outside covers 2026-01-01..2026-12-31",
    ),
    "a holiday range ending outside covers": (
        "to: 2026-02-23,",
        "to: 2027-02-23,",
        "2027-02-23",
        "holidays[1].to: 2027-02-23 is outside covers",
    ),
    "a holiday range ending before it begins": (
        "to: 2026-02-23,",
        "to: 2026-02-13,",
        "2026-02-13",
        "holidays[1]: from 2026-02-15 is after to 2026-02-13",
    ),
    "a holiday with a date and a range": (
        "{date: 2026-01-01,",
        "{date: 2026-01-01, from: 2026-01-01,",
        "New Year",
        "either a date or from and to",
    ),
    "a holiday listed twice": (
        "{from: 2026-02-15,",
        "{from: 2026-01-01,",
        "Spring Festival}",
        "holidays[1]: 2026-01-01 is listed twice (also holidays[0], New Year's Day)",
    ),
    "an extra working day outside covers": (
        "{date: 2026-02-14,",
        "{date: 2025-12-27,",
        "2025-12-27",
        "extra_working_days[0].date: 2025-12-27 is outside covers",
    ),
    "a day both a holiday and an extra working day": (
        "{date: 2026-02-14,",
        "{date: 2026-02-21,",
        "2026-02-21",
        "2026-02-21 is also a holiday (holidays[1], Spring Festival)",
    ),
    "an extra working day on an open weekday": (
        "{date: 2026-02-14,",
        "{date: 2026-03-02,",
        "2026-03-02",
        "2026-03-02 is a monday, open anyway",
    ),
    "an extra working day with the hours of a closed weekday": (
        "{date: 2026-02-14,",
        "{date: 2026-02-14, as: sunday,",
        "2026-02-14",
        "extra_working_days[0].as: sunday has no opening hours",
    ),
    "covers ending before it begins": (
        "to: 2026-12-31}",
        "to: 2025-12-31}",
        "covers:",
        "covers: from 2026-01-01 is after to 2025-12-31",
    ),
    "an unknown time zone": (
        "Asia/Shanghai",
        "Asia/Beijing",
        "Asia/Beijing",
        "unknown time zone 'Asia/Beijing'",
    ),
    "a region for a time zone": ("Asia/Shanghai", "Asia", "time_zone", "unknown time zone 'Asia'"),
    "a working day that is no duration": (
        "working_day: 8h",
        "working_day: 8 hours",
        "8 hours",
        "not a duration",
    ),
    "a working day in working days": ("working_day: 8h", "working_day: 1wd", "1wd", "hours and minutes"),
    "a working day longer than a day": ("working_day: 8h", "working_day: 25h", "25h", "at most 24h"),
    "a calendar id with capitals": ("calendar: test-desk", "calendar: Test Desk", "Test Desk", "lower-case"),
    "version zero": ("version: 1", "version: 0", "version", "greater than 0"),
}


@pytest.mark.parametrize(("old", "new", "at", "reason"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_malformed_calendar_is_refused_at_the_line_at_fault(
    tmp_path: Path, old: str, new: str, at: str, reason: str
) -> None:
    assert old in DESK
    text = DESK.replace(old, new, 1)

    with pytest.raises(ConfigError) as refused:
        load_calendar(_write(tmp_path, text))

    assert refused.value.line == _line_of(text, at)
    assert reason in refused.value.reason


def test_the_same_extra_working_day_twice_is_refused_at_the_second(tmp_path: Path) -> None:
    text = DESK + "  - {date: 2026-02-14, name: again}\n"

    with pytest.raises(ConfigError) as refused:
        load_calendar(_write(tmp_path, text))

    assert refused.value.line == _line_of(text, "again")
    assert "listed twice (also extra_working_days[0], Spring Festival make-up day)" in refused.value.reason


def test_two_files_with_the_same_calendar_and_version_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, DESK, "a.yaml")
    _write(tmp_path, DESK, "b.yaml")

    with pytest.raises(ConfigError) as refused:
        load_calendars(tmp_path)

    assert refused.value.path == tmp_path / "b.yaml"
    assert refused.value.line == 2
    assert f"test-desk version 1 is already defined in {tmp_path / 'a.yaml'}" in refused.value.reason


def test_the_highest_version_of_each_calendar_is_the_current_one(tmp_path: Path) -> None:
    _write(tmp_path, DESK.replace("version: 1", "version: 3"), "desk-v3.yaml")
    _write(tmp_path, DESK, "desk-v1.yaml")
    _write(tmp_path, BERLIN_OFFICE, "berlin.yaml")

    current = load_calendars(tmp_path)
    every_version = load_calendar_versions(tmp_path)

    assert {name: calendar.version for name, calendar in current.items()} == {
        "test-desk": 3,
        "berlin-office": 1,
    }
    assert set(every_version) == {("test-desk", 1), ("test-desk", 3), ("berlin-office", 1)}


def test_a_missing_directory_of_calendars_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        load_calendars(tmp_path / "absent")


def test_the_deployed_calendars_load_and_the_latest_is_current() -> None:
    calendars = load_calendars(CN_GOV_FILE.parent)

    assert set(load_calendar_versions(CN_GOV_FILE.parent)) == {("cn-gov", 1), ("cn-gov", 2)}
    assert calendars["cn-gov"].version == 2
    assert (calendars["cn-gov"].first_day, calendars["cn-gov"].last_day) == (
        date(2026, 1, 1),
        date(2027, 12, 31),
    )


def test_a_provisional_part_must_lie_inside_covers_after_its_first_day(tmp_path: Path) -> None:
    for outside in ("2027-01-01", "2026-01-01"):
        text = DESK.replace("working_day: 8h", f"provisional_from: {outside}\nworking_day: 8h")

        with pytest.raises(ConfigError) as refused:
            load_calendar(_write(tmp_path, text))

        assert refused.value.line == _line_of(text, "provisional_from")
        assert f"{outside} is not inside covers 2026-01-01..2026-12-31" in refused.value.reason


def test_a_calendar_without_a_provisional_part_has_no_provisional_day(cn_gov: BusinessCalendar) -> None:
    if cn_gov.version == 1:
        assert not cn_gov.is_provisional(date(2026, 12, 31))
    else:
        assert (cn_gov.is_provisional(date(2026, 12, 31)), cn_gov.is_provisional(date(2027, 1, 1))) == (
            False,
            True,
        )


def test_notices_warn_of_an_ending_calendar_and_of_a_provisional_year_in_time(
    cn_gov_next: BusinessCalendar,
) -> None:
    ending = load_calendar(CN_GOV_FILE)
    two_months = timedelta(days=60)

    early = notices([ending, cn_gov_next], date(2026, 6, 1), two_months)
    december = notices([ending, cn_gov_next], date(2026, 12, 3), two_months)

    assert early == []
    assert december == [
        "calendar cn-gov version 1 covers up to 2026-12-31 only: deadlines falling later are refused until a "
        "version covering the next year is added",
        "calendar cn-gov version 2 is provisional from 2027-01-01 (statutory holidays only, no make-up "
        "working days): deadlines from then on may move when the official days are added as a new version",
    ]


# Durations.


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("90m", Duration(working=timedelta(minutes=90))),
        ("2h", Duration(working=timedelta(hours=2))),
        ("1h30m", Duration(working=timedelta(hours=1, minutes=30))),
        ("3wd", Duration(working_days=3)),
        ("1wd4h", Duration(working=timedelta(hours=4), working_days=1)),
        ("0m", Duration()),
        ("15d", Duration(calendar=timedelta(days=15))),
        ("7d", Duration(calendar=timedelta(days=7))),
    ],
)
def test_durations_are_working_time_or_calendar_days(text: str, duration: Duration) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["", "2", "2 h", "1.5h", "h", "30m1h", "1d2h", "-1h", "2w", "3dw", 5])
def test_a_malformed_duration_is_refused_with_examples(text: object) -> None:
    with pytest.raises(ValueError, match=r"not a duration: .*e\.g\. 90m, 2h, 1h30m, 3wd"):
        parse_duration(text)


# China's government calendar for 2026.


def test_every_day_of_2026_is_a_working_day_exactly_when_chinese_calendar_says_so(
    cn_gov: BusinessCalendar,
) -> None:
    days = [date(2026, 1, 1) + timedelta(days=offset) for offset in range(365)]

    disagreements = [day for day in days if cn_gov.is_working_day(day) != chinese_calendar.is_workday(day)]

    assert disagreements == []
    assert sum(cn_gov.is_working_day(day) for day in days) == 248


# The provisional 2027, against python-holidays: the statutory days of China's Regulations on Public
# Holidays (lunar dates computed there, not here), a weekday in lieu of a statutory day on a weekend.


def test_every_day_of_2027_is_a_working_day_exactly_when_a_statutory_weekday_is_not_a_holiday(
    cn_gov_next: BusinessCalendar,
) -> None:
    statutory = holidays.China(years=2027)
    days = [date(2027, 1, 1) + timedelta(days=offset) for offset in range(365)]

    disagreements = [
        day for day in days if cn_gov_next.is_working_day(day) != (day.weekday() < 5 and day not in statutory)
    ]

    assert disagreements == []
    assert all(cn_gov_next.is_provisional(day) for day in days)


def test_a_deadline_into_2027_is_computed_across_the_provisional_new_year(
    cn_gov_next: BusinessCalendar,
) -> None:
    opened = _at(SHANGHAI, 2026, 12, 31, 16, 0)

    due = cn_gov_next.add_duration(opened, parse_duration("1wd"))

    assert due == _at(SHANGHAI, 2027, 1, 4, 16, 0)


def test_a_make_up_sunday_has_mondays_hours(cn_gov: BusinessCalendar) -> None:
    sunday = _at(SHANGHAI, 2026, 1, 4, 0, 0)

    assert cn_gov.working_between(sunday, sunday + timedelta(days=1)) == timedelta(hours=7)
    assert cn_gov.next_opening(sunday) == _at(SHANGHAI, 2026, 1, 4, 9, 0)


def test_a_working_day_over_national_day_ends_after_the_week_of_holidays(cn_gov: BusinessCalendar) -> None:
    opened = _at(SHANGHAI, 2026, 9, 30, 16, 0)

    due = cn_gov.add_duration(opened, parse_duration("1wd"))

    assert due == _at(SHANGHAI, 2026, 10, 8, 16, 0)
    assert due.tzinfo is UTC


def test_counting_begins_at_the_next_opening(cn_gov: BusinessCalendar) -> None:
    saturday = _at(SHANGHAI, 2026, 3, 7, 10, 0)

    assert cn_gov.next_opening(saturday) == _at(SHANGHAI, 2026, 3, 9, 9, 0)
    assert cn_gov.add(saturday, timedelta(hours=1)) == _at(SHANGHAI, 2026, 3, 9, 10, 0)
    assert cn_gov.next_opening(_at(SHANGHAI, 2026, 3, 9, 12, 30)) == _at(SHANGHAI, 2026, 3, 9, 13, 30)
    assert cn_gov.next_opening(_at(SHANGHAI, 2026, 3, 9, 10, 0)) == _at(SHANGHAI, 2026, 3, 9, 10, 0)


def test_time_that_runs_out_at_a_closing_ends_there(cn_gov: BusinessCalendar) -> None:
    assert cn_gov.add(_at(SHANGHAI, 2026, 3, 9, 9, 0), timedelta(hours=3)) == _at(SHANGHAI, 2026, 3, 9, 12, 0)


def test_adding_nothing_is_the_same_instant_in_or_out_of_hours(cn_gov: BusinessCalendar) -> None:
    for start in (_at(SHANGHAI, 2026, 3, 9, 10, 0), _at(SHANGHAI, 2026, 3, 7, 3, 0)):
        assert cn_gov.add(start, timedelta()) == start


def test_calendar_days_elapse_whether_open_or_not(
    cn_gov: BusinessCalendar, berlin_office: BusinessCalendar
) -> None:
    week = parse_duration("7d")

    assert cn_gov.add_duration(_at(SHANGHAI, 2026, 9, 30, 16, 0), week) == _at(SHANGHAI, 2026, 10, 7, 16, 0)
    assert berlin_office.add_duration(_at(BERLIN, 2026, 3, 25, 12, 0), week) == _at(BERLIN, 2026, 4, 1, 13, 0)
    assert cn_gov.add_duration(_at(SHANGHAI, 2026, 12, 30, 12, 0), week) == _at(SHANGHAI, 2027, 1, 6, 12, 0)


def test_working_days_are_the_calendars_working_day_long(cn_gov: BusinessCalendar) -> None:
    start = _at(SHANGHAI, 2026, 3, 9, 10, 0)

    assert cn_gov.working_day == timedelta(hours=7)
    assert cn_gov.working_time(parse_duration("1wd4h")) == timedelta(hours=11)
    assert cn_gov.add_duration(start, parse_duration("3wd")) == cn_gov.add(start, timedelta(hours=21))
    assert cn_gov.add_duration(start, parse_duration("3wd")) == _at(SHANGHAI, 2026, 3, 12, 10, 0)


def test_working_time_of_an_empty_or_reversed_range_is_nothing(cn_gov: BusinessCalendar) -> None:
    start = _at(SHANGHAI, 2026, 3, 9, 10, 0)

    assert cn_gov.working_between(start, start) == timedelta()
    assert cn_gov.working_between(start, start - timedelta(days=3)) == timedelta()


def test_naive_instants_and_negative_durations_are_refused(cn_gov: BusinessCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cn_gov.is_working_time(datetime(2026, 3, 9, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        cn_gov.add(datetime(2026, 3, 9, 10, 0), timedelta(hours=1))
    with pytest.raises(ValueError, match="negative"):
        cn_gov.add(_at(SHANGHAI, 2026, 3, 9, 10, 0), timedelta(hours=-1))


def test_days_outside_covers_are_refused_naming_the_calendar_and_its_range(
    cn_gov_2026: BusinessCalendar,
) -> None:
    cn_gov = cn_gov_2026
    named = r"calendar cn-gov version 1, which covers 2026-01-01\.\.2026-12-31"

    with pytest.raises(BeyondCalendar, match=named):
        cn_gov.is_working_time(_at(SHANGHAI, 2025, 12, 31, 23, 59))
    with pytest.raises(BeyondCalendar, match=named):
        cn_gov.is_working_time(_at(SHANGHAI, 2027, 1, 1, 0, 0))
    with pytest.raises(BeyondCalendar, match=named):
        cn_gov.is_working_day(date(2027, 1, 1))
    with pytest.raises(BeyondCalendar, match=named):
        cn_gov.next_opening(_at(SHANGHAI, 2026, 12, 31, 18, 0))
    with pytest.raises(BeyondCalendar, match=named):
        cn_gov.working_between(_at(SHANGHAI, 2026, 12, 30, 9, 0), _at(SHANGHAI, 2027, 1, 4, 9, 0))


# Working-time arithmetic, against itself and against a minute-by-minute count.

COVERED_FROM = _at(SHANGHAI, 2026, 1, 1, 0, 0)
COVERED_UNTIL = _at(SHANGHAI, 2027, 1, 1, 0, 0)
SEVERAL_WEEKS = timedelta(hours=20 * 7)


def _instants(first: datetime, last: datetime, step: timedelta = timedelta(seconds=1)) -> st.SearchStrategy:
    # Stepping in UTC: adding a timedelta to a Berlin datetime would step its wall clock instead.
    first, last = first.astimezone(UTC), last.astimezone(UTC)
    steps = st.integers(min_value=0, max_value=(last - first) // step)
    return st.builds(lambda count, zone: (first + count * step).astimezone(zone), steps, ZONES)


@settings(max_examples=300, deadline=None)
@given(
    start=_instants(COVERED_FROM, _at(SHANGHAI, 2026, 11, 30, 0, 0)),
    working=st.timedeltas(min_value=timedelta(), max_value=SEVERAL_WEEKS),
)
def test_the_working_time_up_to_a_deadline_is_the_time_added(
    cn_gov: BusinessCalendar, start: datetime, working: timedelta
) -> None:
    due = cn_gov.add(start, working)

    assert due >= start
    assert cn_gov.working_between(start, due) == working


@settings(max_examples=60, deadline=None)
@given(
    start=_instants(COVERED_FROM, COVERED_UNTIL - timedelta(days=3), timedelta(minutes=1)),
    minutes=st.integers(min_value=0, max_value=3 * 24 * 60),
)
def test_working_time_between_two_instants_is_the_count_of_working_minutes(
    cn_gov: BusinessCalendar, start: datetime, minutes: int
) -> None:
    start = start.astimezone(UTC)
    counted = sum(cn_gov.is_working_time(start + timedelta(minutes=m)) for m in range(minutes))

    assert cn_gov.working_between(start, start + timedelta(minutes=minutes)) == timedelta(minutes=counted)


@settings(max_examples=200, deadline=None)
@given(
    starts=st.lists(_instants(COVERED_FROM, _at(SHANGHAI, 2026, 11, 30, 0, 0)), min_size=2, max_size=2),
    durations=st.lists(st.timedeltas(min_value=timedelta(), max_value=SEVERAL_WEEKS), min_size=2, max_size=2),
)
def test_a_later_start_or_a_longer_duration_never_gives_an_earlier_deadline(
    cn_gov: BusinessCalendar, starts: list[datetime], durations: list[timedelta]
) -> None:
    early, late = sorted(starts)
    short, long = sorted(durations)

    assert cn_gov.add(early, short) <= cn_gov.add(late, short)
    assert cn_gov.add(early, short) <= cn_gov.add(early, long)


@settings(max_examples=100, deadline=None)
@given(
    start=_instants(COVERED_FROM, COVERED_UNTIL - timedelta(seconds=1)),
    beyond=st.timedeltas(min_value=timedelta(microseconds=1), max_value=SEVERAL_WEEKS),
)
def test_a_deadline_past_covers_is_refused_naming_the_range(
    cn_gov_2026: BusinessCalendar, start: datetime, beyond: timedelta
) -> None:
    cn_gov = cn_gov_2026
    left = cn_gov.working_between(start, COVERED_UNTIL)

    assert cn_gov.add(start, left) <= max(start, _at(SHANGHAI, 2026, 12, 31, 17, 30))
    with pytest.raises(BeyondCalendar, match=r"cn-gov version 1, which covers 2026-01-01\.\.2026-12-31"):
        cn_gov.add(start, left + beyond)


# Daylight saving in Berlin: 2026-03-29 has 23 hours, 2026-10-25 has 25.


@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 10, 25)])
def test_a_nine_to_five_day_is_eight_hours_on_a_daylight_saving_change(
    berlin_office: BusinessCalendar, day: date
) -> None:
    nine, five = (datetime.combine(day, datetime.min.time().replace(hour=h), BERLIN) for h in (9, 17))

    assert berlin_office.working_between(nine, five) == timedelta(hours=8)
    assert berlin_office.add(nine, timedelta(hours=8)) == five
    assert berlin_office.is_working_time(five - timedelta(minutes=1))
    assert not berlin_office.is_working_time(five)


def test_hours_across_the_night_of_a_change_count_the_hours_that_pass(
    berlin_office: BusinessCalendar,
) -> None:
    spring, autumn = date(2026, 3, 29), date(2026, 10, 25)

    def night(day: date) -> timedelta:
        start = datetime.combine(day, datetime.min.time(), BERLIN)
        return berlin_office.working_between(start, start + timedelta(hours=6))

    assert night(spring) == timedelta(hours=2)
    assert night(autumn) == timedelta(hours=4)
    assert berlin_office.add(_at(BERLIN, 2026, 3, 29, 1, 30), timedelta(hours=1)) == _at(
        BERLIN, 2026, 3, 29, 3, 30
    )


def test_a_day_open_around_the_clock_is_23_or_25_hours_on_a_change(
    berlin_around_the_clock: BusinessCalendar,
) -> None:
    def day_long(day: date) -> timedelta:
        midnight = datetime.combine(day, datetime.min.time(), BERLIN)
        following = datetime.combine(day + timedelta(days=1), datetime.min.time(), BERLIN)
        return berlin_around_the_clock.working_between(midnight, following)

    assert day_long(date(2026, 3, 29)) == timedelta(hours=23)
    assert day_long(date(2026, 10, 25)) == timedelta(hours=25)
    assert day_long(date(2026, 3, 30)) == timedelta(hours=24)


BERLIN_CHANGES = st.one_of(
    _instants(_at(BERLIN, 2026, 3, 26, 0, 0), _at(BERLIN, 2026, 3, 31, 0, 0), timedelta(minutes=1)),
    _instants(_at(BERLIN, 2026, 10, 22, 0, 0), _at(BERLIN, 2026, 10, 27, 0, 0), timedelta(minutes=1)),
)


@settings(max_examples=60, deadline=None)
@given(start=BERLIN_CHANGES, minutes=st.integers(min_value=0, max_value=3 * 24 * 60))
def test_working_time_across_a_change_is_the_count_of_working_minutes(
    berlin_office: BusinessCalendar, berlin_around_the_clock: BusinessCalendar, start: datetime, minutes: int
) -> None:
    start = start.astimezone(UTC)
    end = start + timedelta(minutes=minutes)
    for calendar in (berlin_office, berlin_around_the_clock):
        counted = sum(calendar.is_working_time(start + timedelta(minutes=m)) for m in range(minutes))

        assert calendar.working_between(start, end) == timedelta(minutes=counted)
