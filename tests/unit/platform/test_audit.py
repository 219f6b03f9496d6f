"""The log is the audit trail: every event names who caused it, read back from the records written.

Routing and agents run as their processes do (bootstrap, the kernel's TLS server and interceptors)
over the in-memory broker; the calls carry real tokens.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from callcenter.agents.v1 import events_pb2 as agents_ev
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.agents.v1 import service_pb2_grpc as agents_grpc
from callcenter.common.v1 import types_pb2

from services.agents.bootstrap import bootstrap as agents_bootstrap
from services.agents.handlers import EVENTS_TOPIC
from services.platform.envelope import Actor, EventRegistry, decode
from services.platform.process import ServiceProcess, serve_context
from services.platform.settings import GrpcSettings, Settings
from tests.support.identity import secure_channel
from tests.support.memory import InMemoryBroker, memory_adapters


@pytest.fixture
def agents() -> Iterator[tuple[InMemoryBroker, ServiceProcess]]:
    broker = InMemoryBroker()
    settings = Settings(grpc=GrpcSettings(address="127.0.0.1:0"), instance_id=f"audit-{uuid.uuid4().hex[:6]}")
    process = serve_context(settings, agents_bootstrap(settings, memory_adapters(broker)))
    yield broker, process
    process.close(2.0)


def _trail(broker: InMemoryBroker) -> dict[str, set[Actor | None]]:
    """The actors of the events each request caused, by request id (the events' causation id)."""
    registry = EventRegistry.of(agents_ev)
    trail: dict[str, set[Actor | None]] = {}
    for record in broker.records(EVENTS_TOPIC):
        envelope = decode(record.value, record.headers, registry)
        trail.setdefault(envelope.causation_id, set()).add(envelope.actor)
    return trail


def test_each_event_names_the_authenticated_caller_of_the_command_behind_it(agents) -> None:
    broker, process = agents
    address = f"127.0.0.1:{process.server.port}"
    login = agents_pb.LoginRequest(
        request_id="login-1",
        agent_id="a-17",
        display_name="Ada",
        skills=[types_pb2.SkillLevel(skill="billing", proficiency=3)],
    )
    force = agents_pb.ForceStateRequest(
        request_id="force-1", agent_id="a-17", state=agents_ev.AgentState.AGENT_STATE_LOGGED_OUT
    )
    with (
        secure_channel(address, "agent", "a-17") as desk,
        secure_channel(address, "supervisor", "sv-3") as tool,
    ):
        agents_grpc.AgentsServiceStub(desk).Login(login, timeout=10)
        agents_grpc.AgentsServiceStub(tool).ForceState(force, timeout=10)

    assert _trail(broker) == {
        "login-1": {Actor("a-17", ("agent",))},
        "force-1": {Actor("sv-3", ("supervisor",))},
    }
