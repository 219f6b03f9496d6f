"""The approvals workload and its facts: approvals asked for by tickets (the tickets' RequestApproval,
so the approvals service opens them by its reaction to the ticket's event) and directly through the
approvals API, decided step by step by the deciders each step names, with tokens of their own (the
center's team lead by title, a department's member by its department claim); then what the approvals
service recorded and published, and how the tickets reacted, against it.

A fact here is one thing the center and the departments must know afterwards, at one place:
- ``approval requests``: one ApprovalRequested for each approval asked for, by the rule the policy
  (deploy/approvals/approvals-v1.yaml) chooses for its kind and amount;
- ``approval decisions``: one ApprovalDecided for each decision made (step, decider, decision), no other;
- ``approval outcomes``: each request concluded once (granted or rejected), as its decisions imply;
- ``approval records``: each event of the approvals once on ``approvals.events.v1`` (by id, by version);
- ``approvals published``: each public event the publisher maps the approvals' events to, once on
  its topic, as mapped, and nowhere else;
- ``approval notices``: each step's ApprovalNeeded once on ``workflow.public.v1`` and once in the
  inbox of each department it asks (none for the center's own steps), each ApprovalConcluded once
  on the public topic and in the inbox of each department asked, and in no other inbox;
- ``ticket reactions``: a ticket that asked for the approval asked once and heard the outcome once
  (its TicketApprovalConcluded); a ticket that did not ask hears nothing;
- ``approval lifecycles``: each lifecycle's requests all answered (retried with the same request id
  while a service is away), so a refusal is a failure, not a smaller truth.
Poison records where the approvals service consumes are dead-lettered as ``faults/tickets.py`` checks.
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
from callcenter.approvals.v1 import events_pb2 as approval_ev
from callcenter.approvals.v1 import service_pb2 as pb
from callcenter.approvals.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2
from callcenter.common.v1.envelope_pb2 import EventEnvelope
from callcenter.tickets.v1 import events_pb2 as ticket_ev
from callcenter.tickets.v1 import service_pb2 as tickets_pb
from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc
from callcenter.workflow.v1 import events_pb2 as wf
from confluent_kafka import Producer
from simulator.callers import CallerChannel, local_issuer

from faults.facts import Check, committed
from faults.tickets import RETRIED, Poison
from services.approvals import domain
from services.approvals.domain import ApprovalRequest
from services.approvals.handlers import approval_id_for
from services.approvals.handlers import registry as approvals_registry
from services.approvals.publisher import publications
from services.platform.envelope import Cause, Envelope, PoisonEvent, decode, encode, make_envelope
from services.platform.identity import Role
from services.platform.publishing import PUBLIC_TOPIC
from services.platform.settings import KafkaSettings
from services.platform.topics import department_codes, inbox_topic
from services.tickets.handlers import child_id, ticket_id_for
from services.tickets.handlers import registry as tickets_registry

EVENTS_TOPIC = "approvals.events.v1"
TICKETS_TOPIC = "tickets.events.v1"
CENTER = "center"
APPROVE, REJECT = approval_ev.DECISION_APPROVE, approval_ev.DECISION_REJECT
OUTCOMES = {
    "ApprovalGranted": "granted",
    "ApprovalRejected": "rejected",
    "ApprovalExpired": "expired",
    "ApprovalWithdrawn": "withdrawn",
}
STATUSES = {"granted": pb.APPROVAL_STATUS_GRANTED, "rejected": pb.APPROVAL_STATUS_REJECTED}
CALL_TIMEOUT_S = 5.0
# The deciders of the policy's steps: (department, role) -> who decides there, and with what token.
DECIDERS = {
    (CENTER, "team_lead"): ("chaos-team-lead", Role.AGENT, "", ("team_lead",)),
    ("finance", ""): ("chaos-finance-1", Role.DEPARTMENT, "finance", ()),
    ("legal", ""): ("chaos-legal-1", Role.DEPARTMENT, "legal", ()),
}
LEAD, FINANCE, LEGAL = (CENTER, "team_lead"), ("finance", ""), ("legal", "")


@dataclass(frozen=True)
class Plan:
    """What one approval asks for, which rule must take it, each step's deciders as the policy names
    them (written out here: the truth, not read from the service's policy), and how it is decided."""

    name: str
    kind: str
    amount_minor: int
    rule: str
    steps: tuple[tuple[tuple[str, str], ...], ...]
    decisions: tuple[tuple[int, tuple[str, str], int], ...]  # (step, decider, decision) in order
    outcome: str
    via_ticket: bool

    @property
    def opened(self) -> tuple[tuple[tuple[str, str], ...], ...]:
        """The steps that open: up to the one of the last decision."""
        return self.steps[: self.decisions[-1][0] + 1]

    @property
    def asked(self) -> set[str]:
        """The departments with an inbox that are asked (their step opened)."""
        return {department for step in self.opened for department, _ in step} - {CENTER}


PLANS = (
    Plan(
        "refund-medium granted",
        "refund",
        300_000,
        "refund-medium",
        ((LEAD,), (FINANCE,)),
        ((0, LEAD, APPROVE), (1, FINANCE, APPROVE)),
        "granted",
        via_ticket=True,
    ),
    Plan(
        "refund-small rejected",
        "refund",
        50_000,
        "refund-small",
        ((LEAD,),),
        ((0, LEAD, REJECT),),
        "rejected",
        via_ticket=True,
    ),
    Plan(
        "refund-large granted",
        "refund",
        2_000_000,
        "refund-large",
        ((LEAD,), (FINANCE,), (LEGAL,)),
        ((0, LEAD, APPROVE), (1, FINANCE, APPROVE), (2, LEGAL, APPROVE)),
        "granted",
        via_ticket=False,
    ),
    Plan(
        "refund-medium rejected by finance",
        "compensation",
        450_000,
        "refund-medium",
        ((LEAD,), (FINANCE,)),
        ((0, LEAD, APPROVE), (1, FINANCE, REJECT)),
        "rejected",
        via_ticket=True,
    ),
    Plan(
        "contract-change 2 of 3",
        "contract_change",
        0,
        "contract-change",
        ((FINANCE, LEGAL, (CENTER, "duty_manager")),),
        ((0, FINANCE, APPROVE), (0, LEGAL, APPROVE)),
        "granted",
        via_ticket=False,
    ),
)


@dataclass
class ApprovalLife:
    """One approval as its requester and deciders lived it: what they asked and were answered."""

    number: int
    plan: Plan
    key: str  # the prefix of its request ids
    ticket_id: str
    approval_id: str
    answered_approval_id: str = ""
    rule: str = ""
    decided: list[tuple[int, str, int]] = field(default_factory=list)  # (step, approver, decision)
    status: int = 0
    ticket_concluded: bool = False
    done: bool = False
    error: str = ""


def approval_life(run_id: str, number: int) -> ApprovalLife:
    """The ``number``-th approval of a run: the plans in turn; its ids known before any answer."""
    plan = PLANS[number % len(PLANS)]
    key = f"{run_id}-p{number:03d}"
    if plan.via_ticket:
        ticket_id = ticket_id_for(f"{key}-create")
        approval_id = child_id(f"{key}-ask", "approval")
    else:
        ticket_id = f"{key}-no-ticket"  # named by the request; no ticket waits for it
        approval_id = approval_id_for(f"{key}-ask")
    return ApprovalLife(number, plan, key, ticket_id, approval_id)


class ApprovalDesk:
    """Plays ``count`` approval lifecycles spread over ``over_s`` seconds, a few at once: tickets
    created and sent for approval through the tickets service at ``tickets``, or approvals requested
    directly of the approvals service at ``approvals``, then decided by each step's deciders."""

    def __init__(
        self,
        tickets: str,
        approvals: str,
        run_id: str,
        count: int,
        over_s: float,
        retry_for_s: float = 120.0,
        workers: int = 4,
    ) -> None:
        self.run_id = run_id
        self.lifecycles = [approval_life(run_id, n) for n in range(count)]
        self.retried: Counter[str] = Counter()
        self._over_s = over_s
        self._retry_for_s = retry_for_s
        self._workers = workers
        self._tickets = tickets_grpc.TicketsServiceStub(CallerChannel(tickets))
        self._approvals = service_pb2_grpc.ApprovalsServiceStub(CallerChannel(approvals))
        self._deciders = {
            place: service_pb2_grpc.ApprovalsServiceStub(CallerChannel(approvals, _token(*who)))
            for place, who in DECIDERS.items()
        }
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="approval-desk", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        began = time.monotonic()
        spacing = self._over_s / max(1, len(self.lifecycles))
        with ThreadPoolExecutor(self._workers, thread_name_prefix="approval-life") as pool:
            for life in self.lifecycles:
                time.sleep(max(0.0, began + life.number * spacing - time.monotonic()))
                pool.submit(self._live, life)

    def _live(self, life: ApprovalLife) -> None:
        plan = life.plan
        try:
            amount = types_pb2.Money(minor_units=plan.amount_minor, currency="CNY")
            if plan.via_ticket:
                self._call(self._tickets.CreateTicket, _create(life))
                asked = tickets_pb.RequestApprovalRequest(
                    request_id=f"{life.key}-ask",
                    ticket_id=life.ticket_id,
                    kind=plan.kind,
                    amount=amount,
                    justification=f"chaos approval {life.key}",
                    customer_tier="gold",
                )
                life.answered_approval_id = self._call(self._tickets.RequestApproval, asked).approval_id
            else:
                asked = pb.RequestApprovalRequest(
                    request_id=f"{life.key}-ask",
                    ticket_id=life.ticket_id,
                    kind=plan.kind,
                    amount=amount,
                    justification=f"chaos approval {life.key}",
                    ticket_type="complaint",
                )
                answer = self._call(self._approvals.RequestApproval, asked)
                life.answered_approval_id = answer.approval.approval_id
            # A ticket's request opens when the approvals' reaction reads it: not found until then.
            get = pb.GetRequestRequest(approval_id=life.approval_id)
            view = self._call(self._approvals.GetRequest, get, also=(grpc.StatusCode.NOT_FOUND,)).approval
            life.rule = view.rule
            for number, (step, place, decision) in enumerate(plan.decisions):
                decide = pb.DecideRequest(
                    request_id=f"{life.key}-decide-{number}",
                    approval_id=life.approval_id,
                    step_index=step,
                    decision=decision,
                    comment="chaos decision",
                )
                view = self._call(self._deciders[place].Decide, decide).approval
                life.decided.append((step, DECIDERS[place][0], decision))
            life.status = view.status
            if plan.via_ticket:
                self._await_ticket(life)
            life.done = True
        except grpc.RpcError as error:
            life.error = f"{error.code().name}: {error.details()}"
        except Exception as error:  # the desk's own failure is the scenario's, not the service's
            life.error = f"{type(error).__name__}: {error}"

    def _await_ticket(self, life: ApprovalLife) -> None:
        """The ticket hears the outcome by its reaction: it stops waiting for the approval."""
        deadline = time.monotonic() + self._retry_for_s
        request = tickets_pb.GetTicketRequest(ticket_id=life.ticket_id)
        while True:
            ticket = self._call(self._tickets.GetTicket, request).ticket
            if ticket.pending_approval_id != life.approval_id:
                life.ticket_concluded = True
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"ticket {life.ticket_id} still waits for approval {life.approval_id}")
            time.sleep(0.3)

    def _call(self, rpc: Callable[..., Any], request: Any, also: Iterable[grpc.StatusCode] = ()) -> Any:
        """The request, again and unchanged (the same request id) while it is refused for now."""
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


