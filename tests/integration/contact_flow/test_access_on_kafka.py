"""Access on the real system: the services on the session's broker, called over TLS with real tokens.
A refused call writes nothing; every event on the topics names who caused it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.agents.v1 import service_pb2_grpc as agents_grpc

from services.platform.envelope import Actor
from tests.integration.contact_flow.test_contact_flow_on_kafka import LiveCenter
from tests.support.identity import anonymous_channel, secure_channel


@pytest.fixture(scope="module")
def live(kafka_broker) -> Iterator[LiveCenter]:
    center = LiveCenter(kafka_broker)
    yield center
    center.close()


def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code(), refused.value.details()


def test_an_agents_token_cannot_change_another_agent_and_nothing_is_written(live: LiveCenter) -> None:
    victim = live.login("billing")
    before = live.events("agents.events.v1", victim)
    address = f"127.0.0.1:{live.processes['agents'].server.port}"
    with secure_channel(address, "agent", "agent-mallory") as desk:
        desktop = agents_grpc.AgentsServiceStub(desk)
        code, details = _refusal(
            lambda: desktop.Logout(
                agents_pb.LogoutRequest(request_id=live.rid(), agent_id=victim), timeout=10
            )
        )
        forced = _refusal(
            lambda: desktop.ForceState(
                agents_pb.ForceStateRequest(
                    request_id=live.rid(), agent_id=victim, state=agent_ev.AgentState.AGENT_STATE_LOGGED_OUT
                ),
                timeout=10,
            )
        )

    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == (
        f"AgentsService.Logout: role agent acts only on its own agent (agent-mallory), "
        f"and the request names '{victim}'"
    )
    assert forced == (
        grpc.StatusCode.PERMISSION_DENIED,
        "AgentsService.ForceState needs one of the roles supervisor; the token of agent-mallory has agent",
    )
    # A write that is recorded after the refusals is there, and nothing came before it: read back
    # in order, the refusals would have been written first.
    live.desktops.SetNotReady(
        agents_pb.SetNotReadyRequest(request_id="after-the-refusals", agent_id=victim, reason=1)
    )
    after = live.events("agents.events.v1", victim)
    assert [e.causation_id for e in after[len(before) :]] == ["after-the-refusals"]
    assert live.agent(victim).state == agent_ev.AgentState.AGENT_STATE_NOT_READY


def test_a_call_without_a_token_is_unauthenticated(live: LiveCenter) -> None:
    address = f"127.0.0.1:{live.processes['agents'].server.port}"
    with anonymous_channel(address) as anonymous:
        code, details = _refusal(
            lambda: agents_grpc.AgentsServiceStub(anonymous).ListAgents(
                agents_pb.ListAgentsRequest(), timeout=10
            )
        )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details.startswith("no bearer token")


def test_the_topics_name_the_caller_of_each_command_and_the_service_for_its_reactions(
    live: LiveCenter,
) -> None:
    queue_id = live.queue("billing")
    agent_id = live.login("billing")
    contact_id = live.call(queue_id)
    live.offered(agent_id, contact_id)

    [login, *_] = live.events("agents.events.v1", agent_id)
    assert login.actor == Actor(agent_id, ("agent",))
    contact = live.events("contacts.events.v1", contact_id)
    assert {e.actor for e in contact if e.event_type == "ContactStarted"} == {
        Actor("local-telephony", ("telephony",))
    }
    routed = live.routing_saw(contact_id, "ContactOffered")
    assert routed[:2] == ["ContactQueued", "ContactOffered"]
    reactions = {e.actor for e in live.events("routing.events.v1", contact_id)}
    assert reactions == {Actor(f"routing-{live.settings.instance_id}", ("service",))}
