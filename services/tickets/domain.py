"""The Ticket aggregate: a work order, its SLA clocks and its dispatches to departments, pure.

New -> assigned -> in progress -> (dispatched | waiting on the customer | waiting for approval |
escalated) -> resolved -> closed; merged closes a duplicate for good. A ticket's dispatches live in
it (a dispatch's events are keyed by its ticket), each with its own life: dispatched, accepted,
completed; or returned and reviewed; with extensions asked and reviewed, and supervision when late.
The clock of a dispatch starts when it is sent, not when it is accepted. ``decide`` checks the
command's arguments apart from the state, and every refusal names the current state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev
from callcenter.tickets.v1 import service_pb2 as pb
from google.protobuf.message import Message

from services.platform.calendars import BeyondCalendar, BusinessCalendar, Duration
from services.platform.envelope import Envelope
from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.platform.eventstore import Deadline
from services.tickets import clocks
from services.tickets.clocks import (
    WALL_CLOCK,
    Clock,
    TimeBasis,
)
from services.tickets.policies import Rules, SlaRule

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


@dataclass(frozen=True)
class Command:
    ticket_id: str
    now: datetime
    by: str
    # The caller's department, when the caller acts for one; "" for the center's own people.
    department: str = ""


@dataclass(frozen=True)
class CreateTicket(Command):
    type: int = ev.TICKET_TYPE_UNSPECIFIED
    priority: int = 0
    summary: str = ""
    category: str = ""
    source_contact_id: str = ""
    customer_hash: str = ""
    customer_masked: str = ""
    channel: int = types_pb2.CHANNEL_UNSPECIFIED
    origin: int = Origin.TICKET_ORIGIN_AGENT
    group_id: str = ""
    assignee_id: str = ""
    follows_ticket_id: str = ""


@dataclass(frozen=True)
class Assign(Command):
    assignee_id: str = ""
    group_id: str = ""
    automatic: bool = False
    strategy: str = ""


@dataclass(frozen=True)
class StartWork(Command):
    pass


@dataclass(frozen=True)
class AwaitCustomer(Command):
    reason: str = ""


@dataclass(frozen=True)
class RecordCustomerResponse(Command):
    pass


@dataclass(frozen=True)
class AddNote(Command):
    note_id: str = ""
    text: str = ""
    internal: bool = True


@dataclass(frozen=True)
class AddAttachment(Command):
    attachment_id: str = ""
    file_name: str = ""
    media_type: str = ""
    size_bytes: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class DispatchTicket(Command):
    # Ids for the dispatches this may make (one, or the catalogue's lead and assisting ones).
    dispatch_ids: tuple[str, ...] = ()
    to_department: str = ""
    role: int = Role.DISPATCH_ROLE_LEAD
    instructions: str = ""
    due_at: datetime | None = None


@dataclass(frozen=True)
class AcceptDispatch(Command):
    dispatch_id: str = ""


@dataclass(frozen=True)
class ReportProgress(Command):
    dispatch_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class CompleteDispatch(Command):
    dispatch_id: str = ""
    result: str = ""
    resolved: bool = False


@dataclass(frozen=True)
class ReturnDispatch(Command):
    dispatch_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RequestExtension(Command):
    dispatch_id: str = ""
    requested_due_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class ReviewReturn(Command):
    dispatch_id: str = ""
    accept: bool = False
    redispatch_to: str = ""
    new_dispatch_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class ReviewExtension(Command):
    dispatch_id: str = ""
    grant: bool = False
    due_at: datetime | None = None
    note: str = ""


@dataclass(frozen=True)
class RequestApproval(Command):
    approval_id: str = ""
    kind: str = ""
    amount: types_pb2.Money | None = None
    justification: str = ""


@dataclass(frozen=True)
class ConcludeApproval(Command):
    approval_id: str = ""
    outcome: str = ""


@dataclass(frozen=True)
class Escalate(Command):
    to_group_id: str = ""
    new_priority: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Resolve(Command):
    resolution_code: str = ""
    resolution: str = ""
    first_contact: bool = False


@dataclass(frozen=True)
class Close(Command):
    reason: str = ""


@dataclass(frozen=True)
class Reopen(Command):
    reason: str = ""


@dataclass(frozen=True)
class MarkMerged(Command):
    """The duplicate's side of a merge."""

    into_ticket_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class AbsorbDuplicate(Command):
    """The main ticket's side of a merge."""

    duplicate_ticket_id: str = ""


@dataclass(frozen=True)
class RecordFollowUp(Command):
    reached: bool = False
    resolved: bool = False
    satisfaction: int = Satisfaction.SATISFACTION_UNSPECIFIED
    csat_score: int = 0
    comment: str = ""
    department_at_fault: bool = False
    # The id of the redo dispatch, should the follow-up send the ticket back to its lead department.
    redo_dispatch_id: str = ""


@dataclass(frozen=True)
class RecordCsat(Command):
    score: int = 0
    survey_id: str = ""


@dataclass(frozen=True)
class LinkFollowUpTicket(Command):
    follow_up_ticket_id: str = ""


# decide -------------------------------------------------------------------------------------------


def decide(ticket: Ticket, command: Command, rules: Rules) -> list[Message]:
    """The events a command causes, or a domain error naming what is wrong and the current state."""
    try:
        return _decide(ticket, command, rules)
    except BeyondCalendar as beyond:
        raise FailedPrecondition(
            f"{beyond}; a newer calendar version must cover it (deploy/calendars/)"
        ) from None