def _create(life: ApprovalLife) -> tickets_pb.CreateTicketRequest:
    return tickets_pb.CreateTicketRequest(
        request_id=f"{life.key}-create",
        type=ticket_ev.TICKET_TYPE_COMPLAINT,
        priority=3,
        summary=f"chaos approval ticket {life.key}",
        category="water.billing",
        customer=types_pb2.PartyReference(hash="cd" * 32, masked="*******1234"),
    )


def _token(subject: str, role: Role, department: str, titles: tuple[str, ...]) -> Callable[[str, Any], str]:
    scopes = {"department": department} if department else {}
    bearer = local_issuer().for_role(role, subject, titles=titles, **scopes)
    return lambda _method, _request: bearer


# Poison -------------------------------------------------------------------------------------------


def write_poison(kafka: KafkaSettings, run_id: str) -> list[Poison]:
    """Records that are not events of ours where the approvals service consumes: tickets' topic (its
    reaction to requests for sign-off, group "approvals", which the tickets' publisher reads too) and
    its own (its publisher, group "approvals-publisher", which the tickets' reaction reads too)."""
    asked = make_envelope(
        ticket_ev.TicketApprovalRequested(
            ticket_id=f"{run_id}-poison-t2", approval_id=f"{run_id}-poison-p2", kind="refund"
        ),
        registry=tickets_registry(),
        aggregate_type="Ticket",
        aggregate_id=f"{run_id}-poison-t2",
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(f"{run_id}-poison-t2"),
    )
    granted = make_envelope(
        approval_ev.ApprovalGranted(approval_id=f"{run_id}-poison-p5", ticket_id=f"{run_id}-poison-t5"),
        registry=approvals_registry(),
        aggregate_type=domain.KIND,
        aggregate_id=f"{run_id}-poison-p5",
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(f"{run_id}-poison-p5"),
    )
    tickets_readers = ("approvals", "tickets-publisher")
    approvals_readers = ("approvals-publisher", "tickets")
    planned: list[tuple[str, str, bytes, list[tuple[str, bytes]], tuple[str, ...], str]] = [
        (
            TICKETS_TOPIC,
            f"{run_id}-poison-t1",
            b"\x08\x96\x01 not an envelope",
            [],
            tickets_readers,
            "undecodable",
        ),
        (
            TICKETS_TOPIC,
            f"{run_id}-poison-t2",
            *_with_version(asked, 9),
            tickets_readers,
            "TicketApprovalRequested v9",
        ),
        (
            TICKETS_TOPIC,
            f"{run_id}-poison-t3",
            *_with_payload(asked, f"{run_id}-poison-t3", b"\xff\xff\xff garbage"),
            tickets_readers,
            "TicketApprovalRequested whose payload does not parse",
        ),
        (EVENTS_TOPIC, f"{run_id}-poison-p4", b"\xff\xfe garbage", [], approvals_readers, "undecodable"),
        (
            EVENTS_TOPIC,
            f"{run_id}-poison-p5",
            *_with_version(granted, 9),
            approvals_readers,
            "ApprovalGranted v9",
        ),
    ]
    producer = Producer({**kafka.client_config(), "enable.idempotence": True})
    placed: list[Poison] = []

    def delivered(error: Any, message: Any, readers: tuple[str, ...], what: str) -> None:
        if error is None:
            for consumer in readers:
                placed.append(
                    Poison(
                        message.topic(),
                        message.partition(),
                        message.offset(),
                        message.value(),
                        consumer,
                        what,
                    )
                )

    for topic, key, value, headers, readers, what in planned:
        producer.produce(
            topic,
            value,
            key.encode(),
            headers=headers,
            on_delivery=lambda e, m, r=readers, w=what: delivered(e, m, r, w),
        )
    wanted = sum(len(readers) for *_, readers, _ in planned)
    if producer.flush(30) or len(placed) != wanted:
        raise RuntimeError(f"only {len(placed)} of {wanted} poison deliveries were written")
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


