"""The approvals' publisher: their domain events mapped, one by one and explicitly, to public events
(``services.platform.publishing`` runs it, exactly once).

A department learns of each step it decides (``ApprovalNeeded``: opened, reminded, escalated to it),
of a step it let pass its deadline (``DeadlineMissed``), and of the end of every request it was asked
about (``ApprovalConcluded``), on its inbox and on ``workflow.public.v1``. The center's own steps
(department ``center``) are public only: the center has no inbox. No justification, comment or
anyone's identity leaves: only ids, departments, kinds, amounts, deadlines and outcomes.
"""

from __future__ import annotations

from collections.abc import Iterator

from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.common.v1 import types_pb2
from callcenter.workflow.v1 import events_pb2 as wf
from google.protobuf.message import Message

from services.approvals import domain
from services.approvals.domain import ApprovalRequest
from services.approvals.policies import CENTER
from services.platform import publishing
from services.platform.envelope import Envelope
from services.platform.eventstore import Transaction
from services.platform.publishing import PUBLIC_TOPIC
from services.platform.topics import inbox_topic

_OUTCOMES = {
    "ApprovalGranted": "granted",
    "ApprovalRejected": "rejected",
    "ApprovalExpired": "expired",
    "ApprovalWithdrawn": "withdrawn",
}


def publications(envelope: Envelope, tx: Transaction | None = None) -> Iterator[tuple[str, wf.WorkflowEvent]]:
    """(topic, message) for each public event this domain event maps to; none for most."""
    return publishing.publications(envelope, _mapped, tx)


def _mapped(envelope: Envelope, tx: Transaction | None) -> Iterator[tuple[str, str, Message]]:
    event = envelope.payload
    # What never changes on a request (its ticket, kind, amount) and who was asked so far, from its state.
    approval: ApprovalRequest = tx.load(domain.KIND, envelope.aggregate_id).state if tx else ApprovalRequest()
    match event:
        case ev.ApprovalStepOpened():
            for decider in _distinct(event.deciders):
                needed = _needed(approval, event.step_index, decider, event.deadline)
                yield from _to(decider.department, "approval_needed", needed)
        case ev.ApprovalReminderSent() if approval.exists:
            step = approval.steps[event.step_index]
            open_deciders = [step.places[n].decider for n in step.open_places]
            for decider in _distinct(ev.Decider(department=d.department, role=d.role) for d in open_deciders):
                needed = _needed(approval, event.step_index, decider, event.deadline)
                needed.reminder = True
                yield from _to(decider.department, "approval_needed", needed, public=False)
        case ev.ApprovalStepEscalated():
            missed = _missed(approval, event.from_department, event.missed_deadline)
            yield from _to(event.from_department, "deadline_missed", missed)
            needed = _needed(approval, event.step_index, event.to, event.new_deadline)
            needed.escalated = True
            yield from _to(event.to.department, "approval_needed", needed)
        case ev.ApprovalExpired() if approval.exists:
            step = approval.steps[event.step_index]
            for department in sorted({step.places[n].decider.department for n in step.open_places}):
                yield from _to(
                    department, "deadline_missed", _missed(approval, department, event.missed_deadline)
                )
    outcome = _OUTCOMES.get(envelope.event_type)
    if outcome is not None:
        concluded = wf.ApprovalConcluded(
            approval_id=event.approval_id, ticket_id=event.ticket_id or approval.ticket_id, outcome=outcome
        )
        yield PUBLIC_TOPIC, "approval_concluded", concluded
        for department in _asked(approval):
            yield inbox_topic(department), "approval_concluded", concluded


def _to(
    department: str, field: str, payload: Message, public: bool = True
) -> Iterator[tuple[str, str, Message]]:
    if public:
        yield PUBLIC_TOPIC, field, payload
    if department != CENTER:
        yield inbox_topic(department), field, payload


def _distinct(deciders: Iterator[ev.Decider] | list[ev.Decider]) -> list[ev.Decider]:
    seen: dict[tuple[str, str], ev.Decider] = {}
    for decider in deciders:
        seen.setdefault((decider.department, decider.role), decider)
    return list(seen.values())


def _needed(
    approval: ApprovalRequest, step_index: int, decider: ev.Decider, deadline: Message
) -> wf.ApprovalNeeded:
    name = approval.steps[step_index].name if step_index < len(approval.steps) else ""
    return wf.ApprovalNeeded(
        approval_id=approval.approval_id,
        ticket_id=approval.ticket_id,
        step_index=step_index,
        department=decider.department,
        role=decider.role,
        kind=approval.kind,
        amount=types_pb2.Money(minor_units=approval.amount_minor, currency=approval.currency),
        deadline=deadline,
        step_name=name,
    )


def _missed(approval: ApprovalRequest, department: str, due_at: Message) -> wf.DeadlineMissed:
    return wf.DeadlineMissed(
        subject_id=approval.approval_id,
        clock="approval_step",
        department=department,
        due_at=due_at,
        ticket_id=approval.ticket_id,
    )


def _asked(approval: ApprovalRequest) -> list[str]:
    """The departments (with an inbox) asked so far: those of every step opened, backups included."""
    asked = {
        place.decider.department
        for step in approval.steps
        if step.status != "waiting"
        for place in step.places
    }
    return sorted(asked - {CENTER})


# The publisher's handler: its public events go out in the unit that consumes the domain event.
publish = publishing.publisher(_mapped)
