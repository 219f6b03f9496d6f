"""The tickets service layer: commands from desks, supervisors and departments, and reactions.

Each command goes through the kernel's write path (``EventStore.execute``): once per request id,
decided against the ticket's newest state with the configuration (``Rules``) of this process. Ids
a command creates (tickets, dispatches, notes) derive from its request id, so a retry names the
same ones. A merge and a follow-up ticket write both tickets in one unit of work. Reactions turn an
agent's wrap-up that asks for a ticket, and an approval's outcome, into commands.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from callcenter.agents.v1 import events_pb2 as agent_events
from callcenter.approvals.v1 import events_pb2 as approval_events
from callcenter.tickets.v1 import events_pb2 as ticket_events

from services.platform.codec import dataclass_codec
from services.platform.envelope import Cause, Envelope, EventRegistry
from services.platform.errors import DomainError, NotFound, PermissionDenied
from services.platform.eventstore import AggregateKind, Deadline, EventStore, Loaded, Transaction
from services.platform.requests import Request
from services.tickets import domain
from services.tickets.assignment import MEMBER, member_after
from services.tickets.domain import Command, Ticket
from services.tickets.policies import TYPES, Rules

KIND = domain.KIND
EVENTS_TOPIC = "tickets.events.v1"
SNAPSHOTS_TOPIC = "tickets.snapshots.v1"
REACTS_TO = ("agents.events.v1", "approvals.events.v1")
# Agents' events that change who is a member of a ticket group.
MEMBER_EVENTS = frozenset({"AgentLoggedIn", "AgentSkillsChanged", "AgentLoggedOut"})
# Namespaces of the ids derived from request and event ids: never change them, or a request retried
# across the change would name a second ticket.
TICKET_IDS = uuid.UUID("0d3f5b8a-6c1e-4a57-9f0b-2e7c4d9a1b36")
CHILD_IDS = uuid.UUID("7a9e2c41-5b3d-4f86-8e1a-c0d2f4b6a813")


def registry() -> EventRegistry:
    """Every event the tickets service reads: its own, agents' (wrap-ups) and approvals' (outcomes)."""
    return EventRegistry.of(ticket_events, agent_events, approval_events)


def ticket_kind() -> AggregateKind[Ticket]:
    encode, decode = dataclass_codec(Ticket)
    return AggregateKind(
        name=KIND,
        initial=Ticket,
        evolve=domain.evolve,
        deadlines=domain.deadlines,
        snapshot=encode,
        restore=decode,
    )


def ticket_id_for(request_id: str) -> str:
    return str(uuid.uuid5(TICKET_IDS, request_id))


def child_id(request_id: str, what: str) -> str:
    """The id of something a request creates inside a ticket (a dispatch, a note): stable on retries."""
    return str(uuid.uuid5(CHILD_IDS, f"{request_id}/{what}"))


class TicketsService:
    """Runs commands against Ticket aggregates, exactly once per request id."""

    def __init__(
        self, store: EventStore, rules: Rules, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self.rules = rules
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def execute(self, request: Request, command: Command) -> Ticket:
        return self._execute(request, command).state

    def create(self, request: Request, command: domain.CreateTicket) -> Ticket:
        follow = None
        if command.follows_ticket_id:
            link = domain.LinkFollowUpTicket(
                command.follows_ticket_id, command.now, command.by, follow_up_ticket_id=command.ticket_id
            )
            follow = partial(self._also, link)
        return self._execute(request, command, follow).state

    def merge(self, request: Request, duplicate: domain.MarkMerged) -> Ticket:
        absorb = domain.AbsorbDuplicate(
            duplicate.into_ticket_id, duplicate.now, duplicate.by, duplicate_ticket_id=duplicate.ticket_id
        )
        self._execute(request, duplicate, partial(self._also, absorb))
        return self.get(duplicate.into_ticket_id)

    def _execute(self, request: Request, command: Command, follow: Any = None) -> Loaded[Any]:
        rules = self.rules
        return self._store.execute(
            request,
            KIND,
            command.ticket_id,
            lambda loaded: domain.decide(loaded.state, command, rules),
            follow=follow,
        )

    def _also(self, command: Command, tx: Transaction, cause: Cause) -> None:
        rules = self.rules
        tx.decide(KIND, command.ticket_id, lambda loaded: domain.decide(loaded.state, command, rules), cause)

    def get(self, ticket_id: str, department: str = "") -> Ticket:
        loaded = self._store.load(KIND, ticket_id)
        if not loaded.exists:
            raise NotFound(f"ticket {ticket_id} does not exist")
        ticket: Ticket = loaded.state
        if department and not ticket.dispatched_to(department):
            raise PermissionDenied(f"ticket {ticket_id} was never dispatched to {department}")
        return ticket

    def version(self, ticket_id: str) -> int:
        return self._store.load(KIND, ticket_id).version

    def tickets(self) -> Iterable[Ticket]:
        return (ticket for _, ticket in self._store.states(KIND))

    def on_deadline(self, ticket: Ticket, deadline: Deadline, now: datetime) -> list[Any]:
        return domain.on_deadline(ticket, deadline, now, self.rules)

    def react(self, envelope: Envelope, tx: Transaction) -> None:
        """The consumer runner's handler for agents' wrap-ups and approvals' outcomes."""
        if envelope.event_type in MEMBER_EVENTS:
            before = tx.load(MEMBER, envelope.aggregate_id).state
            after = member_after(before, envelope)
            if after != before:
                tx.put(MEMBER, envelope.aggregate_id, after)
            return
        command = self._command_for(envelope)
        if command is None:
            return
        rules = self.rules
        try:
            tx.decide(
                KIND,
                command.ticket_id,
                lambda loaded: domain.decide(loaded.state, command, rules),
                Cause.event(envelope),
            )
        except DomainError:
            if isinstance(command, domain.ConcludeApproval):
                return  # the outcome came after the ticket moved on: it decides nothing
            # A wrap-up's ticket the domain refuses (its deadlines past the calendar's last day) must
            # not vanish: the runner dead-letters the wrap-up with the reason, to be replayed once fixed.
            raise

    def _command_for(self, envelope: Envelope) -> Command | None:
        event, now = envelope.payload, envelope.occurred_at
        match envelope.event_type:
            case "WrapUpCompleted" if event.HasField("ticket"):
                request = event.ticket
                return domain.CreateTicket(
                    ticket_id=ticket_id_for(f"wrap-up/{envelope.event_id}"),
                    now=now,
                    by=event.agent_id,
                    type=TYPES.get(request.ticket_type, ticket_events.TICKET_TYPE_INQUIRY),
                    priority=request.priority,
                    summary=request.summary or f"Wrap-up {event.disposition_code}".strip(),
                    category=request.category,
                    source_contact_id=event.contact_id,
                    customer_hash=event.customer.hash,
                    customer_masked=event.customer.masked,
                    origin=domain.Origin.TICKET_ORIGIN_WRAP_UP,
                    assignee_id=event.agent_id,
                )
            case "ApprovalGranted" | "ApprovalRejected" | "ApprovalExpired" if event.ticket_id:
                outcome = envelope.event_type.removeprefix("Approval").lower()
                return domain.ConcludeApproval(
                    event.ticket_id,
                    now,
                    "approvals",
                    approval_id=event.approval_id,
                    outcome=outcome,
                    reason=getattr(event, "reason", ""),
                )
        return None