# The facts ----------------------------------------------------------------------------------------


@dataclass
class Recorded:
    """What the approvals service and the tickets service recorded about a run's approvals."""

    approvals: list[Envelope]
    tickets: list[Envelope]
    published: list[tuple[str, wf.WorkflowEvent]]


_APPROVALS = approvals_registry()
_TICKETS = tickets_registry()


def read_approvals(kafka: KafkaSettings, lifecycles: list[ApprovalLife]) -> Recorded:
    """The approvals' events, their tickets' events, and every public and inbox record about them."""
    approval_ids = {life.approval_id for life in lifecycles}
    ticket_ids = {life.ticket_id for life in lifecycles}
    recorded = Recorded([], [], [])
    topics = (EVENTS_TOPIC, TICKETS_TOPIC, PUBLIC_TOPIC, *(inbox_topic(code) for code in department_codes()))
    for topic, record in committed(kafka, topics):
        key = (record.key() or b"").decode(errors="replace")
        try:
            if topic == EVENTS_TOPIC and key in approval_ids:
                recorded.approvals.append(decode(record.value(), record.headers(), _APPROVALS))
            elif topic == TICKETS_TOPIC and key in ticket_ids:
                recorded.tickets.append(decode(record.value(), record.headers(), _TICKETS))
            elif topic not in (EVENTS_TOPIC, TICKETS_TOPIC) and key in approval_ids:
                recorded.published.append((topic, wf.WorkflowEvent.FromString(record.value())))
        except PoisonEvent:
            continue
    return recorded


