"""The approvals HTTP API for simple clients: departments see and decide their steps, requesters answer
questions and withdraw; over the same service layer, rules and request ids as gRPC."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal

from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb
from fastapi import Depends, FastAPI, Path, Query
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field, StringConstraints

from services.approvals.api_common import (
    decide_step,
    page,
    pending_for,
    provide_info,
    requester_of,
    view_of,
    withdraw,
)
from services.approvals.domain import ApprovalRequest
from services.approvals.handlers import ApprovalsService
from services.platform.http import actor_of, caller, create_api
from services.platform.identity import Principal, TokenVerifier
from services.platform.requests import Request

APPROVALS = "callcenter.approvals.v1.ApprovalsService"
DECISIONS = {
    "approve": ev.DECISION_APPROVE,
    "reject": ev.DECISION_REJECT,
    "request_info": ev.DECISION_REQUEST_INFO,
}

# The same limits as the gRPC contract's (proto/callcenter/approvals/v1/service.proto), checked before
# anything is recorded.
RequestId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
ApprovalId = Annotated[str, Path(min_length=1, max_length=128, description="the approval request's id")]


class Answer(BaseModel):
    request_id: RequestId = Field(description="the caller's idempotency key, 1 to 128 characters")


class Decision(Answer):
    step_index: int = Field(ge=0, le=2**32 - 1, description="the open step's index (the view's open_steps)")
    decision: Literal["approve", "reject", "request_info"] = Field(
        description="approve, reject (the reason in comment) or request_info (the question in comment)"
    )
    comment: str = Field(default="", max_length=2000, description="the reason or the question, at most 2000")


class Information(Answer):
    answer: str = Field(min_length=1, max_length=4000, description="the answer to the approver's question")


class Withdrawal(Answer):
    reason: str = Field(default="", max_length=2000, description="why the request is withdrawn")


class Money(BaseModel):
    minor_units: int
    currency: str


class Decider(BaseModel):
    department: str
    role: str


class StepJson(BaseModel):
    """One step of the chain as it stands (gRPC's StepView)."""

    index: int
    name: str
    status: str
    deciders: list[Decider]
    approvals_needed: int
    approvals: int
    rejections: int
    deadline: datetime | None
    escalated: bool


class TrailEntryJson(BaseModel):
    """One decision as it was recorded (gRPC's TrailEntry)."""

    step_index: int
    department: str
    approver_id: str
    on_behalf_of: str
    decision: str
    comment: str
    decided_at: datetime | None


class ApprovalJson(BaseModel):
    """One approval request with its chain and full trail (gRPC's ApprovalView)."""

    approval_id: str
    ticket_id: str
    kind: str
    amount: Money
    status: str
    open_steps: list[int]
    version: int
    policy_id: str
    policy_version: int
    rule: str
    customer_tier: str
    ticket_type: str
    justification: str
    requested_by: str
    requested_at: datetime | None
    ended_at: datetime | None
    outcome_reason: str
    dispatch_id: str = Field(description="for a dispatch review: the ticket's dispatch under review")
    extension_s: int = Field(description="for kind dispatch_extension: the extra time asked, in seconds")
    steps: list[StepJson]
    trail: list[TrailEntryJson]


class ApprovalPage(BaseModel):
    approvals: list[ApprovalJson]
    next_page_token: str


def _name(enum: object, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()  # type: ignore[attr-defined]


def _moment(message: Message, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def approval_json(view: pb.ApprovalView) -> ApprovalJson:
    """The gRPC view of a request, with its enums by their short lower-case names."""
    return ApprovalJson(
        approval_id=view.approval_id,
        ticket_id=view.ticket_id,
        kind=view.kind,
        amount=Money(minor_units=view.amount.minor_units, currency=view.amount.currency),
        status=_name(pb.ApprovalStatus, view.status, "APPROVAL_STATUS_"),
        open_steps=list(view.open_steps),
        version=view.version,
        policy_id=view.policy_id,
        policy_version=view.policy_version,
        rule=view.rule,
        customer_tier=view.customer_tier,
        ticket_type=view.ticket_type,
        justification=view.justification,
        requested_by=view.requested_by,
        requested_at=_moment(view, "requested_at"),
        ended_at=_moment(view, "ended_at"),
        outcome_reason=view.outcome_reason,
        dispatch_id=view.dispatch_id,
        extension_s=view.extension.seconds,
        steps=[
            StepJson(
                index=step.index,
                name=step.name,
                status=_name(pb.StepStatus, step.status, "STEP_STATUS_"),
                deciders=[Decider(department=d.department, role=d.role) for d in step.deciders],
                approvals_needed=step.approvals_needed,
                approvals=step.approvals,
                rejections=step.rejections,
                deadline=_moment(step, "deadline"),
                escalated=step.escalated,
            )
            for step in view.steps
        ],
        trail=[
            TrailEntryJson(
                step_index=entry.step_index,
                department=entry.department,
                approver_id=entry.approver_id,
                on_behalf_of=entry.on_behalf_of,
                decision=_name(ev.Decision, entry.decision, "DECISION_"),
                comment=entry.comment,
                decided_at=_moment(entry, "decided_at"),
            )
            for entry in view.trail
        ],
    )


def _request(message: Message, principal: Principal) -> Request:
    """The write path's request, as gRPC's for the same message: the same request id sent on either API
    is the same request."""
    return replace(Request.of(message), actor=actor_of(principal))


Listing = Annotated[Principal, Depends(caller(APPROVALS, "ListPending"))]
Reading = Annotated[Principal, Depends(caller(APPROVALS, "GetRequest"))]
Deciding = Annotated[Principal, Depends(caller(APPROVALS, "Decide"))]
Answering = Annotated[Principal, Depends(caller(APPROVALS, "ProvideInformation"))]
Withdrawing = Annotated[Principal, Depends(caller(APPROVALS, "Withdraw"))]


def create_app(approvals: ApprovalsService, verifier: TokenVerifier) -> FastAPI:
    """The simple clients' API over ``approvals``: every route needs a bearer token that ``verifier``
    accepts, for a role that the rpc it stands for grants."""
    app = create_api("Approvals for departments", verifier, version="1")

    def answer(approval: ApprovalRequest) -> ApprovalJson:
        return approval_json(view_of(approvals, approval))

    @app.get("/v1/approvals")
    def list_pending(
        who: Listing,
        page_size: Annotated[int, Query(ge=0, le=1000, description="0 lets the service choose (100)")] = 0,
        page_token: Annotated[str, Query(max_length=1024)] = "",
    ) -> ApprovalPage:
        pending = pending_for(approvals, requester_of(who))
        found, token = page(pending, page_size, page_token, lambda a: a.approval_id)
        return ApprovalPage(approvals=[answer(a) for a in found], next_page_token=token)

    @app.get("/v1/approvals/{approval_id}")
    def get_request(approval_id: ApprovalId, who: Reading) -> ApprovalJson:
        return answer(approvals.get(approval_id, requester_of(who).department))

    @app.post("/v1/approvals/{approval_id}/decide")
    def decide(approval_id: ApprovalId, body: Decision, who: Deciding) -> ApprovalJson:
        decision = DECISIONS[body.decision]
        message = pb.DecideRequest(
            request_id=body.request_id,
            approval_id=approval_id,
            step_index=body.step_index,
            decision=decision,
            comment=body.comment,
        )
        command = decide_step(approvals, body.step_index, decision, body.comment, requester_of(who))
        return answer(approvals.decide(_request(message, who), approval_id, command))

    @app.post("/v1/approvals/{approval_id}/provide-info")
    def provide_information(approval_id: ApprovalId, body: Information, who: Answering) -> ApprovalJson:
        message = pb.ProvideInformationRequest(
            request_id=body.request_id, approval_id=approval_id, answer=body.answer
        )
        command = provide_info(approvals, body.answer, requester_of(who))
        return answer(approvals.provide_info(_request(message, who), approval_id, command))

    @app.post("/v1/approvals/{approval_id}/withdraw")
    def withdraw_request(approval_id: ApprovalId, body: Withdrawal, who: Withdrawing) -> ApprovalJson:
        message = pb.WithdrawRequest(request_id=body.request_id, approval_id=approval_id, reason=body.reason)
        command = withdraw(approvals, body.reason, requester_of(who))
        return answer(approvals.withdraw(_request(message, who), approval_id, command))

    return app
