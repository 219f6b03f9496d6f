"""What the tickets service's gRPC and HTTP APIs share: whom a caller acts for, the commands both build
alike, a department's dispatches and their pages; so a request means the same on either."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from services.platform.errors import NotFound, PermissionDenied
from services.platform.identity import Principal, department_acted_for
from services.platform.paging import page_of as page
from services.platform.requests import Request
from services.tickets import domain
from services.tickets.domain import Dispatch, Ticket
from services.tickets.handlers import TicketsService, ticket_id_for

__all__ = [
    "Caller",
    "acting",
    "answer_dispatch",
    "department_dispatches",
    "new_ticket",
    "on_ticket",
    "own_dispatch",
    "page",
]


@dataclass(frozen=True)
class Caller:
    """Who calls: ``department`` is the department it acts for, "" for the center's own people."""

    subject: str = ""
    department: str = ""


def acting(principal: Principal | None) -> Caller:
    """The caller a principal is: it acts for its department only when it has no role of the center."""
    if principal is None:
        return Caller()
    return Caller(principal.subject, department_acted_for(principal))


def on_ticket(tickets: TicketsService, ticket_id: str, caller: Caller) -> dict[str, Any]:
    """The fields every command on an existing ticket starts with."""
    return {
        "ticket_id": ticket_id,
        "now": tickets.now(),
        "by": caller.subject,
        "department": caller.department,
    }


def new_ticket(
    tickets: TicketsService, request_id: str, caller: Caller, **fields: Any
) -> domain.CreateTicket:
    """A ticket to open; its id derives from the request id, so a retry names the same ticket."""
    return domain.CreateTicket(
        ticket_id=ticket_id_for(request_id), now=tickets.now(), by=caller.subject, **fields
    )


def answer_dispatch(
    tickets: TicketsService, request: Request, command: domain.Command
) -> tuple[Ticket, Dispatch]:
    """Run a department's command on one dispatch; the ticket and that dispatch as it left them."""
    ticket = tickets.execute(request, command)
    return ticket, ticket.dispatches[command.dispatch_id]  # type: ignore[attr-defined]


def own_dispatch(
    tickets: TicketsService, ticket_id: str, dispatch_id: str, department: str
) -> tuple[Ticket, Dispatch]:
    """One dispatch as ``department`` may read it: NotFound for an unknown ticket or dispatch,
    PermissionDenied for a ticket never dispatched to it or another department's dispatch."""
    ticket = tickets.get(ticket_id, department)
    dispatch = ticket.dispatches.get(dispatch_id)
    if dispatch is None:
        raise NotFound(f"ticket {ticket_id} has no dispatch {dispatch_id}")
    if department and dispatch.department != department:
        raise PermissionDenied(
            f"dispatch {dispatch_id} is {dispatch.department}'s; {department} answers only its own"
        )
    return ticket, dispatch


def department_dispatches(
    tickets: TicketsService, department: str, statuses: Collection[int] = ()
) -> list[tuple[Ticket, Dispatch]]:
    """A department's work list: its dispatches (in ``statuses``, when given), open ones first by due
    time."""
    return sorted(
        (
            (ticket, dispatch)
            for ticket in tickets.tickets()
            for dispatch in ticket.dispatches.values()
            if dispatch.department == department and (not statuses or dispatch.status in statuses)
        ),
        key=lambda row: (not row[1].open, row[1].due_at, row[1].dispatch_id),
    )