def compare_approvals(lifecycles: list[ApprovalLife], recorded: Recorded) -> list[Check]:
    """The approvals' facts: what the requesters and deciders lived against what was recorded."""
    by_approval: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in _distinct(recorded.approvals):
        by_approval[envelope.aggregate_id].append(envelope)
    by_ticket: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in _distinct(recorded.tickets):
        by_ticket[envelope.aggregate_id].append(envelope)
    return [
        _lifecycles(lifecycles),
        _requests(lifecycles, by_approval),
        _decisions(lifecycles, by_approval),
        _outcomes(lifecycles, by_approval),
        _records(recorded.approvals),
        _published(by_approval, recorded.published),
        _notices(lifecycles, recorded.published),
        _reactions(lifecycles, by_ticket),
    ]


def _distinct(envelopes: Iterable[Envelope]) -> list[Envelope]:
    return list({e.event_id: e for e in envelopes}.values())


def _lifecycles(lifecycles: list[ApprovalLife]) -> Check:
    check = Check("approval lifecycles")
    for life in lifecycles:
        check.expected += 1
        if life.done:
            check.seen += 1
        else:
            check.note(
                "lost", f"{life.key} ({life.plan.name}) did not finish: {life.error or 'still running'}"
            )
    return check


def _requests(lifecycles: list[ApprovalLife], by_approval: dict[str, list[Envelope]]) -> Check:
    check = Check("approval requests")
    for life in lifecycles:
        if not life.answered_approval_id:
            continue  # never answered: the lifecycle says so; one made unanswered shows as recorded
        check.expected += 1
        requested = [e for e in by_approval[life.approval_id] if e.event_type == "ApprovalRequested"]
        if not requested:
            check.note("lost", f"{life.key}: no ApprovalRequested for {life.approval_id}")
            continue
        check.seen += 1
        if len(requested) > 1:
            check.note("doubled", f"{life.key}: {len(requested)} ApprovalRequested for {life.approval_id}")
        event, plan = requested[0].payload, life.plan
        if (
            event.rule != plan.rule
            or event.kind != plan.kind
            or event.amount.minor_units != plan.amount_minor
            or event.ticket_id != life.ticket_id
            or life.answered_approval_id != life.approval_id
            or (life.rule and life.rule != plan.rule)
        ):
            check.note(
                "misrecorded",
                f"{life.key}: requested {event.kind} {event.amount.minor_units} by rule {event.rule!r} for "
                f"{event.ticket_id}, expected {plan.rule!r}; answered as {life.answered_approval_id}",
            )
    return check


