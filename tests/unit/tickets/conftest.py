"""The tickets domain under test: the project's own configuration, and a ticket built from its events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from callcenter.tickets.v1 import events_pb2 as ev

from services.platform.envelope import Cause, EventRegistry, make_envelope
from services.tickets import domain as d
from services.tickets.policies import Rules, load_rules

# Monday 2026-03-02, 10:00 in Beijing: a working day of the cn-gov calendar.
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
REGISTRY = EventRegistry.of(ev)


@pytest.fixture(scope="session")
def rules() -> Rules:
    return load_rules()


def at(hours: float = 0, **delta: float) -> datetime:
    return T0 + timedelta(hours=hours, **delta)


class Desk:
    """One ticket, driven by commands through decide and evolve as the store would."""

    def __init__(self, rules: Rules, ticket_id: str = "t-1") -> None:
        self.rules = rules
        self.ticket = d.Ticket(ticket_id)
        self.history: list = []
        self.version = 0

    def apply(self, events: Iterable, when: datetime) -> None:
        for payload in events:
            self.version += 1
            envelope = make_envelope(
                payload,
                registry=REGISTRY,
                aggregate_type="Ticket",
                aggregate_id=self.ticket.ticket_id,
                aggregate_version=self.version,
                occurred_at=when,
                cause=Cause.request(f"r-{self.version}"),
            )
            self.ticket = d.evolve(self.ticket, envelope)
            self.history.append(payload)

    def do(self, command: d.Command) -> list:
        events = d.decide(self.ticket, command, self.rules)
        self.apply(events, command.now)
        return events

    def fire(self, name_prefix: str, now: datetime | None = None) -> list:
        """Fire the ticket's due deadline whose name starts with ``name_prefix``, at its time."""
        [deadline] = [x for x in d.deadlines(self.ticket) if x.name.startswith(name_prefix)]
        when = now or deadline.due_at
        events = d.on_deadline(self.ticket, deadline, when, self.rules)
        self.apply(events, when)
        return events

    def create(self, now: datetime = T0, **fields) -> list:
        defaults = {
            "type": ev.TICKET_TYPE_COMPLAINT,
            "priority": 3,
            "summary": "Noise at night",
            "category": "environment.noise",
        }
        return self.do(d.CreateTicket(self.ticket.ticket_id, now, "a-1", **{**defaults, **fields}))


def names(events: Iterable) -> list[str]:
    return [type(event).__name__ for event in events]
