"""The Ticket aggregate's state: a ticket, its dispatches and the statuses they move through."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev
from callcenter.tickets.v1 import service_pb2 as pb

from services.platform.errors import FailedPrecondition
from services.tickets.clocks import Clock

# The aggregate kind's name: the events' aggregate_type and the store's key.
KIND = "Ticket"

Status = pb.TicketStatus
DispatchStatus = pb.DispatchStatus
SlaClock = ev.SlaClock
Role = ev.DispatchRole
Origin = ev.TicketOrigin
Satisfaction = ev.Satisfaction

TICKET_CLOCKS = (SlaClock.SLA_CLOCK_FIRST_RESPONSE, SlaClock.SLA_CLOCK_RESOLUTION)
CLOSED = (Status.TICKET_STATUS_CLOSED, Status.TICKET_STATUS_MERGED)
DONE = (Status.TICKET_STATUS_RESOLVED, *CLOSED)
WAITING = {
    Status.TICKET_STATUS_WAITING_ON_CUSTOMER: "waiting_on_customer",
    Status.TICKET_STATUS_WAITING_FOR_APPROVAL: "waiting_for_approval",
}
OPEN_DISPATCH = (
    DispatchStatus.DISPATCH_STATUS_DISPATCHED,
    DispatchStatus.DISPATCH_STATUS_ACCEPTED,
    DispatchStatus.DISPATCH_STATUS_RETURNED,
)
AUTO_CLOSE_DEADLINE = "auto_close"


@dataclass(frozen=True)
class Dispatch:
    """One dispatch of the ticket to a department; ``inside`` holds the intervals it spent there."""

    dispatch_id: str
    department: str
    role: int
    category: str
    instructions: str
    status: int
    dispatched_at: datetime
    accept_due: datetime
    due_at: datetime
    supervise_at: datetime | None
    escalate_at: datetime | None
    calendar_id: str
    accepted_at: datetime | None = None
    ended_at: datetime | None = None
    requested_due_at: datetime | None = None
    result: str = ""
    resolved: bool = False
    supervised: bool = False
    notices: int = 0
    escalated: bool = False
    inside_since: datetime | None = None
    inside: tuple[tuple[datetime, datetime], ...] = ()
    redo: bool = False
    replaces: str = ""
    review_approval_id: str = ""  # the approval reviewing its return or extension request, while it does
    review_requests: int = 0  # reviews sent to the approvals service so far

    @property
    def open(self) -> bool:
        return self.status in OPEN_DISPATCH

    @property
    def with_department(self) -> bool:
        return self.inside_since is not None

    def time_inside(self, now: datetime) -> timedelta:
        """Wall time spent inside the department so far: closed intervals plus the running one."""
        spent = sum((end - start for start, end in self.inside), timedelta(0))
        return spent + (now - self.inside_since if self.inside_since is not None else timedelta(0))

    def describe(self) -> str:
        status = DispatchStatus.Name(self.status).removeprefix("DISPATCH_STATUS_").lower()
        return f"dispatch {self.dispatch_id} to {self.department} is {status}"


@dataclass(frozen=True)
class Ticket:
    """One work order, as the tickets context knows it."""

    ticket_id: str
    status: int = Status.TICKET_STATUS_UNSPECIFIED
    type: int = ev.TICKET_TYPE_UNSPECIFIED
    priority: int = 3
    summary: str = ""
    category: str = ""
    channel: int = types_pb2.CHANNEL_UNSPECIFIED
    origin: int = Origin.TICKET_ORIGIN_UNSPECIFIED
    source_contact_id: str = ""
    customer_hash: str = ""
    customer_masked: str = ""
    created_at: datetime | None = None
    created_by: str = ""
    assignee_id: str = ""
    group_id: str = ""
    sla_policy_id: str = ""
    sla_policy_version: int = 0
    sla_rule: str = ""
    calendar_id: str = ""
    clocks: dict[tuple[int, str], Clock] = field(default_factory=dict)
    dispatches: dict[str, Dispatch] = field(default_factory=dict)
    notes: int = 0
    attachments: int = 0
    first_response_at: datetime | None = None
    pending_approval_id: str = ""
    resolved_at: datetime | None = None
    close_at: datetime | None = None
    follow_up_due: datetime | None = None
    closed_at: datetime | None = None
    reopen_until: datetime | None = None
    reopen_count: int = 0
    merged_into: str = ""
    duplicates: tuple[str, ...] = ()
    follows_ticket_id: str = ""
    follow_up_ticket_id: str = ""
    csat_score: int = 0

    @property
    def exists(self) -> bool:
        return self.status != Status.TICKET_STATUS_UNSPECIFIED

    @property
    def open_dispatches(self) -> list[Dispatch]:
        return [d for d in self.dispatches.values() if d.open]

    def dispatched_to(self, department: str) -> bool:
        return any(d.department == department for d in self.dispatches.values())

    def describe(self) -> str:
        return f"ticket {self.ticket_id} is {status_name(self.status)}"


def status_name(status: int) -> str:
    return Status.Name(status).removeprefix("TICKET_STATUS_").lower()


# Commands -----------------------------------------------------------------------------------------


def refuse_if_closed(ticket: Ticket, what: str) -> None:
    if ticket.status in CLOSED:
        raise FailedPrecondition(f"{ticket.describe()}; a closed ticket is not {what}")


def refuse_if_done(ticket: Ticket, what: str) -> None:
    if ticket.status in DONE:
        raise FailedPrecondition(f"{ticket.describe()}; a {status_name(ticket.status)} ticket is not {what}")
