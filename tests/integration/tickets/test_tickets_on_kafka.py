"""Tickets and departments on the real broker, driven over gRPC as desks, supervisors and departments
would: a complaint dispatched to a lead and an assisting department that both complete, a return
reviewed and re-dispatched, an extension granted, an overdue dispatch supervised and escalated, a
dissatisfied follow-up redone and closed, and the service restarted mid-flow with nothing lost or
doubled. The service's clock is the test's, so working days pass in a moment."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import pytest
from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev
from callcenter.tickets.v1 import service_pb2 as pb
from callcenter.tickets.v1 import service_pb2_grpc
from callcenter.workflow.v1 import events_pb2 as wf
from confluent_kafka import Consumer, KafkaError

from services.platform.envelope import Cause, EventRegistry, decode, encode, make_envelope
from services.platform.eventstore import OutgoingRecord
from services.platform.identity import Role
from services.platform.kafka import KafkaEventLog
from services.tickets.bootstrap import bootstrap
from services.tickets.publisher import PUBLIC_TOPIC
from tests.support.live import LiveContext, read_records, read_topic
from tests.support.polling import eventually

T = TypeVar("T")
DS = pb.DispatchStatus
S = pb.TicketStatus
# Monday 2 March 2026, 10:00 in Beijing: a working morning of the cn-gov calendar.
BASE = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
REGISTRY = EventRegistry.of(ev)


class LiveTickets(LiveContext):
    """The tickets service in this process on the session's broker, as its own Kafka principal."""

    def __init__(self, kafka_broker: Any) -> None:
        super().__init__(kafka_broker, "tickets", bootstrap, service_pb2_grpc.TicketsServiceStub, BASE)

    @property
    def desk(self) -> service_pb2_grpc.TicketsServiceStub:
        return self.stub(Role.AGENT, "agent-7")

    @property
    def supervisor(self) -> service_pb2_grpc.TicketsServiceStub:
        return self.stub(Role.SUPERVISOR, "sup-1")

    def department(self, code: str) -> service_pb2_grpc.TicketsServiceStub:
        return self.stub(Role.DEPARTMENT, f"dept-{code}", department=code)

    def rid(self) -> str:
        return uuid.uuid4().hex

    # Steps ------------------------------------------------------------------------------------------

    def complaint(self, category: str = "environment.noise", **fields: Any) -> pb.Ticket:
        request = pb.CreateTicketRequest(
            request_id=self.rid(),
            type=ev.TICKET_TYPE_COMPLAINT,
            priority=3,
            summary=f"Night-time construction noise ({self.run})",
            category=category,
            customer=types_pb2.PartyReference(hash="ab" * 32, masked="*******5678"),
            **fields,
        )
        return self.desk.CreateTicket(request).ticket

    def dispatch(self, ticket_id: str, department: str = "") -> pb.DispatchResponse:
        return self.desk.Dispatch(
            pb.DispatchRequest(request_id=self.rid(), ticket_id=ticket_id, department=department)
        )

    def accept(self, code: str, ticket_id: str, dispatch_id: str) -> pb.DepartmentDispatch:
        request = pb.AcceptDispatchRequest(
            request_id=self.rid(), ticket_id=ticket_id, dispatch_id=dispatch_id
        )
        return self.department(code).AcceptDispatch(request).dispatch

    def complete(
        self, code: str, ticket_id: str, dispatch_id: str, resolved: bool = True
    ) -> pb.DepartmentDispatch:
        request = pb.CompleteDispatchRequest(
            request_id=self.rid(),
            ticket_id=ticket_id,
            dispatch_id=dispatch_id,
            result="done",
            resolved=resolved,
        )
        return self.department(code).CompleteDispatch(request).dispatch

    def resolve(self, ticket_id: str) -> pb.Ticket:
        return self.desk.Resolve(
            pb.ResolveRequest(request_id=self.rid(), ticket_id=ticket_id, resolution="fixed")
        ).ticket

    def follow_up(self, ticket_id: str, satisfaction: int, at_fault: bool = False) -> pb.Ticket:
        request = pb.RecordFollowUpRequest(
            request_id=self.rid(),
            ticket_id=ticket_id,
            reached=True,
            resolved=not at_fault,
            satisfaction=satisfaction,
            csat_score=5 if not at_fault else 1,
            department_at_fault=at_fault,
        )
        return self.desk.RecordFollowUp(request).ticket

    def ticket(self, ticket_id: str) -> pb.Ticket:
        return self.supervisor.GetTicket(pb.GetTicketRequest(ticket_id=ticket_id)).ticket

    def dispatch_of(self, ticket_id: str, dispatch_id: str) -> pb.DepartmentDispatch:
        return next(d for d in self.ticket(ticket_id).dispatches if d.dispatch_id == dispatch_id)

    # What was recorded --------------------------------------------------------------------------------

    def events(self, ticket_id: str) -> list[Any]:
        reader = KafkaEventLog(self.broker.kafka, "tickets.events.v1", None, f"reader-{uuid.uuid4().hex[:6]}")
        return [
            decode(r.value, r.headers, REGISTRY) for r in reader.replay({}) if r.key == ticket_id.encode()
        ]

    def published(self, topic: str, ticket_id: str, expect: int) -> list[wf.WorkflowEvent]:
        """The public events of one ticket on a topic, once at least ``expect`` arrived."""
        return eventually(
            lambda: [m for m in read_topic(self.broker.client_config(), topic) if m.subject_id == ticket_id],
            lambda found: len(found) >= expect,
            f"{expect} events of {ticket_id} on {topic}",
        )