def _decide(ticket: Ticket, command: Command, rules: Rules) -> list[Message]:
    _check_arguments(command, rules)
    if isinstance(command, CreateTicket):
        return _create(ticket, command, rules)
    if not ticket.exists:
        raise NotFound(f"ticket {command.ticket_id} does not exist")
    if command.department and not isinstance(command, _DEPARTMENT_COMMANDS):
        raise PermissionDenied(f"a department may not {type(command).__name__} a ticket")
    if command.department and not ticket.dispatched_to(command.department):
        raise PermissionDenied(
            f"ticket {ticket.ticket_id} was never dispatched to {command.department}; a department acts "
            f"only on its own dispatches"
        )
    t, now, by = ticket.ticket_id, command.now, command.by
    match command:
        case Assign():
            _refuse_if_done(ticket, "assigned")
            return [
                ev.TicketAssigned(
                    ticket_id=t,
                    assignee_id=command.assignee_id,
                    group_id=command.group_id or ticket.group_id,
                    assigned_by=by,
                    automatic=command.automatic,
                    strategy=command.strategy,
                )
            ]
        case StartWork():
            if ticket.status not in (
                Status.TICKET_STATUS_NEW,
                Status.TICKET_STATUS_ASSIGNED,
                Status.TICKET_STATUS_ESCALATED,
            ):
                raise FailedPrecondition(f"{ticket.describe()}; work starts on a new or assigned ticket")
            return [ev.TicketWorkStarted(ticket_id=t, started_by=by)]
        case AwaitCustomer():
            if ticket.status not in (
                Status.TICKET_STATUS_NEW,
                Status.TICKET_STATUS_ASSIGNED,
                Status.TICKET_STATUS_IN_PROGRESS,
                Status.TICKET_STATUS_ESCALATED,
            ):
                raise FailedPrecondition(f"{ticket.describe()}; only a ticket being worked on can wait")
            return [
                ev.TicketAwaitingCustomer(ticket_id=t, reason=command.reason, requested_by=by),
                *_pause(ticket, "waiting_on_customer", now, rules),
            ]
        case RecordCustomerResponse():
            if ticket.status != Status.TICKET_STATUS_WAITING_ON_CUSTOMER:
                raise FailedPrecondition(f"{ticket.describe()}, not waiting on the customer")
            return [ev.TicketCustomerResponded(ticket_id=t, recorded_by=by), *_resume(ticket, now, rules)]
        case AddNote():
            _refuse_if_closed(ticket, "noted")
            internal = command.internal or bool(command.department)
            first = not internal and ticket.first_response_at is None
            events: list[Message] = [
                ev.TicketNoteAdded(
                    ticket_id=t,
                    note_id=command.note_id,
                    text=command.text,
                    author_id=by,
                    internal=internal,
                    first_response=first,
                )
            ]
            if first:
                events += _fulfil(ticket, SlaClock.SLA_CLOCK_FIRST_RESPONSE, "", now, rules)
            return events
        case AddAttachment():
            _refuse_if_closed(ticket, "given attachments")
            return [
                ev.TicketAttachmentAdded(
                    ticket_id=t,
                    attachment_id=command.attachment_id,
                    file_name=command.file_name,
                    media_type=command.media_type,
                    size_bytes=command.size_bytes,
                    sha256=command.sha256,
                    added_by=by,
                )
            ]
        case DispatchTicket():
            return _dispatch(ticket, command, rules)
        case AcceptDispatch():
            dispatch = _dispatch_of(ticket, command)
            if dispatch.status != DispatchStatus.DISPATCH_STATUS_DISPATCHED:
                raise FailedPrecondition(f"{dispatch.describe()}; only a dispatched one can be accepted")
            return [
                ev.DispatchAccepted(
                    ticket_id=t,
                    dispatch_id=dispatch.dispatch_id,
                    department=dispatch.department,
                    accepted_by=by,
                    on_time=now <= dispatch.accept_due,
                ),
                *_fulfil(ticket, SlaClock.SLA_CLOCK_DISPATCH_ACCEPTANCE, dispatch.dispatch_id, now, rules),
            ]
        case ReportProgress():
            dispatch = _dispatch_of(ticket, command)
            if dispatch.status != DispatchStatus.DISPATCH_STATUS_ACCEPTED:
                raise FailedPrecondition(f"{dispatch.describe()}; progress is reported on an accepted one")
            return [
                ev.DispatchProgressReported(
                    ticket_id=t,
                    dispatch_id=dispatch.dispatch_id,
                    department=dispatch.department,
                    note=command.note,
                    reported_by=by,
                )
            ]
        case CompleteDispatch():
            dispatch = _dispatch_of(ticket, command)
            if dispatch.status != DispatchStatus.DISPATCH_STATUS_ACCEPTED:
                raise FailedPrecondition(
                    f"{dispatch.describe()}; a dispatch must be accepted before it is completed"
                )
            return [
                ev.DispatchCompleted(
                    ticket_id=t,
                    dispatch_id=dispatch.dispatch_id,
                    department=dispatch.department,
                    result=command.result,
                    resolved=command.resolved,
                    completed_by=by,
                    on_time=now <= dispatch.due_at,
                ),
                *_fulfil(ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, dispatch.dispatch_id, now, rules),
            ]
        case ReturnDispatch():
            dispatch = _dispatch_of(ticket, command)
            if dispatch.status not in (
                DispatchStatus.DISPATCH_STATUS_DISPATCHED,
                DispatchStatus.DISPATCH_STATUS_ACCEPTED,
            ):
                raise FailedPrecondition(
                    f"{dispatch.describe()}; only an open, unreturned one can be returned"
                )
            d = dispatch.dispatch_id
            # A return answers the dispatch (its acceptance clock stops); while the center reviews it the
            # time is the center's, so the completion clock waits.
            return [
                ev.DispatchReturned(
                    ticket_id=t,
                    dispatch_id=d,
                    department=dispatch.department,
                    reason=command.reason,
                    returned_by=by,
                ),
                *_fulfil(ticket, SlaClock.SLA_CLOCK_DISPATCH_ACCEPTANCE, d, now, rules),
                *_pause_clock(ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d, now, rules),
            ]
        case RequestExtension():
            dispatch = _dispatch_of(ticket, command)
            if dispatch.status not in (
                DispatchStatus.DISPATCH_STATUS_DISPATCHED,
                DispatchStatus.DISPATCH_STATUS_ACCEPTED,
            ):
                raise FailedPrecondition(f"{dispatch.describe()}; an extension is asked for an open one")
            if dispatch.requested_due_at is not None:
                raise FailedPrecondition(
                    f"{dispatch.describe()} with an extension to {dispatch.requested_due_at.isoformat()} "
                    f"waiting for review"
                )
            if now >= dispatch.due_at:
                raise FailedPrecondition(
                    f"{dispatch.describe()}, due {dispatch.due_at.isoformat()}: an extension must be asked "
                    f"before the due time"
                )
            assert command.requested_due_at is not None
            if command.requested_due_at <= dispatch.due_at:
                raise InvalidArgument(
                    f"requested_due_at must be later than the current due time {dispatch.due_at.isoformat()}"
                )
            return [
                ev.DispatchExtensionRequested(
                    ticket_id=t,
                    dispatch_id=dispatch.dispatch_id,
                    department=dispatch.department,
                    requested_due_at=clocks.ts(command.requested_due_at),
                    reason=command.reason,
                    requested_by=by,
                )
            ]
        case ReviewReturn():
            return _review_return(ticket, command, rules)
        case ReviewExtension():
            return _review_extension(ticket, command, rules)
        case RequestApproval():
            if ticket.pending_approval_id:
                raise FailedPrecondition(
                    f"{ticket.describe()}, waiting for approval {ticket.pending_approval_id}"
                )
            _refuse_if_done(ticket, "sent for approval")
            if ticket.status == Status.TICKET_STATUS_WAITING_ON_CUSTOMER:
                raise FailedPrecondition(f"{ticket.describe()}; record the customer's answer first")
            return [
                ev.TicketApprovalRequested(
                    ticket_id=t,
                    approval_id=command.approval_id,
                    kind=command.kind,
                    amount=command.amount,
                    justification=command.justification,
                    requested_by=by,
                ),
                *_pause(ticket, "waiting_for_approval", now, rules),
            ]
        case ConcludeApproval():
            if ticket.pending_approval_id != command.approval_id:
                raise FailedPrecondition(
                    f"{ticket.describe()} and waits for approval {ticket.pending_approval_id or 'none'}, "
                    f"not {command.approval_id}"
                )
            return [
                ev.TicketApprovalConcluded(
                    ticket_id=t, approval_id=command.approval_id, outcome=command.outcome
                ),
                *_resume(ticket, now, rules),
            ]
        case Escalate():
            _refuse_if_done(ticket, "escalated")
            if not command.to_group_id and command.new_priority <= ticket.priority:
                raise InvalidArgument(
                    f"an escalation names to_group_id or a new_priority above the current {ticket.priority}"
                )
            return [
                ev.TicketEscalated(
                    ticket_id=t,
                    to_group_id=command.to_group_id,
                    new_priority=max(command.new_priority, ticket.priority),
                    reason=command.reason,
                    escalated_by=by,
                )
            ]
        case Resolve():
            return _resolve(ticket, command, rules)
        case Close():
            if ticket.status != Status.TICKET_STATUS_RESOLVED:
                raise FailedPrecondition(f"{ticket.describe()}; only a resolved ticket is closed")
            return _close(ticket, command.reason or "confirmed", by, now, rules)
        case Reopen():
            return _reopen(ticket, command, rules)
        case MarkMerged():
            _refuse_if_closed(ticket, "merged")
            if ticket.open_dispatches:
                open_ids = ", ".join(d.dispatch_id for d in ticket.open_dispatches)
                raise FailedPrecondition(f"{ticket.describe()} with open dispatches ({open_ids})")
            return [
                ev.TicketMerged(
                    ticket_id=t, into_ticket_id=command.into_ticket_id, reason=command.reason, merged_by=by
                ),
                *_cancel_all(ticket, "merged"),
            ]
        case AbsorbDuplicate():
            _refuse_if_closed(ticket, "merged into")
            return [
                ev.TicketDuplicateMerged(
                    ticket_id=t, duplicate_ticket_id=command.duplicate_ticket_id, merged_by=by
                )
            ]
        case RecordFollowUp():
            return _follow_up(ticket, command, rules)
        case RecordCsat():
            return [ev.CsatRecorded(ticket_id=t, score=command.score, survey_id=command.survey_id)]
        case LinkFollowUpTicket():
            if ticket.status not in CLOSED:
                raise FailedPrecondition(f"{ticket.describe()}; only a closed ticket is followed by another")
            return [ev.FollowUpTicketOpened(ticket_id=t, follow_up_ticket_id=command.follow_up_ticket_id)]
    raise InvalidArgument(f"unknown command {type(command).__name__}")