def _decisions(lifecycles: list[ApprovalLife], by_approval: dict[str, list[Envelope]]) -> Check:
    check = Check("approval decisions")
    for life in lifecycles:
        found = Counter(
            (e.payload.step_index, e.payload.approver_id, e.payload.decision)
            for e in by_approval[life.approval_id]
            if e.event_type == "ApprovalDecided"
        )
        for decided in life.decided:
            check.expected += 1
            step, approver, decision = decided
            where = f"{life.key}: step {step} by {approver}"
            if not found[decided]:
                others = [d for d in found if d[:2] == (step, approver)]
                if others:
                    check.note("misrecorded", f"{where}: decided {decision}, recorded {others[0][2]}")
                else:
                    check.note("lost", f"{where}: no ApprovalDecided")
                continue
            check.seen += 1
            if found[decided] > 1:
                check.note("doubled", f"{where}: {found[decided]} ApprovalDecided")
        made = {(step, approver) for step, approver, _ in life.decided}
        for step, approver, _ in found:
            if (step, approver) not in made and len(life.decided) == len(life.plan.decisions):
                check.note("misrecorded", f"{life.key}: a decision at step {step} by {approver} never made")
    return check


def _outcomes(lifecycles: list[ApprovalLife], by_approval: dict[str, list[Envelope]]) -> Check:
    check = Check("approval outcomes")
    for life in lifecycles:
        if len(life.decided) != len(life.plan.decisions):
            continue  # not all decided: the lifecycle says so
        check.expected += 1
        ends = [OUTCOMES[e.event_type] for e in by_approval[life.approval_id] if e.event_type in OUTCOMES]
        if not ends:
            check.note("lost", f"{life.key} ({life.plan.name}): never concluded")
            continue
        check.seen += 1
        if len(ends) > 1:
            check.note("doubled", f"{life.key}: concluded {len(ends)} times: {ends}")
        if ends[0] != life.plan.outcome or life.status != STATUSES[life.plan.outcome]:
            check.note(
                "misrecorded",
                f"{life.key} ({life.plan.name}): concluded {ends[0]}, answered status {life.status}, "
                f"expected {life.plan.outcome}",
            )
    return check