@pytest.fixture(scope="module")
def live(kafka_broker) -> Iterator[LiveTickets]:
    center = LiveTickets(kafka_broker)
    yield center
    center.close()


def test_a_complaint_dispatched_to_a_lead_and_an_assisting_department_that_both_complete(
    live: LiveTickets,
) -> None:
    ticket = live.complaint()
    assert ticket.status == S.TICKET_STATUS_NEW and ticket.first_response_due.seconds
    dispatched = live.dispatch(ticket.ticket_id)
    lead, assisting = dispatched.dispatch_ids
    assert [(d.department, d.role) for d in dispatched.ticket.dispatches] == [
        ("environment", ev.DISPATCH_ROLE_LEAD),
        ("urban_management", ev.DISPATCH_ROLE_ASSISTING),
    ]
    assert live.accept("environment", ticket.ticket_id, lead).status == DS.DISPATCH_STATUS_ACCEPTED
    live.accept("urban_management", ticket.ticket_id, assisting)
    live.complete("environment", ticket.ticket_id, lead)
    assert live.ticket(ticket.ticket_id).status == S.TICKET_STATUS_DISPATCHED
    live.complete("urban_management", ticket.ticket_id, assisting)
    assert live.ticket(ticket.ticket_id).status == S.TICKET_STATUS_IN_PROGRESS
    resolved = live.resolve(ticket.ticket_id)
    assert resolved.status == S.TICKET_STATUS_RESOLVED and resolved.follow_up_due.seconds
    closed = live.follow_up(ticket.ticket_id, ev.SATISFACTION_SATISFIED)
    assert closed.status == S.TICKET_STATUS_CLOSED

    public = live.published(PUBLIC_TOPIC, ticket.ticket_id, expect=7)
    assert Counter(m.WhichOneof("event") for m in public) == {
        "work_dispatched": 2,
        "work_accepted": 2,
        "work_completed": 2,
        "follow_up_result": 1,
    }
    assert all(not m.work_dispatched.summary and not m.work_dispatched.instructions for m in public)
    [work] = live.published("dept.environment.inbox.v1", ticket.ticket_id, expect=2)[:1]
    assert work.work_dispatched.summary.startswith("Night-time construction noise")


