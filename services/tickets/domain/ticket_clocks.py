"""A ticket's SLA clocks as decisions: started, paused and resumed with its status, fulfilled, cancelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message

from services.platform.calendars import BusinessCalendar, Duration
from services.tickets import clocks
from services.tickets.clocks import (
    WALL_CLOCK,
    TimeBasis,
)
from services.tickets.domain.state import TICKET_CLOCKS, Ticket
from services.tickets.policies import Rules, SlaRule


def after(moment: datetime, duration: Duration, calendar: BusinessCalendar) -> datetime:
    basis, length = clocks.basis_of(duration, calendar)
    return basis.add(moment, length)


def rule_of(ticket: Ticket, rules: Rules) -> SlaRule:
    return rules.policy.rule_for(ticket.type, ticket.priority, ticket.category)


# Clocks on the ticket --------------------------------------------------------------------------------


def basis_for(rules: Rules, calendar_id: str) -> TimeBasis:
    if calendar_id == WALL_CLOCK.calendar_id:
        return WALL_CLOCK
    return rules.calendars[calendar_id]


def pause_ticket_clocks(ticket: Ticket, status: str, now: datetime, rules: Rules) -> list[Message]:
    if status not in rules.policy.pause_in:
        return []
    return [event for kind in TICKET_CLOCKS for event in pause_clock(ticket, kind, "", now, rules)]


def resume_ticket_clocks(ticket: Ticket, now: datetime, rules: Rules) -> list[Message]:
    return [event for kind in TICKET_CLOCKS for event in resume_clock(ticket, kind, "", now, rules)]


def pause_clock(ticket: Ticket, kind: int, dispatch_id: str, now: datetime, rules: Rules) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or not clock.running:
        return []
    return [clocks.pause(ticket.ticket_id, clock, now, basis_for(rules, clock.calendar_id))]


def resume_clock(ticket: Ticket, kind: int, dispatch_id: str, now: datetime, rules: Rules) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or not clock.paused:
        return []
    share = None if clock.warn_at is None and clock.warned else rules.policy.warn_share
    return [clocks.resume(ticket.ticket_id, clock, now, basis_for(rules, clock.calendar_id), share)]


def fulfil_clock(ticket: Ticket, kind: int, dispatch_id: str, now: datetime, rules: Rules) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or clock.done:
        return []
    return [clocks.fulfil(ticket.ticket_id, clock, now, basis_for(rules, clock.calendar_id))]


def cancel_clock(ticket: Ticket, kind: int, dispatch_id: str, reason: str) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or clock.done:
        return []
    return [clocks.cancel(ticket.ticket_id, clock, reason)]


def cancel_all(ticket: Ticket, reason: str) -> list[Message]:
    return [clocks.cancel(ticket.ticket_id, c, reason) for c in ticket.clocks.values() if not c.done]


def apply_clock_events(ticket: Ticket, events: Sequence[Message], now: datetime) -> Ticket:
    """The ticket after the clock events decided so far, for a decision that goes on from there."""
    for event in events:
        key = clock_key(event)
        if key is not None:
            clock = clocks.evolve(ticket.clocks.get(key), event, now)
            if clock is not None:
                ticket = replace(ticket, clocks={**ticket.clocks, key: clock})
    return ticket


def clock_key(event: Message) -> tuple[int, str] | None:
    if isinstance(event, _CLOCK_EVENTS):
        return (event.clock, event.dispatch_id)  # type: ignore[attr-defined]
    return None


_CLOCK_EVENTS = (
    ev.SlaClockStarted,
    ev.SlaClockPaused,
    ev.SlaClockResumed,
    ev.SlaClockExtended,
    ev.SlaWarningReached,
    ev.SlaBreached,
    ev.SlaClockFulfilled,
    ev.SlaClockCancelled,
)


def close_events(ticket: Ticket, reason: str, by: str, now: datetime, rules: Rules) -> list[Message]:
    policy = rules.policy
    closed = ev.TicketClosed(
        ticket_id=ticket.ticket_id,
        closed_by=by,
        reason=reason,
        reopen_until=clocks.ts(after(now, policy.reopen_within, policy.calendar)),
    )
    return [closed, *cancel_all(ticket, "closed")]