_DEPARTMENT_COMMANDS = (
    AddNote,
    AddAttachment,
    AcceptDispatch,
    ReportProgress,
    CompleteDispatch,
    ReturnDispatch,
    RequestExtension,
)


def _check_arguments(command: Command, rules: Rules) -> None:
    match command:
        case CreateTicket():
            if command.type == ev.TICKET_TYPE_UNSPECIFIED:
                raise InvalidArgument("type is required")
            if not 0 <= command.priority <= 5:
                raise InvalidArgument(f"priority must be 1 to 5, not {command.priority}")
            if not command.summary.strip():
                raise InvalidArgument("summary is required")
            if command.group_id and command.group_id not in rules.groups:
                raise InvalidArgument(
                    f"group_id {command.group_id!r} is not a group ({_known(rules.groups)})"
                )
        case Assign():
            if not command.assignee_id and not command.group_id:
                raise InvalidArgument("an assignment names assignee_id, group_id or both")
            if command.group_id and command.group_id not in rules.groups:
                raise InvalidArgument(
                    f"group_id {command.group_id!r} is not a group ({_known(rules.groups)})"
                )
        case Escalate():
            if command.to_group_id and command.to_group_id not in rules.groups:
                raise InvalidArgument(
                    f"to_group_id {command.to_group_id!r} is not a group ({_known(rules.groups)})"
                )
        case DispatchTicket():
            if command.to_department and command.to_department not in rules.catalogue.departments:
                raise InvalidArgument(
                    f"department {command.to_department!r} is not in the dispatch catalogue "
                    f"({_known(rules.catalogue.departments)})"
                )
        case ReviewReturn():
            if command.redispatch_to and not command.accept:
                raise InvalidArgument(
                    "redispatch_to goes with accept: a refused return stays with its department"
                )
            if command.redispatch_to and command.redispatch_to not in rules.catalogue.departments:
                raise InvalidArgument(
                    f"redispatch_to {command.redispatch_to!r} is not in the dispatch catalogue "
                    f"({_known(rules.catalogue.departments)})"
                )
        case RequestExtension():
            if command.requested_due_at is None:
                raise InvalidArgument("requested_due_at is required")
        case RecordFollowUp():
            if command.reached and command.satisfaction == Satisfaction.SATISFACTION_UNSPECIFIED:
                raise InvalidArgument("satisfaction is required when the customer was reached")
            if not command.reached and (
                command.resolved or command.satisfaction or command.csat_score or command.department_at_fault
            ):
                raise InvalidArgument("a follow-up that did not reach the customer records no answer")
            if command.department_at_fault and command.satisfaction != Satisfaction.SATISFACTION_DISSATISFIED:
                raise InvalidArgument("department_at_fault goes with SATISFACTION_DISSATISFIED")
        case RecordCsat():
            if not 1 <= command.score <= 5:
                raise InvalidArgument(f"score must be 1 to 5, not {command.score}")
        case MarkMerged():
            if command.into_ticket_id == command.ticket_id:
                raise InvalidArgument("a ticket cannot be merged into itself")


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    return "known: " + ", ".join(listed) if listed else "none is configured"