def test_a_department_cannot_act_on_another_departments_dispatch(live: LiveTickets) -> None:
    ticket = live.complaint()
    lead, assisting = live.dispatch(ticket.ticket_id).dispatch_ids
    seen = (
        live.department("urban_management").GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id)).ticket
    )
    assert [x.dispatch_id for x in seen.dispatches] == [assisting] and not seen.HasField("customer")
    with pytest.raises(grpc.RpcError) as refused:
        live.accept("urban_management", ticket.ticket_id, lead)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "environment's; urban_management answers only its own" in refused.value.details()
    with pytest.raises(grpc.RpcError) as foreign:
        live.department("housing").GetTicket(pb.GetTicketRequest(ticket_id=ticket.ticket_id))
    assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as early:
        live.complete("environment", ticket.ticket_id, lead)
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "must be accepted before it is completed" in early.value.details()
    with pytest.raises(grpc.RpcError) as unknown:
        live.accept("environment", ticket.ticket_id, "no-such-dispatch")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_return_reviewed_and_re_dispatched(live: LiveTickets) -> None:
    ticket = live.complaint(category="urban.street_vendors")
    [dispatch_id] = live.dispatch(ticket.ticket_id).dispatch_ids
    live.department("urban_management").ReturnDispatch(
        pb.ReturnDispatchRequest(
            request_id=live.rid(), ticket_id=ticket.ticket_id, dispatch_id=dispatch_id, reason="market stalls"
        )
    )
    reviewed = live.supervisor.ReviewReturn(
        pb.ReviewReturnRequest(
            request_id=live.rid(),
            ticket_id=ticket.ticket_id,
            dispatch_id=dispatch_id,
            accept=True,
            redispatch_to="market_regulation",
        )
    )
    assert live.dispatch_of(ticket.ticket_id, dispatch_id).status == DS.DISPATCH_STATUS_WITHDRAWN
    again = live.dispatch_of(ticket.ticket_id, reviewed.dispatch_id)
    assert again.department == "market_regulation" and again.status == DS.DISPATCH_STATUS_DISPATCHED
    inbox = live.published("dept.urban_management.inbox.v1", ticket.ticket_id, expect=2)
    assert [m.WhichOneof("event") for m in inbox] == ["work_dispatched", "return_reviewed"]
    assert inbox[1].return_reviewed.accepted


def test_an_extension_granted(live: LiveTickets) -> None:
    ticket = live.complaint(category="environment.pollution")
    [dispatch_id] = live.dispatch(ticket.ticket_id).dispatch_ids
    live.accept("environment", ticket.ticket_id, dispatch_id)
    due = live.dispatch_of(ticket.ticket_id, dispatch_id).due_at.ToDatetime(tzinfo=UTC)
    wanted = due + timedelta(days=7)
    asked = pb.RequestExtensionRequest(
        request_id=live.rid(),
        ticket_id=ticket.ticket_id,
        dispatch_id=dispatch_id,
        reason="lab results take a week",
    )
    asked.requested_due_at.FromDatetime(wanted)
    assert live.department("environment").RequestExtension(asked).dispatch.requested_due_at.seconds
    live.supervisor.ReviewExtension(
        pb.ReviewExtensionRequest(
            request_id=live.rid(), ticket_id=ticket.ticket_id, dispatch_id=dispatch_id, grant=True
        )
    )
    extended = live.dispatch_of(ticket.ticket_id, dispatch_id)
    assert extended.due_at.ToDatetime(tzinfo=UTC) == wanted and not extended.requested_due_at.seconds
    [reviewed] = [
        m
        for m in live.published("dept.environment.inbox.v1", ticket.ticket_id, expect=2)
        if m.WhichOneof("event") == "extension_reviewed"
    ]
    assert (
        reviewed.extension_reviewed.granted
        and reviewed.extension_reviewed.due_at.ToDatetime(tzinfo=UTC) == wanted
    )


