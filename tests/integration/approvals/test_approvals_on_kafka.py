"""Approvals on the real broker, driven over gRPC as the center, departments and an admin would: a
refund through a three-step chain, a 2-of-3 quorum, a step that escalates to its backup and one that
expires, more information asked and given, a department refused another's step with nothing written,
and the service restarted mid-flow with nothing lost or doubled. The service's clock is the test's."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb
from callcenter.approvals.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2

from services.approvals.bootstrap import bootstrap
from services.platform.envelope import EventRegistry, decode
from services.platform.identity import Role
from services.platform.kafka import KafkaEventLog
from tests.support.live import LiveContext, read_topic
from tests.support.polling import eventually

# Monday 2 March 2026, 10:00 in Beijing: a working morning of the cn-gov calendar.
BASE = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
REGISTRY = EventRegistry.of(ev)
A = pb.ApprovalStatus
APPROVE, REJECT, INFO = ev.DECISION_APPROVE, ev.DECISION_REJECT, ev.DECISION_REQUEST_INFO


class LiveApprovals(LiveContext):
    """The approvals service in this process on the session's broker, as its own Kafka principal."""

    def __init__(self, kafka_broker: Any) -> None:
        super().__init__(kafka_broker, "approvals", bootstrap, service_pb2_grpc.ApprovalsServiceStub, BASE)

    def started(self) -> None:
        self.process.service.activate_first()  # as main does

    @property
    def service(self) -> service_pb2_grpc.ApprovalsServiceStub:
        return self.stub(Role.SERVICE, "tickets")

    def lead(self) -> service_pb2_grpc.ApprovalsServiceStub:
        return self.stub(Role.AGENT, "lead-1", titles=["team_lead"])

    def department(self, code: str, subject: str = "", *titles: str) -> service_pb2_grpc.ApprovalsServiceStub:
        return self.stub(Role.DEPARTMENT, subject or f"{code}-1", department=code, titles=list(titles))

    def request(self, kind: str = "refund", amount: int = 2_000_000, **fields: Any) -> pb.ApprovalView:
        request = pb.RequestApprovalRequest(
            request_id=fields.pop("request_id", uuid.uuid4().hex),
            ticket_id=f"t-{self.run}",
            kind=kind,
            amount=types_pb2.Money(minor_units=amount, currency="CNY"),
            justification="a goodwill refund",
            ticket_type="complaint",
            **fields,
        )
        return self.service.RequestApproval(request).approval

    def decide(
        self,
        stub: service_pb2_grpc.ApprovalsServiceStub,
        approval: pb.ApprovalView,
        step: int,
        decision: int = APPROVE,
        **fields: Any,
    ) -> pb.ApprovalView:
        request = pb.DecideRequest(
            request_id=fields.pop("request_id", uuid.uuid4().hex),
            approval_id=approval.approval_id,
            step_index=step,
            decision=decision,
            comment=fields.pop("comment", "fine"),
        )
        return stub.Decide(request).approval

    def events(self, approval_id: str) -> list[Any]:
        reader = KafkaEventLog(
            self.broker.kafka, "approvals.events.v1", None, f"reader-{uuid.uuid4().hex[:6]}"
        )
        return [
            decode(r.value, r.headers, REGISTRY) for r in reader.replay({}) if r.key == approval_id.encode()
        ]

    def published(self, topic: str, approval_id: str, expect: int) -> list[Any]:
        """The public events of one request on a topic, once ``expect`` of them arrived."""
        return eventually(
            lambda: [
                m for m in read_topic(self.broker.client_config(), topic) if m.subject_id == approval_id
            ],
            lambda found: len(found) >= expect,
            f"{expect} events of {approval_id} on {topic}",
        )

    def get(self, approval_id: str) -> pb.ApprovalView:
        return (
            self.stub(Role.SUPERVISOR, "sup-1")
            .GetRequest(pb.GetRequestRequest(approval_id=approval_id))
            .approval
        )


@pytest.fixture(scope="module")
def live(kafka_broker) -> Iterator[LiveApprovals]:
    center = LiveApprovals(kafka_broker)
    yield center
    center.close()


def types_of(live: LiveApprovals, approval_id: str) -> Counter:
    return Counter(e.event_type for e in live.events(approval_id))