def _refuse_if_closed(ticket: Ticket, what: str) -> None:
    if ticket.status in CLOSED:
        raise FailedPrecondition(f"{ticket.describe()}; a closed ticket is not {what}")


def _refuse_if_done(ticket: Ticket, what: str) -> None:
    if ticket.status in DONE:
        raise FailedPrecondition(f"{ticket.describe()}; a {status_name(ticket.status)} ticket is not {what}")


def _dispatch_of(ticket: Ticket, command: Command) -> Dispatch:
    dispatch_id = command.dispatch_id  # type: ignore[attr-defined]
    dispatch = ticket.dispatches.get(dispatch_id)
    if dispatch is None:
        raise NotFound(f"ticket {ticket.ticket_id} has no dispatch {dispatch_id}")
    if command.department and dispatch.department != command.department:
        raise PermissionDenied(
            f"dispatch {dispatch_id} is {dispatch.department}'s; {command.department} answers only its own"
        )
    return dispatch


def _create(ticket: Ticket, command: CreateTicket, rules: Rules) -> list[Message]:
    if ticket.exists:
        raise FailedPrecondition(f"{ticket.describe()} already")
    policy = rules.policy
    priority = command.priority or 3
    rule = policy.rule_for(command.type, priority, command.category)
    t, now = command.ticket_id, command.now
    created = ev.TicketCreated(
        ticket_id=t,
        type=command.type,
        priority=priority,
        summary=command.summary,
        category=command.category,
        source_contact_id=command.source_contact_id,
        customer=types_pb2.PartyReference(hash=command.customer_hash, masked=command.customer_masked),
        created_by=command.by,
        channel=command.channel,
        origin=command.origin,
        group_id=command.group_id,
        sla_policy_id=policy.policy_id,
        sla_policy_version=policy.version,
        sla_rule=rule.name,
        calendar_id=policy.calendar.calendar_id,
        calendar_version=policy.calendar.version,
        follows_ticket_id=command.follows_ticket_id,
    )
    first = clocks.start(
        t, SlaClock.SLA_CLOCK_FIRST_RESPONSE, "", rule.first_response, policy.calendar, now, policy.warn_share
    )
    resolution = clocks.start(
        t, SlaClock.SLA_CLOCK_RESOLUTION, "", rule.resolution, policy.calendar, now, policy.warn_share
    )
    created.first_response_due.CopyFrom(first.due_at)
    created.resolution_due.CopyFrom(resolution.due_at)
    events: list[Message] = [created, first, resolution]
    if command.assignee_id:
        events.append(
            ev.TicketAssigned(
                ticket_id=t,
                assignee_id=command.assignee_id,
                group_id=command.group_id,
                assigned_by=command.by,
            )
        )
    return events


def _dispatch(ticket: Ticket, command: DispatchTicket, rules: Rules) -> list[Message]:
    _refuse_if_done(ticket, "dispatched")
    if ticket.status in WAITING:
        raise FailedPrecondition(f"{ticket.describe()}; dispatch it once it is worked on again")
    catalogue = rules.catalogue
    route = catalogue.categories.get(ticket.category)
    if command.to_department:
        targets = [(command.to_department, command.role or Role.DISPATCH_ROLE_LEAD)]
    elif route is not None:
        targets = [(route.lead, Role.DISPATCH_ROLE_LEAD)]
        targets += [(code, Role.DISPATCH_ROLE_ASSISTING) for code in route.assisting]
    else:
        raise InvalidArgument(
            f"department is required: the ticket's category {ticket.category!r} has no entry in dispatch "
            f"catalogue {catalogue.catalogue_id} v{catalogue.version}"
        )
    if len(command.dispatch_ids) < len(targets):
        raise InvalidArgument(
            f"{len(targets)} dispatch ids are needed, {len(command.dispatch_ids)} were given"
        )
    events: list[Message] = []
    for (department, role), dispatch_id in zip(targets, command.dispatch_ids, strict=False):
        holding = [d for d in ticket.open_dispatches if d.department == department]
        if holding:
            raise FailedPrecondition(f"{holding[0].describe()} already")
        events += _dispatch_events(
            ticket,
            rules,
            dispatch_id=dispatch_id,
            department=department,
            role=role,
            instructions=command.instructions,
            now=command.now,
            by=command.by,
            due_at=command.due_at,
            from_catalogue=not command.to_department,
        )
    return events


