"""The agents service as it runs: real broker, real gRPC, reactions and a restart mid-scenario."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
from callcenter.agents.v1 import service_pb2 as pb
from callcenter.agents.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as routing_ev
from confluent_kafka import Producer

from services.agents import domain
from services.agents.handlers import registry
from services.agents.main import AgentsProcess, start
from services.platform.envelope import Cause, encode, make_envelope
from services.platform.settings import GrpcSettings, Settings

S = domain.State


def _settings(kafka_broker) -> Settings:
    return Settings(kafka=kafka_broker.kafka, grpc=GrpcSettings(address="127.0.0.1:0"))


def _publish(kafka_broker, topic: str, aggregate_id: str, payload) -> None:
    envelope = make_envelope(
        payload,
        registry=registry(),
        aggregate_type="Upstream",
        aggregate_id=aggregate_id,
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(uuid.uuid4().hex),
    )
    key, value, headers = encode(envelope)
    producer = Producer({**kafka_broker.client_config(), "enable.idempotence": True})
    producer.produce(topic, value, key, headers=headers)
    assert producer.flush(30) == 0


def _eventually(read: Callable[[], pb.Agent], holds: Callable[[pb.Agent], bool]) -> pb.Agent:
    """Poll until the condition holds; the bound only ends a broken run."""
    pause = threading.Event()
    for _ in range(600):
        agent = read()
        if holds(agent):
            return agent
        pause.wait(0.05)
    raise AssertionError(f"never reached; last seen {agent}")


def _stub(process: AgentsProcess) -> service_pb2_grpc.AgentsServiceStub:
    return service_pb2_grpc.AgentsServiceStub(grpc.insecure_channel(f"127.0.0.1:{process.server.port}"))


def test_an_agent_takes_a_contact_through_a_restart_of_the_service(kafka_broker) -> None:
    agent_id, contact_id = f"agent-{uuid.uuid4().hex[:8]}", f"contact-{uuid.uuid4().hex[:8]}"
    process = start(_settings(kafka_broker))
    stub = _stub(process)

    def read() -> pb.Agent:
        return stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id)).agent

    try:
        stub.Login(
            pb.LoginRequest(
                request_id=f"login-{agent_id}",
                agent_id=agent_id,
                skills=[types_pb2.SkillLevel(skill="billing", proficiency=3)],
                ready=True,
            )
        )
        offer = routing_ev.ContactOffered(
            contact_id=contact_id, queue_id="billing", agent_id=agent_id, offer_id=f"offer-{contact_id}"
        )
        offer.ring_deadline.FromDatetime(datetime.now(UTC) + timedelta(minutes=5))
        offer.wrap_up_time.FromSeconds(3600)
        offer.wrap_up_mode = routing_ev.WrapUpMode.WRAP_UP_MODE_MANDATORY_WITH_TIMEOUT
        _publish(kafka_broker, "routing.events.v1", contact_id, offer)
        _eventually(read, lambda a: a.state == S.AGENT_STATE_RESERVED)
        stub.AcceptOffer(
            pb.AcceptOfferRequest(request_id=f"accept-{agent_id}", agent_id=agent_id, offer_id=offer.offer_id)
        )
    finally:
        process.close(1)

    restarted = start(_settings(kafka_broker))
    stub = _stub(restarted)
    try:
        assert list(read().contact_ids) == [contact_id], "the contact survived the restart"
        _publish(
            kafka_broker, "contacts.events.v1", contact_id, intake_ev.ContactEnded(contact_id=contact_id)
        )
        agent = _eventually(read, lambda a: a.state == S.AGENT_STATE_WRAP_UP)
        assert agent.HasField("wrap_up_deadline")
        stub.CompleteWrapUp(
            pb.CompleteWrapUpRequest(
                request_id=f"wrap-{agent_id}",
                agent_id=agent_id,
                contact_id=contact_id,
                disposition_code="info",
            )
        )
        assert read().state == S.AGENT_STATE_READY
        again = stub.Login(pb.LoginRequest(request_id=f"login-{agent_id}", agent_id=agent_id))
        assert again.agent.state == S.AGENT_STATE_READY, "a replayed login request changes nothing"
    finally:
        restarted.close(1)
