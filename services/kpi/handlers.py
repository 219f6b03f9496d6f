"""The KPI service layer: contexts' events folded into facts, written to ClickHouse once per batch.

The consumer runner hands every event to ``KpiProjector.project`` inside the batch's transaction.
The folds (``projection``, ``tickets``, ``approvals``) of the contacts, agents, tickets and approval
requests the batch touched are kept for the batch; ``flush`` (the runner's batch hook) writes their
fact rows to ClickHouse in one insert per table and puts the folds into their changelog tables
(``kpi.contacts.v1``, ``kpi.agents.v1``, ``kpi.tickets.v1``, ``kpi.approvals.v1``), which commit with
the batch's consumed offsets. So:

- a crash before the commit replays the batch from the committed folds: the same rows again, which
  the ReplacingMergeTree tables (and the insert's deduplication token) keep once;
- a ClickHouse error raises ``TransientError``: the runner keeps the batch, backs off and retries,
  so an outage pauses consumption and loses nothing.

The live board follows the committed folds (a store listener), for the gauges, the wallboard and the
staffing advice. Folds are forgotten once nothing can change them: a contact an hour after it ended,
a ticket an hour after it was merged or its reopening window closed, an approval request an hour after
it was granted, rejected, expired or withdrawn (by the read horizon, not the clock).
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from callcenter.agents.v1 import events_pb2 as agent_events
from callcenter.approvals.v1 import events_pb2 as approval_events
from callcenter.intake.v1 import events_pb2 as intake_events
from callcenter.routing.v1 import events_pb2 as routing_events
from callcenter.tickets.v1 import events_pb2 as ticket_events

from services.kpi import approvals, projection, tickets
from services.kpi.approvals import REQUEST, ApprovalFold
from services.kpi.projection import AGENT, AgentFold, ContactFold, QueueFold, Row
from services.kpi.store import KpiStoreError
from services.kpi.tickets import TICKET, TicketFold
from services.platform.codec import dataclass_codec
from services.platform.consumer import BatchRefused, TransientError
from services.platform.envelope import Envelope, EventRegistry
from services.platform.eventstore import AggregateKind, EventStore, Transaction

log = logging.getLogger(__name__)

CONTACTS, AGENTS, QUEUES, TICKETS = "KpiContact", "KpiAgent", "KpiQueue", "KpiTicket"
APPROVALS = "KpiApproval"
CONTACTS_TOPIC, AGENTS_TOPIC, QUEUES_TOPIC = "kpi.contacts.v1", "kpi.agents.v1", "kpi.queues.v1"
TICKETS_TOPIC, APPROVALS_TOPIC = "kpi.tickets.v1", "kpi.approvals.v1"
REACTS_TO = (
    "contacts.events.v1",
    "routing.events.v1",
    "agents.events.v1",
    "tickets.events.v1",
    "approvals.events.v1",
)

# Fact tables in the order a batch writes them.
TABLES = (
    "contact_facts",
    "offer_facts",
    "agent_state_intervals",
    "queue_settings",
    "ticket_facts",
    "dispatch_facts",
    "ticket_state_intervals",
    "approval_step_facts",
)


def registry() -> EventRegistry:
    """Every event the KPIs read."""
    return EventRegistry.of(intake_events, routing_events, agent_events, ticket_events, approval_events)


def kinds(
    topics: tuple[str, ...] = (CONTACTS_TOPIC, AGENTS_TOPIC, QUEUES_TOPIC, TICKETS_TOPIC, APPROVALS_TOPIC),
) -> list[AggregateKind[Any]]:
    """The folds' changelog tables, one per topic given, in this order: contacts, agents, queues,
    tickets, approvals (other ``topics`` keep a benchmark's folds apart; one naming three keeps no
    tickets and no approvals)."""
    tables = [
        (CONTACTS, ContactFold),
        (AGENTS, AgentFold),
        (QUEUES, QueueFold),
        (TICKETS, TicketFold),
        (APPROVALS, ApprovalFold),
    ]
    return [
        AggregateKind.table(name, fold, topic, *dataclass_codec(fold))
        for (name, fold), topic in zip(tables, topics, strict=False)
    ]


class FactSink(Protocol):
    """Where fact rows go: the KPI store, or a list in unit tests."""

    def insert(self, table: str, rows: list[Row], dedup_token: str | None = None) -> int: ...


@dataclass
class _Batch:
    tx: Transaction
    contacts: dict[str, ContactFold] = field(default_factory=dict)
    agents: dict[str, AgentFold] = field(default_factory=dict)
    tickets: dict[str, TicketFold] = field(default_factory=dict)
    # Each ticket's version when the batch first folded it: its dispatches changed after it are written.
    ticket_base: dict[str, int] = field(default_factory=dict)
    approvals: dict[str, ApprovalFold] = field(default_factory=dict)
    approval_base: dict[str, int] = field(default_factory=dict)  # as ticket_base, for step stints
    rows: dict[str, dict[str, Row]] = field(default_factory=lambda: {table: {} for table in TABLES})

    def add(self, table: str, key: str, row: Row) -> None:
        self.rows[table][key] = row  # the newest row of a fact in the batch is the one written


class KpiProjector:
    """The handler and batch hook of the KPI consumer, over a store of folds and a fact sink."""

    def __init__(
        self,
        store: EventStore,
        sink: FactSink,
        read_horizon: Callable[[], datetime | None],
        retention: timedelta = timedelta(hours=1),
    ) -> None:
        """``read_horizon`` is the consumer's (``Source.read_horizon``): a fold is forgotten once every
        topic has been read that far past its end, not by the clock, so a rebuild or a lagging
        topic never forgets a contact whose agents' events are still unread."""
        self._store = store
        self._sink = sink
        self._read_horizon = read_horizon
        self._retention = retention
        self._batch: _Batch | None = None
        self.board = LiveBoard()
        self._ended: OrderedDict[str, datetime] = OrderedDict()
        self._settled: list[tuple[datetime, str, str]] = []  # (forget_after, fold kind, key), a heap
        self._settled_lock = threading.Lock()  # the store's listener pushes, the batch hook pops
        store.add_listener(self._committed)
        self.rows_written = 0

    def project(self, envelope: Envelope, tx: Transaction) -> None:
        """The consumer runner's handler: fold one event into the batch's facts."""
        batch = self._batch_of(tx)
        if envelope.event_type == "QueueUpserted":
            row = projection.queue_settings_row(envelope)
            batch.add("queue_settings", row["queue_id"], row)
            tx.put(QUEUES, row["queue_id"], QueueFold(row["queue_id"], tuple(row["skills"])))
            return
        if envelope.event_type == "ContactQueued" and envelope.payload.HasField("estimated_wait"):
            self.board.estimate(envelope.payload.queue_id, envelope.payload.estimated_wait.ToTimedelta())
        if envelope.aggregate_type == AGENT:
            self._fold_agent(batch, envelope)
        if envelope.aggregate_type == TICKET:
            self._fold_ticket(batch, envelope)
            return
        if envelope.aggregate_type == REQUEST:
            self._fold_approval(batch, envelope)
            return
        contact_id = projection.contact_of(envelope)
        if contact_id:
            self._fold_contact(batch, contact_id, envelope)

    def flush(self, tx: Transaction) -> None:
        """The batch hook: write the batch's facts, put its folds, forget contacts long over."""
        batch = self._batch_of(tx)
        for contact_id, fold in batch.contacts.items():
            for row in projection.contact_rows(fold, self._skill_group_of):
                batch.add("contact_facts", row["fact_id"], row)
            tx.put(CONTACTS, contact_id, fold)
        for agent_id, agent in batch.agents.items():
            tx.put(AGENTS, agent_id, agent)
        for ticket_id, ticket in batch.tickets.items():
            row = tickets.ticket_row(ticket)
            if row is None:
                continue  # an event of a ticket forgotten long ago (or never created): nothing to keep
            batch.add("ticket_facts", ticket_id, row)
            for fact in tickets.dispatch_rows(ticket, batch.ticket_base[ticket_id]):
                batch.add("dispatch_facts", fact["dispatch_fact_id"], fact)
            tx.put(TICKETS, ticket_id, ticket)
        for approval_id, approval in batch.approvals.items():
            if approval.requested_at is None:
                continue  # an event of a request forgotten long ago (or never requested)
            for fact in approvals.step_rows(approval, batch.approval_base[approval_id]):
                batch.add("approval_step_facts", fact["step_fact_id"], fact)
            tx.put(APPROVALS, approval_id, approval)
        try:
            for table in TABLES:
                rows = list(batch.rows[table].values())
                if rows:
                    self.rows_written += self._sink.insert(table, rows)
        except KpiStoreError as error:
            if error.refuses_the_data:
                raise BatchRefused(f"ClickHouse refused the batch's facts: {error}") from error
            self._store.health.trouble("facts", f"cannot write KPI facts to ClickHouse: {error}")
            raise TransientError(f"writing KPI facts: {error}") from error
        self._store.health.clear("facts")
        self._forget_ended(tx)
        self._forget_settled(batch)
        self._batch = None

    def _batch_of(self, tx: Transaction) -> _Batch:
        # A batch that failed (and is being retried) left its folds behind: start afresh.
        if self._batch is None or self._batch.tx is not tx:
            self._batch = _Batch(tx)
        return self._batch

    def _fold_contact(self, batch: _Batch, contact_id: str, envelope: Envelope) -> None:
        before = batch.contacts.get(contact_id) or batch.tx.load(CONTACTS, contact_id).state
        after, offers = projection.fold_contact(before, envelope, self._skill_group_of)
        if after is before:
            return
        batch.contacts[contact_id] = after
        for offer in offers:
            batch.add("offer_facts", offer.offer_id, projection.offer_row(offer, contact_id))

    def _fold_agent(self, batch: _Batch, envelope: Envelope) -> None:
        agent_id = envelope.aggregate_id
        before = batch.agents.get(agent_id) or batch.tx.load(AGENTS, agent_id).state
        after, rows = projection.fold_agent(before, envelope)
        if after is before:
            return
        batch.agents[agent_id] = after
        for row in rows:
            batch.add("agent_state_intervals", row["interval_id"], row)

    def _fold_ticket(self, batch: _Batch, envelope: Envelope) -> None:
        ticket_id = envelope.aggregate_id
        before = batch.tickets.get(ticket_id) or batch.tx.load(TICKETS, ticket_id).state
        after, rows = tickets.fold_ticket(before, envelope)
        if after is before:
            return
        batch.ticket_base.setdefault(ticket_id, before.version)
        batch.tickets[ticket_id] = after
        for row in rows:
            batch.add("ticket_state_intervals", row["interval_id"], row)

    def _fold_approval(self, batch: _Batch, envelope: Envelope) -> None:
        approval_id = envelope.aggregate_id
        before = batch.approvals.get(approval_id) or batch.tx.load(APPROVALS, approval_id).state
        after = approvals.fold_approval(before, envelope)
        if after is before:
            return
        batch.approval_base.setdefault(approval_id, before.version)
        batch.approvals[approval_id] = after

    def _skill_group_of(self, agent_id: str) -> str:
        batch = self._batch
        agent = batch.agents.get(agent_id) if batch is not None else None
        return (agent or self._store.load(AGENTS, agent_id).state).skill_group

    def _committed(self, kind: AggregateKind[Any], key: str, state: Any) -> None:
        if kind.name == CONTACTS:
            self.board.contact(state)
            if state.ended_at is not None:
                self._ended[key] = state.ended_at
                self._ended.move_to_end(key)
        elif kind.name == AGENTS:
            self.board.agent(state)
        elif kind.name == QUEUES:
            self.board.configure(key, list(state.skills))
        elif kind.name in (TICKETS, APPROVALS) and state.forget_after is not None:
            with self._settled_lock:
                heapq.heappush(self._settled, (state.forget_after, kind.name, key))

    def _forget_ended(self, tx: Transaction) -> None:
        """Drop the folds of contacts over for longer than the retention (a wrap-up left open: twice)."""
        now, wrapping = self._read_horizon(), []
        if now is None:
            return
        while self._ended:
            contact_id, ended_at = next(iter(self._ended.items()))
            if ended_at > now - self._retention:
                break
            del self._ended[contact_id]
            fold = self._store.load(CONTACTS, contact_id).state
            if fold.closed or ended_at <= now - 2 * self._retention:
                tx.delete(CONTACTS, contact_id)
            else:
                wrapping.append((contact_id, ended_at))
        for contact_id, ended_at in wrapping:  # looked at again after the next batch
            self._ended[contact_id] = ended_at

    def _forget_settled(self, batch: _Batch) -> None:
        """Drop the folds of tickets settled (merged, or closed past their reopening window) and of
        approval requests ended for longer than the retention. A ticket reopened since it was queued
        here is kept: its fold says so."""
        now = self._read_horizon()
        if now is None:
            return
        due = []
        with self._settled_lock:
            while self._settled and self._settled[0][0] <= now - self._retention:
                due.append(heapq.heappop(self._settled))
        for forget_after, name, key in due:
            in_batch: dict[str, Any] = batch.tickets if name == TICKETS else batch.approvals
            fold = in_batch.get(key) or self._store.load(name, key).state
            if fold.forget_after == forget_after:
                batch.tx.delete(name, key)


