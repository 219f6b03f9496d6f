"""SLA clocks: working time counted towards a target on a calendar, paused and resumed, pure.

A clock counts only the working time of its basis (a business calendar, or the wall clock for
targets given in calendar days) and only while it runs: ``elapsed`` holds what was counted up to
``running_since``, and ``due_at`` is when the target is used up if it keeps running. Pausing adds
the working time since ``running_since``; resuming computes a new ``due_at`` from what is left.
The clock's events (started, paused, resumed, warned, breached, fulfilled, cancelled) are the
ticket's SLA history, as Zendesk's SLA events are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message

from services.platform.calendars import BusinessCalendar, Duration
from services.platform.timestamps import dt, pb_duration, ts


class TimeBasis(Protocol):
    """What a clock counts on: a business calendar, or the wall clock."""

    calendar_id: str
    version: int

    def add(self, start: datetime, working: timedelta) -> datetime: ...

    def working_between(self, start: datetime, end: datetime) -> timedelta: ...


@dataclass(frozen=True)
class WallClock:
    """Every moment counts: the basis of targets written in calendar days ("7d")."""

    calendar_id: str = "wall-clock"
    version: int = 1

    def add(self, start: datetime, working: timedelta) -> datetime:
        return start + working

    def working_between(self, start: datetime, end: datetime) -> timedelta:
        return max(timedelta(0), end - start)


WALL_CLOCK = WallClock()


def basis_of(duration: Duration, calendar: BusinessCalendar) -> tuple[TimeBasis, timedelta]:
    """The basis a target counts on and its length there: working time, or wall time for days."""
    if duration.calendar:
        return WALL_CLOCK, duration.calendar
    return calendar, calendar.working_time(duration)


@dataclass(frozen=True)
class Clock:
    """One running (or paused, or finished) SLA clock of a ticket."""

    clock: int
    dispatch_id: str
    target: timedelta
    calendar_id: str
    due_at: datetime
    warn_at: datetime | None = None
    elapsed: timedelta = timedelta(0)
    running_since: datetime | None = None
    warned: bool = False
    breached: bool = False
    done: bool = False

    @property
    def key(self) -> tuple[int, str]:
        return (self.clock, self.dispatch_id)

    @property
    def running(self) -> bool:
        return self.running_since is not None and not self.done

    @property
    def paused(self) -> bool:
        return self.running_since is None and not self.done

    def counted(self, now: datetime, basis: TimeBasis) -> timedelta:
        """Working time counted up to ``now``."""
        if self.running_since is None:
            return self.elapsed
        return self.elapsed + basis.working_between(self.running_since, now)


def name(clock: int) -> str:
    return ev.SlaClock.Name(clock).removeprefix("SLA_CLOCK_").lower()


def start(
    ticket_id: str,
    clock: int,
    dispatch_id: str,
    target: Duration,
    calendar: BusinessCalendar,
    now: datetime,
    warn_share: float | None,
) -> ev.SlaClockStarted:
    basis, length = basis_of(target, calendar)
    event = ev.SlaClockStarted(
        ticket_id=ticket_id,
        clock=clock,
        dispatch_id=dispatch_id,
        target=pb_duration(length),
        due_at=ts(basis.add(now, length)),
        calendar_id=basis.calendar_id,
        calendar_version=basis.version,
    )
    if warn_share:
        event.warn_at.CopyFrom(ts(basis.add(now, length * warn_share)))
    return event


def pause(ticket_id: str, clock: Clock, now: datetime, basis: TimeBasis) -> ev.SlaClockPaused:
    return ev.SlaClockPaused(
        ticket_id=ticket_id,
        clock=clock.clock,
        dispatch_id=clock.dispatch_id,
        elapsed=pb_duration(clock.counted(now, basis)),
    )


def resume(
    ticket_id: str, clock: Clock, now: datetime, basis: TimeBasis, warn_share: float | None
) -> ev.SlaClockResumed:
    left = max(timedelta(0), clock.target - clock.elapsed)
    event = ev.SlaClockResumed(
        ticket_id=ticket_id,
        clock=clock.clock,
        dispatch_id=clock.dispatch_id,
        due_at=ts(basis.add(now, left)),
    )
    if warn_share and not clock.warned:
        warn_left = clock.target * warn_share - clock.elapsed
        if warn_left > timedelta(0):
            event.warn_at.CopyFrom(ts(basis.add(now, warn_left)))
    return event


def fulfil(ticket_id: str, clock: Clock, now: datetime, basis: TimeBasis) -> ev.SlaClockFulfilled:
    return ev.SlaClockFulfilled(
        ticket_id=ticket_id,
        clock=clock.clock,
        dispatch_id=clock.dispatch_id,
        elapsed=pb_duration(clock.counted(now, basis)),
        due_at=ts(clock.due_at),
        breached=clock.breached or now > clock.due_at,
    )


def cancel(ticket_id: str, clock: Clock, reason: str) -> ev.SlaClockCancelled:
    return ev.SlaClockCancelled(
        ticket_id=ticket_id, clock=clock.clock, dispatch_id=clock.dispatch_id, reason=reason
    )


def evolve(clock: Clock | None, event: Message, at: datetime) -> Clock | None:
    """A clock after one of its events (None before it started)."""
    match event:
        case ev.SlaClockStarted():
            return Clock(
                clock=event.clock,
                dispatch_id=event.dispatch_id,
                target=event.target.ToTimedelta(),
                calendar_id=event.calendar_id,
                due_at=dt(event.due_at),
                warn_at=dt(event.warn_at) if event.HasField("warn_at") else None,
                running_since=at,
            )
    if clock is None:
        return None
    match event:
        case ev.SlaClockPaused():
            return replace(clock, elapsed=event.elapsed.ToTimedelta(), running_since=None)
        case ev.SlaClockResumed():
            warn_at = dt(event.warn_at) if event.HasField("warn_at") else None
            return replace(clock, due_at=dt(event.due_at), warn_at=warn_at, running_since=at)
        case ev.SlaWarningReached():
            return replace(clock, warned=True)
        case ev.SlaBreached():
            return replace(clock, breached=True)
        case ev.SlaClockFulfilled():
            return replace(
                clock,
                elapsed=event.elapsed.ToTimedelta(),
                running_since=None,
                done=True,
                breached=event.breached,
            )
        case ev.SlaClockCancelled():
            return replace(clock, running_since=None, done=True)
    return clock