def _dispatch_events(
    ticket: Ticket,
    rules: Rules,
    *,
    dispatch_id: str,
    department: str,
    role: int,
    instructions: str,
    now: datetime,
    by: str,
    due_at: datetime | None = None,
    from_catalogue: bool = False,
    replaces: str = "",
    redo: bool = False,
) -> list[Message]:
    policy, catalogue = rules.policy, rules.catalogue
    calendar = rules.calendar_of(department)
    route = catalogue.categories.get(ticket.category)
    rule = _rule(ticket, rules)
    targets = policy.dispatch_targets(rule, route.complete if route is not None else None)
    assert targets.accept and targets.complete and targets.supervise_after and targets.escalate_after
    t = ticket.ticket_id
    accept = clocks.start(
        t, SlaClock.SLA_CLOCK_DISPATCH_ACCEPTANCE, dispatch_id, targets.accept, calendar, now, None
    )
    complete = clocks.start(
        t,
        SlaClock.SLA_CLOCK_DISPATCH_COMPLETION,
        dispatch_id,
        targets.complete,
        calendar,
        now,
        policy.warn_share,
    )
    if due_at is not None:
        policy_due = clocks.dt(complete.due_at)
        if due_at > policy_due:
            raise InvalidArgument(
                f"due_at {due_at.isoformat()} is later than the SLA policy's {policy_due.isoformat()}"
            )
        if due_at <= now:
            raise InvalidArgument(f"due_at {due_at.isoformat()} is not in the future")
        basis = _basis(rules, complete.calendar_id)
        complete.due_at.CopyFrom(clocks.ts(due_at))
        complete.target.FromTimedelta(basis.working_between(now, due_at))
        complete.ClearField("warn_at")
    due = clocks.dt(complete.due_at)
    dispatched = ev.TicketDispatched(
        ticket_id=t,
        dispatch_id=dispatch_id,
        department=department,
        instructions=instructions,
        due_at=complete.due_at,
        dispatched_by=by,
        role=role,
        accept_due=accept.due_at,
        category=ticket.category,
        calendar_id=calendar.calendar_id,
        calendar_version=calendar.version,
        supervise_at=clocks.ts(_after(due, targets.supervise_after, calendar)),
        escalate_at=clocks.ts(_after(due, targets.escalate_after, calendar)),
        replaces_dispatch_id=replaces,
        redo=redo,
        ticket_type=ticket.type,
        priority=ticket.priority,
        summary=ticket.summary,
    )
    if from_catalogue:
        dispatched.catalogue_id = catalogue.catalogue_id
        dispatched.catalogue_version = catalogue.version
    return [dispatched, accept, complete]


def _after(moment: datetime, duration: Duration, calendar: BusinessCalendar) -> datetime:
    basis, length = clocks.basis_of(duration, calendar)
    return basis.add(moment, length)


def _rule(ticket: Ticket, rules: Rules) -> SlaRule:
    return rules.policy.rule_for(ticket.type, ticket.priority, ticket.category)


def _review_return(ticket: Ticket, command: ReviewReturn, rules: Rules) -> list[Message]:
    dispatch = _dispatch_of(ticket, command)
    if dispatch.status != DispatchStatus.DISPATCH_STATUS_RETURNED:
        raise FailedPrecondition(f"{dispatch.describe()}; only a returned dispatch is reviewed")
    t, d, now, by = ticket.ticket_id, dispatch.dispatch_id, command.now, command.by
    if not command.accept:
        return [
            ev.DispatchReturnRefused(
                ticket_id=t, dispatch_id=d, department=dispatch.department, note=command.note, reviewed_by=by
            ),
            *_resume_clock(ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d, now, rules),
        ]
    events: list[Message] = [
        ev.DispatchReturnAccepted(
            ticket_id=t, dispatch_id=d, department=dispatch.department, note=command.note, reviewed_by=by
        ),
        *_cancel(ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d, "return accepted"),
    ]
    if command.redispatch_to:
        if command.redispatch_to == dispatch.department:
            raise InvalidArgument(f"redispatch_to is {dispatch.department}, the department that returned it")
        holding = [x for x in ticket.open_dispatches if x.department == command.redispatch_to]
        if holding:
            raise FailedPrecondition(f"{holding[0].describe()} already")
        events += _dispatch_events(
            ticket,
            rules,
            dispatch_id=command.new_dispatch_id,
            department=command.redispatch_to,
            role=dispatch.role,
            instructions=dispatch.instructions,
            now=now,
            by=by,
            replaces=d,
        )
    return events


def _review_extension(ticket: Ticket, command: ReviewExtension, rules: Rules) -> list[Message]:
    dispatch = _dispatch_of(ticket, command)
    if dispatch.requested_due_at is None:
        raise FailedPrecondition(f"{dispatch.describe()} with no extension waiting for review")
    t, d, now, by = ticket.ticket_id, dispatch.dispatch_id, command.now, command.by
    if not command.grant:
        return [
            ev.DispatchExtensionRefused(
                ticket_id=t, dispatch_id=d, department=dispatch.department, note=command.note, reviewed_by=by
            )
        ]
    due = command.due_at or dispatch.requested_due_at
    if due <= dispatch.due_at:
        raise InvalidArgument(f"due_at must be later than the current due time {dispatch.due_at.isoformat()}")
    calendar = rules.calendar_of(dispatch.department)
    targets = rules.policy.dispatch_targets(_rule(ticket, rules), None)
    assert targets.supervise_after and targets.escalate_after
    events: list[Message] = [
        ev.DispatchExtensionGranted(
            ticket_id=t,
            dispatch_id=d,
            department=dispatch.department,
            due_at=clocks.ts(due),
            supervise_at=clocks.ts(_after(due, targets.supervise_after, calendar)),
            escalate_at=clocks.ts(_after(due, targets.escalate_after, calendar)),
            note=command.note,
            reviewed_by=by,
        )
    ]
    clock = ticket.clocks.get((SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d))
    if clock is not None and not clock.done:
        basis = _basis(rules, clock.calendar_id)
        target = clock.counted(now, basis) + basis.working_between(now, due)
        events.append(
            ev.SlaClockExtended(
                ticket_id=t,
                clock=clock.clock,
                dispatch_id=d,
                due_at=clocks.ts(due),
                target=clocks.pb_duration(target),
            )
        )
    return events


