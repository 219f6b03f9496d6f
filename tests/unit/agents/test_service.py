"""The agents service through its real gRPC API, with reactions to routing and intake and its timers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from callcenter.agents.v1 import events_pb2 as ev
from callcenter.agents.v1 import service_pb2 as pb
from callcenter.agents.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as routing_ev

from services.agents import domain
from services.agents.grpc_api import AgentsServicer
from services.agents.handlers import EVENTS_TOPIC, KIND, AgentsService, agent_kind, registry
from services.platform.consumer import ConsumerRunner
from services.platform.envelope import Cause, decode, encode, make_envelope
from services.platform.eventstore import EventStore, OutgoingRecord
from services.platform.grpc_server import ServiceRegistration, create_server
from services.platform.timers import DeadlineScheduler, schedule_deadlines
from tests.support.identity import CallerChannel, server_security
from tests.support.memory import InMemoryBroker, InMemoryEventLog, InMemorySource

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
S = domain.State


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Center:
    broker: InMemoryBroker
    clock: Clock
    store: EventStore
    runner: ConsumerRunner
    scheduler: DeadlineScheduler
    stub: service_pb2_grpc.AgentsServiceStub

    def publish(self, topic: str, aggregate_id: str, payload) -> None:
        envelope = make_envelope(
            payload,
            registry=registry(),
            aggregate_type="Upstream",
            aggregate_id=aggregate_id,
            aggregate_version=1,
            occurred_at=self.clock.now,
            cause=Cause.request(f"upstream-{len(self.broker.records(topic))}"),
        )
        key, value, headers = encode(envelope)
        self.broker.write(OutgoingRecord(topic, key, value, headers))
        self.runner.run_once()

    def agent(self, agent_id: str = "a-1") -> pb.Agent:
        return self.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id)).agent

    def events(self) -> list:
        return [decode(r.value, r.headers, registry()).payload for r in self.broker.records(EVENTS_TOPIC)]


@pytest.fixture
def center() -> Iterator[Center]:
    broker, clock = InMemoryBroker(), Clock()
    store = EventStore(
        InMemoryEventLog(broker, EVENTS_TOPIC, "agents.snapshots.v1", "agents-0"),
        registry(),
        [agent_kind()],
        clock=clock,
    )
    agents = AgentsService(store, clock)
    scheduler = schedule_deadlines(store, {KIND: domain.on_deadline}, clock)
    store.start()
    runner = ConsumerRunner(
        "agents",
        InMemorySource(broker, "agents", ["routing.events.v1", "contacts.events.v1"]),
        store,
        registry(),
        agents.react,
    )
    server = create_server(
        "127.0.0.1:0",
        [
            ServiceRegistration(
                service_pb2_grpc.add_AgentsServiceServicer_to_server,
                AgentsServicer(agents),
                "callcenter.agents.v1.AgentsService",
            )
        ],
        max_workers=4,
        **server_security(),
    )
    channel = CallerChannel(f"127.0.0.1:{server.port}")
    yield Center(broker, clock, store, runner, scheduler, service_pb2_grpc.AgentsServiceStub(channel))
    channel.close()
    server.stop(0)


def login(center: Center, agent_id: str = "a-1", request_id: str = "login-1") -> pb.Agent:
    request = pb.LoginRequest(
        request_id=request_id,
        agent_id=agent_id,
        display_name="Ada",
        skills=[types_pb2.SkillLevel(skill="billing", proficiency=4)],
        skill_groups=["billing"],
        ready=True,
    )
    return center.stub.Login(request).agent


def offered(
    contact_id: str = "c-1", agent_id: str = "a-1", offer_id: str = "o-1"
) -> routing_ev.ContactOffered:
    offer = routing_ev.ContactOffered(
        contact_id=contact_id,
        queue_id="billing",
        agent_id=agent_id,
        offer_id=offer_id,
        channel=types_pb2.Channel.CHANNEL_VOICE,
        wrap_up_mode=routing_ev.WrapUpMode.WRAP_UP_MODE_MANDATORY_WITH_TIMEOUT,
    )
    offer.ring_deadline.FromDatetime(T0 + timedelta(seconds=20))
    offer.wrap_up_time.FromSeconds(60)
    return offer


def test_a_whole_voice_contact_from_the_agents_side(center: Center) -> None:
    assert login(center).state == S.AGENT_STATE_READY

    center.publish("routing.events.v1", "c-1", offered())
    agent = center.agent()
    assert (agent.offered_contact_id, agent.offer_id, agent.offered_queue_id) == ("c-1", "o-1", "billing")
    assert agent.ring_deadline.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=20)
    assert agent.state == S.AGENT_STATE_RESERVED

    center.stub.AcceptOffer(pb.AcceptOfferRequest(request_id="acc-1", agent_id="a-1", offer_id="o-1"))
    assert list(center.agent().contact_ids) == ["c-1"]

    center.clock.now = T0 + timedelta(seconds=200)
    center.publish("contacts.events.v1", "c-1", intake_ev.ContactEnded(contact_id="c-1", agent_id="a-1"))
    agent = center.agent()
    assert (agent.state, agent.wrap_up_contact_id) == (S.AGENT_STATE_WRAP_UP, "c-1")
    assert agent.wrap_up_deadline.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=260)

    center.clock.now = T0 + timedelta(seconds=260)
    assert center.scheduler.fire_due() == 1
    assert center.agent().state == S.AGENT_STATE_READY
    completed = [e for e in center.events() if isinstance(e, ev.WrapUpCompleted)]
    assert [(c.contact_id, c.timed_out) for c in completed] == [("c-1", True)]


def test_the_caller_hanging_up_while_it_rings_frees_the_agent(center: Center) -> None:
    login(center)
    center.publish("routing.events.v1", "c-1", offered())

    center.publish("contacts.events.v1", "c-1", intake_ev.ContactEnded(contact_id="c-1"))

    assert center.agent().state == S.AGENT_STATE_READY
    withdrawn = [e for e in center.events() if isinstance(e, ev.AgentStateChanged) and e.offer_outcome]
    assert [w.offer_outcome for w in withdrawn] == [domain.Outcome.OFFER_OUTCOME_CONTACT_ENDED]


def test_an_unanswered_offer_makes_the_agent_not_ready_with_missed_offer(center: Center) -> None:
    login(center)
    center.publish("routing.events.v1", "c-1", offered())

    center.clock.now = T0 + timedelta(seconds=20)
    center.scheduler.fire_due()

    agent = center.agent()
    assert (agent.state, agent.reason) == (
        S.AGENT_STATE_NOT_READY,
        domain.Reason.NOT_READY_REASON_MISSED_OFFER,
    )


def test_an_offer_the_agent_cannot_take_is_refused_for_routing_to_requeue(center: Center) -> None:
    login(center)
    center.stub.SetNotReady(
        pb.SetNotReadyRequest(request_id="nr", agent_id="a-1", reason=domain.Reason.NOT_READY_REASON_BREAK)
    )

    center.publish("routing.events.v1", "c-1", offered())

    [refused] = [e for e in center.events() if isinstance(e, ev.ReservationRefused)]
    assert (refused.contact_id, refused.agent_state) == ("c-1", S.AGENT_STATE_NOT_READY)


def test_the_same_request_twice_changes_nothing(center: Center) -> None:
    login(center, request_id="login-1")
    before = len(center.events())
    request = pb.SetNotReadyRequest(
        request_id="nr-1", agent_id="a-1", reason=domain.Reason.NOT_READY_REASON_LUNCH
    )
    center.stub.SetNotReady(request)
    center.stub.SetNotReady(request)
    login(center, request_id="login-1")

    assert len(center.events()) == before + 1


def test_bad_requests_get_clear_status_codes(center: Center) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        center.stub.GetAgent(pb.GetAgentRequest(agent_id="nobody"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "agent nobody has never logged in" in unknown.value.details()

    login(center)
    center.publish("routing.events.v1", "c-1", offered())
    center.stub.AcceptOffer(pb.AcceptOfferRequest(request_id="acc", agent_id="a-1", offer_id="o-1"))
    with pytest.raises(grpc.RpcError) as busy:
        center.stub.SetReady(pb.SetReadyRequest(request_id="r", agent_id="a-1"))
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "agent a-1 is on_contact, holding c-1" in busy.value.details()

    with pytest.raises(grpc.RpcError) as malformed:
        center.stub.Login(
            pb.LoginRequest(
                request_id="x", agent_id="a-2", skills=[types_pb2.SkillLevel(skill="s", proficiency=9)]
            )
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert malformed.value.details() == (
        "skills[0].proficiency: must be greater than or equal to 1 and less than or equal to 5 "
        "(uint32.gte_lte); got 9"
    )

    with pytest.raises(grpc.RpcError) as no_request_id:
        center.stub.SetReady(pb.SetReadyRequest(agent_id="a-1"))
    assert no_request_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert no_request_id.value.details().startswith("request_id: ")


def test_a_supervisor_forces_a_state_and_lists_agents_by_state(center: Center) -> None:
    login(center, "a-1", "l1")
    login(center, "a-2", "l2")

    center.stub.ForceState(
        pb.ForceStateRequest(
            request_id="f",
            agent_id="a-2",
            state=S.AGENT_STATE_NOT_READY,
            reason=domain.Reason.NOT_READY_REASON_COACHING,
        )
    )

    ready = center.stub.ListAgents(pb.ListAgentsRequest(state=S.AGENT_STATE_READY)).agents
    assert [a.agent_id for a in ready] == ["a-1"]
    changed = [e for e in center.events() if isinstance(e, ev.AgentStateChanged) and e.agent_id == "a-2"][-1]
    assert changed.changed_by == domain.ChangedBy.CHANGED_BY_SUPERVISOR


def test_agents_come_back_from_a_snapshot_as_they_were(center: Center) -> None:
    login(center)
    center.publish("routing.events.v1", "c-1", offered())
    center.store.snapshot()

    restarted = EventStore(
        InMemoryEventLog(center.broker, EVENTS_TOPIC, "agents.snapshots.v1", "agents-0"),
        registry(),
        [agent_kind()],
    )
    restarted.start()

    assert restarted.restored_aggregates == 1
    assert restarted.load(KIND, "a-1").state == center.store.load(KIND, "a-1").state


def test_a_transfer_ends_the_transferring_agents_part_and_starts_their_wrap_up(center: Center) -> None:
    login(center)
    center.publish("routing.events.v1", "c-1", offered())
    center.stub.AcceptOffer(pb.AcceptOfferRequest(request_id="acc", agent_id="a-1", offer_id="o-1"))

    transferred = intake_ev.ContactTransferred(contact_id="c-1", from_agent_id="a-1", to_queue_id="sales")
    center.publish("contacts.events.v1", "c-1", transferred)

    agent = center.agent()
    assert (agent.state, list(agent.contact_ids)) == (S.AGENT_STATE_WRAP_UP, [])


def test_an_offer_rung_out_puts_the_agent_into_the_queues_missed_offer_reason(center: Center) -> None:
    login(center)
    offer = offered()
    offer.missed_offer_reason = "break"
    center.publish("routing.events.v1", "c-1", offer)

    center.clock.now = T0 + timedelta(seconds=20)
    center.scheduler.fire_due()

    agent = center.agent()
    assert (agent.state, agent.reason) == (S.AGENT_STATE_NOT_READY, domain.Reason.NOT_READY_REASON_BREAK)
