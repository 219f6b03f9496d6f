"""Hand-made envelopes of intake, routing and agents for the KPI projection tests (tickets: ticket_events;
approvals: approval_events).

A ``Stream`` numbers one aggregate's events from 1, as its event store would; times are seconds after
``T0``. ``answered_call`` is the reference contact: every context's events of one answered call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as routing_ev
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from services.kpi.approvals import REQUEST
from services.kpi.handlers import registry
from services.kpi.projection import AGENT, CONTACT, QUEUE, QUEUE_ENTRY
from services.kpi.tickets import TICKET
from services.platform.envelope import Cause, Envelope, make_envelope
from tests.support.center import T0

REGISTRY = registry()
VOICE = types_pb2.Channel.CHANNEL_VOICE
STATE = agent_ev.AgentState
REASON = agent_ev.NotReadyReason
END = intake_ev.ContactEndReason

TOPIC_OF = {
    CONTACT: "contacts.events.v1",
    QUEUE_ENTRY: "routing.events.v1",
    QUEUE: "routing.events.v1",
    AGENT: "agents.events.v1",
    TICKET: "tickets.events.v1",
    REQUEST: "approvals.events.v1",
}


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def skills(*names: str) -> list[types_pb2.SkillLevel]:
    return [types_pb2.SkillLevel(skill=name, proficiency=3) for name in names]


@dataclass
class Stream:
    """One aggregate's events in its own order."""

    aggregate_type: str
    aggregate_id: str
    version: int = 0

    def at(self, seconds: float, payload: Message) -> Envelope:
        self.version += 1
        return make_envelope(
            payload,
            registry=REGISTRY,
            aggregate_type=self.aggregate_type,
            aggregate_id=self.aggregate_id,
            aggregate_version=self.version,
            occurred_at=T0 + timedelta(seconds=seconds),
            cause=Cause.request(f"{self.aggregate_id}:{self.version}"),
        )


def contact(contact_id: str) -> Stream:
    return Stream(CONTACT, contact_id)


def entry(contact_id: str) -> Stream:
    return Stream(QUEUE_ENTRY, contact_id)


def agent(agent_id: str) -> Stream:
    return Stream(AGENT, agent_id)


def queue(queue_id: str) -> Stream:
    return Stream(QUEUE, queue_id)


# intake -------------------------------------------------------------------------------------------


def started(contact_id: str, caller_hash: str = "hmac-caller-1") -> intake_ev.ContactStarted:
    caller = types_pb2.PartyReference(hash=caller_hash, masked="****1234")
    return intake_ev.ContactStarted(contact_id=contact_id, channel=VOICE, caller=caller)


def routing_requested(contact_id: str, queue_id: str) -> intake_ev.RoutingRequested:
    return intake_ev.RoutingRequested(contact_id=contact_id, queue_id=queue_id, channel=VOICE, reason="ivr")


def ended(contact_id: str, reason: int = END.CONTACT_END_REASON_CALLER, agent_id: str = "") -> Message:
    return intake_ev.ContactEnded(contact_id=contact_id, reason=reason, agent_id=agent_id)


# routing ------------------------------------------------------------------------------------------


def queued(contact_id: str, queue_id: str, visit: int = 1, **fields) -> routing_ev.ContactQueued:
    return routing_ev.ContactQueued(contact_id=contact_id, queue_id=queue_id, visit=visit, **fields)


def offered(contact_id: str, queue_id: str, agent_id: str, offer_id: str, step: int = 0) -> Message:
    return routing_ev.ContactOffered(
        contact_id=contact_id, queue_id=queue_id, agent_id=agent_id, offer_id=offer_id, escalation_step=step
    )


def connected(contact_id: str, queue_id: str, agent_id: str, waited: float, **fields) -> Message:
    return routing_ev.ContactConnected(
        contact_id=contact_id, queue_id=queue_id, agent_id=agent_id, waited=duration(waited), **fields
    )


