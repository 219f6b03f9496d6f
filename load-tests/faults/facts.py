"""What a run should have recorded (the simulator's truth) against what the system recorded.

A fact is one thing the center must know afterwards, at one place it is recorded:
- ``started`` / ``ended``: intake's ContactStarted / ContactEnded of each contact it took;
- ``visits``: routing's outcome of each queue visit (answered by whom, abandoned, overflowed...);
- ``answers``: the agents service putting the answering agent on the contact;
- ``kpi visits``: the KPI service's contact fact of each visit (outcome and agent), read FINAL;
- ``records``: every event of the run in the three logs, each event id once.
Each is counted as expected, seen, lost (not there), doubled (there more than once) and misrecorded
(there, but saying something else than what happened). The tickets' facts: ``faults/tickets.py``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as routing_ev
from confluent_kafka import Consumer, KafkaError, TopicPartition
from simulator.driver import Simulation

from services.platform.envelope import Envelope, EventRegistry, PoisonEvent, decode
from services.platform.kafka import consumer_config
from services.platform.settings import KafkaSettings

TOPICS = ("contacts.events.v1", "routing.events.v1", "agents.events.v1")
ON_CONTACT = agent_ev.AgentState.AGENT_STATE_ON_CONTACT
# Routing's events that end a visit, and what the simulator calls each ending.
VISIT_ENDS = {
    "ContactConnected": "answered",
    "ContactAbandoned": "abandoned",
    "ContactOverflowed": "overflowed",
    "ContactDisconnected": "disconnected",
    "CallbackCancelled": "callback_cancelled",
}
# Routing's corrections of a visit's outcome, read after the contact's end (telephony's time).
REPLACES = ("ConnectionVoided", "OverflowVoided")
CALLER_ENDS = (
    intake_ev.ContactEndReason.CONTACT_END_REASON_CALLER,
    intake_ev.ContactEndReason.CONTACT_END_REASON_UNSPECIFIED,
)
# The simulator's outcome of a visit, and the ones the system may record for it.
AGREES = {
    "answered": {"answered"},
    "abandoned": {"abandoned", "short_abandon"},
    "overflowed": {"overflowed"},
    "disconnected": {"disconnected"},
    "ended_by_run": {"abandoned", "short_abandon", "disconnected"},
    "callback_cancelled": {"callback_cancelled"},
}


@dataclass
class Check:
    name: str
    expected: int = 0
    seen: int = 0
    lost: int = 0
    doubled: int = 0
    misrecorded: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {text}")

    @property
    def clean(self) -> bool:
        return not (self.lost or self.doubled or self.misrecorded)


@dataclass
class Facts:
    checks: list[Check]

    def total(self, name: str = "all") -> Check:
        total = Check(name)
        for check in self.checks:
            for attribute in ("expected", "seen", "lost", "doubled", "misrecorded"):
                setattr(total, attribute, getattr(total, attribute) + getattr(check, attribute))
            total.examples.extend(f"{check.name} {example}" for example in check.examples[:2])
        return total


def read_logs(kafka: KafkaSettings, prefix: str) -> dict[str, list[Envelope]]:
    """Every committed event of the three logs whose key (aggregate id) begins with ``prefix``."""
    registry = EventRegistry.of(intake_ev, routing_ev, agent_ev)
    found: dict[str, list[Envelope]] = {topic: [] for topic in TOPICS}
    for topic, record in committed(kafka, TOPICS):
        if not (record.key() or b"").decode(errors="replace").startswith(prefix):
            continue
        try:
            found[topic].append(decode(record.value(), record.headers(), registry))
        except PoisonEvent:
            continue
    return found


def committed(kafka: KafkaSettings, topics: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """Every committed record of these topics, from their start to their end as of now: (topic, record)."""
    consumer = Consumer(
        consumer_config(kafka, f"facts-{time.monotonic_ns()}", **{"enable.partition.eof": True})
    )
    try:
        assignment = []
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                assignment.append(TopicPartition(topic, partition, 0))
        consumer.assign(assignment)
        remaining = {(tp.topic, tp.partition) for tp in assignment}
        idle_until = time.monotonic() + 60
        while remaining and time.monotonic() < idle_until:
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard((message.topic(), message.partition()))
                    continue
                idle_until = time.monotonic() + 60
                yield message.topic(), message
    finally:
        consumer.close()


def compare(sim: Simulation, logs: dict[str, list[Envelope]], kpi_rows: list[dict[str, Any]]) -> Facts:
    contacts = [c for c in sim.contacts.values() if c.started]
    by_contact: dict[str, dict[str, list[Envelope]]] = defaultdict(lambda: defaultdict(list))
    for topic in ("contacts.events.v1", "routing.events.v1"):
        for envelope in logs[topic]:
            by_contact[envelope.aggregate_id][envelope.event_type].append(envelope)
    return Facts(
        [
            _once(contacts, by_contact, "started", "ContactStarted", lambda c: True),
            _once(contacts, by_contact, "ended", "ContactEnded", lambda c: c.ended_at is not None),
            _visits(contacts, logs["routing.events.v1"]),
            _answers(contacts, logs["agents.events.v1"]),
            _kpi_visits(contacts, kpi_rows),
            _records(logs),
        ]
    )


def _once(contacts, by_contact, name: str, event_type: str, applies) -> Check:
    check = Check(name)
    for contact in contacts:
        if not applies(contact):
            continue
        check.expected += 1
        count = len({e.event_id for e in by_contact[contact.contact_id][event_type]})
        if count == 0:
            check.note("lost", f"{contact.contact_id} has no {event_type}")
        else:
            check.seen += 1
            if count > 1:
                check.note("doubled", f"{contact.contact_id} has {count} {event_type}")
    return check


def _visits(contacts, routing: list[Envelope]) -> Check:
    ends: dict[str, dict[int, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    current: dict[str, int] = {}
    for envelope in sorted(routing, key=lambda e: (e.aggregate_id, e.aggregate_version)):
        event = envelope.payload
        if envelope.event_type == "ContactQueued":
            current[envelope.aggregate_id] = event.visit
        elif envelope.event_type in VISIT_ENDS:
            visit = current.get(envelope.aggregate_id, 0)
            agent = getattr(event, "agent_id", "")
            ends[envelope.aggregate_id][visit].append((VISIT_ENDS[envelope.event_type], agent))
        elif envelope.event_type in REPLACES:
            # A correction: the visit's outcome as the end says, in place of its connection or
            # overflow; an overflow's later visits never were.
            visit = (
                event.visit
                if envelope.event_type == "OverflowVoided"
                else current.get(envelope.aggregate_id, 0)
            )
            outcome = "abandoned" if event.end_reason in CALLER_ENDS else "disconnected"
            visits = ends[envelope.aggregate_id]
            visits[visit] = [(outcome, ""), *visits[visit][1:]]
            for later in range(visit + 1, getattr(event, "last_visit", visit) + 1):
                visits.pop(later, None)
    check = Check("visits")
    for contact in contacts:
        recorded = ends[contact.contact_id]
        for index, visit in enumerate(contact.visits, start=1):
            if visit.outcome not in AGREES:
                continue
            check.expected += 1
            said = recorded.get(index, [])
            where = f"{contact.contact_id} visit {index}"
            if not said:
                check.note("lost", f"{where} ({visit.outcome}) has no outcome")
                continue
            check.seen += 1
            if len(said) > 1:
                check.note("doubled", f"{where} ended {len(said)} times: {said}")
            outcome, agent = said[0]
            if outcome not in AGREES[visit.outcome] or (outcome == "answered" and agent != visit.agent_id):
                check.note(
                    "misrecorded", f"{where}: {visit.outcome} {visit.agent_id} recorded as {outcome} {agent}"
                )
    return check


def _answers(contacts, agents: list[Envelope]) -> Check:
    took: dict[str, list[str]] = defaultdict(list)
    for envelope in agents:
        event = envelope.payload
        taking = envelope.event_type == "AgentStateChanged" and event.contact_id
        if taking and event.new_state == ON_CONTACT and event.previous_state != ON_CONTACT:
            took[event.contact_id].append(event.agent_id)
    check = Check("answers")
    for contact in contacts:
        answered = [v for v in contact.visits if v.outcome == "answered" and v.agent_id]
        if not answered:
            continue
        check.expected += 1
        agents_on = took.get(contact.contact_id, [])
        if not agents_on:
            check.note("lost", f"{contact.contact_id}: no agent went on it (expected {answered[0].agent_id})")
            continue
        check.seen += 1
        if len(agents_on) > len(answered):
            check.note("doubled", f"{contact.contact_id}: agents went on it {agents_on}")
        if set(agents_on) != {v.agent_id for v in answered}:
            check.note(
                "misrecorded", f"{contact.contact_id}: {agents_on}, expected {[v.agent_id for v in answered]}"
            )
    return check


def _kpi_visits(contacts, rows: list[dict[str, Any]]) -> Check:
    facts = {(row["contact_id"], row["visit"]): row for row in rows}
    check = Check("kpi visits")
    for contact in contacts:
        for index, visit in enumerate(contact.visits, start=1):
            if visit.outcome not in AGREES:
                continue
            check.expected += 1
            row = facts.get((contact.contact_id, index))
            where = f"{contact.contact_id} visit {index}"
            if row is None or not row["outcome"]:
                check.note("lost", f"{where} ({visit.outcome}) has no closed fact")
                continue
            check.seen += 1
            if row["outcome"] not in AGREES[visit.outcome] or (
                visit.outcome == "answered" and row["agent_id"] != visit.agent_id
            ):
                recorded = f"{row['outcome']} {row['agent_id']}"
                check.note("misrecorded", f"{where}: {visit.outcome} {visit.agent_id} recorded as {recorded}")
    return check


def _records(logs: dict[str, list[Envelope]]) -> Check:
    check = Check("records")
    for topic, envelopes in logs.items():
        counts = Counter(e.event_id for e in envelopes)
        versions: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        for envelope in envelopes:
            versions[(envelope.aggregate_type, envelope.aggregate_id, envelope.aggregate_version)].add(
                envelope.event_id
            )
        check.expected += len(counts)
        check.seen += len(counts)
        for event_id, count in counts.items():
            if count > 1:
                check.note("doubled", f"{topic}: event {event_id} written {count} times")
        for (kind, aggregate, version), ids in versions.items():
            if len(ids) > 1:
                check.note(
                    "doubled", f"{topic}: {kind} {aggregate} has {len(ids)} events of version {version}"
                )
    return check


def kpi_visit_rows(client: Any, prefix: str) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT contact_id, visit, outcome, agent_id FROM contact_facts FINAL "
        "WHERE startsWith(contact_id, {p:String}) AND visit > 0",
        parameters={"p": prefix},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