def test_a_refund_approved_through_a_three_step_chain(live: LiveApprovals) -> None:
    approval = live.request(amount=2_000_000)  # 20,000 CNY: team lead, finance, legal
    assert (approval.rule, approval.policy_version, approval.status) == (
        "refund-large",
        1,
        A.APPROVAL_STATUS_PENDING,
    )
    live.decide(live.lead(), approval, 0)
    live.decide(live.department("finance"), approval, 1)
    done = live.decide(live.department("legal"), approval, 2)
    assert done.status == A.APPROVAL_STATUS_GRANTED
    assert [(t.department, t.approver_id, t.decision) for t in done.trail] == [
        ("center", "lead-1", APPROVE),
        ("finance", "finance-1", APPROVE),
        ("legal", "legal-1", APPROVE),
    ]
    types = eventually(
        lambda: types_of(live, approval.approval_id),
        lambda t: t["ApprovalGranted"] == 1,
        "the grant on the log",
    )
    assert types == Counter(
        ApprovalRequested=1,
        ApprovalStepOpened=3,
        ApprovalDecided=3,
        ApprovalStepCompleted=3,
        ApprovalGranted=1,
    )


def test_a_parallel_step_with_a_2_of_3_quorum(live: LiveApprovals) -> None:
    approval = live.request(kind="contract_change", amount=0)
    assert live.decide(live.department("finance"), approval, 0).status == A.APPROVAL_STATUS_PENDING
    done = live.decide(live.department("legal"), approval, 0)
    assert done.status == A.APPROVAL_STATUS_GRANTED
    assert (done.steps[0].approvals, done.steps[0].approvals_needed) == (2, 2)
    duty = live.stub(Role.SUPERVISOR, "duty-1", titles=["duty_manager"])
    with pytest.raises(grpc.RpcError) as refused:
        live.decide(duty, approval, 0)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is granted" in refused.value.details()


def test_a_step_that_runs_out_escalates_to_its_backup_who_decides_it_alone(live: LiveApprovals) -> None:
    approval = live.request(amount=500_000)  # 5,000 CNY: team lead, then finance (backup: its director)
    opened = live.decide(live.lead(), approval, 0)
    deadline = opened.steps[1].deadline.ToDatetime(tzinfo=UTC)
    live.clock.skip_to(deadline + timedelta(minutes=1))
    escalated = eventually(
        lambda: live.get(approval.approval_id), lambda a: a.steps[1].escalated, "escalated"
    )
    assert [(d.department, d.role) for d in escalated.steps[1].deciders] == [("finance", "director")]
    with pytest.raises(grpc.RpcError) as refused:
        live.decide(live.department("finance"), approval, 1)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    done = live.decide(live.department("finance", "fin-dir", "director"), approval, 1)
    assert done.status == A.APPROVAL_STATUS_GRANTED


def test_a_step_without_a_backup_expires(live: LiveApprovals) -> None:
    approval = live.request(amount=2_000_000)
    live.decide(live.lead(), approval, 0)
    opened = live.decide(live.department("finance"), approval, 1)
    live.clock.skip_to(opened.steps[2].deadline.ToDatetime(tzinfo=UTC) + timedelta(minutes=1))
    expired = eventually(
        lambda: live.get(approval.approval_id), lambda a: a.status == A.APPROVAL_STATUS_EXPIRED, "expired"
    )
    assert expired.ended_at.ToDatetime(tzinfo=UTC) >= opened.steps[2].deadline.ToDatetime(tzinfo=UTC)
    # Legal hears it let the deadline pass, on the public topic and in its inbox, and the outcome.
    for topic in ("workflow.public.v1", "dept.legal.inbox.v1"):
        found = eventually(
            lambda topic=topic: [
                m
                for m in read_topic(live.broker.client_config(), topic)
                if m.subject_id == approval.approval_id
            ],
            lambda found: {m.WhichOneof("event") for m in found} >= {"deadline_missed", "approval_concluded"},
            f"the expiry on {topic}",
        )
        [missed] = [m.deadline_missed for m in found if m.WhichOneof("event") == "deadline_missed"]
        assert (missed.department, missed.clock) == ("legal", "approval_step")
        assert missed.due_at == opened.steps[2].deadline


def test_more_information_asked_and_given(live: LiveApprovals) -> None:
    approval = live.request(amount=80_000)
    asked = live.decide(live.lead(), approval, 0, INFO, comment="which order is it?")
    assert asked.steps[0].status == pb.STEP_STATUS_AWAITING_INFORMATION
    answer = pb.ProvideInformationRequest(
        request_id=uuid.uuid4().hex, approval_id=approval.approval_id, answer="1234"
    )
    with pytest.raises(grpc.RpcError) as refused:
        live.stub(Role.AGENT, "agent-9").ProvideInformation(answer)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    given = live.service.ProvideInformation(answer).approval
    assert given.steps[0].status == pb.STEP_STATUS_OPEN
    assert live.decide(live.lead(), approval, 0).status == A.APPROVAL_STATUS_GRANTED


