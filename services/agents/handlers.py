"""The agents service layer: desktop and supervisor commands, and reactions to routing and intake.

Each command goes through the kernel's write path (``EventStore.execute``): once per request id,
decided against the agent's newest state. Reactions turn other contexts' events into commands on
the Agent they concern.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from callcenter.agents.v1 import events_pb2 as agent_events
from callcenter.intake.v1 import events_pb2 as intake_events
from callcenter.routing.v1 import events_pb2 as routing_events

from services.agents import domain
from services.agents.domain import Agent, Command, Offer
from services.platform.codec import dataclass_codec
from services.platform.envelope import Cause, Envelope, EventRegistry
from services.platform.errors import DomainError, NotFound
from services.platform.eventstore import AggregateKind, EventStore, Transaction
from services.platform.requests import Request

KIND = "Agent"
EVENTS_TOPIC = "agents.events.v1"
SNAPSHOTS_TOPIC = "agents.snapshots.v1"
REACTS_TO = ("routing.events.v1", "contacts.events.v1")


def registry() -> EventRegistry:
    """Every event the agents service reads: its own and those of the topics it reacts to."""
    return EventRegistry.of(agent_events, routing_events, intake_events)


class ContactIndex:
    """Which agent holds, or is offered, each contact: kept current from committed Agent states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_agent: dict[str, set[str]] = {}
        self._by_contact: dict[str, str] = {}

    def track(self, kind: AggregateKind[Any], agent_id: str, agent: Agent) -> None:
        contacts = set(agent.contacts)
        if agent.offer is not None:
            contacts.add(agent.offer.contact_id)
        if agent.wrap_up is not None:
            contacts.add(agent.wrap_up.contact_id)
        with self._lock:
            for contact_id in self._by_agent.pop(agent_id, set()):
                self._by_contact.pop(contact_id, None)
            self._by_agent[agent_id] = contacts
            for contact_id in contacts:
                self._by_contact[contact_id] = agent_id

    def agent_of(self, contact_id: str) -> str | None:
        with self._lock:
            return self._by_contact.get(contact_id)


class AgentsService:
    """Runs commands against Agent aggregates, exactly once per request id."""

    def __init__(self, store: EventStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._clock = clock
        self.contacts = ContactIndex()
        store.add_listener(self.contacts.track)

    def now(self) -> datetime:
        return self._clock()

    def execute(self, request: Request, command: Command) -> Agent:
        loaded = self._store.execute(
            request, KIND, command.agent_id, lambda agent: domain.decide(agent.state, command)
        )
        if not loaded.exists:
            raise NotFound(f"agent {command.agent_id} has never logged in")
        return loaded.state

    def get(self, agent_id: str) -> Agent:
        loaded = self._store.load(KIND, agent_id)
        if not loaded.exists:
            raise NotFound(f"agent {agent_id} has never logged in")
        return loaded.state

    def list(self) -> list[Agent]:
        return [agent for _, agent in self._store.states(KIND)]

    def react(self, envelope: Envelope, tx: Transaction) -> None:
        """The consumer runner's handler for routing's and intake's events."""
        command = self._command_for(envelope)
        if command is None:
            return
        try:
            tx.decide(
                KIND,
                command.agent_id,
                lambda agent: domain.decide(agent.state, command),
                Cause.event(envelope),
            )
        except DomainError:
            # The report came too late to matter (the agent moved on); the event decides nothing.
            return

    def _command_for(self, envelope: Envelope) -> Command | None:
        event, now = envelope.payload, envelope.occurred_at
        match envelope.event_type:
            case "ContactOffered":
                return domain.Reserve(event.agent_id, _offer(event), now)
            case "ContactAnswered":
                return domain.ContactAnswered(event.agent_id, event.contact_id, now)
            case "ContactEnded":
                agent_id = event.agent_id or self.contacts.agent_of(event.contact_id)
                return domain.ContactEnded(agent_id, event.contact_id, now) if agent_id else None
            case "ContactEndedWhileOffered" | "ConnectionVoided":
                # Routing heard the contact's end while it offered the contact to this agent, or after
                # the agent's late accept: this reaches the agent after its offer (routing's topic
                # keeps one contact's events in order), whenever intake's end reaches it.
                return domain.ContactEnded(event.agent_id, event.contact_id, now)
            case "ContactTransferred":
                # The transferring agent's part of the contact is over: their after-contact work begins.
                agent_id = event.from_agent_id or self.contacts.agent_of(event.contact_id)
                return domain.ContactEnded(agent_id, event.contact_id, now) if agent_id else None
        return None


def _offer(event: routing_events.ContactOffered) -> Offer:
    return Offer(
        offer_id=event.offer_id,
        contact_id=event.contact_id,
        queue_id=event.queue_id,
        channel=event.channel or domain.Channel.CHANNEL_VOICE,
        ring_deadline=event.ring_deadline.ToDatetime(tzinfo=UTC),
        wrap_up_time=event.wrap_up_time.ToTimedelta(),
        wrap_up_mode=event.wrap_up_mode or domain.WrapUpMode.WRAP_UP_MODE_OPTIONAL,
        missed_reason=_missed_reason(event.missed_offer_reason),
    )


def _missed_reason(name: str) -> int:
    """The queue's reason name ("break", "missed_offer", ...) as the agents contract's reason code."""
    try:
        reason = domain.Reason.Value(f"NOT_READY_REASON_{name.upper()}")
    except ValueError:
        reason = domain.Reason.NOT_READY_REASON_UNSPECIFIED
    return reason or domain.Reason.NOT_READY_REASON_MISSED_OFFER


def agent_kind() -> AggregateKind[Agent]:
    encode, decode = dataclass_codec(Agent)
    # State version 2: the kernel's dataclass codec (version 1 was a hand-written JSON of its own).
    return AggregateKind(
        name=KIND,
        initial=Agent,
        evolve=domain.evolve,
        deadlines=domain.deadlines,
        snapshot=encode,
        restore=decode,
        state_version=2,
    )