@dataclass(frozen=True)
class QueueGauges:
    queue_id: str
    contacts_waiting: int
    callbacks_waiting: int
    longest_wait_s: float
    estimated_wait_s: float
    agents: dict[str, int]


class LiveBoard:
    """Who waits where and who is in which state, now: the source of the live gauges.

    Fed with committed folds (under the store's lock); read by the gauge writer and the API.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, dict[str, tuple[datetime, bool]]] = {}
        self._waiting_in: dict[str, str] = {}
        self._agents: dict[str, AgentFold] = {}
        self._queue_skills: dict[str, tuple[str, ...]] = {}
        self._estimates: dict[str, float] = {}

    def configure(self, queue_id: str, skills: list[str]) -> None:
        with self._lock:
            self._queue_skills[queue_id] = tuple(skills)

    def estimate(self, queue_id: str, wait: timedelta) -> None:
        with self._lock:
            self._estimates[queue_id] = wait.total_seconds()

    def contact(self, fold: ContactFold) -> None:
        with self._lock:
            queue_id = self._waiting_in.pop(fold.contact_id, None)
            if queue_id is not None:
                self._waiting[queue_id].pop(fold.contact_id, None)
            visit = fold.visits[-1] if fold.visits else None
            if visit is None or visit.answered_at is not None or visit.ended_at is not None:
                return
            self._waiting.setdefault(visit.queue_id, {})[fold.contact_id] = (visit.queued_at, visit.callback)
            self._waiting_in[fold.contact_id] = visit.queue_id

    def agent(self, fold: AgentFold) -> None:
        with self._lock:
            if fold.logged_in:
                self._agents[fold.agent_id] = fold
            else:
                self._agents.pop(fold.agent_id, None)

    def queues(self, now: datetime) -> list[QueueGauges]:
        """Every known queue's gauges; agents per state count agents with all of the queue's skills."""
        with self._lock:
            names = sorted(set(self._queue_skills) | set(self._waiting))
            return [self._gauges(queue_id, now) for queue_id in names]

    def skill_groups(self) -> dict[str, dict[str, int]]:
        with self._lock:
            groups: dict[str, dict[str, int]] = {}
            for agent in self._agents.values():
                for group in agent.skill_groups:
                    counts = groups.setdefault(group, {})
                    counts[agent.state] = counts.get(agent.state, 0) + 1
            return groups

    def agent_states(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for agent in self._agents.values():
                counts[agent.state] = counts.get(agent.state, 0) + 1
            return counts

    def agents_for(self, queue_id: str) -> int:
        with self._lock:
            return sum(1 for _ in self._able(queue_id))

    def _able(self, queue_id: str) -> Iterator[AgentFold]:
        needed = set(self._queue_skills.get(queue_id, ()))
        return (agent for agent in self._agents.values() if needed <= set(agent.skills))

    def _gauges(self, queue_id: str, now: datetime) -> QueueGauges:
        waiting = self._waiting.get(queue_id, {})
        live = [queued_at for queued_at, callback in waiting.values() if not callback]
        agents: dict[str, int] = {}
        for agent in self._able(queue_id):
            agents[agent.state] = agents.get(agent.state, 0) + 1
        return QueueGauges(
            queue_id=queue_id,
            contacts_waiting=len(live),
            callbacks_waiting=len(waiting) - len(live),
            longest_wait_s=max(((now - t).total_seconds() for t in live), default=0.0),
            estimated_wait_s=self._estimates.get(queue_id, 0.0),
            agents=agents,
        )


AGENT_STATES = ("ready", "not_ready", "reserved", "on_contact", "wrap_up")


def gauge_rows(board: LiveBoard, now: datetime) -> list[Row]:
    """One row per gauge: per queue, per skill group, and for the center."""
    rows: list[Row] = []

    def add(scope: str, key: str, gauge: str, value: float) -> None:
        rows.append(
            {"scope": scope, "queue_id": key, "gauge": gauge, "value": float(value), "measured_at": now}
        )

    queues = board.queues(now)
    for queue in queues:
        add("queue", queue.queue_id, "contacts_waiting", queue.contacts_waiting)
        add("queue", queue.queue_id, "callbacks_waiting", queue.callbacks_waiting)
        add("queue", queue.queue_id, "longest_wait_s", round(queue.longest_wait_s, 3))
        add("queue", queue.queue_id, "estimated_wait_s", queue.estimated_wait_s)
        for state in AGENT_STATES:
            add("queue", queue.queue_id, f"agents_{state}", queue.agents.get(state, 0))
    for group, counts in board.skill_groups().items():
        for state in AGENT_STATES:
            add("skill_group", group, f"agents_{state}", counts.get(state, 0))
    center = board.agent_states()
    add("center", "", "contacts_waiting", sum(q.contacts_waiting for q in queues))
    add("center", "", "longest_wait_s", round(max((q.longest_wait_s for q in queues), default=0.0), 3))
    for state in AGENT_STATES:
        add("center", "", f"agents_{state}", center.get(state, 0))
    return rows
