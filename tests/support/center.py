"""A whole contact center in memory, for tests/unit: routing and agents (and intake when given) wired
through the in-memory broker, with one clock the test moves. ``settle`` runs every reaction and every
due timer until nothing is left to do, as the real processes would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from callcenter.routing.v1 import events_pb2 as routing_ev

from services.agents import domain as agents_domain
from services.agents import handlers as agents
from services.agents.bootstrap import bootstrap as agents_bootstrap
from services.platform.consumer import ConsumerRunner
from services.platform.envelope import Cause, Envelope, EventRegistry, decode, encode, make_envelope
from services.platform.eventstore import EventStore, OutgoingRecord
from services.platform.settings import Settings
from services.platform.timers import DeadlineScheduler
from services.routing import handlers as routing
from services.routing.bootstrap import bootstrap as routing_bootstrap
from tests.support.memory import InMemoryBroker, memory_adapters
from tests.support.requests import request

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Center:
    broker: InMemoryBroker
    clock: Clock
    routing_store: EventStore
    routing: routing.RoutingService
    agents_store: EventStore
    agents: agents.AgentsService
    runners: list[ConsumerRunner] = field(default_factory=list)
    schedulers: list[DeadlineScheduler] = field(default_factory=list)
    _published: int = 0

    def close(self) -> None:
        """Stop both stores' writers (a test that builds many centers closes each)."""
        self.routing_store.close(grace_s=1.0)
        self.agents_store.close(grace_s=1.0)

    def settle(self, max_rounds: int = 1_000) -> None:
        """Run reactions and due timers until a round does nothing."""
        for _ in range(max_rounds):
            worked = sum(scheduler.fire_due() for scheduler in self.schedulers)
            worked += sum(runner.run_once() for runner in self.runners)
            if not worked:
                return
        raise AssertionError(f"the center did not settle in {max_rounds} rounds")

    def advance(self, seconds: float) -> None:
        self.clock.now += timedelta(seconds=seconds)
        self.settle()

    def publish(self, topic: str, aggregate_type: str, aggregate_id: str, payload: Any) -> None:
        """Write an event as another context would have, then let the center react."""
        self.write(topic, aggregate_type, aggregate_id, payload)
        self.settle()

    def write(self, topic: str, aggregate_type: str, aggregate_id: str, payload: Any) -> None:
        """Write an event as another context would have; the center reacts when it next reads."""
        self._published += 1
        envelope = make_envelope(
            payload,
            registry=_everything(),
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            aggregate_version=self._published,
            occurred_at=self.clock.now,
            cause=Cause.request(f"test-{self._published}"),
        )
        key, value, headers = encode(envelope)
        self.broker.write(OutgoingRecord(topic, key, value, headers))

    def events(self, topic: str) -> list[Envelope]:
        return [decode(r.value, r.headers, _everything()) for r in self.broker.records(topic)]

    def payloads(self, topic: str, *types: str) -> list[Any]:
        return [e.payload for e in self.events(topic) if not types or e.event_type in types]

    # The agent desktop ------------------------------------------------------------------------

    def login(self, agent_id: str, skills: dict[str, int] | None = None, chat_capacity: int = 0) -> None:
        command = agents_domain.Login(
            agent_id=agent_id,
            display_name=agent_id,
            skills=list((skills or {"billing": 4}).items()),
            skill_groups=[],
            chat_capacity=chat_capacity,
            ready=True,
            now=self.clock.now,
        )
        self.agent_does(command)

    def agent_does(self, command: agents_domain.Command) -> agents_domain.Agent:
        self._published += 1
        agent = self.agents.execute(request(f"desktop-{self._published}", type(command).__name__), command)
        self.settle()
        return agent

    def agent(self, agent_id: str) -> agents_domain.Agent:
        return self.agents.get(agent_id)

    def offer_of(self, agent_id: str) -> str:
        offer = self.agent(agent_id).offer
        assert offer is not None, f"{self.agent(agent_id).describe()}; no offer"
        return offer.offer_id

    def accept(self, agent_id: str) -> None:
        self.agent_does(agents_domain.AcceptOffer(agent_id, self.offer_of(agent_id), self.clock.now))

    def reject(self, agent_id: str) -> None:
        self.agent_does(agents_domain.RejectOffer(agent_id, self.offer_of(agent_id), self.clock.now, "busy"))

    # Queues -----------------------------------------------------------------------------------

    def upsert_queue(self, config: routing_ev.QueueConfig) -> None:
        self._published += 1
        current = self.routing_store.load(routing.QUEUE, config.queue_id).version
        self.routing.upsert_queue(request(f"admin-{self._published}", "UpsertQueue"), config, current)
        self.settle()

    def entry(self, contact_id: str):
        return self.routing_store.load(routing.ENTRY, contact_id).state


def _everything() -> EventRegistry:
    return routing.registry()


def build_center(
    clock: Clock | None = None,
    broker: InMemoryBroker | None = None,
    settings: Settings | None = None,
    choose: Callable[[list[tuple[str, int]]], tuple[str, int]] | None = None,
) -> Center:
    """Routing and agents as their bootstraps wire them, over the in-memory broker and the test's clock
    (with ``choose``, their consumers read one record at a time, in the order it picks)."""
    clock = clock or Clock()
    broker = broker or InMemoryBroker(clock=clock)
    adapters = memory_adapters(broker, clock, choose)
    settings = settings or Settings()
    routing_context = routing_bootstrap(settings, adapters)
    agents_context = agents_bootstrap(settings, adapters)
    routing_context.store.start()
    agents_context.store.start()
    return Center(
        broker,
        clock,
        routing_context.store,
        routing_context.service,
        agents_context.store,
        agents_context.service,
        [*routing_context.runners, *agents_context.runners],
        [*routing_context.schedulers, *agents_context.schedulers],
    )
