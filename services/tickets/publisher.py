"""The tickets' publisher: their domain events mapped, one by one and explicitly, to public events
(``services.platform.publishing`` runs it, exactly once).

``workflow.public.v1`` gets what anyone may know (ids, departments, types, deadlines, outcomes; no
free text, nobody's identity); a department's ``dept.<code>.inbox.v1`` gets what that department
must act on, with the ticket's summary and the dispatch's instructions.
"""

from __future__ import annotations

from collections.abc import Iterator

from callcenter.tickets.v1 import events_pb2 as ev
from callcenter.workflow.v1 import events_pb2 as wf
from google.protobuf.message import Message

from services.platform import publishing
from services.platform.envelope import Envelope
from services.platform.eventstore import Transaction
from services.platform.publishing import PUBLIC_TOPIC
from services.platform.topics import inbox_topic
from services.tickets import clocks

_ROLES = {ev.DISPATCH_ROLE_LEAD: "lead", ev.DISPATCH_ROLE_ASSISTING: "assisting"}


def publications(envelope: Envelope) -> Iterator[tuple[str, wf.WorkflowEvent]]:
    """(topic, message) for each public event this domain event maps to; none for most."""
    return publishing.publications(envelope, _mapped)


def _mapped(envelope: Envelope, _tx: Transaction | None = None) -> Iterator[tuple[str, str, Message]]:
    public, inbox, event = PUBLIC_TOPIC, inbox_topic, envelope.payload
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


# The publisher's handler: its public events go out in the unit that consumes the domain event.
publish = publishing.publisher(_mapped)


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
