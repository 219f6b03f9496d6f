"""The routing service layer: queue administration, reactions to intake and agents, timers, and the
router's board, which every unit of work keeps current so the next decision sees the last one.

Each reaction or timer loads the entry it concerns, decides, appends, and then the router matches
routable entries with free agents in the same unit of work (for the consumer, once per batch), so
a contact queued and the offer that follows commit together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from callcenter.agents.v1 import events_pb2 as agent_events
from callcenter.intake.v1 import events_pb2 as intake_events
from callcenter.routing.v1 import events_pb2 as routing_events
from google.protobuf.message import Message

from services.platform.codec import dataclass_codec
from services.platform.envelope import Cause, Envelope, EventRegistry
from services.platform.errors import DomainError, NotFound
from services.platform.eventstore import AggregateKind, Deadline, EventStore, Loaded, Transaction
from services.platform.requests import Request
from services.routing import domain
from services.routing.domain import Entry, Queue, Seat, Status
from services.routing.selection import eligible, estimate_wait, service_order

QUEUE, ENTRY, SEAT = "Queue", "QueueEntry", "Seat"
EVENTS_TOPIC = "routing.events.v1"
SNAPSHOTS_TOPIC = "routing.snapshots.v1"
SEATS_TOPIC = "routing.seats.v1"
REACTS_TO = ("contacts.events.v1", "agents.events.v1")
ANSWERS_KEPT = 50


def registry() -> EventRegistry:
    """Every event routing reads: its own and those of the topics it reacts to."""
    return EventRegistry.of(routing_events, intake_events, agent_events)


def kinds() -> list[AggregateKind[Any]]:
    queue_codec, entry_codec, seat_codec = (dataclass_codec(c) for c in (Queue, Entry, Seat))
    return [
        AggregateKind(QUEUE, Queue, domain.evolve_queue, snapshot=queue_codec[0], restore=queue_codec[1]),
        AggregateKind(
            ENTRY,
            Entry,
            domain.evolve_entry,
            deadlines=domain.entry_deadlines,
            snapshot=entry_codec[0],
            restore=entry_codec[1],
            state_version=2,
            closed=domain.entry_closed,
        ),
        AggregateKind.table(SEAT, Seat, SEATS_TOPIC, *seat_codec),
    ]


@dataclass(frozen=True)
class QueueStatus:
    queue_id: str
    waiting: int
    ringing: int
    longest_wait: timedelta
    agents_logged_in: int
    agents_ready: int
    estimated_wait: timedelta | None
    callbacks_pending: int


class Board:
    """The router's live picture: queues, open entries, seats, offers in flight and recent answers.

    It follows the newest state of every aggregate (a newest-listener of the store), so a decision
    made while an earlier unit's commit is still under way already sees that unit's offers.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._queues: dict[str, Queue] = {}
        self._seats: dict[str, Seat] = {}
        self._entries: dict[str, Entry] = {}
        self._by_queue: dict[str, dict[str, Entry]] = {}
        self._reserved: dict[str, str] = {}
        self._free: set[str] = set()
        self._answers: dict[str, dict[str, tuple[datetime, timedelta]]] = {}
        self._last_offered: dict[str, tuple[datetime, str]] = {}

    def track(self, kind: AggregateKind[Any], key: str, state: Any) -> None:
        with self._lock:
            match kind.name:
                case "Queue":
                    self._queues[key] = state
                case "Seat":
                    self._seats[key] = state
                    self._refresh_free(key)
                case "QueueEntry":
                    self._track_entry(key, state)

    def _track_entry(self, contact_id: str, entry: Entry) -> None:
        before = self._entries.pop(contact_id, None)
        if before is not None:
            self._by_queue.get(before.queue_id, {}).pop(contact_id, None)
            if before.offer is not None and self._reserved.get(before.offer.agent_id) == contact_id:
                del self._reserved[before.offer.agent_id]
                self._refresh_free(before.offer.agent_id)
        if entry.open or entry.offer is not None:
            self._entries[contact_id] = entry
            if entry.open:
                self._by_queue.setdefault(entry.queue_id, {})[contact_id] = entry
            if entry.offer is not None:
                self._reserved[entry.offer.agent_id] = contact_id
                self._refresh_free(entry.offer.agent_id)
                last = self._last_offered.get(entry.queue_id)
                if last is None or last[0] <= entry.offer.at:
                    self._last_offered[entry.queue_id] = (entry.offer.at, entry.offer.agent_id)

    def answered(self, queue_id: str, contact_id: str, at: datetime, waited: timedelta) -> None:
        """Keep the queue's last answers, for the wait estimate (the newest ANSWERS_KEPT by time)."""
        with self._lock:
            answers = self._answers.setdefault(queue_id, {})
            answers[contact_id] = (at, waited)
            if len(answers) > ANSWERS_KEPT:
                del answers[min(answers, key=lambda c: answers[c][0])]

    def _refresh_free(self, agent_id: str) -> None:
        seat = self._seats.get(agent_id)
        if seat is not None and seat.can_take_any and agent_id not in self._reserved:
            self._free.add(agent_id)
        else:
            self._free.discard(agent_id)

    # What the router and the domain's decisions read (domain.Lookup) -----------------------------

    def queue(self, queue_id: str) -> Queue | None:
        with self._lock:
            return self._queues.get(queue_id)

    def waiting_count(self, queue_id: str) -> int:
        with self._lock:
            return sum(1 for e in self._by_queue.get(queue_id, {}).values() if e.status == Status.WAITING)

    def position(self, queue_id: str, priority: int, queued_at: datetime) -> int:
        with self._lock:
            ahead = sum(
                1
                for e in self._by_queue.get(queue_id, {}).values()
                if e.status == Status.WAITING
                and (e.priority > priority or (e.priority == priority and e.queued_at <= queued_at))
            )
        return ahead + 1

    def agents_able(self, queue: Queue) -> int:
        with self._lock:
            widest = queue.widest
            return sum(1 for s in self._seats.values() if s.logged_in and eligible(s.slot(), widest))

    def seat(self, agent_id: str) -> Seat | None:
        with self._lock:
            return self._seats.get(agent_id)

    def estimate(self, queue_id: str, position: int, now: datetime) -> timedelta | None:
        with self._lock:
            queue = self._queues.get(queue_id)
            if queue is not None and queue.exists and position <= self._free_able(queue):
                return timedelta(0)
            return estimate_wait(self._answers.get(queue_id, {}).values(), position)

    def _free_able(self, queue: Queue) -> int:
        requirement = domain.requirement_at_step(queue.skills, queue.steps, 0)
        channel = queue.config.channel if queue.config is not None else domain.Channel.CHANNEL_VOICE
        return sum(
            1
            for agent_id in self._free
            if self._seats[agent_id].can_take(channel) and eligible(self._seats[agent_id].slot(), requirement)
        )

    def plan(self, now: datetime) -> list[domain.Match]:
        with self._lock:
            if not self._free:
                return []
            routable = [e for e in self._entries.values() if e.routable(now)]
            if not routable:
                return []
            return domain.plan(
                routable,
                [self._seats[agent_id] for agent_id in self._free],
                self._queues,
                {queue_id: agent for queue_id, (_, agent) in self._last_offered.items()},
                now,
                present=lambda agent_id: agent_id in self._seats and self._seats[agent_id].logged_in,
            )

    def waiting_in(self, queue_id: str) -> list[Entry]:
        with self._lock:
            return [e for e in self._by_queue.get(queue_id, {}).values() if e.status == Status.WAITING]

    def queues(self) -> list[Queue]:
        with self._lock:
            return [q for q in self._queues.values() if q.exists]

    def status(self, queue: Queue, now: datetime) -> QueueStatus:
        with self._lock:
            entries = list(self._by_queue.get(queue.queue_id, {}).values())
            on_line = [e for e in entries if not e.is_callback]
            able = [s for s in self._seats.values() if s.logged_in and eligible(s.slot(), queue.widest)]
            waiting = sum(1 for e in entries if e.status == Status.WAITING)
            return QueueStatus(
                queue_id=queue.queue_id,
                waiting=waiting,
                ringing=sum(1 for e in entries if e.status == Status.OFFERED),
                longest_wait=max((now - e.entered_at for e in on_line), default=timedelta(0)),
                agents_logged_in=len(able),
                agents_ready=sum(1 for s in able if s.agent_id in self._free),
                estimated_wait=self.estimate(queue.queue_id, waiting + 1, now),
                callbacks_pending=sum(1 for e in entries if e.is_callback),
            )

    def position_of(self, entry: Entry) -> int:
        with self._lock:
            waiting = service_order(self.waiting_in(entry.queue_id))
            return next((n for n, e in enumerate(waiting, start=1) if e.contact_id == entry.contact_id), 0)


