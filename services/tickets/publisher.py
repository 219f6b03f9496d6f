"""The publisher: tickets' domain events mapped, one by one and explicitly, to public workflow events.

A reaction over the tickets' own topic, exactly once like any other: what it publishes and the
offsets it consumed commit in one transaction. ``workflow.public.v1`` gets what anyone may know
(ids, departments, types, deadlines, outcomes; no free text, nobody's identity); a department's
``dept.<code>.inbox.v1`` gets what that department must act on, with the ticket's summary and the
dispatch's instructions. Events the mapping does not name are not published: an internal event never
leaves as it is. ``docs/events.md`` is the subscribers' guide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from callcenter.tickets.v1 import events_pb2 as ev
from callcenter.workflow.v1 import events_pb2 as wf
from google.protobuf.message import Message

from services.platform.envelope import Envelope
from services.platform.eventstore import Transaction
from services.platform.topics import inbox_topic
from services.tickets import clocks

PUBLIC_TOPIC = "workflow.public.v1"
# The namespace of published event ids (derived from the domain event's id and the topic): never change it.
PUBLISHED_IDS = uuid.UUID("3c8b1f27-94d6-4e0a-b5a2-6d1e8f9c0b47")

_ROLES = {ev.DISPATCH_ROLE_LEAD: "lead", ev.DISPATCH_ROLE_ASSISTING: "assisting"}


def publications(envelope: Envelope) -> Iterator[tuple[str, wf.WorkflowEvent]]:
    """(topic, message) for each public event this domain event maps to; none for most."""
    event = envelope.payload
    for topic, field, payload in _mapped(event):
        message = wf.WorkflowEvent(
            event_id=str(uuid.uuid5(PUBLISHED_IDS, f"{envelope.event_id}/{topic}")),
            occurred_at=clocks.ts(envelope.occurred_at),
            correlation_id=envelope.correlation_id,
            subject_id=envelope.aggregate_id,
        )
        getattr(message, field).CopyFrom(payload)
        yield topic, message


def publish(envelope: Envelope, tx: Transaction) -> None:
    """The publisher's handler: its public events go out in the unit that consumes the domain event."""
    for topic, message in publications(envelope):
        tx.publish(topic, envelope.aggregate_id.encode(), message.SerializeToString())


def _mapped(event: Message) -> Iterator[tuple[str, str, Message]]:
    public, inbox = PUBLIC_TOPIC, inbox_topic
    match event:
        case ev.TicketDispatched():
            work = wf.WorkDispatched(
                ticket_id=event.ticket_id,
                dispatch_id=event.dispatch_id,
                department=event.department,
                ticket_type=_type_name(event.ticket_type),
                priority=event.priority,
                due_at=event.due_at,
                role=_ROLES.get(event.role, "lead"),
                category=event.category,
                accept_due=event.accept_due,
                redo=event.redo,
                replaces_dispatch_id=event.replaces_dispatch_id,
            )
            yield public, "work_dispatched", work
            for_department = wf.WorkDispatched()
            for_department.CopyFrom(work)
            for_department.summary = event.summary
            for_department.instructions = event.instructions
            yield inbox(event.department), "work_dispatched", for_department
        case ev.DispatchAccepted():
            yield public, "work_accepted", wf.WorkAccepted(**_dispatch_fields(event), on_time=event.on_time)
        case ev.DispatchReturned():
            yield public, "work_returned", wf.WorkReturned(**_dispatch_fields(event))
        case ev.DispatchReturnAccepted() | ev.DispatchReturnRefused():
            accepted = isinstance(event, ev.DispatchReturnAccepted)
            reviewed = wf.ReturnReviewed(**_dispatch_fields(event), accepted=accepted)
            yield public, "return_reviewed", reviewed
            yield inbox(event.department), "return_reviewed", reviewed
        case ev.DispatchExtensionGranted():
            reviewed = wf.ExtensionReviewed(**_dispatch_fields(event), granted=True, due_at=event.due_at)
            yield public, "extension_reviewed", reviewed
            yield inbox(event.department), "extension_reviewed", reviewed
        case ev.DispatchExtensionRefused():
            reviewed = wf.ExtensionReviewed(**_dispatch_fields(event), granted=False)
            yield public, "extension_reviewed", reviewed
            yield inbox(event.department), "extension_reviewed", reviewed
        case ev.DispatchCompleted():
            completed = wf.WorkCompleted(
                **_dispatch_fields(event), resolved=event.resolved, on_time=event.on_time
            )
            yield public, "work_completed", completed
        case ev.SlaBreached():
            missed = wf.DeadlineMissed(
                subject_id=event.dispatch_id or event.ticket_id,
                clock=_clock_name(event.clock, event.dispatch_id),
                department=event.department,
                due_at=event.due_at,
                ticket_id=event.ticket_id,
                dispatch_id=event.dispatch_id,
            )
            yield public, "deadline_missed", missed
            if event.department:
                yield inbox(event.department), "deadline_missed", missed
        case ev.SupervisionNoticeIssued() | ev.DispatchEscalated():
            level = "notice" if isinstance(event, ev.SupervisionNoticeIssued) else "escalation"
            notice = wf.SupervisionNotice(**_dispatch_fields(event), due_at=event.due_at, level=level)
            yield public, "supervision_notice", notice
            yield inbox(event.department), "supervision_notice", notice
        case ev.FollowUpRecorded():
            result = wf.FollowUpResult(
                ticket_id=event.ticket_id,
                department=event.department,
                reached=event.reached,
                resolved=event.resolved,
                satisfaction=_satisfaction_name(event.satisfaction),
                redo=event.department_at_fault,
            )
            yield public, "follow_up_result", result
            if event.department:
                yield inbox(event.department), "follow_up_result", result


def _dispatch_fields(event: Message) -> dict[str, str]:
    return {
        "ticket_id": event.ticket_id,  # type: ignore[attr-defined]
        "dispatch_id": event.dispatch_id,  # type: ignore[attr-defined]
        "department": event.department,  # type: ignore[attr-defined]
    }


def _type_name(ticket_type: int) -> str:
    return ev.TicketType.Name(ticket_type).removeprefix("TICKET_TYPE_").lower()


def _satisfaction_name(satisfaction: int) -> str:
    if not satisfaction:
        return ""
    return ev.Satisfaction.Name(satisfaction).removeprefix("SATISFACTION_").lower()


def _clock_name(clock: int, dispatch_id: str) -> str:
    name = clocks.name(clock)
    return name if dispatch_id else f"ticket_{name}"
