"""evolve: a ticket after one of its events; reads the events only, never the configuration."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message

from services.platform.envelope import Envelope
from services.tickets import clocks
from services.tickets.domain.state import DONE, WAITING, Dispatch, DispatchStatus, Role, Status, Ticket
from services.tickets.domain.ticket_clocks import clock_key

# evolve -------------------------------------------------------------------------------------------


def evolve(ticket: Ticket, envelope: Envelope) -> Ticket:
    event, at = envelope.payload, envelope.occurred_at
    key = clock_key(event)
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
            dispatch = replace(
                dispatch, status=DispatchStatus.DISPATCH_STATUS_WITHDRAWN, ended_at=at, review_approval_id=""
            )
        case ev.DispatchReturnRefused():
            back = (
                DispatchStatus.DISPATCH_STATUS_ACCEPTED
                if dispatch.accepted_at
                else DispatchStatus.DISPATCH_STATUS_DISPATCHED
            )
            dispatch = replace(dispatch, status=back, inside_since=at, review_approval_id="")
        case ev.DispatchReviewRequested():
            dispatch = replace(
                dispatch, review_approval_id=event.approval_id, review_requests=dispatch.review_requests + 1
            )
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
                review_approval_id="",
            )
        case ev.DispatchExtensionRefused():
            dispatch = replace(dispatch, requested_due_at=None, review_approval_id="")
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
