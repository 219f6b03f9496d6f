"""What a ticket waits on (clock warnings and due times, supervision of late dispatches, closing) and what
each deadline causes when it falls due."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message

from services.platform.calendars import BeyondCalendar
from services.platform.errors import FailedPrecondition
from services.platform.eventstore import Deadline
from services.tickets import clocks
from services.tickets.domain.state import (
    AUTO_CLOSE_DEADLINE,
    DONE,
    TICKET_CLOCKS,
    DispatchStatus,
    Status,
    Ticket,
)
from services.tickets.domain.ticket_clocks import close_events
from services.tickets.policies import Rules

# Timers -------------------------------------------------------------------------------------------


def deadlines(ticket: Ticket) -> Iterable[Deadline]:
    """What the ticket waits on: clock warnings and due times, supervision of late dispatches, closing."""
    for clock in ticket.clocks.values():
        if not clock.running:
            continue
        prefix = f"sla/{clock.clock}/{clock.dispatch_id}"
        if clock.warn_at is not None and not clock.warned and not clock.breached:
            yield Deadline(f"{prefix}/warn", clock.warn_at)
        if not clock.breached:
            yield Deadline(f"{prefix}/due", clock.due_at)
    for dispatch in ticket.dispatches.values():
        if dispatch.status not in (
            DispatchStatus.DISPATCH_STATUS_DISPATCHED,
            DispatchStatus.DISPATCH_STATUS_ACCEPTED,
        ):
            continue
        if dispatch.supervise_at is not None and not dispatch.supervised:
            yield Deadline(f"dispatch/{dispatch.dispatch_id}/supervise", dispatch.supervise_at)
        if dispatch.escalate_at is not None and not dispatch.escalated:
            yield Deadline(f"dispatch/{dispatch.dispatch_id}/escalate", dispatch.escalate_at)
    if ticket.status == Status.TICKET_STATUS_RESOLVED and ticket.close_at is not None:
        yield Deadline(AUTO_CLOSE_DEADLINE, ticket.close_at)


def on_deadline(ticket: Ticket, deadline: Deadline, now: datetime, rules: Rules) -> list[Message]:
    """What a due deadline causes; nothing when the ticket has moved on since it was set."""
    try:
        return _on_deadline(ticket, deadline, now, rules)
    except BeyondCalendar as beyond:
        raise FailedPrecondition(
            f"{beyond}; a newer calendar version must cover it (deploy/calendars/)"
        ) from None


def _on_deadline(ticket: Ticket, deadline: Deadline, now: datetime, rules: Rules) -> list[Message]:
    if deadline not in set(deadlines(ticket)):
        return []
    t = ticket.ticket_id
    if deadline.name == AUTO_CLOSE_DEADLINE:
        return close_events(ticket, "no answer", "system", now, rules)
    parts = deadline.name.split("/")
    if parts[0] == "dispatch":
        dispatch = ticket.dispatches[parts[1]]
        fields = {"ticket_id": t, "dispatch_id": dispatch.dispatch_id, "department": dispatch.department}
        if parts[2] == "supervise":
            return [ev.SupervisionNoticeIssued(**fields, due_at=clocks.ts(dispatch.due_at))]
        return [ev.DispatchEscalated(**fields, due_at=clocks.ts(dispatch.due_at))]
    kind, dispatch_id, what = int(parts[1]), parts[2], parts[3]
    clock = ticket.clocks[(kind, dispatch_id)]
    department = ticket.dispatches[dispatch_id].department if dispatch_id else ""
    if what == "warn":
        target = clock.target.total_seconds()
        return [
            ev.SlaWarningReached(
                ticket_id=t,
                clock=kind,
                dispatch_id=dispatch_id,
                due_at=clocks.ts(clock.due_at),
                share_percent=round(rules.policy.warn_share * 100) if target else 0,
                department=department,
            )
        ]
    events: list[Message] = [
        ev.SlaBreached(
            ticket_id=t,
            clock=kind,
            due_at=clocks.ts(clock.due_at),
            department=department,
            dispatch_id=dispatch_id,
        )
    ]
    if kind in TICKET_CLOCKS and ticket.status not in DONE:
        # A missed ticket target escalates: to the escalation group, with the policy's priority raise.
        policy = rules.policy
        to_group = "" if ticket.group_id == policy.escalation_group else policy.escalation_group
        events.append(
            ev.TicketEscalated(
                ticket_id=t,
                to_group_id=to_group,
                new_priority=min(5, ticket.priority + policy.raise_priority),
                reason=f"{clocks.name(kind)} target missed",
                escalated_by="system",
            )
        )
    return events
