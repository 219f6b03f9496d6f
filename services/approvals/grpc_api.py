"""The ApprovalsService gRPC servicer: requests become commands, approval requests become views."""

from __future__ import annotations

import uuid

from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb
from callcenter.approvals.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2

from services.approvals import domain
from services.approvals.domain import ApprovalRequest, Requester, Step
from services.approvals.handlers import ApprovalsService, approval_id_for
from services.platform.errors import InvalidArgument
from services.platform.identity import Role, current_principal, department_acted_for
from services.platform.paging import page_of
from services.platform.requests import Request
from services.platform.timestamps import dt, ts

# Delegation ids derive from the request id: a retried Delegate names the same delegation.
DELEGATION_IDS = uuid.UUID("b3a0d6f1-8c2e-4e79-9d15-6f0a2c7e4b91")
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


def requester() -> Requester:
    """The caller as the domain sees it: its department only when it acts for one, not for the center."""
    principal = current_principal.get()
    if principal is None:
        return Requester("")
    return Requester(
        principal.subject,
        department_acted_for(principal),
        principal.titles,
        supervisor=Role.SUPERVISOR in principal.roles,
    )


class ApprovalsServicer(service_pb2_grpc.ApprovalsServiceServicer):
    def __init__(self, approvals: ApprovalsService) -> None:
        self._approvals = approvals

    def _view(self, approval: ApprovalRequest) -> pb.ApprovalView:
        return approval_view(approval, self._approvals.version(approval.approval_id))

    def RequestApproval(self, request: pb.RequestApprovalRequest, context) -> pb.RequestApprovalResponse:
        command = domain.RequestApproval(
            approval_id=approval_id_for(request.request_id),
            ticket_id=request.ticket_id,
            kind=request.kind,
            amount_minor=request.amount.minor_units,
            currency=request.amount.currency,
            customer_tier=request.customer_tier or "standard",
            ticket_type=request.ticket_type,
            justification=request.justification,
            by=requester(),
            now=self._approvals.now(),
        )
        approval = self._approvals.request(Request.of(request, context), command)
        return pb.RequestApprovalResponse(approval=self._view(approval))

    def Decide(self, request: pb.DecideRequest, context) -> pb.DecideResponse:
        command = domain.DecideStep(
            request.step_index, request.decision, request.comment, requester(), self._approvals.now()
        )
        approval = self._approvals.decide(Request.of(request, context), request.approval_id, command)
        return pb.DecideResponse(approval=self._view(approval))

    def ProvideInformation(
        self, request: pb.ProvideInformationRequest, context
    ) -> pb.ProvideInformationResponse:
        command = domain.ProvideInfo(request.answer, requester(), self._approvals.now())
        approval = self._approvals.provide_info(Request.of(request, context), request.approval_id, command)
        return pb.ProvideInformationResponse(approval=self._view(approval))

    def Withdraw(self, request: pb.WithdrawRequest, context) -> pb.WithdrawResponse:
        command = domain.Withdraw(request.reason, requester(), self._approvals.now())
        approval = self._approvals.withdraw(Request.of(request, context), request.approval_id, command)
        return pb.WithdrawResponse(approval=self._view(approval))

    def GetRequest(self, request: pb.GetRequestRequest, context) -> pb.GetRequestResponse:
        approval = self._approvals.get(request.approval_id, requester().department)
        return pb.GetRequestResponse(approval=self._view(approval))

    def ListPending(self, request: pb.ListPendingRequest, context) -> pb.ListPendingResponse:
        department = requester().department or request.department
        pending = self._approvals.pending(department)
        page, token = page_of(pending, request.page_size, request.page_token, lambda a: a.approval_id)
        return pb.ListPendingResponse(approvals=[self._view(a) for a in page], next_page_token=token)

    def Delegate(self, request: pb.DelegateRequest, context) -> pb.DelegateResponse:
        who = requester()
        delegation_id = str(uuid.uuid5(DELEGATION_IDS, request.request_id))
        grant = ev.DelegationGranted(
            delegation_id=delegation_id,
            delegator_id=who.subject,
            department=who.department or domain.CENTER,
            delegate_id=request.delegate_id,
            valid_from=request.valid_from,
            valid_until=request.valid_until,
            reason=request.reason,
            titles=sorted(who.titles),
        )
        self._approvals.delegate(Request.of(request, context), grant)
        return pb.DelegateResponse(delegation_id=delegation_id)

    def RevokeDelegation(self, request: pb.RevokeDelegationRequest, context) -> pb.RevokeDelegationResponse:
        self._approvals.revoke(
            Request.of(request, context), request.delegate_id, request.delegation_id, requester().subject
        )
        return pb.RevokeDelegationResponse()

    def GetPolicy(self, request: pb.GetPolicyRequest, context) -> pb.GetPolicyResponse:
        state = self._approvals.policy_state()
        return pb.GetPolicyResponse(
            policy_id=self._approvals.policy_id,
            active_version=state.active_version,
            loaded_versions=self._approvals.versions(),
            activations=[
                pb.PolicyActivation(version=version, activated_at=ts(at), activated_by=by)
                for version, at, by in state.activations
            ],
        )

    def DryRunPolicy(self, request: pb.DryRunPolicyRequest, context) -> pb.DryRunPolicyResponse:
        since, until = dt(request.since), dt(request.until)
        if until <= since:
            raise InvalidArgument("until: the period must end after it begins")
        candidate = self._approvals.policy(request.version)
        replayed, changed = self._approvals.dry_run(request.version, since, until)
        changes = []
        for approval, rule in changed:
            chain = [] if rule.startswith("refused:") else domain.chain_messages(candidate.rule(rule))
            changes.append(
                pb.DryRunChange(
                    approval_id=approval.approval_id,
                    kind=approval.kind,
                    amount=types_pb2.Money(minor_units=approval.amount_minor, currency=approval.currency),
                    policy_version=approval.policy_version,
                    rule=approval.rule,
                    new_rule=rule,
                    new_chain=chain,
                )
            )
        return pb.DryRunPolicyResponse(replayed=replayed, changes=changes)

    def ActivatePolicy(self, request: pb.ActivatePolicyRequest, context) -> pb.ActivatePolicyResponse:
        before = self._approvals.policy_state().active_version
        state = self._approvals.activate(Request.of(request, context), request.version, requester().subject)
        return pb.ActivatePolicyResponse(active_version=state.active_version, previous_version=before)


def approval_view(approval: ApprovalRequest, version: int = 0) -> pb.ApprovalView:
    view = pb.ApprovalView(
        approval_id=approval.approval_id,
        ticket_id=approval.ticket_id,
        kind=approval.kind,
        amount=types_pb2.Money(minor_units=approval.amount_minor, currency=approval.currency),
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