def _resolve(ticket: Ticket, command: Resolve, rules: Rules) -> list[Message]:
    _refuse_if_done(ticket, "resolved again")
    if ticket.open_dispatches:
        open_ids = ", ".join(d.describe() for d in ticket.open_dispatches)
        raise FailedPrecondition(f"{ticket.describe()}: {open_ids}; resolve it once they are done")
    if ticket.pending_approval_id:
        raise FailedPrecondition(f"{ticket.describe()}, waiting for approval {ticket.pending_approval_id}")
    t, now, policy = ticket.ticket_id, command.now, rules.policy
    resolved = ev.TicketResolved(
        ticket_id=t,
        resolution_code=command.resolution_code,
        resolution=command.resolution,
        resolved_by=command.by,
        first_contact=command.first_contact,
    )
    resolved.close_at.CopyFrom(clocks.ts(_after(now, policy.confirm_within, policy.calendar)))
    events: list[Message] = []
    if ticket.status in WAITING:
        events += _resume(ticket, now, rules)
    resumed = _apply_clock_events(ticket, events, now)
    events += _fulfil(resumed, SlaClock.SLA_CLOCK_FIRST_RESPONSE, "", now, rules)
    events += _fulfil(resumed, SlaClock.SLA_CLOCK_RESOLUTION, "", now, rules)
    if _rule(ticket, rules).follow_up:
        follow_up = clocks.start(
            t,
            SlaClock.SLA_CLOCK_FOLLOW_UP,
            "",
            policy.follow_up_target,
            policy.calendar,
            now,
            policy.warn_share,
        )
        resolved.follow_up_due.CopyFrom(follow_up.due_at)
        events.append(follow_up)
    return [resolved, *events]


def _close(ticket: Ticket, reason: str, by: str, now: datetime, rules: Rules) -> list[Message]:
    policy = rules.policy
    closed = ev.TicketClosed(
        ticket_id=ticket.ticket_id,
        closed_by=by,
        reason=reason,
        reopen_until=clocks.ts(_after(now, policy.reopen_within, policy.calendar)),
    )
    return [closed, *_cancel_all(ticket, "closed")]


def _reopen(ticket: Ticket, command: Reopen, rules: Rules) -> list[Message]:
    if ticket.status == Status.TICKET_STATUS_CLOSED:
        assert ticket.reopen_until is not None
        if command.now > ticket.reopen_until:
            raise FailedPrecondition(
                f"{ticket.describe()}; its reopening window ended {ticket.reopen_until.isoformat()}: open a "
                f"follow-up ticket (CreateTicket with follows_ticket_id={ticket.ticket_id})"
            )
    elif ticket.status != Status.TICKET_STATUS_RESOLVED:
        raise FailedPrecondition(f"{ticket.describe()}; only a resolved or closed ticket is reopened")
    return _reopen_events(ticket, command.reason, command.by, command.now, rules, redo=False)


def _reopen_events(
    ticket: Ticket, reason: str, by: str, now: datetime, rules: Rules, *, redo: bool
) -> list[Message]:
    policy, t = rules.policy, ticket.ticket_id
    resolution = clocks.start(
        t,
        SlaClock.SLA_CLOCK_RESOLUTION,
        "",
        _rule(ticket, rules).resolution,
        policy.calendar,
        now,
        policy.warn_share,
    )
    return [
        ev.TicketReopened(
            ticket_id=t, reason=reason, reopened_by=by, resolution_due=resolution.due_at, redo=redo
        ),
        *_cancel(ticket, SlaClock.SLA_CLOCK_FOLLOW_UP, "", "reopened"),
        resolution,
    ]


def _follow_up(ticket: Ticket, command: RecordFollowUp, rules: Rules) -> list[Message]:
    if ticket.status != Status.TICKET_STATUS_RESOLVED:
        raise FailedPrecondition(f"{ticket.describe()}; a follow-up is recorded on a resolved ticket")
    t, now, by = ticket.ticket_id, command.now, command.by
    lead = _last_lead(ticket)
    events: list[Message] = [
        ev.FollowUpRecorded(
            ticket_id=t,
            reached=command.reached,
            resolved=command.resolved,
            satisfaction=command.satisfaction,
            csat_score=command.csat_score,
            comment=command.comment,
            department_at_fault=command.department_at_fault,
            recorded_by=by,
            department=lead.department if lead is not None else "",
        )
    ]
    if not command.reached:
        return events
    events += _fulfil(ticket, SlaClock.SLA_CLOCK_FOLLOW_UP, "", now, rules)
    if command.csat_score:
        events.append(ev.CsatRecorded(ticket_id=t, score=command.csat_score, survey_id=f"follow-up/{t}"))
    if command.department_at_fault and lead is not None:
        after = _apply_clock_events(ticket, events, now)
        reopened = _reopen_events(after, "dissatisfied at follow-up", by, now, rules, redo=True)
        reopened_state = _apply_clock_events(after, reopened, now)
        redo = _dispatch_events(
            reopened_state,
            rules,
            dispatch_id=command.redo_dispatch_id,
            department=lead.department,
            role=Role.DISPATCH_ROLE_LEAD,
            instructions=f"Redo: the citizen was dissatisfied. {lead.instructions}".strip(),
            now=now,
            by=by,
            replaces=lead.dispatch_id,
            redo=True,
        )
        return events + reopened + redo
    after = _apply_clock_events(ticket, events, now)
    return events + _close(after, "follow-up", by, now, rules)