def test_a_department_trying_to_decide_another_departments_step_is_refused_and_nothing_is_written(
    live: LiveApprovals,
) -> None:
    approval = live.request(amount=500_000)
    live.decide(live.lead(), approval, 0)
    before = live.get(approval.approval_id).version
    for stub in (live.department("housing"), live.department("legal")):
        with pytest.raises(grpc.RpcError) as refused:
            live.decide(stub, approval, 1)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "is for finance" in refused.value.details()
    with pytest.raises(grpc.RpcError) as hidden:
        live.department("housing").GetRequest(pb.GetRequestRequest(approval_id=approval.approval_id))
    assert hidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert live.get(approval.approval_id).version == before
    assert types_of(live, approval.approval_id)["ApprovalDecided"] == 1


def test_the_service_restarted_mid_flow_loses_and_doubles_nothing(live: LiveApprovals) -> None:
    approval = live.request(amount=2_000_000, request_id=f"restart-{live.run}")
    live.decide(live.lead(), approval, 0, request_id=f"lead-{live.run}")
    live.restart()
    again = live.request(amount=2_000_000, request_id=f"restart-{live.run}")
    assert (
        again.approval_id == approval.approval_id and again.version == live.get(approval.approval_id).version
    )
    live.decide(live.lead(), approval, 0, request_id=f"lead-{live.run}")  # a retry: the same answer
    live.decide(live.department("finance"), approval, 1)
    live.restart()
    done = live.decide(live.department("legal"), approval, 2)
    assert done.status == A.APPROVAL_STATUS_GRANTED
    types = types_of(live, approval.approval_id)
    assert types == Counter(
        ApprovalRequested=1,
        ApprovalStepOpened=3,
        ApprovalDecided=3,
        ApprovalStepCompleted=3,
        ApprovalGranted=1,
    )
    events = live.events(approval.approval_id)
    assert len({e.event_id for e in events}) == len(events)


def test_a_tickets_refund_goes_through_approvals_and_its_grant_lets_the_ticket_go_on(
    live: LiveApprovals, kafka_broker
) -> None:
    from callcenter.tickets.v1 import events_pb2 as tickets_ev
    from callcenter.tickets.v1 import service_pb2 as tickets_pb
    from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc

    from services.tickets.bootstrap import bootstrap as tickets_bootstrap

    tickets = LiveContext(
        kafka_broker, "tickets", tickets_bootstrap, tickets_grpc.TicketsServiceStub, BASE, clock=live.clock
    )
    try:
        desk = tickets.stub(Role.AGENT, "agent-7")
        created = desk.CreateTicket(
            tickets_pb.CreateTicketRequest(
                request_id=uuid.uuid4().hex,
                type=tickets_ev.TICKET_TYPE_COMPLAINT,
                priority=3,
                summary="Charged twice for water",
                category="water.billing",
                customer=types_pb2.PartyReference(hash="cd" * 32, masked="*******1234"),
            )
        ).ticket
        asked = desk.RequestApproval(
            tickets_pb.RequestApprovalRequest(
                request_id=uuid.uuid4().hex,
                ticket_id=created.ticket_id,
                kind="refund",
                amount=types_pb2.Money(minor_units=300_000, currency="CNY"),
                justification="charged twice",
                customer_tier="gold",
            )
        )
        assert asked.ticket.status == tickets_pb.TICKET_STATUS_WAITING_FOR_APPROVAL
        opened = eventually(
            lambda: live.get(asked.approval_id),
            lambda a: a.status == A.APPROVAL_STATUS_PENDING,
            "the request opened",
            not_yet=lambda error: (
                isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.NOT_FOUND
            ),
        )
        assert (opened.rule, opened.ticket_id, opened.customer_tier, opened.ticket_type) == (
            "refund-medium",
            created.ticket_id,
            "gold",
            "complaint",
        )
        live.decide(live.lead(), opened, 0)
        assert live.decide(live.department("finance"), opened, 1).status == A.APPROVAL_STATUS_GRANTED
        supervisor = tickets.stub(Role.SUPERVISOR, "sup-1")
        after = eventually(
            lambda: supervisor.GetTicket(tickets_pb.GetTicketRequest(ticket_id=created.ticket_id)).ticket,
            lambda t: not t.pending_approval_id,
            "the ticket concluded its wait",
        )
        assert after.status != tickets_pb.TICKET_STATUS_WAITING_FOR_APPROVAL
    finally:
        tickets.close()


