"""The ApprovalsService gRPC servicer: requests become commands, approval requests become views."""

from __future__ import annotations

import uuid

from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb
from callcenter.approvals.v1 import service_pb2_grpc

from services.approvals import domain
from services.approvals.api_common import (
    decide_step,
    pending_for,
    provide_info,
    requester_of,
    view_of,
    withdraw,
)
from services.approvals.api_common import page as paged
from services.approvals.domain import ApprovalRequest, Requester
from services.approvals.handlers import ApprovalsService, approval_id_for
from services.platform.errors import InvalidArgument
from services.platform.identity import current_principal
from services.platform.requests import Request
from services.platform.timestamps import dt, ts

# Delegation ids derive from the request id: a retried Delegate names the same delegation.
DELEGATION_IDS = uuid.UUID("b3a0d6f1-8c2e-4e79-9d15-6f0a2c7e4b91")


def requester() -> Requester:
    """The caller of the call being served, as the domain sees it."""
    return requester_of(current_principal.get())


class ApprovalsServicer(service_pb2_grpc.ApprovalsServiceServicer):
    def __init__(self, approvals: ApprovalsService) -> None:
        self._approvals = approvals

    def _view(self, approval: ApprovalRequest) -> pb.ApprovalView:
        return view_of(self._approvals, approval)

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
        command = decide_step(
            self._approvals, request.step_index, request.decision, request.comment, requester()
        )
        approval = self._approvals.decide(Request.of(request, context), request.approval_id, command)
        return pb.DecideResponse(approval=self._view(approval))

    def ProvideInformation(
        self, request: pb.ProvideInformationRequest, context
    ) -> pb.ProvideInformationResponse:
        command = provide_info(self._approvals, request.answer, requester())
        approval = self._approvals.provide_info(Request.of(request, context), request.approval_id, command)
        return pb.ProvideInformationResponse(approval=self._view(approval))

    def Withdraw(self, request: pb.WithdrawRequest, context) -> pb.WithdrawResponse:
        command = withdraw(self._approvals, request.reason, requester())
        approval = self._approvals.withdraw(Request.of(request, context), request.approval_id, command)
        return pb.WithdrawResponse(approval=self._view(approval))

    def GetRequest(self, request: pb.GetRequestRequest, context) -> pb.GetRequestResponse:
        approval = self._approvals.get(request.approval_id, requester().department)
        return pb.GetRequestResponse(approval=self._view(approval))

    def ListPending(self, request: pb.ListPendingRequest, context) -> pb.ListPendingResponse:
        pending = pending_for(self._approvals, requester(), request.department)
        page, token = paged(pending, request.page_size, request.page_token, lambda a: a.approval_id)
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
                    amount=approval.money,
                    extension=approval.extension,
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
