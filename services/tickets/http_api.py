"""The tickets HTTP API for simple clients: channel gateways open tickets from a web form or an e-mail,
departments work their dispatches; over the same service layer, rules and request ids as gRPC."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal

from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev
from callcenter.tickets.v1 import service_pb2 as pb
from fastapi import Depends, FastAPI, Path, Query, status
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, field_validator

from services.platform.errors import InvalidArgument, PermissionDenied
from services.platform.http import actor_of, caller, create_api
from services.platform.identity import Principal, Role, TokenVerifier
from services.platform.privacy import UnreadableIdentifier, pseudonymise
from services.platform.requests import Request
from services.platform.settings import PrivacySettings
from services.tickets import domain
from services.tickets.api_common import (
    Caller,
    acting,
    answer_dispatch,
    department_dispatches,
    new_ticket,
    on_ticket,
    own_dispatch,
    page,
)
from services.tickets.domain import Dispatch, Ticket
from services.tickets.handlers import TicketsService, child_id

TICKETS = "callcenter.tickets.v1.TicketsService"
TYPES = {
    "inquiry": ev.TICKET_TYPE_INQUIRY,
    "complaint": ev.TICKET_TYPE_COMPLAINT,
    "service_request": ev.TICKET_TYPE_SERVICE_REQUEST,
    "suggestion": ev.TICKET_TYPE_SUGGESTION,
}
# Where a gateway's ticket came from: its origin and the channel it came in on.
SOURCES = {
    "web_form": (domain.Origin.TICKET_ORIGIN_WEB_FORM, types_pb2.CHANNEL_UNSPECIFIED),
    "email": (domain.Origin.TICKET_ORIGIN_EMAIL, types_pb2.CHANNEL_EMAIL),
}
Listed = Literal["open", "all", "dispatched", "accepted", "completed", "returned", "withdrawn"]
_DS = domain.DispatchStatus
LISTED: dict[str, tuple[int, ...]] = {
    "open": domain.OPEN_DISPATCH,
    "all": (),
    "dispatched": (_DS.DISPATCH_STATUS_DISPATCHED,),
    "accepted": (_DS.DISPATCH_STATUS_ACCEPTED,),
    "completed": (_DS.DISPATCH_STATUS_COMPLETED,),
    "returned": (_DS.DISPATCH_STATUS_RETURNED,),
    "withdrawn": (_DS.DISPATCH_STATUS_WITHDRAWN,),
}
# Protobuf's Timestamp bound in the contract: before 2100-01-01 (UTC).
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# The same limits as the gRPC contract's (proto/callcenter/tickets/v1/service.proto), checked before
# anything is recorded.
RequestId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
TicketId = Annotated[str, Path(min_length=1, max_length=128, description="the ticket's id")]
DispatchId = Annotated[str, Path(min_length=1, max_length=128, description="the dispatch's id")]


class NewTicket(BaseModel):
    """A ticket from a customer's web form or e-mail, as a channel gateway passes it on. ``contact`` is
    pseudonymised at once (keyed HMAC and masked form), never stored."""

    request_id: RequestId = Field(description="the gateway's idempotency key, 1 to 128 characters")
    source: Literal["web_form", "email"] = Field(description="where the customer wrote")
    type: Literal["inquiry", "complaint", "service_request", "suggestion"]
    category: str = Field(
        default="", max_length=64, description="the dispatch catalogue's category, e.g. 'environment.noise'"
    )
    summary: str = Field(min_length=1, max_length=256, description="the subject; required")
    description: str = Field(
        default="", max_length=2000, description="what the customer wrote; kept as the ticket's internal note"
    )
    contact: str = Field(
        default="",
        max_length=254,
        description=(
            "the customer's e-mail address or phone number (any form intake reads: E.164, 00 prefix, "
            "national, tel: or sip: URI); empty or withheld for an anonymous customer; anything else "
            "is refused with 400 naming contact"
        ),
    )


class Answer(BaseModel):
    request_id: RequestId


class Progress(Answer):
    note: Text = Field(description="the progress made; required, at most 2000 characters")


class Return(Answer):
    reason: Text = Field(description="why the case is not the department's; required, at most 2000")


class Extension(Answer):
    requested_due_at: AwareDatetime = Field(
        description="the due time asked for, with its offset; later than the current one, before 2100"
    )
    reason: Text = Field(description="why; required, at most 2000 characters")

    @field_validator("requested_due_at")
    @classmethod
    def _before_2100(cls, moment: datetime) -> datetime:
        if moment >= _LATEST:
            raise ValueError("must be before 2100-01-01T00:00:00Z")
        return moment.astimezone(UTC)


class Completion(Answer):
    result: Text = Field(description="what the department did; required, at most 2000 characters")
    resolved: bool = Field(default=False, description="the department solved the issue")


class TicketJson(BaseModel):
    """A ticket as the gateway that opened it sees it; ``customer`` is the masked form only."""

    ticket_id: str
    type: str
    status: str
    priority: int
    category: str
    summary: str
    origin: str
    customer: str
    created_at: datetime | None
    first_response_due: datetime | None
    resolution_due: datetime | None


class DispatchJson(BaseModel):
    """One dispatch as its department sees it (gRPC's DepartmentDispatch, with the ticket's summary)."""

    dispatch_id: str
    ticket_id: str
    department: str
    role: str
    status: str
    instructions: str
    summary: str
    ticket_type: str
    priority: int
    category: str
    dispatched_at: datetime
    accept_due: datetime
    due_at: datetime
    requested_due_at: datetime | None
    result: str
    resolved: bool
    supervision_notices: int
    escalated: bool
    review_approval_id: str = Field(
        description="while the approvals service reviews the return or extension request: its approval id"
    )


class DispatchPage(BaseModel):
    dispatches: list[DispatchJson]
    next_page_token: str


def _name(enum: object, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()  # type: ignore[attr-defined]


def ticket_json(ticket: Ticket) -> TicketJson:
    first = ticket.clocks.get((domain.SlaClock.SLA_CLOCK_FIRST_RESPONSE, ""))
    resolution = ticket.clocks.get((domain.SlaClock.SLA_CLOCK_RESOLUTION, ""))
    return TicketJson(
        ticket_id=ticket.ticket_id,
        type=_name(ev.TicketType, ticket.type, "TICKET_TYPE_"),
        status=_name(domain.Status, ticket.status, "TICKET_STATUS_"),
        priority=ticket.priority,
        category=ticket.category,
        summary=ticket.summary,
        origin=_name(domain.Origin, ticket.origin, "TICKET_ORIGIN_"),
        customer=ticket.customer_masked,
        created_at=ticket.created_at,
        first_response_due=first.due_at if first else None,
        resolution_due=resolution.due_at if resolution else None,
    )


def dispatch_json(ticket: Ticket, dispatch: Dispatch) -> DispatchJson:
    return DispatchJson(
        dispatch_id=dispatch.dispatch_id,
        ticket_id=ticket.ticket_id,
        department=dispatch.department,
        role=_name(domain.Role, dispatch.role, "DISPATCH_ROLE_"),
        status=_name(domain.DispatchStatus, dispatch.status, "DISPATCH_STATUS_"),
        instructions=dispatch.instructions,
        summary=ticket.summary,
        ticket_type=_name(ev.TicketType, ticket.type, "TICKET_TYPE_"),
        priority=ticket.priority,
        category=ticket.category,
        dispatched_at=dispatch.dispatched_at,
        accept_due=dispatch.accept_due,
        due_at=dispatch.due_at,
        requested_due_at=dispatch.requested_due_at,
        result=dispatch.result,
        resolved=dispatch.resolved,
        supervision_notices=dispatch.notices,
        escalated=dispatch.escalated,
        review_approval_id=dispatch.review_approval_id,
    )


def _department(principal: Principal) -> Caller:
    """The department a token acts for; a token that acts for none (no department claim, or a role of
    the center beside it) is refused: these routes answer one department's own work."""
    department = acting(principal)
    if not department.department:
        raise PermissionDenied(
            f"the department routes act for the token's department; the token of {principal.describe()} "
            f"acts for none (it needs role department, a department claim and no role of the center)"
        )
    return department