def test_an_overdue_dispatch_supervised_and_escalated(live: LiveTickets) -> None:
    ticket = live.complaint(category="transport.taxi")
    [dispatch_id] = live.dispatch(ticket.ticket_id).dispatch_ids
    live.accept("transport", ticket.ticket_id, dispatch_id)
    dispatch = live.dispatch_of(ticket.ticket_id, dispatch_id)
    # One working day past due brings a supervision notice; five bring an escalation.
    live.clock.skip_to(dispatch.due_at.ToDatetime(tzinfo=UTC) + timedelta(days=3))
    eventually(
        lambda: live.dispatch_of(ticket.ticket_id, dispatch_id),
        lambda d: d.supervision_notices == 1,
        "a notice",
    )
    live.clock.skip_to(dispatch.due_at.ToDatetime(tzinfo=UTC) + timedelta(days=10))
    late = eventually(
        lambda: live.dispatch_of(ticket.ticket_id, dispatch_id), lambda d: d.escalated, "an escalation"
    )
    assert late.status == DS.DISPATCH_STATUS_ACCEPTED
    inbox = live.published("dept.transport.inbox.v1", ticket.ticket_id, expect=4)
    kinds = [m.WhichOneof("event") for m in inbox]
    assert kinds == ["work_dispatched", "deadline_missed", "supervision_notice", "supervision_notice"]
    assert [m.supervision_notice.level for m in inbox[2:]] == ["notice", "escalation"]
    assert inbox[1].deadline_missed.clock == "dispatch_completion"
    # Completing late is still completing: recorded, and not on time.
    done = live.complete("transport", ticket.ticket_id, dispatch_id)
    assert done.status == DS.DISPATCH_STATUS_COMPLETED
    [completed] = [e for e in live.events(ticket.ticket_id) if e.event_type == "DispatchCompleted"]
    assert not completed.payload.on_time


def test_a_dissatisfied_follow_up_is_redone_then_closed(live: LiveTickets) -> None:
    ticket = live.complaint(category="housing.property_management")
    [first] = live.dispatch(ticket.ticket_id).dispatch_ids
    live.accept("housing", ticket.ticket_id, first)
    live.complete("housing", ticket.ticket_id, first)
    live.resolve(ticket.ticket_id)
    redo = live.follow_up(ticket.ticket_id, ev.SATISFACTION_DISSATISFIED, at_fault=True)
    assert redo.status == S.TICKET_STATUS_DISPATCHED and redo.reopen_count == 1
    [again] = [d for d in redo.dispatches if d.dispatch_id != first]
    assert again.department == "housing" and again.status == DS.DISPATCH_STATUS_DISPATCHED
    live.accept("housing", ticket.ticket_id, again.dispatch_id)
    live.complete("housing", ticket.ticket_id, again.dispatch_id)
    live.resolve(ticket.ticket_id)
    assert live.follow_up(ticket.ticket_id, ev.SATISFACTION_SATISFIED).status == S.TICKET_STATUS_CLOSED
    inbox = live.published("dept.housing.inbox.v1", ticket.ticket_id, expect=4)
    assert [m.WhichOneof("event") for m in inbox] == [
        "work_dispatched",
        "follow_up_result",
        "work_dispatched",
        "follow_up_result",
    ]
    assert inbox[1].follow_up_result.redo and inbox[2].work_dispatched.redo


