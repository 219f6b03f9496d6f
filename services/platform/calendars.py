"""Business calendars: when a desk is open, and deadlines counted in working time (tickets, approvals).

A calendar is versioned configuration, one YAML file each (``deploy/calendars/``)::

    calendar: cn-gov          # id: lower-case letters, digits, '-' and '_'
    version: 1                # positive integer; a changed calendar is a new version
    time_zone: Asia/Shanghai  # IANA name; opening hours are wall-clock times in this zone
    covers: {from: 2026-01-01, to: 2026-12-31}   # computations needing another day are refused
    provisional_from: 2027-01-01   # optional: the days from here on are a forecast (next year's
                                   # official notice is not out), used but warned of; see below
    working_day: 7h           # the length of one working day, for durations written in wd
    weekly:                   # opening hours per weekday; a weekday left out is closed
      monday: ["09:00-12:00", "13:30-17:30"]      # HH:MM-HH:MM, earliest first, not overlapping;
      tuesday: ["09:00-12:00", "13:30-17:30"]     # 24:00 may end a day
    holidays:                 # closed although the weekday is open; a day or a range of days
      - {date: 2026-01-01, name: New Year's Day}
      - {from: 2026-02-15, to: 2026-02-23, name: Spring Festival}
    extra_working_days:       # open although the weekday is closed (China's make-up days),
      - {date: 2026-01-04, as: monday, name: New Year make-up day}   # with the hours of `as` (monday)

Refused at load, with the line: malformed or unordered hours, a day outside ``covers`` or listed twice,
a day both a holiday and an extra working day, an extra working day on an open weekday or with the
hours of a closed one, ``covers.from`` after ``covers.to``, an unknown time zone, a bad duration.

A provisional part lets deadlines run into a year whose official arrangement is not yet published
(China's notice comes out in November or December): it holds the days that law fixes (statutory
holidays) and no make-up days. Computations over it work as over any covered day; ``notices`` says,
for the service to log at start, which calendars rest on a forecast or end soon. The official days
come as a new version, never as an edit of the one in use.

Durations (``parse_duration``): ``90m``, ``2h``, ``1h30m``, ``3wd`` and ``1wd4h`` are working time, a
working day (wd) being the calendar's ``working_day`` (so a wd is converted by the calendar that counts
it: ``BusinessCalendar.working_time``); ``7d`` is calendar days, elapsed time whether open or not
(7 x 24 h, as a ``timedelta``). The two kinds do not mix in one duration.

Across a daylight-saving change a span opens when the local clock first shows its start and closes
when it first shows its end; a time the clock skips counts as the moment of the jump. So a
09:00-17:00 day is 8 h on the change days too, and 00:00-24:00 is 23 h or 25 h.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, model_validator

from services.platform import yamlconfig
from services.platform.yamlconfig import ConfigError, Document, dotted_path

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

_ONE_DAY = timedelta(days=1)
_CALENDAR_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_SPAN = re.compile(r"^([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})$")
_WORKING_DURATION = re.compile(r"^(?:(?P<wd>[0-9]+)wd)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?$")
_CALENDAR_DURATION = re.compile(r"^(?P<d>[0-9]+)d$")


class BeyondCalendar(ValueError):
    """A computation needs a day the calendar does not cover; the message names the calendar and its range."""


@dataclass(frozen=True)
class Duration:
    """How long a deadline runs: working time (``working`` plus ``working_days`` of the counting calendar's
    working day), or ``calendar`` time, which elapses whether open or not."""

    working: timedelta = timedelta()
    working_days: int = 0
    calendar: timedelta = timedelta()


def parse_duration(text: str) -> Duration:
    """``90m``, ``2h``, ``1h30m``, ``3wd``, ``1wd4h`` (working time) or ``7d`` (calendar days)."""
    if isinstance(text, str):
        calendar = _CALENDAR_DURATION.match(text)
        if calendar:
            return Duration(calendar=timedelta(days=int(calendar["d"])))
        working = _WORKING_DURATION.match(text)
        if working and any(working.groups()):
            return Duration(
                working=timedelta(hours=int(working["h"] or 0), minutes=int(working["m"] or 0)),
                working_days=int(working["wd"] or 0),
            )
    raise ValueError(
        f"not a duration: {text!r}; write working time as e.g. 90m, 2h, 1h30m, 3wd (working days), "
        f"or calendar days as e.g. 7d"
    )


class _Timeline:
    """The covered range's opening spans as UTC instants, sorted and disjoint, each with the working time
    of the spans before it: every question is a binary search, however long the span of time asked about."""

    __slots__ = (
        "covered_from",
        "covered_until",
        "ends",
        "open_days",
        "starts",
        "worked_before",
        "worked_by_end",
    )

    def __init__(
        self,
        covered_from: datetime,
        covered_until: datetime,
        spans: Sequence[tuple[datetime, datetime]],
        open_days: Iterable[date],
    ) -> None:
        self.covered_from = covered_from
        self.covered_until = covered_until
        self.starts = tuple(start for start, _ in spans)
        self.ends = tuple(end for _, end in spans)
        self.open_days = frozenset(open_days)
        worked_by_end = list(accumulate((end - start for start, end in spans), initial=timedelta()))
        self.worked_before = tuple(worked_by_end[:-1])
        self.worked_by_end = tuple(worked_by_end[1:])

    def __repr__(self) -> str:
        return f"<{len(self.starts)} opening spans from {self.covered_from} until {self.covered_until}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Timeline) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        return (self.covered_from, self.covered_until, self.starts, self.ends)

    def worked_until(self, at: datetime) -> timedelta:
        """Working time from the start of the covered range up to ``at``."""
        index = bisect_right(self.starts, at) - 1
        if index < 0:
            return timedelta()
        return self.worked_before[index] + min(at, self.ends[index]) - self.starts[index]

    def instant_worked(self, worked: timedelta) -> datetime | None:
        """The instant at which ``worked`` (> 0) working time has passed since the start of the range."""
        index = bisect_left(self.worked_by_end, worked)
        if index == len(self.starts):
            return None
        return self.starts[index] + (worked - self.worked_before[index])

    def is_open(self, at: datetime) -> bool:
        index = bisect_right(self.starts, at) - 1
        return index >= 0 and at < self.ends[index]

    def next_opening(self, at: datetime) -> datetime | None:
        if self.is_open(at):
            return at
        index = bisect_right(self.starts, at)
        return self.starts[index] if index < len(self.starts) else None


@dataclass(frozen=True)
class BusinessCalendar:
    """Opening hours over a covered range of days, in one time zone; instants in, UTC instants out.

    Every method takes timezone-aware datetimes (any zone; a naive one is a ``ValueError``) and raises
    ``BeyondCalendar`` when the answer depends on a day outside ``first_day``..``last_day``.
    """

    calendar_id: str
    version: int
    time_zone: ZoneInfo
    first_day: date
    last_day: date
    working_day: timedelta
    _timeline: _Timeline = field(repr=False)
    provisional_from: date | None = None

    def is_provisional(self, day: date) -> bool:
        """Whether ``day`` lies in the provisional part: a forecast of the year, not its official days."""
        return self.provisional_from is not None and day >= self.provisional_from

    def is_working_day(self, day: date) -> bool:
        """Whether ``day`` has any opening hours (holidays and extra working days applied)."""
        if not self.first_day <= day <= self.last_day:
            raise self._beyond(f"whether {day} is a working day")
        return day in self._timeline.open_days

    def is_working_time(self, at: datetime) -> bool:
        at = self._instant(at, "is_working_time")
        self._require_covered(at, f"whether {at.isoformat()} is working time", until_inclusive=False)
        return self._timeline.is_open(at)

    def next_opening(self, at: datetime) -> datetime:
        """``at`` itself in working time, else the instant the next opening hours begin."""
        at = self._instant(at, "next_opening")
        self._require_covered(at, f"the next opening after {at.isoformat()}")
        opening = self._timeline.next_opening(at)
        if opening is None:
            raise self._beyond(f"the next opening after {at.isoformat()}")
        return opening

    def add(self, start: datetime, working: timedelta) -> datetime:
        """The instant at which ``working`` working time has passed since ``start``; counting begins at the
        next opening when ``start`` is outside hours, and ends at a closing when the time runs out there."""
        start = self._instant(start, "add")
        if working < timedelta():
            raise ValueError(f"cannot add a negative working time ({working})")
        self._require_covered(start, f"adding working time to {start.isoformat()}")
        if not working:
            return start
        reached = self._timeline.instant_worked(self._timeline.worked_until(start) + working)
        if reached is None:
            raise self._beyond(f"adding {working} of working time to {start.isoformat()}")
        return reached

    def working_time(self, duration: Duration) -> timedelta:
        """The working time of a duration on this calendar, its working days made ``working_day`` long."""
        return duration.working + duration.working_days * self.working_day

    def add_duration(self, start: datetime, duration: Duration) -> datetime:
        """``start`` plus a parsed duration: its working time through ``add``, then its calendar time as
        elapsed time (whether open or not, and without needing a covered day)."""
        at = self._instant(start, "add_duration")
        working = self.working_time(duration)
        if working:
            at = self.add(at, working)
        return at + duration.calendar

    def working_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time inside ``[start, end)``; nothing when ``end`` is not after ``start``."""
        start, end = self._instant(start, "working_between"), self._instant(end, "working_between")
        if end <= start:
            return timedelta()
        what = f"working time between {start.isoformat()} and {end.isoformat()}"
        self._require_covered(start, what)
        self._require_covered(end, what)
        return self._timeline.worked_until(end) - self._timeline.worked_until(start)

    def _instant(self, at: datetime, method: str) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"{method} needs a timezone-aware datetime, got the naive {at.isoformat()}")
        return at.astimezone(UTC)

    def _require_covered(self, at: datetime, what: str, until_inclusive: bool = True) -> None:
        until = self._timeline.covered_until
        if at < self._timeline.covered_from or at > until or (at == until and not until_inclusive):
            raise self._beyond(what)

    def _beyond(self, what: str) -> BeyondCalendar:
        return BeyondCalendar(
            f"{what} needs a day outside calendar {self.calendar_id} version {self.version}, which covers "
            f"{self.first_day}..{self.last_day} ({self.time_zone.key}) only"
        )