def _request(message: Message, principal: Principal) -> Request:
    """The write path's request, as gRPC's for the same message: the same request id sent on either API
    is the same request."""
    return replace(Request.of(message), actor=actor_of(principal))


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


_SERVICE, _DEPARTMENT = (Role.SERVICE,), (Role.DEPARTMENT,)
Gateway = Annotated[Principal, Depends(caller(TICKETS, "CreateTicket", roles=_SERVICE))]
Listing = Annotated[Principal, Depends(caller(TICKETS, "ListDispatches", roles=_DEPARTMENT))]
Reading = Annotated[Principal, Depends(caller(TICKETS, "GetTicket", roles=_DEPARTMENT))]
Accepting = Annotated[Principal, Depends(caller(TICKETS, "AcceptDispatch", roles=_DEPARTMENT))]
Reporting = Annotated[Principal, Depends(caller(TICKETS, "ReportProgress", roles=_DEPARTMENT))]
Returning = Annotated[Principal, Depends(caller(TICKETS, "ReturnDispatch", roles=_DEPARTMENT))]
Extending = Annotated[Principal, Depends(caller(TICKETS, "RequestExtension", roles=_DEPARTMENT))]
Completing = Annotated[Principal, Depends(caller(TICKETS, "CompleteDispatch", roles=_DEPARTMENT))]