def _records(events: list[Envelope]) -> Check:
    check = Check("approval records")
    counts = Counter(e.event_id for e in events)
    versions: dict[tuple[str, int], set[str]] = defaultdict(set)
    for envelope in events:
        versions[(envelope.aggregate_id, envelope.aggregate_version)].add(envelope.event_id)
    check.expected = check.seen = len(counts)
    for event_id, count in counts.items():
        if count > 1:
            check.note("doubled", f"event {event_id} written {count} times")
    for (approval_id, version), ids in versions.items():
        if len(ids) > 1:
            check.note("doubled", f"approval {approval_id} has {len(ids)} events of version {version}")
    return check


class Now:
    """A transaction's view of one request, as the publisher loads it: its state with every event."""

    def __init__(self, state: ApprovalRequest) -> None:
        self.state = state

    def load(self, _kind: str, _aggregate_id: str) -> Now:
        return self


def _published(
    by_approval: dict[str, list[Envelope]], published: list[tuple[str, wf.WorkflowEvent]]
) -> Check:
    """Each domain event's public events, as the publisher maps them, once where they belong. Several
    public events of one domain event may share a topic (a step with several deciders): each is known
    by its content, not only its id."""
    expected: Counter[tuple[str, bytes]] = Counter()
    ids: dict[str, set[str]] = defaultdict(set)
    unknown = set()
    for approval_id, events in by_approval.items():
        ordered = sorted(events, key=lambda e: e.aggregate_version)
        if not any(e.event_type == "ApprovalRequested" for e in ordered):
            unknown.add(approval_id)  # its request is lost (the requests say so): nothing to map by
            continue
        state = ApprovalRequest()
        for envelope in ordered:
            state = domain.evolve(state, envelope)
        for envelope in ordered:
            for topic, message in publications(envelope, Now(state)):  # type: ignore[arg-type]
                expected[(topic, message.SerializeToString(deterministic=True))] += 1
                ids[message.event_id].add(topic)
    seen: Counter[tuple[str, bytes]] = Counter(
        (topic, message.SerializeToString(deterministic=True))
        for topic, message in published
        if message.subject_id not in unknown
    )
    check = Check("approvals published")
    for (topic, body), count in expected.items():
        message = wf.WorkflowEvent.FromString(body)
        kind = message.WhichOneof("event")
        check.expected += count
        there = seen.get((topic, body), 0)
        check.seen += min(there, count)
        if there < count:
            check.note("lost", f"{kind} {message.event_id} of {message.subject_id} not on {topic}")
        elif there > count:
            check.note("doubled", f"{kind} {message.event_id} on {topic} {there} times")
    for topic, body in seen:
        if (topic, body) in expected:
            continue
        message = wf.WorkflowEvent.FromString(body)
        kind = message.WhichOneof("event")
        if topic in ids.get(message.event_id, set()):
            check.note("misrecorded", f"{topic}: {kind} {message.event_id} differs from its domain event")
        elif message.event_id in ids:
            check.note(
                "misrecorded", f"{kind} {message.event_id} for {sorted(ids[message.event_id])} on {topic}"
            )
        else:
            check.note("misrecorded", f"{topic}: {kind} {message.event_id} of no domain event")
    return check