def _last_lead(ticket: Ticket) -> Dispatch | None:
    leads = [d for d in ticket.dispatches.values() if d.role == Role.DISPATCH_ROLE_LEAD]
    completed = [d for d in leads if d.status == DispatchStatus.DISPATCH_STATUS_COMPLETED]
    return max(completed or leads, key=lambda d: d.dispatched_at, default=None)


# Clocks on the ticket --------------------------------------------------------------------------------


def _basis(rules: Rules, calendar_id: str) -> TimeBasis:
    if calendar_id == WALL_CLOCK.calendar_id:
        return WALL_CLOCK
    return rules.calendars[calendar_id]


def _pause(ticket: Ticket, status: str, now: datetime, rules: Rules) -> list[Message]:
    if status not in rules.policy.pause_in:
        return []
    return [event for kind in TICKET_CLOCKS for event in _pause_clock(ticket, kind, "", now, rules)]


def _resume(ticket: Ticket, now: datetime, rules: Rules) -> list[Message]:
    return [event for kind in TICKET_CLOCKS for event in _resume_clock(ticket, kind, "", now, rules)]


def _pause_clock(ticket: Ticket, kind: int, dispatch_id: str, now: datetime, rules: Rules) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or not clock.running:
        return []
    return [clocks.pause(ticket.ticket_id, clock, now, _basis(rules, clock.calendar_id))]


def _resume_clock(ticket: Ticket, kind: int, dispatch_id: str, now: datetime, rules: Rules) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or not clock.paused:
        return []
    share = None if clock.warn_at is None and clock.warned else rules.policy.warn_share
    return [clocks.resume(ticket.ticket_id, clock, now, _basis(rules, clock.calendar_id), share)]


def _fulfil(ticket: Ticket, kind: int, dispatch_id: str, now: datetime, rules: Rules) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or clock.done:
        return []
    return [clocks.fulfil(ticket.ticket_id, clock, now, _basis(rules, clock.calendar_id))]


def _cancel(ticket: Ticket, kind: int, dispatch_id: str, reason: str) -> list[Message]:
    clock = ticket.clocks.get((kind, dispatch_id))
    if clock is None or clock.done:
        return []
    return [clocks.cancel(ticket.ticket_id, clock, reason)]


def _cancel_all(ticket: Ticket, reason: str) -> list[Message]:
    return [clocks.cancel(ticket.ticket_id, c, reason) for c in ticket.clocks.values() if not c.done]


def _apply_clock_events(ticket: Ticket, events: Sequence[Message], now: datetime) -> Ticket:
    """The ticket after the clock events decided so far, for a decision that goes on from there."""
    for event in events:
        key = _clock_key(event)
        if key is not None:
            clock = clocks.evolve(ticket.clocks.get(key), event, now)
            if clock is not None:
                ticket = replace(ticket, clocks={**ticket.clocks, key: clock})
    return ticket


def _clock_key(event: Message) -> tuple[int, str] | None:
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
        return _close(ticket, "no answer", "system", now, rules)
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


# evolve -------------------------------------------------------------------------------------------


def evolve(ticket: Ticket, envelope: Envelope) -> Ticket:
    event, at = envelope.payload, envelope.occurred_at
    key = _clock_key(event)
    if key is not None:
        clock = clocks.evolve(ticket.clocks.get(key), event, at)
        if isinstance(event, ev.SlaClockExtended) and clock is not None:
            clock = replace(
                clock, due_at=clocks.dt(event.due_at), target=event.target.ToTimedelta(), breached=False
            )
        if clock is not None:
            ticket = replace(ticket, clocks={**ticket.clocks, key: clock})
        return ticket
    match event:
        case ev.TicketCreated():
            return replace(
                ticket,
                status=Status.TICKET_STATUS_ASSIGNED if event.group_id else Status.TICKET_STATUS_NEW,
                type=event.type,
                priority=event.priority,
                summary=event.summary,
                category=event.category,
                channel=event.channel,
                origin=event.origin,
                source_contact_id=event.source_contact_id,
                customer_hash=event.customer.hash,
                customer_masked=event.customer.masked,
                created_at=at,
                created_by=event.created_by,
                group_id=event.group_id,
                sla_policy_id=event.sla_policy_id,
                sla_policy_version=event.sla_policy_version,
                sla_rule=event.sla_rule,
                calendar_id=event.calendar_id,
                follows_ticket_id=event.follows_ticket_id,
            )
        case ev.TicketAssigned():
            status = ticket.status
            if status == Status.TICKET_STATUS_NEW:
                status = Status.TICKET_STATUS_ASSIGNED
            return replace(ticket, assignee_id=event.assignee_id, group_id=event.group_id, status=status)
        case ev.TicketUnassigned():
            return replace(ticket, assignee_id="")
        case ev.TicketWorkStarted() | ev.TicketCustomerResponded() | ev.TicketApprovalConcluded():
            ticket = (
                replace(ticket, pending_approval_id="")
                if isinstance(event, ev.TicketApprovalConcluded)
                else ticket
            )
            return replace(ticket, status=_working_status(ticket))
        case ev.TicketAwaitingCustomer():
            return replace(ticket, status=Status.TICKET_STATUS_WAITING_ON_CUSTOMER)
        case ev.TicketApprovalRequested():
            return replace(
                ticket,
                status=Status.TICKET_STATUS_WAITING_FOR_APPROVAL,
                pending_approval_id=event.approval_id,
            )
        case ev.TicketNoteAdded():
            first = at if event.first_response else ticket.first_response_at
            return replace(ticket, notes=ticket.notes + 1, first_response_at=first)
        case ev.TicketAttachmentAdded():
            return replace(ticket, attachments=ticket.attachments + 1)
        case ev.TicketEscalated():
            if event.to_group_id:
                return replace(
                    ticket,
                    group_id=event.to_group_id,
                    assignee_id="",
                    priority=event.new_priority or ticket.priority,
                    status=Status.TICKET_STATUS_ESCALATED
                    if ticket.status not in (*DONE, Status.TICKET_STATUS_DISPATCHED, *WAITING)
                    else ticket.status,
                )
            return replace(ticket, priority=event.new_priority or ticket.priority)
        case ev.TicketResolved():
            return replace(
                ticket,
                status=Status.TICKET_STATUS_RESOLVED,
                resolved_at=at,
                close_at=clocks.dt(event.close_at) if event.HasField("close_at") else None,
                follow_up_due=clocks.dt(event.follow_up_due) if event.HasField("follow_up_due") else None,
            )
        case ev.TicketClosed():
            return replace(
                ticket,
                status=Status.TICKET_STATUS_CLOSED,
                closed_at=at,
                reopen_until=clocks.dt(event.reopen_until),
            )
        case ev.TicketReopened():
            return replace(
                ticket,
                status=Status.TICKET_STATUS_IN_PROGRESS,
                reopen_count=ticket.reopen_count + 1,
                resolved_at=None,
                close_at=None,
                closed_at=None,
                follow_up_due=None,
            )
        case ev.TicketMerged():
            return replace(
                ticket, status=Status.TICKET_STATUS_MERGED, merged_into=event.into_ticket_id, closed_at=at
            )
        case ev.TicketDuplicateMerged():
            return replace(ticket, duplicates=(*ticket.duplicates, event.duplicate_ticket_id))
        case ev.FollowUpTicketOpened():
            return replace(ticket, follow_up_ticket_id=event.follow_up_ticket_id)
        case ev.CsatRecorded():
            return replace(ticket, csat_score=event.score)
    return _evolve_dispatch(ticket, event, at)