def test_a_wrap_up_that_asks_for_a_ticket_opens_one(live: LiveTickets) -> None:
    contact_id = f"call-{live.run}-{uuid.uuid4().hex[:6]}"
    wrap_up = agent_ev.WrapUpCompleted(
        agent_id="agent-9",
        contact_id=contact_id,
        disposition_code="complaint.recorded",
        ticket=agent_ev.TicketRequest(ticket_type="complaint", priority=4, summary="Bus skipped the stop"),
        customer=types_pb2.PartyReference(hash="cd" * 32, masked="*******4321"),
    )
    envelope = make_envelope(
        wrap_up,
        registry=EventRegistry.of(agent_ev),
        aggregate_type="Agent",
        aggregate_id="agent-9",
        aggregate_version=1,
        occurred_at=live.clock(),
        cause=Cause.request(f"wrap-up-{contact_id}"),
    )
    writer = KafkaEventLog(live.broker.kafka, "agents.events.v1", None, f"test-agents-{live.run}")
    writer.open()
    key, value, headers = encode(envelope)
    writer.commit([OutgoingRecord("agents.events.v1", key, value, list(headers))], [])
    writer.close()
    opened = eventually(
        lambda: [
            t
            for t in live.supervisor.ListTickets(pb.ListTicketsRequest(page_size=1000)).tickets
            if t.source_contact_id == contact_id
        ],
        lambda found: len(found) == 1,
        "the wrap-up's ticket",
    )
    [ticket] = opened
    assert ticket.origin == ev.TICKET_ORIGIN_WRAP_UP and ticket.assignee_id == "agent-9"
    assert ticket.priority == 4 and ticket.customer.masked == "*******4321"


def test_the_service_restarted_mid_flow_loses_and_doubles_nothing(live: LiveTickets) -> None:
    ticket = live.complaint()
    lead, assisting = live.dispatch(ticket.ticket_id).dispatch_ids
    live.accept("environment", ticket.ticket_id, lead)
    before = live.ticket(ticket.ticket_id)
    live.restart()
    after = live.ticket(ticket.ticket_id)
    assert after.version == before.version and after.status == before.status
    assert [d.status for d in after.dispatches] == [d.status for d in before.dispatches]
    # A retry of a request answered before the restart changes nothing.
    retry = pb.AcceptDispatchRequest(
        request_id="accept-once-" + live.run, ticket_id=ticket.ticket_id, dispatch_id=assisting
    )
    live.department("urban_management").AcceptDispatch(retry)
    live.restart()
    live.department("urban_management").AcceptDispatch(retry)
    live.complete("environment", ticket.ticket_id, lead)
    live.complete("urban_management", ticket.ticket_id, assisting)
    types = Counter(e.event_type for e in live.events(ticket.ticket_id))
    assert types["DispatchAccepted"] == 2 and types["DispatchCompleted"] == 2 and types["TicketCreated"] == 1
    public = live.published(PUBLIC_TOPIC, ticket.ticket_id, expect=6)
    assert len({m.event_id for m in public}) == len(public) == 6


