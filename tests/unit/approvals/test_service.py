"""The approvals service layer over the in-memory store: policy versions activated by events and kept
by requests in flight, idempotent requests, delegation, the tickets' reaction, dry runs, snapshots."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as tickets_ev

from services.approvals import domain
from services.approvals.bootstrap import bootstrap
from services.approvals.domain import APPROVE, DecideStep, RequestApproval, Requester
from services.approvals.handlers import KIND, ApprovalsService, approval_id_for, kinds
from services.approvals.policies import DEFAULT_CALENDARS_DIR, DEFAULT_POLICY_DIR, load_policies
from services.platform.envelope import Cause, EventRegistry, make_envelope
from services.platform.errors import NotFound, PermissionDenied
from services.platform.requests import Request
from services.platform.settings import GrpcSettings, Settings
from services.platform.timestamps import ts
from tests.support.memory import InMemoryBroker, memory_adapters

MONDAY = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
AGENT = Requester("agent-7")
LEAD = Requester("lead-1", titles=frozenset({"team_lead"}))
FINANCE = Requester("fin-1", "finance")


@pytest.fixture(scope="module")
def policies():
    """The shipped versions: in version 2 the team lead alone signs only up to 500, and a department's
    request for more than three days' more time goes to the duty manager."""
    return load_policies(DEFAULT_POLICY_DIR, DEFAULT_CALENDARS_DIR)


class Center:
    def __init__(self, broker: InMemoryBroker, policies) -> None:
        settings = Settings(
            grpc=GrpcSettings(address="127.0.0.1:0"), instance_id=f"ap-{uuid.uuid4().hex[:6]}"
        )
        self.context = bootstrap(settings, memory_adapters(broker, clock=lambda: MONDAY), policies)
        self.context.store.start()
        self.service: ApprovalsService = self.context.service
        self.service.activate_first()

    def request(self, amount: int, request_id: str = "", kind: str = "refund") -> domain.ApprovalRequest:
        request_id = request_id or uuid.uuid4().hex
        command = RequestApproval(
            approval_id_for(request_id),
            "t-1",
            kind,
            amount,
            "CNY",
            "standard",
            "complaint",
            "why",
            AGENT,
            MONDAY,
        )
        return self.service.request(
            Request(request_id, f"fp-{request_id}-{amount}", "RequestApproval"), command
        )

    def decide(self, approval_id: str, who: Requester, step: int = 0) -> domain.ApprovalRequest:
        command = DecideStep(step, APPROVE, "ok", who, MONDAY)
        return self.service.decide(Request(uuid.uuid4().hex, "fp", "Decide"), approval_id, command)


def events_of(broker: InMemoryBroker, name: str) -> list:
    registry = EventRegistry.of(ev, tickets_ev)
    from services.platform.envelope import decode

    found = [decode(r.value, r.headers, registry) for r in broker.records("approvals.events.v1")]
    return [e for e in found if e.event_type == name]


def test_the_first_start_activates_the_lowest_version_once_on_the_record(policies) -> None:
    broker = InMemoryBroker()
    Center(broker, policies)
    Center(broker, policies)  # a restart replays the activation and writes none
    [activated] = events_of(broker, "PolicyVersionActivated")
    assert (activated.payload.version, activated.payload.previous_version) == (1, 0)


def test_a_repeated_request_id_changes_nothing(policies) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    first = center.request(80_000, "req-1")
    again = center.request(80_000, "req-1")
    assert first.approval_id == again.approval_id
    assert len(events_of(broker, "ApprovalRequested")) == 1


def test_requests_in_flight_keep_their_version_and_new_ones_get_the_activated_one(policies) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    before = center.request(80_000)  # 800 CNY: the team lead alone under version 1
    center.service.activate(Request("act-2", "fp", "ActivatePolicy"), 2, "admin-1")
    after = center.request(80_000)  # version 2: team lead, then finance
    assert (before.policy_version, before.rule, len(before.steps)) == (1, "refund-small", 1)
    assert (after.policy_version, after.rule, len(after.steps)) == (2, "refund-medium", 2)
    assert center.decide(before.approval_id, LEAD).status == domain.GRANTED
    assert center.decide(after.approval_id, LEAD).status == domain.PENDING


def test_a_dry_run_names_the_past_requests_a_new_version_would_chain_otherwise(policies) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    small, middle, large = center.request(30_000), center.request(80_000), center.request(2_000_000)
    replayed, changed = center.service.dry_run(2, MONDAY - timedelta(days=1), MONDAY + timedelta(days=1))
    assert replayed == 3
    assert [(r.approval_id, r.rule, rule) for r, rule in changed] == [
        (middle.approval_id, "refund-small", "refund-medium")
    ]
    assert {small.approval_id, large.approval_id}.isdisjoint({r.approval_id for r, _ in changed})
    assert center.service.dry_run(2, MONDAY + timedelta(days=1), MONDAY + timedelta(days=2)) == (0, [])
    assert center.service.policy_state().active_version == 1, "a dry run writes nothing"


def test_a_delegate_decides_for_a_finance_member_and_the_trail_says_so(policies) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    approval = center.request(500_000)
    center.decide(approval.approval_id, LEAD)
    deputy = Requester("deputy-1", "housing")
    with pytest.raises(PermissionDenied):
        center.decide(approval.approval_id, deputy, step=1)
    grant = ev.DelegationGranted(
        delegation_id="dl-1",
        delegator_id="fin-7",
        department="finance",
        delegate_id="deputy-1",
        valid_from=ts(MONDAY - timedelta(days=1)),
        valid_until=ts(MONDAY + timedelta(days=5)),
    )
    center.service.delegate(Request("dl-1", "fp", "Delegate"), grant)
    done = center.decide(approval.approval_id, deputy, step=1)
    assert done.status == domain.GRANTED
    assert [(t.approver_id, t.on_behalf_of) for t in done.trail] == [("lead-1", ""), ("deputy-1", "fin-7")]
    with pytest.raises(PermissionDenied, match="only fin-7, who delegated, may revoke"):
        center.service.revoke(Request("rv-1", "fp", "Revoke"), "deputy-1", "dl-1", "deputy-1")


