"""The TicketsService gRPC servicer: requests become commands, tickets become messages; nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import service_pb2 as pb
from callcenter.tickets.v1 import service_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.platform.errors import InvalidArgument
from services.platform.identity import current_principal
from services.platform.requests import Request
from services.tickets import domain
from services.tickets.api_common import (
    Caller,
    acting,
    answer_dispatch,
    department_dispatches,
    new_ticket,
    on_ticket,
    page,
)
from services.tickets.domain import Dispatch, Ticket
from services.tickets.handlers import TicketsService, child_id


def caller() -> Caller:
    """Whom the call being served acts for (``api_common.acting``)."""
    return acting(current_principal.get())


class TicketsServicer(service_pb2_grpc.TicketsServiceServicer):
    def __init__(self, tickets: TicketsService) -> None:
        self._tickets = tickets

    def _base(self, request: Any) -> dict[str, Any]:
        return on_ticket(self._tickets, request.ticket_id, caller())

    def _run(self, request: Any, context: Any, command: domain.Command) -> pb.Ticket:
        return ticket_message(self._tickets.execute(Request.of(request, context), command))

    def _run_dispatch(self, request: Any, context: Any, command: domain.Command) -> pb.DepartmentDispatch:
        return dispatch_message(*answer_dispatch(self._tickets, Request.of(request, context), command))

    def CreateTicket(self, request: pb.CreateTicketRequest, context) -> pb.CreateTicketResponse:
        command = new_ticket(
            self._tickets,
            request.request_id,
            caller(),
            type=request.type,
            priority=request.priority,
            summary=request.summary,
            category=request.category,
            source_contact_id=request.source_contact_id,
            customer_hash=request.customer.hash,
            customer_masked=request.customer.masked,
            channel=request.channel,
            origin=domain.Origin.TICKET_ORIGIN_AGENT,
            group_id=request.group_id,
            assignee_id=request.assignee_id,
            follows_ticket_id=request.follows_ticket_id,
        )
        ticket = self._tickets.create(Request.of(request, context), command)
        return pb.CreateTicketResponse(ticket=ticket_message(ticket))

    def Assign(self, request: pb.AssignRequest, context) -> pb.AssignResponse:
        command = domain.Assign(
            **self._base(request), assignee_id=request.assignee_id, group_id=request.group_id
        )
        return pb.AssignResponse(ticket=self._run(request, context, command))

    def StartWork(self, request: pb.StartWorkRequest, context) -> pb.StartWorkResponse:
        return pb.StartWorkResponse(
            ticket=self._run(request, context, domain.StartWork(**self._base(request)))
        )

    def AwaitCustomer(self, request: pb.AwaitCustomerRequest, context) -> pb.AwaitCustomerResponse:
        command = domain.AwaitCustomer(**self._base(request), reason=request.reason)
        return pb.AwaitCustomerResponse(ticket=self._run(request, context, command))

    def RecordCustomerResponse(
        self, request: pb.RecordCustomerResponseRequest, context
    ) -> pb.RecordCustomerResponseResponse:
        command = domain.RecordCustomerResponse(**self._base(request))
        return pb.RecordCustomerResponseResponse(ticket=self._run(request, context, command))

    def AddNote(self, request: pb.AddNoteRequest, context) -> pb.AddNoteResponse:
        command = domain.AddNote(
            **self._base(request),
            note_id=child_id(request.request_id, "note"),
            text=request.text,
            internal=request.internal,
        )
        return pb.AddNoteResponse(ticket=self._run(request, context, command))

    def AddAttachment(self, request: pb.AddAttachmentRequest, context) -> pb.AddAttachmentResponse:
        attachment_id = child_id(request.request_id, "attachment")
        command = domain.AddAttachment(
            **self._base(request),
            attachment_id=attachment_id,
            file_name=request.file_name,
            media_type=request.media_type,
            size_bytes=request.size_bytes,
            sha256=request.sha256,
        )
        return pb.AddAttachmentResponse(
            ticket=self._run(request, context, command), attachment_id=attachment_id
        )

    def Dispatch(self, request: pb.DispatchRequest, context) -> pb.DispatchResponse:
        command = domain.DispatchTicket(
            **self._base(request),
            dispatch_ids=tuple(child_id(request.request_id, f"dispatch/{n}") for n in range(8)),
            to_department=request.department,
            role=request.role or domain.Role.DISPATCH_ROLE_LEAD,
            instructions=request.instructions,
            due_at=_datetime(request.due_at) if request.HasField("due_at") else None,
        )
        ticket = self._tickets.execute(Request.of(request, context), command)
        # The ids derive from the request id: those the ticket holds are this request's, on a retry too.
        made = [d for d in command.dispatch_ids if d in ticket.dispatches]
        return pb.DispatchResponse(
            ticket=ticket_message(ticket), dispatch_id=made[0] if made else "", dispatch_ids=made
        )

    def ReplyFromDepartment(
        self, request: pb.ReplyFromDepartmentRequest, context
    ) -> pb.ReplyFromDepartmentResponse:
        base = {**self._base(request), "dispatch_id": request.dispatch_id}
        if request.completed:
            command: domain.Command = domain.CompleteDispatch(**base, result=request.reply, resolved=True)
        else:
            command = domain.ReportProgress(**base, note=request.reply)
        return pb.ReplyFromDepartmentResponse(ticket=self._run(request, context, command))

    def AcceptDispatch(self, request: pb.AcceptDispatchRequest, context) -> pb.AcceptDispatchResponse:
        command = domain.AcceptDispatch(**self._base(request), dispatch_id=request.dispatch_id)
        return pb.AcceptDispatchResponse(dispatch=self._run_dispatch(request, context, command))

    def ReportProgress(self, request: pb.ReportProgressRequest, context) -> pb.ReportProgressResponse:
        command = domain.ReportProgress(
            **self._base(request), dispatch_id=request.dispatch_id, note=request.note
        )
        return pb.ReportProgressResponse(dispatch=self._run_dispatch(request, context, command))

    def CompleteDispatch(self, request: pb.CompleteDispatchRequest, context) -> pb.CompleteDispatchResponse:
        command = domain.CompleteDispatch(
            **self._base(request),
            dispatch_id=request.dispatch_id,
            result=request.result,
            resolved=request.resolved,
        )
        return pb.CompleteDispatchResponse(dispatch=self._run_dispatch(request, context, command))

    def ReturnDispatch(self, request: pb.ReturnDispatchRequest, context) -> pb.ReturnDispatchResponse:
        command = domain.ReturnDispatch(
            **self._base(request), dispatch_id=request.dispatch_id, reason=request.reason
        )
        return pb.ReturnDispatchResponse(dispatch=self._run_dispatch(request, context, command))

    def RequestExtension(self, request: pb.RequestExtensionRequest, context) -> pb.RequestExtensionResponse:
        command = domain.RequestExtension(
            **self._base(request),
            dispatch_id=request.dispatch_id,
            requested_due_at=_datetime(request.requested_due_at),
            reason=request.reason,
        )
        return pb.RequestExtensionResponse(dispatch=self._run_dispatch(request, context, command))

    def ReviewReturn(self, request: pb.ReviewReturnRequest, context) -> pb.ReviewReturnResponse:
        new_dispatch_id = child_id(request.request_id, "redispatch") if request.redispatch_to else ""
        command = domain.ReviewReturn(
            **self._base(request),
            dispatch_id=request.dispatch_id,
            accept=request.accept,
            redispatch_to=request.redispatch_to,
            new_dispatch_id=new_dispatch_id,
            note=request.note,
        )
        return pb.ReviewReturnResponse(
            ticket=self._run(request, context, command), dispatch_id=new_dispatch_id
        )

    def ReviewExtension(self, request: pb.ReviewExtensionRequest, context) -> pb.ReviewExtensionResponse:
        command = domain.ReviewExtension(
            **self._base(request),
            dispatch_id=request.dispatch_id,
            grant=request.grant,
            due_at=_datetime(request.due_at) if request.HasField("due_at") else None,
            note=request.note,
        )
        return pb.ReviewExtensionResponse(ticket=self._run(request, context, command))

    def RequestApproval(self, request: pb.RequestApprovalRequest, context) -> pb.RequestApprovalResponse:
        approval_id = child_id(request.request_id, "approval")
        command = domain.RequestApproval(
            **self._base(request),
            approval_id=approval_id,
            kind=request.kind,
            amount=request.amount if request.HasField("amount") else None,
            justification=request.justification,
            customer_tier=request.customer_tier,
        )
        return pb.RequestApprovalResponse(
            ticket=self._run(request, context, command), approval_id=approval_id
        )

    def Escalate(self, request: pb.EscalateRequest, context) -> pb.EscalateResponse:
        command = domain.Escalate(
            **self._base(request),
            to_group_id=request.to_group_id,
            new_priority=request.new_priority,
            reason=request.reason,
        )
        return pb.EscalateResponse(ticket=self._run(request, context, command))

    def Resolve(self, request: pb.ResolveRequest, context) -> pb.ResolveResponse:
        command = domain.Resolve(
            **self._base(request), resolution_code=request.resolution_code, resolution=request.resolution
        )
        return pb.ResolveResponse(ticket=self._run(request, context, command))

    def Close(self, request: pb.CloseRequest, context) -> pb.CloseResponse:
        command = domain.Close(**self._base(request), reason=request.reason)
        return pb.CloseResponse(ticket=self._run(request, context, command))

    def Reopen(self, request: pb.ReopenRequest, context) -> pb.ReopenResponse:
        command = domain.Reopen(**self._base(request), reason=request.reason)
        return pb.ReopenResponse(ticket=self._run(request, context, command))

    def MergeTickets(self, request: pb.MergeTicketsRequest, context) -> pb.MergeTicketsResponse:
        command = domain.MarkMerged(
            **on_ticket(self._tickets, request.duplicate_ticket_id, caller()),
            into_ticket_id=request.into_ticket_id,
            reason=request.reason,
        )
        return pb.MergeTicketsResponse(
            ticket=ticket_message(self._tickets.merge(Request.of(request, context), command))
        )

    def RecordFollowUp(self, request: pb.RecordFollowUpRequest, context) -> pb.RecordFollowUpResponse:
        command = domain.RecordFollowUp(
            **self._base(request),
            reached=request.reached,
            resolved=request.resolved,
            satisfaction=request.satisfaction,
            csat_score=request.csat_score,
            comment=request.comment,
            department_at_fault=request.department_at_fault,
            redo_dispatch_id=child_id(request.request_id, "redo"),
        )
        return pb.RecordFollowUpResponse(ticket=self._run(request, context, command))

    def RecordCsat(self, request: pb.RecordCsatRequest, context) -> pb.RecordCsatResponse:
        command = domain.RecordCsat(**self._base(request), score=request.score, survey_id=request.survey_id)
        return pb.RecordCsatResponse(ticket=self._run(request, context, command))

    def GetTicket(self, request: pb.GetTicketRequest, context) -> pb.GetTicketResponse:
        department = caller().department
        ticket = self._tickets.get(request.ticket_id, department)
        version = self._tickets.version(ticket.ticket_id)
        return pb.GetTicketResponse(ticket=ticket_message(ticket, version, for_department=department))

    def ListTickets(self, request: pb.ListTicketsRequest, context) -> pb.ListTicketsResponse:
        acting_for = caller().department
        department = acting_for or request.department
        tickets = sorted(
            (
                t
                for t in self._tickets.tickets()
                if (not request.status or t.status == request.status)
                and (not request.assignee_id or t.assignee_id == request.assignee_id)
                and (not department or t.dispatched_to(department))
            ),
            key=lambda t: (t.created_at or _EPOCH, t.ticket_id),
        )
        rows, token = page(tickets, request.page_size, request.page_token, lambda t: t.ticket_id)
        return pb.ListTicketsResponse(
            tickets=[ticket_message(t, for_department=acting_for) for t in rows], next_page_token=token
        )

    def ListDispatches(self, request: pb.ListDispatchesRequest, context) -> pb.ListDispatchesResponse:
        if not request.department:
            raise InvalidArgument("department is required")
        statuses = (request.status,) if request.status else ()
        rows = department_dispatches(self._tickets, request.department, statuses)
        found, token = page(rows, request.page_size, request.page_token, lambda row: row[1].dispatch_id)
        return pb.ListDispatchesResponse(
            dispatches=[dispatch_message(t, d) for t, d in found], next_page_token=token
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _stamp(moment: datetime | None, message: Timestamp) -> None:
    if moment is not None:
        message.FromDatetime(moment)


def dispatch_message(ticket: Ticket, dispatch: Dispatch) -> pb.DepartmentDispatch:
    message = pb.DepartmentDispatch(
        dispatch_id=dispatch.dispatch_id,
        ticket_id=ticket.ticket_id,
        department=dispatch.department,
        role=dispatch.role,
        status=dispatch.status,
        instructions=dispatch.instructions,
        result=dispatch.result,
        resolved=dispatch.resolved,
        supervision_notices=dispatch.notices,
        escalated=dispatch.escalated,
        ticket_type=ticket.type,
        priority=ticket.priority,
        category=ticket.category,
        review_approval_id=dispatch.review_approval_id,
    )
    _stamp(dispatch.dispatched_at, message.dispatched_at)
    _stamp(dispatch.accept_due, message.accept_due)
    _stamp(dispatch.due_at, message.due_at)
    _stamp(dispatch.requested_due_at, message.requested_due_at)
    return message


def ticket_message(ticket: Ticket, version: int = 0, for_department: str = "") -> pb.Ticket:
    """The ticket as the center sees it; ``for_department``, as that department may: no customer
    reference, only its own dispatches and their clocks, none of the center's own clocks."""
    dispatches = [
        d for d in ticket.dispatches.values() if not for_department or d.department == for_department
    ]
    own = {d.dispatch_id for d in dispatches}
    clocks = [
        c for c in ticket.clocks.values() if not for_department or (c.dispatch_id and c.dispatch_id in own)
    ]
    first = ticket.clocks.get((domain.SlaClock.SLA_CLOCK_FIRST_RESPONSE, "")) if not for_department else None
    resolution = ticket.clocks.get((domain.SlaClock.SLA_CLOCK_RESOLUTION, "")) if not for_department else None
    customer = types_pb2.PartyReference(hash=ticket.customer_hash, masked=ticket.customer_masked)
    message = pb.Ticket(
        ticket_id=ticket.ticket_id,
        type=ticket.type,
        status=ticket.status,
        priority=ticket.priority,
        summary=ticket.summary,
        assignee_id=ticket.assignee_id,
        group_id=ticket.group_id,
        customer=None if for_department else customer,
        open_dispatch_ids=[d.dispatch_id for d in ticket.open_dispatches if d.dispatch_id in own],
        pending_approval_id=ticket.pending_approval_id,
        version=version,
        category=ticket.category,
        dispatches=[dispatch_message(ticket, d) for d in dispatches],
        clocks=[
            pb.SlaClockStatus(
                clock=c.clock,
                dispatch_id=c.dispatch_id,
                due_at=_timestamp(c.due_at),
                paused=c.paused,
                warned=c.warned,
                breached=c.breached,
                fulfilled=c.done,
            )
            for c in clocks
        ],
        origin=ticket.origin,
        source_contact_id=ticket.source_contact_id,
        merged_into_ticket_id=ticket.merged_into,
        duplicate_ticket_ids=list(ticket.duplicates),
        reopen_count=ticket.reopen_count,
        follows_ticket_id=ticket.follows_ticket_id,
        follow_up_ticket_id=ticket.follow_up_ticket_id,
    )
    _stamp(ticket.created_at, message.created_at)
    _stamp(first.due_at if first else None, message.first_response_due)
    _stamp(resolution.due_at if resolution else None, message.resolution_due)
    _stamp(ticket.resolved_at, message.resolved_at)
    _stamp(ticket.closed_at, message.closed_at)
    _stamp(ticket.follow_up_due, message.follow_up_due)
    return message


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