def test_a_departments_inbox_gives_it_its_own_work_once_and_no_other_inbox(live: LiveTickets) -> None:
    noise = live.complaint()
    live.dispatch(noise.ticket_id)  # environment leads, urban management assists
    housing = live.complaint(category="housing.property_management")
    live.dispatch(housing.ticket_id)
    live.published("dept.environment.inbox.v1", noise.ticket_id, expect=1)
    live.published("dept.housing.inbox.v1", housing.ticket_id, expect=1)

    # A plain confluent-kafka consumer, as the department's own principal: not the project's code.
    environment = live.broker.client_config_as("dept-environment")
    consumer = Consumer(
        {
            **environment,
            "group.id": f"dept-environment-{live.run}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    seen: list[wf.WorkflowEvent] = []
    try:
        consumer.subscribe(["dept.environment.inbox.v1"])
        pause = threading.Event()
        for _ in range(200):
            record = consumer.poll(0.5)
            if record is not None and not record.error():
                seen.append(wf.WorkflowEvent.FromString(record.value()))
            if any(m.subject_id == noise.ticket_id for m in seen) and record is None:
                break
            pause.wait(0.01)
    finally:
        consumer.close()
    departments = {getattr(m, m.WhichOneof("event")).department for m in seen}
    assert departments == {"environment"}, "only its own work"
    mine = [m for m in seen if m.subject_id == noise.ticket_id]
    assert [m.WhichOneof("event") for m in mine] == ["work_dispatched"]
    assert not [m for m in seen if m.subject_id == housing.ticket_id]
    assert len({m.event_id for m in seen}) == len(seen), "nothing twice"

    thief = Consumer(
        {**environment, "group.id": f"dept-environment-{live.run}-x", "enable.auto.commit": False}
    )
    refusal = None
    try:
        thief.subscribe(["dept.housing.inbox.v1"])
        for _ in range(60):
            record = thief.poll(0.5)
            if record is not None and record.error() is not None:
                refusal = record.error()
                break
            assert record is None, "read another department's inbox"
    finally:
        thief.close()
    assert refusal is not None and refusal.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refusal


def _write_agent_event(live: LiveTickets, agent_id: str, payload: Any, version: int) -> None:
    _write_event(live, "agents.events.v1", EventRegistry.of(agent_ev), "Agent", agent_id, payload, version)


def _write_event(
    live: LiveTickets,
    topic: str,
    registry: EventRegistry,
    aggregate_type: str,
    aggregate_id: str,
    payload: Any,
    version: int,
) -> None:
    """One event on a topic, committed as its context's writer would, by the test's own principal."""
    envelope = make_envelope(
        payload,
        registry=registry,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occurred_at=live.clock(),
        cause=Cause.request(f"{aggregate_type}-{aggregate_id}-{version}"),
    )
    writer = KafkaEventLog(live.broker.kafka, topic, None, f"test-writer-{uuid.uuid4().hex[:6]}")
    writer.open()
    key, value, headers = encode(envelope)
    writer.commit([OutgoingRecord(topic, key, value, list(headers))], [])
    writer.close()


def test_an_event_the_publisher_cannot_deliver_is_dead_lettered_and_the_work_after_it_goes_out(
    live: LiveTickets,
) -> None:
    # A dispatch to a department with no inbox (no topic, no ACL): as a catalogue ahead of the
    # cluster's topics would make, or another writer's mistake. It must not hold up anyone's work.
    stray = f"t-stray-{live.run}"
    dispatched = ev.TicketDispatched(ticket_id=stray, dispatch_id=f"{stray}-d1", department="nowhere")
    _write_event(live, "tickets.events.v1", REGISTRY, "Ticket", stray, dispatched, 1)
    noise = live.complaint()
    live.dispatch(noise.ticket_id)

    live.published("dept.environment.inbox.v1", noise.ticket_id, expect=1)
    [dead] = eventually(
        lambda: [
            r for r in read_records(live.broker.client_config(), "deadletter.v1") if r.key() == stray.encode()
        ],
        lambda found: len(found) == 1,
        "the stray dispatch dead-lettered",
    )
    reason = dict(dead.headers())["deadletter.reason"].decode()
    assert "dept.nowhere.inbox.v1 refused a record" in reason, reason
    assert not [m for m in read_topic(live.broker.client_config(), PUBLIC_TOPIC) if m.subject_id == stray]


def test_a_groups_tickets_go_in_turn_to_its_logged_in_members_oldest_first(live: LiveTickets) -> None:
    members = sorted(f"bo-{live.run}-{n}" for n in range(2))
    for agent_id in members:
        _write_agent_event(
            live, agent_id, agent_ev.AgentLoggedIn(agent_id=agent_id, skill_groups=["back_office"]), 1
        )
    first = live.complaint(category="something.else", group_id="back_office")
    second = live.complaint(category="something.else", group_id="back_office")
    owners = [
        eventually(
            lambda t=t: live.ticket(t.ticket_id), lambda t: bool(t.assignee_id), "an owner"
        ).assignee_id
        for t in (first, second)
    ]
    # Members only (on a broker reused across runs, earlier runs' members are logged in too).
    assert all(owner.startswith("bo-") for owner in owners)
    assert owners[0] != owners[1], "in turn"
    [assigned] = [e for e in live.events(first.ticket_id) if e.event_type == "TicketAssigned"]
    assert assigned.payload.automatic and assigned.payload.strategy == "round_robin"
