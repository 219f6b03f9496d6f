"""The tickets workload and its facts: tickets asked for through the tickets API and by agents'
wrap-ups, dispatched to departments as the catalogue says, each dispatch accepted and completed by its
department with a token of its own; then what the tickets service recorded and published, against it.

A fact here is one thing the departments and the center must know afterwards, at one place:
- ``ticket requests``: one TicketCreated for each ticket asked for (a CreateTicket or a wrap-up);
- ``dispatches``: one TicketDispatched for each department the catalogue names for the category, no
  other; ``accepts`` / ``completions``: one DispatchAccepted / DispatchCompleted per dispatch;
- ``ticket records``: each event of the tickets once on ``tickets.events.v1`` (by id, and by version);
- ``published``: each public event the publisher maps the tickets' domain events to (its id is the
  uuid5 of the domain event's id and the topic), once on its topic, as mapped, and nowhere else;
- ``inbox work``: each dispatch once in its department's inbox, in no other department's;
- ``lifecycles``: each ticket's requests all answered (retried with the same request id while the
  service is away), so a refusal is a failure, not a smaller truth;
- ``dead letters``: each poison record on a topic the service consumes, dead-lettered once by the
  consumer that met it, with its bytes and a reason.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.common.v1 import types_pb2
from callcenter.common.v1.envelope_pb2 import EventEnvelope
from callcenter.tickets.v1 import events_pb2 as ticket_ev
from callcenter.tickets.v1 import service_pb2 as pb
from callcenter.tickets.v1 import service_pb2_grpc
from callcenter.workflow.v1 import events_pb2 as wf
from confluent_kafka import Producer
from simulator.callers import CallerChannel, local_issuer

from faults.facts import Check, committed
from services.platform.envelope import (
    DEADLETTER_TOPIC,
    REASON_HEADER,
    Cause,
    Envelope,
    EventRegistry,
    PoisonEvent,
    decode,
    encode,
    make_envelope,
)
from services.platform.identity import Role
from services.platform.settings import KafkaSettings
from services.platform.topics import department_codes, inbox_topic
from services.tickets.handlers import registry, ticket_id_for
from services.tickets.publisher import PUBLIC_TOPIC, publications

EVENTS_TOPIC = "tickets.events.v1"
AGENTS_TOPIC = "agents.events.v1"
# Where each category goes, lead first, as deploy/tickets/dispatch-catalogue.yaml says: the truth the
# dispatches are checked against, written out here rather than read from the service's configuration.
CATALOGUE = {
    "environment.noise": ("environment", "urban_management"),
    "housing.property_management": ("housing",),
    "transport.taxi": ("transport",),
    "water.billing": ("water_supply", "finance"),
    "market.consumer_complaint": ("market_regulation",),
}
# Every this many tickets, one is asked for by an agent's wrap-up (the service's reaction) instead.
WRAP_UP_EVERY = 4
# Refusals that say "not now": the same request again, until it is answered. CANCELLED is among them:
# a server stopped past a call's deadline cancels the call when it resumes, and its outcome is then
# unknown to the client, as after a timeout; a client retries it under the same request id.
RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
CALL_TIMEOUT_S = 5.0


@dataclass
class Lifecycle:
    """One ticket as the desk and its departments lived it: what they asked and were answered."""

    number: int
    category: str
    key: str  # the prefix of its request ids
    by_wrap_up: bool
    ticket_id: str = ""
    answered_ticket_id: str = ""
    dispatch_ids: tuple[str, ...] = ()
    accepted: set[str] = field(default_factory=set)
    completed: set[str] = field(default_factory=set)
    done: bool = False
    error: str = ""

    @property
    def departments(self) -> tuple[str, ...]:
        return CATALOGUE[self.category]


class TicketDesk:
    """Plays ``count`` ticket lifecycles spread over ``over_s`` seconds, a few at once, against the
    tickets service at ``address``; wrap-ups are written to agents' topic as the agents service would."""

    def __init__(
        self,
        address: str,
        kafka: KafkaSettings,
        run_id: str,
        count: int,
        over_s: float,
        retry_for_s: float = 120.0,
        workers: int = 4,
        twins: bool = False,
    ) -> None:
        """``twins``: every request sent twice at once (a client retrying before its first try ended);
        both must be answered alike, as one."""
        self.run_id = run_id
        self.lifecycles = [lifecycle(run_id, n) for n in range(count)]
        self.retried: Counter[str] = Counter()
        self.twin_errors: Counter[str] = Counter()
        self.twin_details: list[str] = []
        self._twins = twins
        self._over_s = over_s
        self._retry_for_s = retry_for_s
        self._workers = workers
        self._kafka = kafka
        self._desk = service_pb2_grpc.TicketsServiceStub(CallerChannel(address))
        self._departments = {
            code: service_pb2_grpc.TicketsServiceStub(CallerChannel(address, _department_token(code)))
            for departments in CATALOGUE.values()
            for code in departments
        }
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ticket-desk", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    @property
    def ticket_ids(self) -> set[str]:
        return {life.ticket_id for life in self.lifecycles if life.ticket_id}

    def _run(self) -> None:
        began = time.monotonic()
        spacing = self._over_s / max(1, len(self.lifecycles))
        with ThreadPoolExecutor(self._workers, thread_name_prefix="ticket-life") as pool:
            for life in self.lifecycles:
                time.sleep(max(0.0, began + life.number * spacing - time.monotonic()))
                pool.submit(self._live, life)

    def _live(self, life: Lifecycle) -> None:
        try:
            if life.by_wrap_up:
                self._write_wrap_up(life)
                request = pb.GetTicketRequest(ticket_id=life.ticket_id)
                # The reaction opens it when it reads the wrap-up: not found until then.
                found = self._call(self._desk.GetTicket, request, also=(grpc.StatusCode.NOT_FOUND,))
                ticket = found.ticket
            else:
                ticket = self._call(self._desk.CreateTicket, _create(life)).ticket
            life.answered_ticket_id = ticket.ticket_id
            dispatch = pb.DispatchRequest(request_id=f"{life.key}-dispatch", ticket_id=life.ticket_id)
            life.dispatch_ids = tuple(self._call(self._desk.Dispatch, dispatch).dispatch_ids)
            pairs = list(zip(life.dispatch_ids, life.departments, strict=False))
            for dispatch_id, code in pairs:
                accept = pb.AcceptDispatchRequest(
                    request_id=f"{life.key}-accept-{code}", ticket_id=life.ticket_id, dispatch_id=dispatch_id
                )
                self._call(self._departments[code].AcceptDispatch, accept)
                life.accepted.add(dispatch_id)
            for dispatch_id, code in pairs:
                complete = pb.CompleteDispatchRequest(
                    request_id=f"{life.key}-complete-{code}",
                    ticket_id=life.ticket_id,
                    dispatch_id=dispatch_id,
                    result="done",
                    resolved=True,
                )
                self._call(self._departments[code].CompleteDispatch, complete)
                life.completed.add(dispatch_id)
            life.done = True
        except grpc.RpcError as error:
            life.error = f"{error.code().name}: {error.details()}"
        except Exception as error:  # the desk's own failure is the scenario's, not the service's
            life.error = f"{type(error).__name__}: {error}"

    def _call(self, rpc: Callable[..., Any], request: Any, also: Iterable[grpc.StatusCode] = ()) -> Any:
        """The request, again and unchanged (the same request id) while it is refused for now; with
        twins, sent twice at once, and the twin's answer must equal the first's."""
        if not self._twins:
            return self._retrying(rpc, request, also)
        twin: list[Any] = []

        def send_twin() -> None:
            try:
                twin.append(self._retrying(rpc, request, also))
            except grpc.RpcError as error:
                twin.append(error)

        thread = threading.Thread(target=send_twin, name="ticket-twin", daemon=True)
        thread.start()
        answer = self._retrying(rpc, request, also)
        thread.join(self._retry_for_s + CALL_TIMEOUT_S)
        other = twin[0] if twin else None
        if isinstance(other, grpc.RpcError) or _essence(other) != _essence(answer):
            said = (
                f"{other.code().name}: {other.details()}" if isinstance(other, grpc.RpcError) else "another"
            )
            with self._lock:
                self.twin_errors[said.split(":")[0]] += 1
                if len(self.twin_details) < 5:
                    self.twin_details.append(f"{type(request).__name__} {request.request_id}: {said}")
        return answer

    def _retrying(self, rpc: Callable[..., Any], request: Any, also: Iterable[grpc.StatusCode]) -> Any:
        retried = RETRIED | set(also)
        deadline = time.monotonic() + self._retry_for_s
        while True:
            try:
                return rpc(request, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as error:
                if error.code() not in retried or time.monotonic() > deadline:
                    raise
                with self._lock:
                    self.retried[error.code().name] += 1
                time.sleep(0.2)

    def _write_wrap_up(self, life: Lifecycle) -> None:
        agent_id = f"{life.key}-agent"
        wrap_up = agent_ev.WrapUpCompleted(
            agent_id=agent_id,
            contact_id=f"{life.key}-contact",
            disposition_code="complaint.recorded",
            ticket=agent_ev.TicketRequest(
                ticket_type="complaint", priority=3, summary=_summary(life), category=life.category
            ),
            customer=_CUSTOMER,
        )
        envelope = make_envelope(
            wrap_up,
            registry=EventRegistry.of(agent_ev),
            aggregate_type="Agent",
            aggregate_id=agent_id,
            aggregate_version=1,
            occurred_at=datetime.now(UTC),
            cause=Cause.request(f"{life.key}-wrap-up"),
        )
        key, value, headers = encode(envelope)
        producer = Producer({**self._kafka.client_config(), "enable.idempotence": True})
        producer.produce(AGENTS_TOPIC, value, key, headers=list(headers))
        if producer.flush(30):
            raise RuntimeError(f"the wrap-up of {life.key} was not written")
        life.ticket_id = ticket_id_for(f"wrap-up/{envelope.event_id}")


def _essence(answer: Any) -> tuple[Any, ...]:
    """What two answers to one request must agree on: the ticket, the dispatches made, the dispatch's
    status (the rest of a ticket may have moved on between them, its clocks or its assignment)."""
    ticket = getattr(answer, "ticket", None)
    dispatch = getattr(answer, "dispatch", None)
    return (
        ticket.ticket_id if ticket is not None else None,
        tuple(getattr(answer, "dispatch_ids", ())),
        (dispatch.dispatch_id, dispatch.status) if dispatch is not None else None,
    )


_CUSTOMER = types_pb2.PartyReference(hash="ab" * 32, masked="*******5678")


def lifecycle(run_id: str, number: int) -> Lifecycle:
    """The ``number``-th ticket of a run: its category in turn, by wrap-up every WRAP_UP_EVERY-th."""
    categories = list(CATALOGUE)
    key = f"{run_id}-t{number:03d}"
    by_wrap_up = number % WRAP_UP_EVERY == WRAP_UP_EVERY - 1
    life = Lifecycle(number, categories[number % len(categories)], key, by_wrap_up)
    if not by_wrap_up:
        life.ticket_id = ticket_id_for(f"{key}-create")  # its id, whether or not the answer comes
    return life


def _summary(life: Lifecycle) -> str:
    return f"chaos ticket {life.key}"


def _create(life: Lifecycle) -> pb.CreateTicketRequest:
    return pb.CreateTicketRequest(
        request_id=f"{life.key}-create",
        type=ticket_ev.TICKET_TYPE_COMPLAINT,
        priority=3,
        summary=_summary(life),
        category=life.category,
        customer=_CUSTOMER,
    )


def _department_token(code: str) -> Callable[[str, Any], str]:
    bearer = local_issuer().for_role(Role.DEPARTMENT, f"dept-{code}", department=code)
    return lambda _method, _request: bearer


# Poison -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    """A record written where the service consumes, and the consumer group that must dead-letter it."""

    topic: str
    partition: int
    offset: int
    value: bytes
    consumer: str
    what: str


def write_poison(kafka: KafkaSettings, run_id: str) -> list[Poison]:
    """Records that are not events of ours, on the topics the tickets service consumes: agents' (its
    reaction to wrap-ups, group "tickets") and its own (its publisher, group "tickets-publisher")."""
    agents = EventRegistry.of(agent_ev)
    unknown_version = make_envelope(
        agent_ev.WrapUpCompleted(agent_id=f"{run_id}-poison-a2", contact_id=f"{run_id}-poison-c2"),
        registry=agents,
        aggregate_type="Agent",
        aggregate_id=f"{run_id}-poison-a2",
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(f"{run_id}-poison-2"),
    )
    planned: list[tuple[str, str, bytes, list[tuple[str, bytes]], str, str]] = [
        (AGENTS_TOPIC, f"{run_id}-poison-a1", b"\x08\x96\x01 not an envelope", [], "tickets", "undecodable"),
        (
            AGENTS_TOPIC,
            f"{run_id}-poison-a2",
            *_with_version(unknown_version, 9),
            "tickets",
            "WrapUpCompleted v9",
        ),
        (
            AGENTS_TOPIC,
            f"{run_id}-poison-a3",
            *_with_payload(unknown_version, f"{run_id}-poison-a3", b"\xff\xff\xff garbage"),
            "tickets",
            "WrapUpCompleted whose payload does not parse",
        ),
        (EVENTS_TOPIC, f"{run_id}-poison-t1", b"\xff\xfe garbage", [], "tickets-publisher", "undecodable"),
        (
            EVENTS_TOPIC,
            f"{run_id}-poison-t2",
            *_ticket_event_of_version(run_id, 9),
            "tickets-publisher",
            "TicketDispatched v9",
        ),
    ]
    producer = Producer({**kafka.client_config(), "enable.idempotence": True})
    placed: list[Poison] = []

    def delivered(error: Any, message: Any, consumer: str, what: str) -> None:
        if error is None:
            placed.append(
                Poison(
                    message.topic(), message.partition(), message.offset(), message.value(), consumer, what
                )
            )

    for topic, key, value, headers, consumer, what in planned:
        producer.produce(
            topic,
            value,
            key.encode(),
            headers=headers,
            on_delivery=lambda e, m, c=consumer, w=what: delivered(e, m, c, w),
        )
    if producer.flush(30) or len(placed) != len(planned):
        raise RuntimeError(f"only {len(placed)} of {len(planned)} poison records were written")
    return placed


def _with_version(envelope: Envelope, version: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    _, value, _ = encode(envelope)
    message = EventEnvelope.FromString(value)
    message.schema_version = version
    headers = [("event_type", envelope.event_type.encode()), ("schema_version", str(version).encode())]
    return message.SerializeToString(), headers


def _with_payload(
    envelope: Envelope, aggregate_id: str, payload: bytes
) -> tuple[bytes, list[tuple[str, bytes]]]:
    _, value, headers = encode(envelope)
    message = EventEnvelope.FromString(value)
    message.event_id = str(uuid.uuid4())
    message.aggregate_id = aggregate_id
    message.payload = payload
    return message.SerializeToString(), list(headers)


def _ticket_event_of_version(run_id: str, version: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    envelope = make_envelope(
        ticket_ev.TicketDispatched(ticket_id=f"{run_id}-poison-t2", department="environment"),
        registry=registry(),
        aggregate_type="Ticket",
        aggregate_id=f"{run_id}-poison-t2",
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(f"{run_id}-poison-t2"),
    )
    return _with_version(envelope, version)


# The facts ----------------------------------------------------------------------------------------


@dataclass
class Published:
    topic: str
    message: wf.WorkflowEvent


def read_tickets(kafka: KafkaSettings, ticket_ids: set[str]) -> tuple[list[Envelope], list[Published]]:
    """The tickets' events on their topic, and every public and inbox record about them."""
    events: list[Envelope] = []
    for _, record in committed(kafka, (EVENTS_TOPIC,)):
        if (record.key() or b"").decode(errors="replace") not in ticket_ids:
            continue
        try:
            events.append(decode(record.value(), record.headers(), _REGISTRY))
        except PoisonEvent:
            continue
    published: list[Published] = []
    topics = (PUBLIC_TOPIC, *(inbox_topic(code) for code in department_codes()))
    for topic, record in committed(kafka, topics):
        if (record.key() or b"").decode(errors="replace") in ticket_ids:
            published.append(Published(topic, wf.WorkflowEvent.FromString(record.value())))
    return events, published


_REGISTRY = registry()


def compare_tickets(
    lifecycles: list[Lifecycle], events: list[Envelope], published: list[Published]
) -> list[Check]:
    """The tickets' facts: what the desk and departments lived against what was recorded and published."""
    by_ticket: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in events:
        by_ticket[envelope.aggregate_id].append(envelope)
    return [
        _lifecycles(lifecycles),
        _requests(lifecycles, by_ticket),
        _dispatches(lifecycles, by_ticket),
        _settled(lifecycles, by_ticket, "accepts", "DispatchAccepted", lambda life: life.accepted),
        _settled(lifecycles, by_ticket, "completions", "DispatchCompleted", lambda life: life.completed),
        _ticket_records(events),
        _published(events, published),
        _inbox_work(lifecycles, published),
    ]


def _lifecycles(lifecycles: list[Lifecycle]) -> Check:
    check = Check("lifecycles")
    for life in lifecycles:
        check.expected += 1
        if life.done:
            check.seen += 1
        else:
            check.note(
                "lost", f"{life.key} ({life.category}) did not finish: {life.error or 'still running'}"
            )
    return check


def _distinct(envelopes: Iterable[Envelope]) -> list[Envelope]:
    return list({e.event_id: e for e in envelopes}.values())


def _requests(lifecycles: list[Lifecycle], by_ticket: dict[str, list[Envelope]]) -> Check:
    check = Check("ticket requests")
    for life in lifecycles:
        if not life.ticket_id:
            continue  # a wrap-up never written: the lifecycle says so
        check.expected += 1
        created = _distinct(e for e in by_ticket[life.ticket_id] if e.event_type == "TicketCreated")
        if not created:
            check.note("lost", f"{life.key}: no TicketCreated for {life.ticket_id}")
            continue
        check.seen += 1
        if len(created) > 1:
            check.note("doubled", f"{life.key}: {len(created)} TicketCreated for {life.ticket_id}")
        event = created[0].payload
        if (
            event.category != life.category
            or event.summary != _summary(life)
            or (event.origin == ticket_ev.TICKET_ORIGIN_WRAP_UP) != life.by_wrap_up
            or (life.answered_ticket_id and life.answered_ticket_id != life.ticket_id)
        ):
            check.note(
                "misrecorded",
                f"{life.key}: created {event.category!r} {event.summary!r} origin {event.origin} "
                f"answered as {life.answered_ticket_id}",
            )
    return check


def _dispatches(lifecycles: list[Lifecycle], by_ticket: dict[str, list[Envelope]]) -> Check:
    check = Check("dispatches")
    for life in lifecycles:
        if not life.dispatch_ids:
            continue  # never answered: the lifecycle says so; a dispatch made unanswered shows below
        dispatched = _distinct(e for e in by_ticket[life.ticket_id] if e.event_type == "TicketDispatched")
        for index, code in enumerate(life.departments):
            check.expected += 1
            to = [e.payload for e in dispatched if e.payload.department == code]
            where = f"{life.key} ({life.category}) to {code}"
            if not to:
                check.note("lost", f"{where}: no TicketDispatched")
                continue
            check.seen += 1
            if len(to) > 1:
                ids = sorted({d.dispatch_id for d in to})
                check.note("doubled", f"{where}: {len(to)} TicketDispatched, dispatch ids {ids}")
            role = ticket_ev.DISPATCH_ROLE_LEAD if index == 0 else ticket_ev.DISPATCH_ROLE_ASSISTING
            answered = life.dispatch_ids[index] if index < len(life.dispatch_ids) else ""
            if to[0].role != role or to[0].dispatch_id != answered:
                check.note(
                    "misrecorded", f"{where}: role {to[0].role} id {to[0].dispatch_id}, answered {answered}"
                )
        for event in dispatched:
            if event.payload.department not in life.departments:
                check.note("misrecorded", f"{life.key}: dispatched to {event.payload.department} as well")
        per_id = Counter(e.payload.dispatch_id for e in dispatched)
        for dispatch_id, count in per_id.items():
            if count > 1:
                check.note("doubled", f"{life.key}: dispatch {dispatch_id} dispatched {count} times")
    return check


def _settled(
    lifecycles: list[Lifecycle],
    by_ticket: dict[str, list[Envelope]],
    name: str,
    event_type: str,
    answered: Callable[[Lifecycle], set[str]],
) -> Check:
    check = Check(name)
    for life in lifecycles:
        found = Counter(
            e.payload.dispatch_id for e in _distinct(by_ticket[life.ticket_id]) if e.event_type == event_type
        )
        for dispatch_id in answered(life):
            check.expected += 1
            if not found[dispatch_id]:
                check.note("lost", f"{life.key}: no {event_type} for dispatch {dispatch_id}")
                continue
            check.seen += 1
            if found[dispatch_id] > 1:
                check.note("doubled", f"{life.key}: {found[dispatch_id]} {event_type} for {dispatch_id}")
        for dispatch_id in set(found) - set(life.dispatch_ids):
            check.note("misrecorded", f"{life.key}: {event_type} for a dispatch never made: {dispatch_id}")
    return check


def _ticket_records(events: list[Envelope]) -> Check:
    check = Check("ticket records")
    counts = Counter(e.event_id for e in events)
    versions: dict[tuple[str, int], set[str]] = defaultdict(set)
    for envelope in events:
        versions[(envelope.aggregate_id, envelope.aggregate_version)].add(envelope.event_id)
    check.expected = check.seen = len(counts)
    for event_id, count in counts.items():
        if count > 1:
            check.note("doubled", f"event {event_id} written {count} times")
    for (ticket_id, version), ids in versions.items():
        if len(ids) > 1:
            check.note("doubled", f"ticket {ticket_id} has {len(ids)} events of version {version}")
    return check


def _published(events: list[Envelope], published: list[Published]) -> Check:
    """Each domain event's public events, as the publisher maps them, once where they belong."""
    expected: dict[str, tuple[str, wf.WorkflowEvent]] = {}
    for envelope in _distinct(events):
        for topic, message in publications(envelope):
            expected[message.event_id] = (topic, message)
    where: dict[str, list[Published]] = defaultdict(list)
    for record in published:
        where[record.message.event_id].append(record)
    check = Check("published")
    for event_id, (topic, message) in expected.items():
        check.expected += 1
        found = where.get(event_id, [])
        there = [r for r in found if r.topic == topic]
        kind = message.WhichOneof("event")
        if not there:
            check.note("lost", f"{kind} {event_id} of {message.subject_id} not on {topic}")
        else:
            check.seen += 1
            if len(there) > 1:
                check.note("doubled", f"{kind} {event_id} on {topic} {len(there)} times")
            if any(r.message != message for r in there):
                check.note("misrecorded", f"{kind} {event_id} on {topic} differs from its domain event")
        for record in found:
            if record.topic != topic:
                check.note("misrecorded", f"{kind} {event_id} for {topic} on {record.topic}")
    for event_id, records in where.items():
        if event_id not in expected:
            for record in records:
                kind = record.message.WhichOneof("event")
                check.note("misrecorded", f"{record.topic}: {kind} {event_id} of no domain event")
    return check


def _inbox_work(lifecycles: list[Lifecycle], published: list[Published]) -> Check:
    """Each dispatch's work in its department's inbox once, and in no other department's."""
    work: dict[str, list[str]] = defaultdict(list)
    for record in published:
        if record.topic != PUBLIC_TOPIC and record.message.WhichOneof("event") == "work_dispatched":
            work[record.message.work_dispatched.dispatch_id].append(record.topic)
    check = Check("inbox work")
    for life in lifecycles:
        for dispatch_id, code in zip(life.dispatch_ids, life.departments, strict=False):
            check.expected += 1
            inbox = inbox_topic(code)
            topics = work.get(dispatch_id, [])
            mine = topics.count(inbox)
            if not mine:
                check.note("lost", f"{life.key}: dispatch {dispatch_id} not in {inbox}")
            else:
                check.seen += 1
                if mine > 1:
                    check.note("doubled", f"{life.key}: dispatch {dispatch_id} {mine} times in {inbox}")
            for other in sorted(set(topics) - {inbox}):
                check.note("misrecorded", f"{life.key}: dispatch {dispatch_id} for {code} in {other}")
    return check


def dead_letters(kafka: KafkaSettings, poisons: list[Poison]) -> Check:
    """Each poison record dead-lettered once by the consumer that must, with its bytes and a reason."""
    found: dict[tuple[str, int, int, str], list[tuple[bytes, str]]] = defaultdict(list)
    wanted = {(p.topic, p.partition, p.offset) for p in poisons}
    for _, record in committed(kafka, (DEADLETTER_TOPIC,)):
        headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers() or ()}
        try:
            origin = (
                headers["deadletter.topic"],
                int(headers["deadletter.partition"]),
                int(headers["deadletter.offset"]),
            )
        except (KeyError, ValueError):
            continue
        if origin in wanted:
            found[(*origin, headers.get("deadletter.consumer", ""))].append(
                (record.value() or b"", headers.get(REASON_HEADER, ""))
            )
    check = Check("dead letters")
    for poison in poisons:
        check.expected += 1
        copies = found.get((poison.topic, poison.partition, poison.offset, poison.consumer), [])
        where = f"{poison.what} at {poison.topic}[{poison.partition}]@{poison.offset} by {poison.consumer}"
        if not copies:
            check.note("lost", f"{where}: not dead-lettered")
            continue
        check.seen += 1
        if len(copies) > 1:
            check.note("doubled", f"{where}: dead-lettered {len(copies)} times")
        value, reason = copies[0]
        if value != poison.value or not reason or reason == "unknown":
            check.note(
                "misrecorded",
                f"{where}: reason {reason!r}, bytes {'equal' if value == poison.value else 'differ'}",
            )
    return check


def reasons(kafka: KafkaSettings, poisons: list[Poison]) -> dict[str, str]:
    """The reason each poison record was dead-lettered with, by what it is (for the report)."""
    positions = {(p.topic, p.partition, p.offset, p.consumer): p.what for p in poisons}
    said: dict[str, str] = {}
    for _, record in committed(kafka, (DEADLETTER_TOPIC,)):
        headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers() or ()}
        key = (
            headers.get("deadletter.topic", ""),
            int(headers.get("deadletter.partition", "-1") or -1),
            int(headers.get("deadletter.offset", "-1") or -1),
            headers.get("deadletter.consumer", ""),
        )
        if key in positions:
            said[f"{positions[key]} on {key[0]}"] = headers.get(REASON_HEADER, "")
    return said