def queue_upserted(queue_id: str, *required: str, **fields) -> routing_ev.QueueUpserted:
    config = routing_ev.QueueConfig(queue_id=queue_id, required_skills=skills(*required), **fields)
    return routing_ev.QueueUpserted(config=config, changed_by="admin")


# agents -------------------------------------------------------------------------------------------


def logged_in(agent_id: str, skill_names: tuple[str, ...], groups: tuple[str, ...]) -> Message:
    return agent_ev.AgentLoggedIn(
        agent_id=agent_id, skills=skills(*skill_names), skill_groups=list(groups), seat="s-1"
    )


def state_changed(agent_id: str, previous: int, new: int, **fields) -> agent_ev.AgentStateChanged:
    return agent_ev.AgentStateChanged(agent_id=agent_id, previous_state=previous, new_state=new, **fields)


def wrap_up_completed(agent_id: str, contact_id: str, disposition: str, resolved: bool) -> Message:
    return agent_ev.WrapUpCompleted(
        agent_id=agent_id, contact_id=contact_id, disposition_code=disposition, resolved=resolved
    )


# the reference contact ----------------------------------------------------------------------------


@dataclass
class Call:
    """One contact's events, per context, each in its aggregate's order."""

    contact_id: str
    intake: list[Envelope] = field(default_factory=list)
    routing: list[Envelope] = field(default_factory=list)
    agents: list[Envelope] = field(default_factory=list)

    @property
    def all(self) -> list[Envelope]:
        return [*self.intake, *self.routing, *self.agents]


def answered_call(contact_id: str = "c-1", agent_id: str = "a-1", queue_id: str = "billing") -> Call:
    """Arrives at 0 s, queues at 6 s, rings a-1 at 12 s, connects at 19 s after 13 s of wait, is
    answered at 20 s, held from 50 s to 65 s, ends at 140 s; wrap-up from 140 s to 170 s.
    So: wait 13 s, talk 105 s (120 s connected less 15 s of hold), hold 15 s, wrap 30 s."""
    c, e = contact(contact_id), entry(contact_id)
    a = Stream(AGENT, agent_id, version=10)  # the agent's earlier events concern other contacts
    offer_id = f"{contact_id}:o-1"
    talking = {"contact_id": contact_id, "agent_id": agent_id}
    wrapping = state_changed(
        agent_id,
        STATE.AGENT_STATE_ON_CONTACT,
        STATE.AGENT_STATE_WRAP_UP,
        contact_id=contact_id,
        queue_id=queue_id,
    )
    return Call(
        contact_id,
        intake=[
            c.at(0, started(contact_id)),
            c.at(5, intake_ev.IvrSelectionRecorded(contact_id=contact_id, menu="main", selection="2")),
            c.at(6, routing_requested(contact_id, queue_id)),
            c.at(20, intake_ev.ContactAnswered(**talking, queue_id=queue_id)),
            c.at(50, intake_ev.ContactHeld(**talking)),
            c.at(65, intake_ev.ContactResumed(**talking)),
            c.at(140, ended(contact_id, agent_id=agent_id)),
        ],
        routing=[
            e.at(6, queued(contact_id, queue_id, priority=10)),
            e.at(12, offered(contact_id, queue_id, agent_id, offer_id)),
            e.at(19, routing_ev.OfferAccepted(**talking, offer_id=offer_id)),
            e.at(19, connected(contact_id, queue_id, agent_id, waited=13)),
        ],
        agents=[
            a.at(140, wrapping),
            a.at(170, wrap_up_completed(agent_id, contact_id, "billing-question", resolved=True)),
        ],
    )


def logged_out(agent_id: str) -> agent_ev.AgentLoggedOut:
    return agent_ev.AgentLoggedOut(agent_id=agent_id)


def skills_changed(agent_id: str, skill_names: tuple[str, ...], groups: tuple[str, ...]) -> Message:
    return agent_ev.AgentSkillsChanged(
        agent_id=agent_id, skills=skills(*skill_names), skill_groups=list(groups)
    )