class RoutingService:
    """Queues, entries and seats of one routing instance; the router runs in each unit of work."""

    def __init__(self, store: EventStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._clock = clock
        self.board = Board()
        store.add_listener(self.board.track, newest=True)
        store.add_listener(self._record_answer)
        self._batch_cause: Cause | None = None

    def now(self) -> datetime:
        return self._clock()

    # Administration -----------------------------------------------------------------------------

    def upsert_queue(
        self,
        request: Request,
        config: routing_events.QueueConfig,
        expected_version: int,
        changed_by: str = "",
    ) -> Loaded[Queue]:
        def decide(loaded: Loaded[Queue]) -> list[Message]:
            existing = frozenset(queue.queue_id for queue in self.board.queues())
            command = domain.UpsertQueue(config, expected_version, loaded.version, changed_by, existing)
            return domain.upsert(loaded.state, command)

        def follow(tx: Transaction, cause: Cause) -> None:
            if tx.envelopes:
                # New skills or a stricter empty-queue rule may leave nobody able to serve it.
                self._empty_queues_leave(tx, cause)
                self._dispatch(tx, cause)

        loaded = self._store.execute(request, QUEUE, config.queue_id, decide, follow=follow)
        if not loaded.exists:
            raise NotFound(f"queue {config.queue_id} does not exist")
        return loaded

    def queue(self, queue_id: str) -> Loaded[Queue]:
        loaded = self._store.load(QUEUE, queue_id)
        if not loaded.exists:
            raise NotFound(f"queue {queue_id} does not exist")
        return loaded

    def queues(self) -> list[Queue]:
        return sorted(self.board.queues(), key=lambda q: q.queue_id)

    def status(self, queue_id: str) -> QueueStatus:
        return self.board.status(self.queue(queue_id).state, self.now())

    def estimate(self, queue_id: str, contact_id: str = "") -> tuple[int, timedelta | None]:
        """Position and estimated wait of a waiting contact, or of a new arrival when none is named."""
        queue = self.queue(queue_id).state
        now = self.now()
        if contact_id:
            entry = self._store.load(ENTRY, contact_id).state
            if entry.status != Status.WAITING or entry.queue_id != queue_id:
                raise NotFound(f"{entry.describe()}; it is not waiting in queue {queue_id}")
            position = self.board.position_of(entry)
        else:
            position = self.board.waiting_count(queue.queue_id) + 1
        return position, self.board.estimate(queue_id, position, now)

    # Reactions ----------------------------------------------------------------------------------

    def react(self, envelope: Envelope, tx: Transaction) -> None:
        """The consumer runner's handler for intake's and agents' events."""
        self._batch_cause = Cause.event(envelope)
        event, now = envelope.payload, self.now()
        match envelope.event_type:
            case "RoutingRequested":
                command = domain.Join(
                    contact_id=event.contact_id,
                    queue_id=event.queue_id,
                    channel=event.channel,
                    now=now,
                    priority_boost=event.priority_boost,
                    skills=[(s.skill, s.proficiency) for s in event.required_skills],
                    vip=event.vip,
                    reason=event.reason,
                    target_agent_id=event.target_agent_id,
                )
                self._decide(
                    tx, event.contact_id, envelope, lambda entry: domain.join(entry, command, self.board)
                )
            case "ContactEnded":
                # When it ended, not when routing heard: routing may read intake's topic late, and
                # intake may have recorded the end late (telephony's time, when it gave one).
                at = event.ended_at.ToDatetime(UTC) if event.HasField("ended_at") else envelope.occurred_at
                gone = domain.ContactGone(event.contact_id, event.reason, event.detail, at)
                self._decide(
                    tx,
                    event.contact_id,
                    envelope,
                    lambda entry: domain.contact_ended(entry, gone, self.board.queue),
                )
            case "CallbackRequested":
                callback = domain.RequestCallback(
                    event.contact_id,
                    now,
                    event.window_start.ToDatetime(tzinfo=UTC) if event.HasField("window_start") else None,
                    event.window_end.ToDatetime(tzinfo=UTC) if event.HasField("window_end") else None,
                )
                self._decide(
                    tx,
                    event.contact_id,
                    envelope,
                    lambda entry: domain.request_callback(entry, callback, self.board),
                )
            case "AgentLoggedIn" | "AgentSkillsChanged" | "AgentStateChanged" | "AgentLoggedOut":
                self._seat_changed(envelope, tx)
            case "ReservationRefused":
                ended = domain.OfferEnded(
                    event.contact_id,
                    event.agent_id,
                    event.offer_id,
                    0,
                    event.reason,
                    envelope.occurred_at,
                    refused=True,
                )
                self._offer_ended(tx, ended, envelope)

    def after_batch(self, tx: Transaction) -> None:
        """Match once the batch's events are applied (the consumer runner's batch hook)."""
        if self._batch_cause is not None:
            self._dispatch(tx, self._batch_cause)
            self._batch_cause = None

    def _seat_changed(self, envelope: Envelope, tx: Transaction) -> None:
        agent_id = envelope.aggregate_id
        before = tx.load(SEAT, agent_id).state
        after = domain.seat_after(before, envelope)
        if after == before:
            return
        tx.put(SEAT, agent_id, after)
        event = envelope.payload
        if envelope.event_type == "AgentStateChanged" and event.offer_id and event.offer_outcome:
            ended = domain.OfferEnded(
                event.contact_id,
                event.agent_id,
                event.offer_id,
                event.offer_outcome,
                event.reason_detail,
                envelope.occurred_at,
            )
            self._offer_ended(tx, ended, envelope)
        able_before = (before.skills, before.skill_groups)
        if before.logged_in and (not after.logged_in or able_before != (after.skills, after.skill_groups)):
            self._empty_queues_leave(tx, Cause.event(envelope))

    def _offer_ended(self, tx: Transaction, ended: domain.OfferEnded, envelope: Envelope) -> None:
        self._decide(
            tx,
            ended.contact_id,
            envelope,
            lambda entry: domain.offer_ended(entry, ended, self.board.queue),
        )

    def _empty_queues_leave(self, tx: Transaction, cause: Cause) -> None:
        now = self.now()
        for queue in self.board.queues():
            if queue.config.empty_queue_rule != domain.EmptyRule.EMPTY_QUEUE_RULE_LEAVE_WHEN_EMPTY:
                continue
            if self.board.agents_able(queue) > 0:
                continue
            for entry in self.board.waiting_in(queue.queue_id):
                loaded = tx.load(ENTRY, entry.contact_id)
                events = domain.leave_empty_queue(loaded.state, queue, now, self.board)
                if events:
                    tx.append(ENTRY, entry.contact_id, loaded.version, events, cause)

    def _decide(
        self, tx: Transaction, contact_id: str, envelope: Envelope, decide: Callable[[Entry], list[Message]]
    ) -> None:
        try:
            tx.decide(ENTRY, contact_id, lambda loaded: decide(loaded.state), Cause.event(envelope))
        except DomainError:
            return  # a report that came too late to matter; the event decides nothing

    def _record_answer(self, kind: AggregateKind[Any], key: str, state: Any) -> None:
        """Committed connects feed the wait estimate (committed only: an estimate is not a decision)."""
        if kind.name == ENTRY and state.status == Status.CONNECTED and state.ended_at is not None:
            self.board.answered(state.queue_id, key, state.ended_at, state.ended_at - state.entered_at)

    # Timers -------------------------------------------------------------------------------------

    def fire(self, kind_name: str, contact_id: str, deadline: Deadline) -> None:
        """The deadline scheduler's fire: decide what the deadline means, then let the router run."""
        cause = Cause.request(
            f"deadline/{kind_name}/{contact_id}/{deadline.name}/{deadline.due_at.isoformat()}"
        )
        with self._store.transaction() as tx:
            loaded = tx.load(ENTRY, contact_id)
            events = domain.on_deadline(loaded.state, deadline, self.now(), self.board)
            if events:
                tx.append(ENTRY, contact_id, loaded.version, events, cause)
            self._dispatch(tx, cause)

    # The router ---------------------------------------------------------------------------------

    def _dispatch(self, tx: Transaction, trigger: Cause) -> None:
        now = self.now()
        for match in self.board.plan(now):
            loaded = tx.load(ENTRY, match.contact_id)
            entry = loaded.state
            queue = self.board.queue(entry.queue_id)
            if queue is None:
                continue
            cause = Cause(trigger.causation_id, entry.correlation_id or trigger.correlation_id)
            tx.append(ENTRY, match.contact_id, loaded.version, domain.offer(entry, match, queue, now), cause)