def test_a_dispatch_extension_is_reviewed_through_the_policy_and_its_grant_moves_the_due_time(
    live: LiveApprovals, kafka_broker, tmp_path
) -> None:
    """With the catalogue sending extension reviews to approvals, a department's request for more time
    becomes an approval request the policy chains (the dispatch desk), the center's own review is
    refused meanwhile, and the grant gives the department the time it asked for."""
    import shutil

    from callcenter.tickets.v1 import events_pb2 as tickets_ev
    from callcenter.tickets.v1 import service_pb2 as tickets_pb
    from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc

    from services.platform.settings import TicketsSettings
    from services.tickets.bootstrap import bootstrap as tickets_bootstrap
    from services.tickets.policies import DEFAULT_CONFIG_DIR

    config = tmp_path / "tickets"
    shutil.copytree(DEFAULT_CONFIG_DIR, config)
    catalogue = config / "dispatch-catalogue.yaml"
    text = catalogue.read_text()
    assert "reviews: {returns: center, extensions: center}" in text
    catalogue.write_text(text.replace("extensions: center}", "extensions: approvals}"))
    tickets = LiveContext(
        kafka_broker,
        "tickets",
        tickets_bootstrap,
        tickets_grpc.TicketsServiceStub,
        BASE,
        clock=live.clock,
        tickets=TicketsSettings(config_dir=config),
    )
    try:
        desk = tickets.stub(Role.AGENT, "agent-7")
        created = desk.CreateTicket(
            tickets_pb.CreateTicketRequest(
                request_id=uuid.uuid4().hex,
                type=tickets_ev.TICKET_TYPE_COMPLAINT,
                priority=3,
                summary="Leaking roof in the stairwell",
                category="housing.property_management",
                customer=types_pb2.PartyReference(hash="ef" * 32, masked="*******5678"),
            )
        ).ticket
        sent = desk.Dispatch(
            tickets_pb.DispatchRequest(request_id=uuid.uuid4().hex, ticket_id=created.ticket_id)
        )
        housing = tickets.stub(Role.DEPARTMENT, "housing-clerk", department="housing")
        due = next(d for d in sent.ticket.dispatches if d.department == "housing").due_at.ToDatetime(
            tzinfo=UTC
        )
        wanted = due + timedelta(days=5)
        asked = housing.RequestExtension(
            tickets_pb.RequestExtensionRequest(
                request_id=uuid.uuid4().hex,
                ticket_id=created.ticket_id,
                dispatch_id=sent.dispatch_id,
                requested_due_at=wanted,
                reason="the owners' committee meets next week",
            )
        ).dispatch
        approval_id = asked.review_approval_id
        assert approval_id
        center = tickets.stub(Role.SUPERVISOR, "sup-1")
        with pytest.raises(grpc.RpcError) as refused:
            center.ReviewExtension(
                tickets_pb.ReviewExtensionRequest(
                    request_id=uuid.uuid4().hex,
                    ticket_id=created.ticket_id,
                    dispatch_id=sent.dispatch_id,
                    grant=True,
                )
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"under review by approval {approval_id}" in refused.value.details()

        opened = eventually(
            lambda: live.get(approval_id),
            lambda a: a.status == A.APPROVAL_STATUS_PENDING,
            "the review opened",
            not_yet=lambda error: (
                isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.NOT_FOUND
            ),
        )
        assert (opened.kind, opened.rule, opened.dispatch_id, opened.requested_by) == (
            "dispatch_extension",
            "dispatch-review",
            sent.dispatch_id,
            "housing-clerk",
        )
        assert opened.extension.ToTimedelta() == timedelta(days=5)
        assert [(d.department, d.role) for d in opened.steps[0].deciders] == [("center", "dispatcher")]
        with pytest.raises(grpc.RpcError) as not_theirs:
            live.decide(live.department("housing"), opened, 0)
        assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED
        dispatcher = live.stub(Role.AGENT, "disp-1", titles=["dispatcher"])
        assert live.decide(dispatcher, opened, 0).status == A.APPROVAL_STATUS_GRANTED

        reviewed = eventually(
            lambda: next(
                d
                for d in center.GetTicket(
                    tickets_pb.GetTicketRequest(ticket_id=created.ticket_id)
                ).ticket.dispatches
                if d.dispatch_id == sent.dispatch_id
            ),
            lambda d: not d.review_approval_id,
            "the grant reviewed the dispatch",
        )
        assert reviewed.due_at.ToDatetime(tzinfo=UTC) == wanted
        assert not reviewed.HasField("requested_due_at")
    finally:
        tickets.close()
