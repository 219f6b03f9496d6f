"""What the approvals service's gRPC and HTTP APIs share: who the caller is to the domain, the commands
both build alike, whose pending requests a caller lists, and the view of a request both answer; so a
request means the same on either."""

from __future__ import annotations

from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb

from services.approvals import domain
from services.approvals.domain import ApprovalRequest, Requester, Step
from services.approvals.handlers import ApprovalsService
from services.approvals.policies import CENTER
from services.platform.identity import Principal, Role, department_acted_for
from services.platform.paging import page_of as page
from services.platform.timestamps import ts

__all__ = [
    "approval_view",
    "decide_step",
    "page",
    "pending_for",
    "provide_info",
    "requester_of",
    "view_of",
    "withdraw",
]

_STATUSES = {
    domain.PENDING: pb.APPROVAL_STATUS_PENDING,
    domain.GRANTED: pb.APPROVAL_STATUS_GRANTED,
    domain.REJECTED: pb.APPROVAL_STATUS_REJECTED,
    domain.EXPIRED: pb.APPROVAL_STATUS_EXPIRED,
    domain.WITHDRAWN: pb.APPROVAL_STATUS_WITHDRAWN,
}
_STEP_STATUSES = {
    "waiting": pb.STEP_STATUS_WAITING,
    "open": pb.STEP_STATUS_OPEN,
    "info": pb.STEP_STATUS_AWAITING_INFORMATION,
    "approved": pb.STEP_STATUS_APPROVED,
    "rejected": pb.STEP_STATUS_REJECTED,
}


def requester_of(principal: Principal | None) -> Requester:
    """The caller as the domain sees it: its department only when it acts for one, not for the center."""
    if principal is None:
        return Requester("")
    return Requester(
        principal.subject,
        department_acted_for(principal),
        principal.titles,
        supervisor=Role.SUPERVISOR in principal.roles,
    )


def decide_step(
    approvals: ApprovalsService, step_index: int, decision: int, comment: str, by: Requester
) -> domain.DecideStep:
    return domain.DecideStep(step_index, decision, comment, by, approvals.now())


def provide_info(approvals: ApprovalsService, answer: str, by: Requester) -> domain.ProvideInfo:
    return domain.ProvideInfo(answer, by, approvals.now())


def withdraw(approvals: ApprovalsService, reason: str, by: Requester) -> domain.Withdraw:
    return domain.Withdraw(reason, by, approvals.now())


def pending_for(approvals: ApprovalsService, by: Requester, department: str = "") -> list[ApprovalRequest]:
    """The open requests a caller lists, oldest first: a department's token those whose open step its
    own department decides now, whatever it names; an agent of the center those whose open step a
    center place of the agent's titles decides (a team lead's, a dispatcher's work list); a supervisor
    ``department``'s, or all."""
    if by.department or by.supervisor:
        return approvals.pending(by.department or department)
    return [approval for approval in approvals.pending(CENTER) if _decidable_by_titles(approval, by.titles)]


def _decidable_by_titles(approval: ApprovalRequest, titles: frozenset[str]) -> bool:
    step = approval.open_step
    return step is not None and any(
        step.places[n].decider.department == CENTER
        and (not step.places[n].decider.role or step.places[n].decider.role in titles)
        for n in step.open_places
    )


def view_of(approvals: ApprovalsService, approval: ApprovalRequest) -> pb.ApprovalView:
    """A request as both APIs answer it, with its version in the store."""
    return approval_view(approval, approvals.version(approval.approval_id))


def approval_view(approval: ApprovalRequest, version: int = 0) -> pb.ApprovalView:
    view = pb.ApprovalView(
        approval_id=approval.approval_id,
        ticket_id=approval.ticket_id,
        kind=approval.kind,
        amount=approval.money,
        dispatch_id=approval.dispatch_id,
        extension=approval.extension,
        status=_STATUSES.get(approval.status, pb.APPROVAL_STATUS_UNSPECIFIED),
        open_steps=[approval.current] if approval.open_step is not None else [],
        version=version,
        policy_id=approval.policy_id,
        policy_version=approval.policy_version,
        rule=approval.rule,
        customer_tier=approval.customer_tier,
        ticket_type=approval.ticket_type,
        justification=approval.justification,
        requested_by=approval.requested_by,
        steps=[_step_view(step) for step in approval.steps],
        decisions=list(approval.trail),
        outcome_reason=approval.outcome_reason,
    )
    if approval.requested_at is not None:
        view.requested_at.CopyFrom(ts(approval.requested_at))
    if approval.ended_at is not None:
        view.ended_at.CopyFrom(ts(approval.ended_at))
    for decided, at in zip(approval.trail, approval.decided_at, strict=True):
        view.trail.append(
            pb.TrailEntry(
                step_index=decided.step_index,
                department=decided.department,
                approver_id=decided.approver_id,
                on_behalf_of=decided.on_behalf_of,
                decision=decided.decision,
                comment=decided.comment,
                decided_at=ts(at),
            )
        )
    return view


def _step_view(step: Step) -> pb.StepView:
    view = pb.StepView(
        index=step.index,
        name=step.name,
        status=_STEP_STATUSES.get(step.status, pb.STEP_STATUS_UNSPECIFIED),
        deciders=[ev.Decider(department=p.decider.department, role=p.decider.role) for p in step.places],
        approvals_needed=step.needed,
        approvals=step.approvals,
        rejections=step.rejections,
        escalated=step.escalated,
    )
    if step.deadline_at is not None:
        view.deadline.CopyFrom(ts(step.deadline_at))
    return view