def create_app(tickets: TicketsService, verifier: TokenVerifier, privacy: PrivacySettings) -> FastAPI:
    """The simple clients' API over ``tickets``: every route needs a bearer token that ``verifier``
    accepts, for the role the route names and that the rpc it stands for grants."""
    app = create_api("Tickets for channel gateways and departments", verifier, version="1")

    @app.post("/v1/tickets", status_code=status.HTTP_201_CREATED)
    def create_ticket(body: NewTicket, gateway: Gateway) -> TicketJson:
        try:
            customer = pseudonymise(body.contact, privacy)
        except UnreadableIdentifier as error:
            raise InvalidArgument(f"contact: {error}") from None
        origin, channel = SOURCES[body.source]
        actor, by = actor_of(gateway), acting(gateway)
        fields = {**body.model_dump(exclude={"request_id", "contact"}), "contact": customer.hash}
        command = new_ticket(
            tickets,
            body.request_id,
            by,
            type=TYPES[body.type],
            summary=body.summary,
            category=body.category,
            customer_hash=customer.hash,
            customer_masked=customer.masked,
            channel=channel,
            origin=origin,
        )
        ticket = tickets.create(
            Request.of_fields(body.request_id, "CreateTicket", fields, actor=actor), command
        )
        if body.description:
            # A second write, idempotent by its own request id: a gateway retrying after a failure
            # between the two gets the same ticket, described once.
            note = domain.AddNote(
                **on_ticket(tickets, ticket.ticket_id, by),
                note_id=child_id(body.request_id, "description"),
                text=body.description,
                internal=True,
            )
            described = f"{body.request_id}/description"
            ticket = tickets.execute(Request.of_fields(described, "AddNote", fields, actor=actor), note)
        return ticket_json(ticket)

    @app.get("/v1/dispatches")
    def list_dispatches(
        department: Listing,
        status: Annotated[Listed, Query(description="'open' (the default), 'all' or one status")] = "open",
        page_size: Annotated[int, Query(ge=0, le=1000, description="0 lets the service choose (100)")] = 0,
        page_token: Annotated[str, Query(max_length=1024)] = "",
    ) -> DispatchPage:
        rows = department_dispatches(tickets, _department(department).department, LISTED[status])
        found, token = page(rows, page_size, page_token, lambda row: row[1].dispatch_id)
        return DispatchPage(dispatches=[dispatch_json(t, d) for t, d in found], next_page_token=token)

    @app.get("/v1/tickets/{ticket_id}/dispatches/{dispatch_id}")
    def get_dispatch(ticket_id: TicketId, dispatch_id: DispatchId, department: Reading) -> DispatchJson:
        return dispatch_json(
            *own_dispatch(tickets, ticket_id, dispatch_id, _department(department).department)
        )

    @app.post("/v1/tickets/{ticket_id}/dispatches/{dispatch_id}/accept")
    def accept(
        ticket_id: TicketId, dispatch_id: DispatchId, body: Answer, department: Accepting
    ) -> DispatchJson:
        message = pb.AcceptDispatchRequest(
            request_id=body.request_id, ticket_id=ticket_id, dispatch_id=dispatch_id
        )
        command = domain.AcceptDispatch(
            **on_ticket(tickets, ticket_id, _department(department)), dispatch_id=dispatch_id
        )
        return dispatch_json(*answer_dispatch(tickets, _request(message, department), command))

    @app.post("/v1/tickets/{ticket_id}/dispatches/{dispatch_id}/progress")
    def report_progress(
        ticket_id: TicketId, dispatch_id: DispatchId, body: Progress, department: Reporting
    ) -> DispatchJson:
        message = pb.ReportProgressRequest(
            request_id=body.request_id, ticket_id=ticket_id, dispatch_id=dispatch_id, note=body.note
        )
        command = domain.ReportProgress(
            **on_ticket(tickets, ticket_id, _department(department)), dispatch_id=dispatch_id, note=body.note
        )
        return dispatch_json(*answer_dispatch(tickets, _request(message, department), command))

    @app.post("/v1/tickets/{ticket_id}/dispatches/{dispatch_id}/return")
    def return_dispatch(
        ticket_id: TicketId, dispatch_id: DispatchId, body: Return, department: Returning
    ) -> DispatchJson:
        message = pb.ReturnDispatchRequest(
            request_id=body.request_id, ticket_id=ticket_id, dispatch_id=dispatch_id, reason=body.reason
        )
        command = domain.ReturnDispatch(
            **on_ticket(tickets, ticket_id, _department(department)),
            dispatch_id=dispatch_id,
            reason=body.reason,
        )
        return dispatch_json(*answer_dispatch(tickets, _request(message, department), command))

    @app.post("/v1/tickets/{ticket_id}/dispatches/{dispatch_id}/extension")
    def request_extension(
        ticket_id: TicketId, dispatch_id: DispatchId, body: Extension, department: Extending
    ) -> DispatchJson:
        message = pb.RequestExtensionRequest(
            request_id=body.request_id,
            ticket_id=ticket_id,
            dispatch_id=dispatch_id,
            requested_due_at=_stamp(body.requested_due_at),
            reason=body.reason,
        )
        command = domain.RequestExtension(
            **on_ticket(tickets, ticket_id, _department(department)),
            dispatch_id=dispatch_id,
            requested_due_at=body.requested_due_at,
            reason=body.reason,
        )
        return dispatch_json(*answer_dispatch(tickets, _request(message, department), command))

    @app.post("/v1/tickets/{ticket_id}/dispatches/{dispatch_id}/complete")
    def complete(
        ticket_id: TicketId, dispatch_id: DispatchId, body: Completion, department: Completing
    ) -> DispatchJson:
        message = pb.CompleteDispatchRequest(
            request_id=body.request_id,
            ticket_id=ticket_id,
            dispatch_id=dispatch_id,
            result=body.result,
            resolved=body.resolved,
        )
        command = domain.CompleteDispatch(
            **on_ticket(tickets, ticket_id, _department(department)),
            dispatch_id=dispatch_id,
            result=body.result,
            resolved=body.resolved,
        )
        return dispatch_json(*answer_dispatch(tickets, _request(message, department), command))

    return app