def _working_status(ticket: Ticket) -> int:
    if any(d.open for d in ticket.dispatches.values()):
        return Status.TICKET_STATUS_DISPATCHED
    return Status.TICKET_STATUS_IN_PROGRESS


def _evolve_dispatch(ticket: Ticket, event: Message, at: datetime) -> Ticket:
    if isinstance(event, ev.TicketDispatched):
        dispatch = Dispatch(
            dispatch_id=event.dispatch_id,
            department=event.department,
            role=event.role or Role.DISPATCH_ROLE_LEAD,
            category=event.category,
            instructions=event.instructions,
            status=DispatchStatus.DISPATCH_STATUS_DISPATCHED,
            dispatched_at=at,
            accept_due=clocks.dt(event.accept_due)
            if event.HasField("accept_due")
            else clocks.dt(event.due_at),
            due_at=clocks.dt(event.due_at),
            supervise_at=clocks.dt(event.supervise_at) if event.HasField("supervise_at") else None,
            escalate_at=clocks.dt(event.escalate_at) if event.HasField("escalate_at") else None,
            calendar_id=event.calendar_id,
            inside_since=at,
            redo=event.redo,
            replaces=event.replaces_dispatch_id,
        )
        status = ticket.status
        if status not in (*DONE, *WAITING):
            status = Status.TICKET_STATUS_DISPATCHED
        return replace(
            ticket, dispatches={**ticket.dispatches, dispatch.dispatch_id: dispatch}, status=status
        )
    dispatch_id = getattr(event, "dispatch_id", "")
    dispatch = ticket.dispatches.get(dispatch_id) if dispatch_id else None
    if dispatch is None:
        return ticket
    match event:
        case ev.DispatchAccepted():
            dispatch = replace(dispatch, status=DispatchStatus.DISPATCH_STATUS_ACCEPTED, accepted_at=at)
        case ev.DispatchCompleted():
            dispatch = _leave(
                replace(
                    dispatch,
                    status=DispatchStatus.DISPATCH_STATUS_COMPLETED,
                    result=event.result,
                    resolved=event.resolved,
                ),
                at,
                ended=True,
            )
        case ev.DispatchReturned():
            dispatch = _leave(replace(dispatch, status=DispatchStatus.DISPATCH_STATUS_RETURNED), at)
        case ev.DispatchReturnAccepted():
            dispatch = replace(dispatch, status=DispatchStatus.DISPATCH_STATUS_WITHDRAWN, ended_at=at)
        case ev.DispatchReturnRefused():
            back = (
                DispatchStatus.DISPATCH_STATUS_ACCEPTED
                if dispatch.accepted_at
                else DispatchStatus.DISPATCH_STATUS_DISPATCHED
            )
            dispatch = replace(dispatch, status=back, inside_since=at)
        case ev.DispatchExtensionRequested():
            dispatch = replace(dispatch, requested_due_at=clocks.dt(event.requested_due_at))
        case ev.DispatchExtensionGranted():
            dispatch = replace(
                dispatch,
                requested_due_at=None,
                due_at=clocks.dt(event.due_at),
                supervise_at=clocks.dt(event.supervise_at),
                escalate_at=clocks.dt(event.escalate_at),
                supervised=False,
                escalated=False,
            )
        case ev.DispatchExtensionRefused():
            dispatch = replace(dispatch, requested_due_at=None)
        case ev.SupervisionNoticeIssued():
            dispatch = replace(dispatch, supervised=True, notices=dispatch.notices + 1)
        case ev.DispatchEscalated():
            dispatch = replace(dispatch, escalated=True)
        case ev.DepartmentReplied():
            pass
    ticket = replace(ticket, dispatches={**ticket.dispatches, dispatch_id: dispatch})
    if ticket.status == Status.TICKET_STATUS_DISPATCHED and not ticket.open_dispatches:
        ticket = replace(ticket, status=Status.TICKET_STATUS_IN_PROGRESS)
    return ticket


def _leave(dispatch: Dispatch, at: datetime, *, ended: bool = False) -> Dispatch:
    """The dispatch leaves the department (completed, or returned to the center for review)."""
    inside = dispatch.inside
    if dispatch.inside_since is not None:
        inside = (*inside, (dispatch.inside_since, at))
    return replace(dispatch, inside=inside, inside_since=None, ended_at=at if ended else dispatch.ended_at)
