"""Whole contacts through intake, routing and agents on the real broker, driven over gRPC the way a
telephony adapter and agent desktops would: answered, abandoned while queued and while ringing,
missed offers, overflow, callbacks, transfers, wrap-up timeouts, and each service restarted in the
middle of a contact with nothing lost or doubled."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any, TypeVar

import grpc
import pytest
from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.agents.v1 import service_pb2_grpc as agents_grpc
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.intake.v1 import service_pb2 as intake_pb
from callcenter.intake.v1 import service_pb2_grpc as intake_grpc
from callcenter.routing.v1 import events_pb2 as routing_ev
from callcenter.routing.v1 import service_pb2 as routing_pb
from callcenter.routing.v1 import service_pb2_grpc as routing_grpc

from services.agents import main as agents_main
from services.intake import main as intake_main
from services.platform.envelope import Envelope, EventRegistry, decode
from services.platform.kafka import KafkaEventLog
from services.platform.settings import GrpcSettings, HttpSettings, Settings
from services.routing import main as routing_main
from tests.support import polling
from tests.support.identity import CallerChannel

T = TypeVar("T")
S = agent_ev.AgentState
STAGE = intake_pb.ContactStage
END = intake_ev.ContactEndReason
VOICE = types_pb2.Channel.CHANNEL_VOICE
REGISTRY = EventRegistry.of(intake_ev, routing_ev, agent_ev)
STARTERS = {"intake": intake_main.start, "routing": routing_main.start, "agents": agents_main.start}


def _not_applied_yet(error: Exception) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.NOT_FOUND


eventually = partial(polling.eventually, not_yet=_not_applied_yet)


class LiveCenter:
    """The three services, in this process, on the session's broker, each as its own Kafka principal;
    gRPC on free ports."""

    def __init__(self, kafka_broker: Any) -> None:
        self.kafka = kafka_broker.kafka
        self.broker = kafka_broker
        self.run = uuid.uuid4().hex[:6]
        self.settings = Settings(
            kafka=self.kafka,
            grpc=GrpcSettings(address="127.0.0.1:0"),
            http=HttpSettings(address="127.0.0.1:0"),
            instance_id=f"flow-{self.run}",
        )
        self.processes: dict[str, Any] = {}
        self.channels: dict[str, grpc.Channel] = {}
        for name in STARTERS:
            self.start(name)

    def start(self, name: str) -> None:
        kafka = self.broker.kafka_as(name)
        process = STARTERS[name](self.settings.model_copy(update={"service_name": name, "kafka": kafka}))
        self.processes[name] = process
        self.channels[name] = CallerChannel(f"127.0.0.1:{process.server.port}")

    def restart(self, name: str) -> None:
        self.channels.pop(name).close()
        self.processes.pop(name).close(5)
        self.start(name)

    def close(self) -> None:
        for name in list(self.processes):
            self.channels.pop(name).close()
            self.processes.pop(name).close(5)

    @property
    def intake(self) -> intake_grpc.IntakeServiceStub:
        return intake_grpc.IntakeServiceStub(self.channels["intake"])

    @property
    def routing(self) -> routing_grpc.RoutingServiceStub:
        return routing_grpc.RoutingServiceStub(self.channels["routing"])

    @property
    def desktops(self) -> agents_grpc.AgentsServiceStub:
        return agents_grpc.AgentsServiceStub(self.channels["agents"])

    def rid(self) -> str:
        return uuid.uuid4().hex

    # Admin, desktop and telephony steps ----------------------------------------------------------

    def queue(self, skill: str, **fields: Any) -> str:
        queue_id = f"q-{skill}-{uuid.uuid4().hex[:6]}"
        steps = fields.pop("steps", [])
        config = routing_ev.QueueConfig(
            queue_id=queue_id, required_skills=[types_pb2.SkillLevel(skill=skill, proficiency=3)], **fields
        )
        for after, extra in steps:
            step = config.escalation_steps.add(**extra)
            step.after.FromSeconds(after)
        self.routing.UpsertQueue(routing_pb.UpsertQueueRequest(request_id=self.rid(), config=config))
        return queue_id

    def login(self, *skills: str) -> str:
        agent_id = f"agent-{uuid.uuid4().hex[:6]}"
        self.desktops.Login(
            agents_pb.LoginRequest(
                request_id=self.rid(),
                agent_id=agent_id,
                skills=[types_pb2.SkillLevel(skill=s, proficiency=4) for s in skills],
                ready=True,
            )
        )
        return agent_id

    def call(self, queue_id: str, number: str = "+44 20 7946 0958") -> str:
        contact_id = f"call-{uuid.uuid4().hex[:8]}"
        self.intake.StartContact(
            intake_pb.StartContactRequest(
                request_id=self.rid(),
                contact_id=contact_id,
                channel=VOICE,
                caller_number=number,
                dialed_number="100",
            )
        )
        self.intake.RecordIvrSelection(
            intake_pb.RecordIvrSelectionRequest(
                request_id=self.rid(), contact_id=contact_id, menu="main", selection="1", queue_id=queue_id
            )
        )
        return contact_id

    def agent(self, agent_id: str) -> agents_pb.Agent:
        return self.desktops.GetAgent(agents_pb.GetAgentRequest(agent_id=agent_id)).agent

    def contact(self, contact_id: str) -> intake_pb.Contact:
        return self.intake.GetContact(intake_pb.GetContactRequest(contact_id=contact_id)).contact

    def offered(self, agent_id: str, contact_id: str) -> agents_pb.Agent:
        return eventually(
            lambda: self.agent(agent_id),
            lambda a: a.state == S.AGENT_STATE_RESERVED and a.offered_contact_id == contact_id,
            f"{agent_id} offered {contact_id}",
        )

    def accept(self, agent_id: str, contact_id: str) -> None:
        offer = self.offered(agent_id, contact_id)
        self.desktops.AcceptOffer(
            agents_pb.AcceptOfferRequest(request_id=self.rid(), agent_id=agent_id, offer_id=offer.offer_id)
        )
        self.intake.ReportAnswered(
            intake_pb.ReportAnsweredRequest(request_id=self.rid(), contact_id=contact_id, agent_id=agent_id)
        )

    def end(self, contact_id: str, reason: int = END.CONTACT_END_REASON_CALLER) -> None:
        self.intake.EndContact(
            intake_pb.EndContactRequest(request_id=self.rid(), contact_id=contact_id, reason=reason)
        )

    def agent_in(self, agent_id: str, state: int, reason: int | None = None) -> agents_pb.Agent:
        return eventually(
            lambda: self.agent(agent_id),
            lambda a: a.state == state and (reason is None or a.reason == reason),
            f"{agent_id} in {S.Name(state)}",
        )

    # What was recorded ---------------------------------------------------------------------------

    def events(self, topic: str, key: str) -> list[Envelope]:
        reader = KafkaEventLog(self.kafka, topic, topic, f"reader-{uuid.uuid4().hex[:6]}")
        return [decode(r.value, r.headers, REGISTRY) for r in reader.replay({}) if r.key == key.encode()]

    def routing_types(self, contact_id: str) -> list[str]:
        return [e.event_type for e in self.events("routing.events.v1", contact_id)]

    def routing_saw(self, contact_id: str, *types: str) -> list[str]:
        return eventually(
            lambda: self.routing_types(contact_id),
            lambda seen: all(t in seen for t in types),
            f"routing recorded {types} for {contact_id}",
        )


@pytest.fixture(scope="module")
def live(kafka_broker) -> Iterator[LiveCenter]:
    center = LiveCenter(kafka_broker)
    yield center
    center.close()


def test_an_answered_call_from_the_ivr_to_the_end_of_wrap_up(live: LiveCenter) -> None:
    queue_id = live.queue("billing", wrap_up_time={"seconds": 600}, wrap_up_mode=2)
    agent_id = live.login("billing")

    contact_id = live.call(queue_id)
    live.accept(agent_id, contact_id)

    assert live.agent(agent_id).state == S.AGENT_STATE_ON_CONTACT
    assert live.contact(contact_id).stage == STAGE.CONTACT_STAGE_TALKING
    live.intake.ReportHold(intake_pb.ReportHoldRequest(request_id=live.rid(), contact_id=contact_id))
    live.intake.ReportResume(intake_pb.ReportResumeRequest(request_id=live.rid(), contact_id=contact_id))
    live.end(contact_id, END.CONTACT_END_REASON_AGENT)
    agent = live.agent_in(agent_id, S.AGENT_STATE_WRAP_UP)
    assert agent.wrap_up_contact_id == contact_id
    live.desktops.CompleteWrapUp(
        agents_pb.CompleteWrapUpRequest(
            request_id=live.rid(),
            agent_id=agent_id,
            contact_id=contact_id,
            disposition_code="billing.explained",
        )
    )

    assert live.agent(agent_id).state == S.AGENT_STATE_READY
    assert live.routing_saw(contact_id, "ContactConnected") == [
        "ContactQueued",
        "ContactOffered",
        "OfferAccepted",
        "ContactConnected",
    ]
    intake_bytes = b"".join(
        r.value
        for r in KafkaEventLog(live.kafka, "contacts.events.v1", "x", f"reader-{live.run}").replay({})
        if r.key == contact_id.encode()
    )
    assert b"79460958" not in intake_bytes and b"7946 0958" not in intake_bytes, "no caller number in clear"


def test_a_caller_who_hangs_up_while_queued_is_an_abandon(live: LiveCenter) -> None:
    queue_id = live.queue("nobody-has-this")
    contact_id = live.call(queue_id)
    eventually(
        lambda: live.routing.GetQueueStatus(routing_pb.GetQueueStatusRequest(queue_id=queue_id)).status,
        lambda status: status.waiting == 1,
        "the caller waiting",
    )

    live.end(contact_id)

    live.routing_saw(contact_id, "ContactAbandoned")
    [abandoned] = [
        e.payload for e in live.events("routing.events.v1", contact_id) if e.event_type == "ContactAbandoned"
    ]
    assert abandoned.stage == routing_ev.AbandonStage.ABANDON_STAGE_QUEUED
    assert "ContactOffered" not in live.routing_types(contact_id)


def test_a_caller_who_hangs_up_while_it_rings_frees_the_agent(live: LiveCenter) -> None:
    queue_id = live.queue("claims")
    agent_id = live.login("claims")
    contact_id = live.call(queue_id)
    live.offered(agent_id, contact_id)

    live.end(contact_id)

    live.agent_in(agent_id, S.AGENT_STATE_READY)
    live.routing_saw(contact_id, "ContactAbandoned", "OfferWithdrawn")
    [abandoned] = [
        e.payload for e in live.events("routing.events.v1", contact_id) if e.event_type == "ContactAbandoned"
    ]
    assert abandoned.stage == routing_ev.AbandonStage.ABANDON_STAGE_RINGING


def test_a_missed_offer_makes_the_agent_not_ready_and_the_call_goes_to_the_next_agent(
    live: LiveCenter,
) -> None:
    queue_id = live.queue("loans", ring_timeout={"seconds": 1})
    away = live.login("loans")
    contact_id = live.call(queue_id)
    live.offered(away, contact_id)
    present = live.login("loans")

    live.agent_in(away, S.AGENT_STATE_NOT_READY, agent_ev.NotReadyReason.NOT_READY_REASON_MISSED_OFFER)
    live.accept(present, contact_id)

    live.routing_saw(contact_id, "OfferTimedOut", "ContactConnected")


def test_a_call_overflows_to_the_backup_queue_after_its_maximum_wait(live: LiveCenter) -> None:
    backup = live.queue("general")
    main = live.queue(
        "mortgages",
        max_wait={"seconds": 2},
        fallback=routing_ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW,
        fallback_queue_id=backup,
    )
    generalist = live.login("general")

    contact_id = live.call(main)

    offer = live.offered(generalist, contact_id)
    assert offer.offered_queue_id == backup
    [overflowed] = [
        e.payload for e in live.events("routing.events.v1", contact_id) if e.event_type == "ContactOverflowed"
    ]
    assert overflowed.reason == routing_ev.OverflowReason.OVERFLOW_REASON_MAX_WAIT


def test_a_callback_keeps_its_place_and_reaches_an_agent_later(live: LiveCenter) -> None:
    queue_id = live.queue("cards")
    contact_id = live.call(queue_id)
    live.routing_saw(contact_id, "ContactQueued")

    live.intake.RequestCallback(
        intake_pb.RequestCallbackRequest(request_id=live.rid(), contact_id=contact_id)
    )
    assert live.contact(contact_id).stage == STAGE.CONTACT_STAGE_CALLBACK_PENDING
    live.routing_saw(contact_id, "CallbackScheduled")
    agent_id = live.login("cards")
    live.accept(agent_id, contact_id)

    assert live.contact(contact_id).stage == STAGE.CONTACT_STAGE_TALKING
    live.routing_saw(contact_id, "ContactConnected")
    [connected] = [
        e.payload for e in live.events("routing.events.v1", contact_id) if e.event_type == "ContactConnected"
    ]
    assert connected.is_callback
    assert "ContactAbandoned" not in live.routing_types(contact_id)


def test_a_transfer_takes_the_call_to_another_queue_and_the_first_agent_to_wrap_up(live: LiveCenter) -> None:
    first_queue, second_queue = live.queue("savings"), live.queue("pensions")
    first, second = live.login("savings"), live.login("pensions")
    contact_id = live.call(first_queue)
    live.accept(first, contact_id)

    live.intake.ReportTransfer(
        intake_pb.ReportTransferRequest(
            request_id=live.rid(), contact_id=contact_id, to_queue_id=second_queue
        )
    )

    live.agent_in(first, S.AGENT_STATE_WRAP_UP)
    live.accept(second, contact_id)
    assert live.contact(contact_id).agent_id == second
    queued = [
        e.payload for e in live.events("routing.events.v1", contact_id) if e.event_type == "ContactQueued"
    ]
    assert [(q.queue_id, q.visit, q.reason) for q in queued] == [
        (first_queue, 1, "ivr"),
        (second_queue, 2, "transfer"),
    ]


def test_wrap_up_ends_by_itself_at_the_queue_timeout(live: LiveCenter) -> None:
    queue_id = live.queue(
        "travel",
        wrap_up_time={"seconds": 1},
        wrap_up_mode=routing_ev.WrapUpMode.WRAP_UP_MODE_MANDATORY_WITH_TIMEOUT,
    )
    agent_id = live.login("travel")
    contact_id = live.call(queue_id)
    live.accept(agent_id, contact_id)
    live.end(contact_id)
    live.agent_in(agent_id, S.AGENT_STATE_WRAP_UP)

    live.agent_in(agent_id, S.AGENT_STATE_READY)

    completed = [
        e.payload for e in live.events("agents.events.v1", agent_id) if e.event_type == "WrapUpCompleted"
    ]
    assert [(c.contact_id, c.timed_out) for c in completed] == [(contact_id, True)]


def test_a_repeated_telephony_report_changes_nothing(live: LiveCenter) -> None:
    queue_id = live.queue("repeats")
    contact_id = live.call(queue_id)
    request = intake_pb.EndContactRequest(
        request_id=live.rid(), contact_id=contact_id, reason=END.CONTACT_END_REASON_CALLER
    )

    live.intake.EndContact(request)
    live.intake.EndContact(request)

    ended = [e for e in live.events("contacts.events.v1", contact_id) if e.event_type == "ContactEnded"]
    assert len(ended) == 1
    with pytest.raises(grpc.RpcError) as again:
        live.end(contact_id)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_each_service_restarted_mid_contact_rebuilds_its_state_and_nothing_is_lost_or_doubled(
    live: LiveCenter,
) -> None:
    queue_id = live.queue("restarts", wrap_up_time={"seconds": 600}, wrap_up_mode=2)
    agent_id = live.login("restarts")
    contact_id = live.call(queue_id)
    offer = live.offered(agent_id, contact_id)

    live.restart("routing")
    live.desktops.AcceptOffer(
        agents_pb.AcceptOfferRequest(request_id=live.rid(), agent_id=agent_id, offer_id=offer.offer_id)
    )
    live.routing_saw(contact_id, "ContactConnected")

    live.restart("agents")
    assert list(live.agent(agent_id).contact_ids) == [contact_id]
    live.intake.ReportAnswered(
        intake_pb.ReportAnsweredRequest(request_id=live.rid(), contact_id=contact_id, agent_id=agent_id)
    )

    live.restart("intake")
    assert live.contact(contact_id).stage == STAGE.CONTACT_STAGE_TALKING
    live.end(contact_id)
    live.agent_in(agent_id, S.AGENT_STATE_WRAP_UP)
    live.desktops.CompleteWrapUp(
        agents_pb.CompleteWrapUpRequest(
            request_id=live.rid(), agent_id=agent_id, contact_id=contact_id, disposition_code="ok"
        )
    )
    second = live.call(queue_id)
    live.restart("routing")
    live.accept(agent_id, second)

    for contact in (contact_id, second):
        counts = Counter(live.routing_saw(contact, "ContactConnected"))
        assert counts == {"ContactQueued": 1, "ContactOffered": 1, "OfferAccepted": 1, "ContactConnected": 1}
    changes = [
        e.payload for e in live.events("agents.events.v1", agent_id) if e.event_type == "AgentStateChanged"
    ]
    for before, after in itertools.pairwise(changes):
        assert after.previous_state == before.new_state, "every change follows the one before, none doubled"