def test_a_department_sees_only_requests_with_a_step_of_its_own(policies) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    approval = center.request(500_000)
    with pytest.raises(PermissionDenied, match="has no step for housing"):
        center.service.get(approval.approval_id, "housing")
    assert center.service.get(approval.approval_id, "finance").approval_id == approval.approval_id
    with pytest.raises(NotFound):
        center.service.get("nope")
    assert center.service.pending("finance") == [], "finance decides only after the team lead"
    center.decide(approval.approval_id, LEAD)
    assert [a.approval_id for a in center.service.pending("finance")] == [approval.approval_id]


def _ticket_asks(center: Center, kind: str, amount: int) -> None:
    asked = tickets_ev.TicketApprovalRequested(
        ticket_id="t-9",
        approval_id=f"ap-{kind}",
        kind=kind,
        amount=types_pb2.Money(minor_units=amount, currency="CNY"),
        requested_by="agent-7",
        ticket_type=tickets_ev.TICKET_TYPE_COMPLAINT,
    )
    _ticket_event(center, asked, f"ticket-{kind}")


def _department_asks_for_review(
    center: Center, approval_id: str, kind: str, extension: timedelta | None
) -> None:
    asked = tickets_ev.DispatchReviewRequested(
        ticket_id="t-9",
        dispatch_id="d-1",
        department="housing",
        approval_id=approval_id,
        kind=kind,
        reason="waiting for the owners' meeting",
        requested_by="clerk-3",
        ticket_type=tickets_ev.TICKET_TYPE_COMPLAINT,
    )
    if extension is not None:
        asked.extension.FromTimedelta(extension)
    _ticket_event(center, asked, f"review-{approval_id}")


def _ticket_event(center: Center, asked, cause: str) -> None:
    envelope = make_envelope(
        asked,
        registry=EventRegistry.of(tickets_ev),
        aggregate_type="Ticket",
        aggregate_id="t-9",
        aggregate_version=3,
        occurred_at=MONDAY,
        cause=Cause.request(cause),
    )
    with center.context.store.transaction() as tx:
        center.service.react(envelope, tx)


def test_a_tickets_request_for_sign_off_opens_an_approval_and_one_the_policy_does_not_cover_is_rejected(
    policies,
) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    _ticket_asks(center, "refund", 80_000)
    opened = center.service.get("ap-refund")
    assert (opened.ticket_id, opened.rule, opened.ticket_type) == ("t-9", "refund-small", "complaint")
    _ticket_asks(center, "donation", 100)
    refused = center.service.get("ap-donation")
    assert refused.status == domain.REJECTED
    assert refused.outcome_reason.startswith("not covered by the policy: kind: 'donation' is not one of")


def test_a_dispatch_review_is_chained_by_the_policy_and_a_long_extension_by_its_length(policies) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    _department_asks_for_review(center, "ap-return", "dispatch_return", None)
    _department_asks_for_review(center, "ap-ext-v1", "dispatch_extension", timedelta(days=5))
    under_v1 = center.service.get("ap-ext-v1")
    assert (under_v1.rule, under_v1.dispatch_id, under_v1.extension_s) == (
        "dispatch-review",
        "d-1",
        5 * 86_400,
    )
    assert (under_v1.requested_by, under_v1.requested_by_department) == ("clerk-3", "housing")
    assert [str(place.decider) for place in under_v1.steps[0].places] == ["center/dispatcher"]
    assert center.service.get("ap-return").rule == "dispatch-review"

    # Who reviews a long extension is configuration: version 2 sends one over three days elsewhere.
    replayed, changed = center.service.dry_run(2, MONDAY - timedelta(days=1), MONDAY + timedelta(days=1))
    assert replayed == 2 and [(r.approval_id, rule) for r, rule in changed] == [
        ("ap-ext-v1", "dispatch-extension-long")
    ]
    center.service.activate(Request("act-2", "fp", "ActivatePolicy"), 2, "admin-1")
    _department_asks_for_review(center, "ap-ext-long", "dispatch_extension", timedelta(days=5))
    _department_asks_for_review(center, "ap-ext-short", "dispatch_extension", timedelta(hours=72))
    long, short = center.service.get("ap-ext-long"), center.service.get("ap-ext-short")
    assert (long.rule, [str(p.decider) for p in long.steps[0].places]) == (
        "dispatch-extension-long",
        ["center/duty_manager"],
    )
    assert (short.rule, [str(p.decider) for p in short.steps[0].places]) == (
        "dispatch-extension-short",
        ["center/dispatcher"],
    )
    [requested] = [
        e.payload for e in events_of(broker, "ApprovalRequested") if e.payload.approval_id == "ap-ext-long"
    ]
    assert requested.dispatch_id == "d-1" and requested.extension.ToTimedelta() == timedelta(days=5)
    assert not requested.HasField("amount")


def test_a_request_state_survives_a_snapshot(policies) -> None:
    broker = InMemoryBroker()
    center = Center(broker, policies)
    approval = center.request(2_000_000)
    state = center.decide(approval.approval_id, LEAD)
    [kind] = [k for k in kinds() if k.name == KIND]
    assert kind.restore(kind.snapshot(state)) == state


def test_the_shipped_policies_load(tmp_path: Path) -> None:
    assert {("approvals", 1), ("approvals", 2)} <= set(load_policies())