def _notices(lifecycles: list[ApprovalLife], published: list[tuple[str, wf.WorkflowEvent]]) -> Check:
    """What the departments must hear, from the plans: each opened step's ApprovalNeeded once per
    decider on the public topic and in the decider's department's inbox (the center has none), the
    outcome on the public topic and in each asked department's inbox; nothing in any other inbox."""
    seen: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
    for topic, message in published:
        kind = message.WhichOneof("event")
        if kind == "approval_needed" and not message.approval_needed.reminder:
            need = message.approval_needed
            seen[need.approval_id][(topic, kind, need.step_index, need.department, need.role)] += 1
        elif kind == "approval_concluded":
            done = message.approval_concluded
            seen[done.approval_id][(topic, kind, done.outcome, done.ticket_id)] += 1
    check = Check("approval notices")
    for life in lifecycles:
        plan = life.plan
        if len(life.decided) != len(plan.decisions):
            continue  # not all decided: the lifecycle says so
        wanted: Counter[tuple[Any, ...]] = Counter()
        for index, step in enumerate(plan.opened):
            for department, role in step:
                wanted[(PUBLIC_TOPIC, "approval_needed", index, department, role)] += 1
                if department != CENTER:
                    wanted[(inbox_topic(department), "approval_needed", index, department, role)] += 1
        concluded = ("approval_concluded", plan.outcome, life.ticket_id)
        wanted[(PUBLIC_TOPIC, *concluded)] += 1
        for department in plan.asked:
            wanted[(inbox_topic(department), *concluded)] += 1
        found = seen.get(life.approval_id, Counter())
        for notice, count in wanted.items():
            check.expected += count
            there = found.get(notice, 0)
            check.seen += min(there, count)
            if there < count:
                check.note("lost", f"{life.key} ({plan.name}): {notice[1]} {notice[2:]} not on {notice[0]}")
            elif there > count:
                check.note("doubled", f"{life.key}: {notice[1]} {notice[2:]} {there} times on {notice[0]}")
        for notice in set(found) - set(wanted):
            check.note("misrecorded", f"{life.key} ({plan.name}): {notice[1]} {notice[2:]} on {notice[0]}")
    return check


def _reactions(lifecycles: list[ApprovalLife], by_ticket: dict[str, list[Envelope]]) -> Check:
    check = Check("ticket reactions")
    for life in lifecycles:
        events = by_ticket[life.ticket_id]
        asked = [e for e in events if e.event_type == "TicketApprovalRequested"]
        heard = [e.payload for e in events if e.event_type == "TicketApprovalConcluded"]
        if not life.plan.via_ticket:
            for envelope in events:
                check.note("misrecorded", f"{life.key}: {envelope.event_type} on a ticket that never existed")
            continue
        if life.answered_approval_id:
            check.expected += 1
            if not asked:
                check.note("lost", f"{life.key}: no TicketApprovalRequested on {life.ticket_id}")
            else:
                check.seen += 1
                if len(asked) > 1:
                    check.note("doubled", f"{life.key}: {len(asked)} TicketApprovalRequested")
                if asked[0].payload.approval_id != life.approval_id:
                    check.note("misrecorded", f"{life.key}: asked for {asked[0].payload.approval_id}")
        if len(life.decided) != len(life.plan.decisions):
            continue
        check.expected += 1
        if not heard:
            check.note("lost", f"{life.key}: ticket {life.ticket_id} never heard the {life.plan.outcome}")
            continue
        check.seen += 1
        if len(heard) > 1:
            check.note("doubled", f"{life.key}: ticket {life.ticket_id} heard {len(heard)} outcomes")
        if heard[0].approval_id != life.approval_id or heard[0].outcome != life.plan.outcome:
            check.note(
                "misrecorded",
                f"{life.key}: heard {heard[0].outcome} of {heard[0].approval_id}, "
                f"expected {life.plan.outcome}",
            )
    return check
