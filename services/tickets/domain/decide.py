"""decide: one match over every command; argument checks apart from state checks, every refusal naming the
current state."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message

from services.platform.calendars import BeyondCalendar
from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.tickets import clocks
from services.tickets.domain.commands import (
    AbsorbDuplicate,
    AcceptDispatch,
    AddAttachment,
    AddNote,
    Assign,
    AwaitCustomer,
    Close,
    Command,
    CompleteDispatch,
    ConcludeApproval,
    CreateTicket,
    DispatchTicket,
    Escalate,
    LinkFollowUpTicket,
    MarkMerged,
    RecordCsat,
    RecordCustomerResponse,
    RecordFollowUp,
    Reopen,
    ReportProgress,
    RequestApproval,
    RequestExtension,
    Resolve,
    ReturnDispatch,
    ReviewExtension,
    ReviewReturn,
    StartWork,
)
from services.tickets.domain.dispatching import (
    EXTENSION_REVIEW,
    RETURN_REVIEW,
    conclude_review,
    dispatch_events,
    dispatch_of,
    refuse_if_under_review,
    review_extension,
    review_requested,
    review_return,
    send,
)
from services.tickets.domain.state import (
    CLOSED,
    WAITING,
    Dispatch,
    DispatchStatus,
    Role,
    Satisfaction,
    SlaClock,
    Status,
    Ticket,
    refuse_if_closed,
    refuse_if_done,
)
from services.tickets.domain.ticket_clocks import (
    after,
    apply_clock_events,
    cancel_all,
    cancel_clock,
    close_events,
    fulfil_clock,
    pause_clock,
    pause_ticket_clocks,
    resume_ticket_clocks,
    rule_of,
)
from services.tickets.policies import Rules

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
            refuse_if_done(ticket, "assigned")
            if command.automatic and ticket.assignee_id:
                raise FailedPrecondition(f"{ticket.describe()} and held by {ticket.assignee_id} already")
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
                *pause_ticket_clocks(ticket, "waiting_on_customer", now, rules),
            ]
        case RecordCustomerResponse():
            if ticket.status != Status.TICKET_STATUS_WAITING_ON_CUSTOMER:
                raise FailedPrecondition(f"{ticket.describe()}, not waiting on the customer")
            return [
                ev.TicketCustomerResponded(ticket_id=t, recorded_by=by),
                *resume_ticket_clocks(ticket, now, rules),
            ]
        case AddNote():
            refuse_if_closed(ticket, "noted")
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
                events += fulfil_clock(ticket, SlaClock.SLA_CLOCK_FIRST_RESPONSE, "", now, rules)
            return events
        case AddAttachment():
            refuse_if_closed(ticket, "given attachments")
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
            return send(ticket, command, rules)
        case AcceptDispatch():
            dispatch = dispatch_of(ticket, command)
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
                *fulfil_clock(
                    ticket, SlaClock.SLA_CLOCK_DISPATCH_ACCEPTANCE, dispatch.dispatch_id, now, rules
                ),
            ]
        case ReportProgress():
            dispatch = dispatch_of(ticket, command)
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
            dispatch = dispatch_of(ticket, command)
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
                *fulfil_clock(
                    ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, dispatch.dispatch_id, now, rules
                ),
            ]
        case ReturnDispatch():
            dispatch = dispatch_of(ticket, command)
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
                *fulfil_clock(ticket, SlaClock.SLA_CLOCK_DISPATCH_ACCEPTANCE, d, now, rules),
                *pause_clock(ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d, now, rules),
                *review_requested(ticket, dispatch, RETURN_REVIEW, command.reason, by, rules),
            ]
        case RequestExtension():
            dispatch = dispatch_of(ticket, command)
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
                ),
                *review_requested(
                    ticket, dispatch, EXTENSION_REVIEW, command.reason, by, rules, command.requested_due_at
                ),
            ]
        case ReviewReturn():
            refuse_if_under_review(dispatch_of(ticket, command))
            return review_return(ticket, command, rules)
        case ReviewExtension():
            refuse_if_under_review(dispatch_of(ticket, command))
            return review_extension(ticket, command, rules)
        case RequestApproval():
            if ticket.pending_approval_id:
                raise FailedPrecondition(
                    f"{ticket.describe()}, waiting for approval {ticket.pending_approval_id}"
                )
            refuse_if_done(ticket, "sent for approval")
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
                    customer_tier=command.customer_tier or "standard",
                    ticket_type=ticket.type,
                ),
                *pause_ticket_clocks(ticket, "waiting_for_approval", now, rules),
            ]
        case ConcludeApproval():
            reviewed = [d for d in ticket.dispatches.values() if d.review_approval_id == command.approval_id]
            if command.approval_id and reviewed:
                return conclude_review(ticket, reviewed[0], command, rules)
            if ticket.pending_approval_id != command.approval_id:
                raise FailedPrecondition(
                    f"{ticket.describe()} and waits for approval {ticket.pending_approval_id or 'none'}, "
                    f"not {command.approval_id}"
                )
            return [
                ev.TicketApprovalConcluded(
                    ticket_id=t, approval_id=command.approval_id, outcome=command.outcome
                ),
                *resume_ticket_clocks(ticket, now, rules),
            ]
        case Escalate():
            refuse_if_done(ticket, "escalated")
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
            return close_events(ticket, command.reason or "confirmed", by, now, rules)
        case Reopen():
            return _reopen(ticket, command, rules)
        case MarkMerged():
            refuse_if_closed(ticket, "merged")
            if ticket.open_dispatches:
                open_ids = ", ".join(d.dispatch_id for d in ticket.open_dispatches)
                raise FailedPrecondition(f"{ticket.describe()} with open dispatches ({open_ids})")
            return [
                ev.TicketMerged(
                    ticket_id=t, into_ticket_id=command.into_ticket_id, reason=command.reason, merged_by=by
                ),
                *cancel_all(ticket, "merged"),
            ]
        case AbsorbDuplicate():
            refuse_if_closed(ticket, "merged into")
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


def _resolve(ticket: Ticket, command: Resolve, rules: Rules) -> list[Message]:
    refuse_if_done(ticket, "resolved again")
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
    resolved.close_at.CopyFrom(clocks.ts(after(now, policy.confirm_within, policy.calendar)))
    events: list[Message] = []
    if ticket.status in WAITING:
        events += resume_ticket_clocks(ticket, now, rules)
    resumed = apply_clock_events(ticket, events, now)
    events += fulfil_clock(resumed, SlaClock.SLA_CLOCK_FIRST_RESPONSE, "", now, rules)
    events += fulfil_clock(resumed, SlaClock.SLA_CLOCK_RESOLUTION, "", now, rules)
    if rule_of(ticket, rules).follow_up:
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
        rule_of(ticket, rules).resolution,
        policy.calendar,
        now,
        policy.warn_share,
    )
    return [
        ev.TicketReopened(
            ticket_id=t, reason=reason, reopened_by=by, resolution_due=resolution.due_at, redo=redo
        ),
        *cancel_clock(ticket, SlaClock.SLA_CLOCK_FOLLOW_UP, "", "reopened"),
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
    events += fulfil_clock(ticket, SlaClock.SLA_CLOCK_FOLLOW_UP, "", now, rules)
    if command.csat_score:
        events.append(ev.CsatRecorded(ticket_id=t, score=command.csat_score, survey_id=f"follow-up/{t}"))
    if command.department_at_fault and lead is not None:
        after = apply_clock_events(ticket, events, now)
        reopened = _reopen_events(after, "dissatisfied at follow-up", by, now, rules, redo=True)
        reopened_state = apply_clock_events(after, reopened, now)
        redo = dispatch_events(
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
    after = apply_clock_events(ticket, events, now)
    return events + close_events(after, "follow-up", by, now, rules)


def _last_lead(ticket: Ticket) -> Dispatch | None:
    leads = [d for d in ticket.dispatches.values() if d.role == Role.DISPATCH_ROLE_LEAD]
    completed = [d for d in leads if d.status == DispatchStatus.DISPATCH_STATUS_COMPLETED]
    return max(completed or leads, key=lambda d: d.dispatched_at, default=None)