def notices(calendars: Iterable[BusinessCalendar], today: date, within: timedelta) -> list[str]:
    """What a service counting deadlines on these calendars should warn of at start: a calendar that ends
    within ``within`` of ``today`` (later deadlines will be refused), or whose provisional part begins
    by then (deadlines there rest on a forecast until the official days are added as a new version)."""
    said = []
    for calendar in calendars:
        name = f"calendar {calendar.calendar_id} version {calendar.version}"
        if calendar.last_day - today <= within:
            said.append(
                f"{name} covers up to {calendar.last_day} only: deadlines falling later are refused until "
                "a version covering the next year is added"
            )
        provisional = calendar.provisional_from
        if provisional is not None and provisional - today <= within:
            said.append(
                f"{name} is provisional from {provisional} (statutory holidays only, no make-up working "
                "days): deadlines from then on may move when the official days are added as a new version"
            )
    return said


def load_calendar(path: Path) -> BusinessCalendar:
    """Read, validate and build one calendar file; anything wrong is a ``ConfigError`` with its line."""
    return _read_calendar(Path(path))[1]


def load_calendar_versions(directory: Path) -> dict[tuple[str, int], BusinessCalendar]:
    """Every ``*.yaml`` calendar in ``directory`` by (id, version); the same pair twice is refused."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(directory, None, "no such directory of calendars")
    found: dict[tuple[str, int], BusinessCalendar] = {}
    sources: dict[tuple[str, int], Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        document, calendar = _read_calendar(path)
        key = (calendar.calendar_id, calendar.version)
        if key in found:
            raise document.error(
                ("version",),
                f"calendar {calendar.calendar_id} version {calendar.version} is already defined in "
                f"{sources[key]}; a changed calendar needs a new version",
            )
        found[key] = calendar
        sources[key] = path
    return found


def load_calendars(directory: Path) -> dict[str, BusinessCalendar]:
    """Every calendar in ``directory`` by id, at its highest version (``load_calendar_versions`` has all)."""
    return latest_versions(load_calendar_versions(directory))


def latest_versions(versions: Mapping[tuple[str, int], BusinessCalendar]) -> dict[str, BusinessCalendar]:
    """The highest version of each calendar, by id."""
    return {calendar_id: calendar for (calendar_id, _), calendar in sorted(versions.items())}


def _calendar_id(value: str) -> str:
    if not _CALENDAR_ID.match(value):
        raise ValueError(f"a calendar id is lower-case letters, digits, '-' and '_', got {value!r}")
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r}; give an IANA name such as Asia/Shanghai") from None
    return value


def _working_day(value: str) -> timedelta:
    duration = parse_duration(value)
    if duration.working_days or duration.calendar:
        raise ValueError(f"a length in hours and minutes is expected, such as 8h or 7h30m, got {value!r}")
    if not timedelta() < duration.working <= _ONE_DAY:
        raise ValueError(f"a working day is longer than 0 and at most 24h, got {value!r}")
    return duration.working


def _span(value: Any) -> tuple[int, int]:
    """``"09:00-12:00"`` as minutes since midnight, ``(540, 720)``."""
    match = _SPAN.match(value) if isinstance(value, str) else None
    start = _minute(match[1], match[2]) if match else None
    end = _minute(match[3], match[4]) if match else None
    if start is None or end is None:
        raise ValueError(f"opening hours are written HH:MM-HH:MM within 00:00-24:00, got {value!r}")
    if end <= start:
        raise ValueError(f"opening hours {value!r} end before they begin")
    return start, end


def _minute(hours: str, minutes: str) -> int | None:
    hour, minute = int(hours), int(minutes)
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        return None
    return hour * 60 + minute


_Span = Annotated[tuple[int, int], PlainValidator(_span)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Covers(_Strict):
    first: date = Field(alias="from")
    last: date = Field(alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> _Covers:
        if self.first > self.last:
            raise ValueError(f"from {self.first} is after to {self.last}")
        return self


class _Weekly(_Strict):
    monday: list[_Span] = []
    tuesday: list[_Span] = []
    wednesday: list[_Span] = []
    thursday: list[_Span] = []
    friday: list[_Span] = []
    saturday: list[_Span] = []
    sunday: list[_Span] = []

    def hours(self, weekday: str) -> list[tuple[int, int]]:
        return getattr(self, weekday)


class _Holiday(_Strict):
    day: date | None = Field(None, alias="date")
    first: date | None = Field(None, alias="from")
    last: date | None = Field(None, alias="to")
    name: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_day_or_a_range(self) -> _Holiday:
        if (self.day is None) == (self.first is None and self.last is None):
            raise ValueError("a holiday has either a date or from and to")
        if self.day is None and (self.first is None or self.last is None):
            raise ValueError("a range of holidays needs both from and to")
        if self.first and self.last and self.first > self.last:
            raise ValueError(f"from {self.first} is after to {self.last}")
        return self

    def bounds(self) -> list[tuple[date, str]]:
        """The first and last day, each with its key in the file."""
        if self.day is not None:
            return [(self.day, "date")]
        return [(self.first, "from"), (self.last, "to")]

    def days(self) -> list[date]:
        if self.day is not None:
            return [self.day]
        return [self.first + offset * _ONE_DAY for offset in range((self.last - self.first).days + 1)]


class _ExtraWorkingDay(_Strict):
    day: date = Field(alias="date")
    hours_of: Weekday = Field("monday", alias="as")
    name: str = Field(min_length=1)


class _CalendarFile(_Strict):
    calendar: Annotated[str, AfterValidator(_calendar_id)]
    version: int = Field(gt=0)
    time_zone: Annotated[str, AfterValidator(_time_zone)]
    covers: _Covers
    working_day: Annotated[timedelta, PlainValidator(_working_day)]
    weekly: _Weekly
    holidays: list[_Holiday] = []
    extra_working_days: list[_ExtraWorkingDay] = []
    provisional_from: date | None = None


def _read_calendar(path: Path) -> tuple[Document, BusinessCalendar]:
    document = yamlconfig.read(path)
    spec = yamlconfig.validate(document, _CalendarFile)
    _check_weekly(document, spec.weekly)
    return document, _build(spec, _check_days(document, spec))


def _refusal(document: Document, loc: tuple[str | int, ...], reason: str) -> ConfigError:
    return document.error(loc, f"{dotted_path(loc)}: {reason}")


def _check_weekly(document: Document, weekly: _Weekly) -> None:
    for weekday in WEEKDAYS:
        spans = weekly.hours(weekday)
        for index in range(1, len(spans)):
            (previous_start, previous_end), (start, _) = spans[index - 1], spans[index]
            if start < previous_start:
                raise _refusal(
                    document, ("weekly", weekday, index), "opening hours are listed earliest first"
                )
            if start < previous_end:
                raise _refusal(
                    document,
                    ("weekly", weekday, index),
                    f"overlaps the hours before it, {_format_span(spans[index - 1])}",
                )


def _check_days(document: Document, spec: _CalendarFile) -> dict[date, str | None]:
    """Every holiday and extra working day checked against ``covers`` and each other; returns the days
    that differ from their weekday, each with the weekday whose hours it has (None: closed)."""
    covers = spec.covers
    covered = f"{covers.first}..{covers.last}"
    provisional = spec.provisional_from
    if provisional is not None and not covers.first < provisional <= covers.last:
        raise _refusal(
            document,
            ("provisional_from",),
            f"{provisional} is not inside covers {covered} after its first day (a wholly provisional "
            "calendar is a forecast, not a calendar)",
        )
    listed: dict[date, str] = {}
    hours_of: dict[date, str | None] = {}
    for index, holiday in enumerate(spec.holidays):
        for day, key in holiday.bounds():
            if not covers.first <= day <= covers.last:
                raise _refusal(document, ("holidays", index, key), f"{day} is outside covers {covered}")
        for day in holiday.days():
            if day in listed:
                loc = ("holidays", index, "date") if holiday.day else ("holidays", index)
                raise _refusal(document, loc, f"{day} is listed twice (also {listed[day]})")
            listed[day] = f"holidays[{index}], {holiday.name}"
            hours_of[day] = None
    for index, extra in enumerate(spec.extra_working_days):
        loc = ("extra_working_days", index, "date")
        day, weekday = extra.day, WEEKDAYS[extra.day.weekday()]
        if not covers.first <= day <= covers.last:
            raise _refusal(document, loc, f"{day} is outside covers {covered}")
        if day in listed and hours_of[day] is None:
            raise _refusal(
                document, loc, f"{day} is also a holiday ({listed[day]}): closed or open, not both"
            )
        if day in listed:
            raise _refusal(document, loc, f"{day} is listed twice (also {listed[day]})")
        if spec.weekly.hours(weekday):
            raise _refusal(
                document, loc, f"{day} is a {weekday}, open anyway; extra working days are closed weekdays"
            )
        if not spec.weekly.hours(extra.hours_of):
            raise _refusal(
                document, ("extra_working_days", index, "as"), f"{extra.hours_of} has no opening hours"
            )
        listed[day] = f"extra_working_days[{index}], {extra.name}"
        hours_of[day] = extra.hours_of
    return hours_of


def _build(spec: _CalendarFile, hours_of: Mapping[date, str | None]) -> BusinessCalendar:
    zone = ZoneInfo(spec.time_zone)
    spans: list[tuple[datetime, datetime]] = []
    open_days: set[date] = set()
    day = spec.covers.first
    while day <= spec.covers.last:
        weekday = hours_of.get(day, WEEKDAYS[day.weekday()])
        midnight = datetime.combine(day, time())
        for start_minute, end_minute in spec.weekly.hours(weekday) if weekday is not None else ():
            start = _first_instant_showing(zone, midnight + timedelta(minutes=start_minute))
            end = _first_instant_showing(zone, midnight + timedelta(minutes=end_minute))
            if end > start:
                spans.append((start, end))
                open_days.add(day)
        day += _ONE_DAY
    return BusinessCalendar(
        calendar_id=spec.calendar,
        version=spec.version,
        time_zone=zone,
        first_day=spec.covers.first,
        last_day=spec.covers.last,
        working_day=spec.working_day,
        provisional_from=spec.provisional_from,
        _timeline=_Timeline(
            covered_from=_first_instant_showing(zone, datetime.combine(spec.covers.first, time())),
            covered_until=_first_instant_showing(zone, datetime.combine(day, time())),
            spans=spans,
            open_days=open_days,
        ),
    )


def _first_instant_showing(zone: ZoneInfo, wall: datetime) -> datetime:
    """The first instant (UTC) at which the clock in ``zone`` shows the naive ``wall`` time or later: the
    clock change itself for a time that a change skips (tz transitions fall on whole seconds)."""
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    before_jump = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    after_jump = int(instant.timestamp())
    while after_jump - before_jump > 1:
        middle = (before_jump + after_jump) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            after_jump = middle
        else:
            before_jump = middle
    return datetime.fromtimestamp(after_jump, UTC)


def _format_span(span: tuple[int, int]) -> str:
    (start_hour, start_minute), (end_hour, end_minute) = divmod(span[0], 60), divmod(span[1], 60)
    return f"{start_hour:02}:{start_minute:02}-{end_hour:02}:{end_minute:02}"
