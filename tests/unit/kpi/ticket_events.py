"""Hand-made ticket events for the KPI projection tests, as the tickets context writes them.

``TicketStory`` numbers one ticket's events from 1, as its event store would, and writes each step the
way the tickets context does: a dispatch with its acceptance and completion clocks, an acceptance with
its acceptance clock fulfilled, a return pausing the completion clock, and so on. Times are seconds
after ``T0``; ``HOUR`` and ``DAY`` help write them. ``closed_loop`` is the reference ticket: one
dispatch returned, refused back, returned again and re-dispatched, extended, completed late, redone.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.kpi.tickets import TICKET
from services.platform.envelope import Envelope
from tests.support.center import T0
from tests.unit.kpi.events import Stream, duration

HOUR, DAY = 3600.0, 86400.0
CLOCK = ev.SlaClock
FIRST_RESPONSE, RESOLUTION = CLOCK.SLA_CLOCK_FIRST_RESPONSE, CLOCK.SLA_CLOCK_RESOLUTION
ACCEPTANCE, COMPLETION = CLOCK.SLA_CLOCK_DISPATCH_ACCEPTANCE, CLOCK.SLA_CLOCK_DISPATCH_COMPLETION
LEAD, ASSISTING = ev.DispatchRole.DISPATCH_ROLE_LEAD, ev.DispatchRole.DISPATCH_ROLE_ASSISTING
SATISFIED = ev.Satisfaction.SATISFACTION_SATISFIED
BASICALLY_SATISFIED = ev.Satisfaction.SATISFACTION_BASICALLY_SATISFIED
DISSATISFIED = ev.Satisfaction.SATISFACTION_DISSATISFIED
CUSTOMER = "ab" * 32


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(t(seconds))
    return stamp


class TicketStory:
    """One ticket's events in its own order, each step written as the tickets context writes it."""

    def __init__(self, ticket_id: str = "t-1") -> None:
        self.ticket_id = ticket_id
        self.stream = Stream(TICKET, ticket_id)
        self.events: list[Envelope] = []
        # Each dispatch's department and its deadlines (seconds), as the story set them.
        self.departments: dict[str, str] = {}
        self.due: dict[str, float] = {}
        self.responded = False
        self.type, self.priority = ev.TICKET_TYPE_UNSPECIFIED, 0

    def at(self, seconds: float, *payloads: Message) -> list[Envelope]:
        written = [self.stream.at(seconds, payload) for payload in payloads]
        self.events += written
        return written

    # the ticket ---------------------------------------------------------------------------------

    def created(
        self,
        seconds: float = 0.0,
        *,
        type: int = ev.TICKET_TYPE_COMPLAINT,
        priority: int = 3,
        group_id: str = "",
        first_response_in: float = 4 * HOUR,
        resolution_in: float = 5 * DAY,
    ) -> list[Envelope]:
        t_id = self.ticket_id
        self.type, self.priority = type, priority
        return self.at(
            seconds,
            ev.TicketCreated(
                ticket_id=t_id,
                type=type,
                priority=priority,
                summary="Night-time construction noise",
                category="environment.noise",
                source_contact_id="c-1",
                customer=types_pb2.PartyReference(hash=CUSTOMER, masked="*******5678"),
                first_response_due=ts(seconds + first_response_in),
                resolution_due=ts(seconds + resolution_in),
                created_by="agent-7",
                channel=types_pb2.Channel.CHANNEL_VOICE,
                origin=ev.TicketOrigin.TICKET_ORIGIN_WRAP_UP,
                group_id=group_id,
                sla_rule="complaint",
            ),
            self.clock_started(FIRST_RESPONSE, "", seconds + first_response_in),
            self.clock_started(RESOLUTION, "", seconds + resolution_in),
        )

    def clock_started(self, clock: int, dispatch_id: str, due: float) -> ev.SlaClockStarted:
        return ev.SlaClockStarted(
            ticket_id=self.ticket_id, clock=clock, dispatch_id=dispatch_id, due_at=ts(due)
        )

    def fulfilled(
        self, clock: int, dispatch_id: str, elapsed_s: float, breached: bool
    ) -> ev.SlaClockFulfilled:
        return ev.SlaClockFulfilled(
            ticket_id=self.ticket_id,
            clock=clock,
            dispatch_id=dispatch_id,
            elapsed=duration(elapsed_s),
            breached=breached,
        )

    def breached(self, seconds: float, clock: int, dispatch_id: str = "") -> list[Envelope]:
        department = self.departments.get(dispatch_id, "")
        return self.at(
            seconds,
            ev.SlaBreached(
                ticket_id=self.ticket_id, clock=clock, dispatch_id=dispatch_id, department=department
            ),
        )

    def work_started(self, seconds: float) -> list[Envelope]:
        return self.at(seconds, ev.TicketWorkStarted(ticket_id=self.ticket_id, started_by="agent-7"))

    def first_response(self, seconds: float, elapsed_s: float, breached: bool = False) -> list[Envelope]:
        self.responded = True
        return self.at(
            seconds,
            ev.TicketNoteAdded(ticket_id=self.ticket_id, note_id="n-1", text="On it", first_response=True),
            self.fulfilled(FIRST_RESPONSE, "", elapsed_s, breached),
        )

    def awaiting_customer(self, seconds: float) -> list[Envelope]:
        return self.at(seconds, ev.TicketAwaitingCustomer(ticket_id=self.ticket_id, reason="photos"))

    def customer_responded(self, seconds: float) -> list[Envelope]:
        return self.at(seconds, ev.TicketCustomerResponded(ticket_id=self.ticket_id))

    def escalated(
        self, seconds: float, to_group_id: str = "second_line", new_priority: int = 0
    ) -> list[Envelope]:
        self.priority = new_priority or self.priority
        event = ev.TicketEscalated(
            ticket_id=self.ticket_id, to_group_id=to_group_id, new_priority=new_priority
        )
        return self.at(seconds, event)

    def resolved(
        self, seconds: float, elapsed_s: float, *, breached: bool = False, first_contact: bool = False
    ) -> list[Envelope]:
        """Resolved; a ticket not answered yet has its first response with it (the clock is fulfilled)."""
        events: list[Message] = [
            ev.TicketResolved(ticket_id=self.ticket_id, resolution_code="fixed", first_contact=first_contact)
        ]
        if not self.responded:
            self.responded = True
            events.append(self.fulfilled(FIRST_RESPONSE, "", elapsed_s, breached=False))
        events.append(self.fulfilled(RESOLUTION, "", elapsed_s, breached))
        return self.at(seconds, *events)

    def closed(self, seconds: float, reopen_within: float = 30 * DAY) -> list[Envelope]:
        event = ev.TicketClosed(
            ticket_id=self.ticket_id, reason="follow-up", reopen_until=ts(seconds + reopen_within)
        )
        return self.at(seconds, event)

    def reopened(
        self, seconds: float, *, redo: bool = False, resolution_in: float = 5 * DAY
    ) -> list[Envelope]:
        due = seconds + resolution_in
        return self.at(
            seconds,
            ev.TicketReopened(
                ticket_id=self.ticket_id, reason="not fixed", resolution_due=ts(due), redo=redo
            ),
            self.clock_started(RESOLUTION, "", due),
        )

    def merged(self, seconds: float, into: str = "t-main") -> list[Envelope]:
        return self.at(seconds, ev.TicketMerged(ticket_id=self.ticket_id, into_ticket_id=into))

    def follow_up(
        self,
        seconds: float,
        satisfaction: int,
        *,
        department: str,
        at_fault: bool = False,
        reached: bool = True,
    ) -> list[Envelope]:
        recorded = ev.FollowUpRecorded(
            ticket_id=self.ticket_id,
            reached=reached,
            resolved=not at_fault,
            satisfaction=satisfaction if reached else 0,
            csat_score=(5 if satisfaction != DISSATISFIED else 1) if reached else 0,
            department_at_fault=at_fault,
            department=department,
        )
        if not reached:
            return self.at(seconds, recorded)
        score = ev.CsatRecorded(ticket_id=self.ticket_id, score=recorded.csat_score)
        return self.at(seconds, recorded, score)

    # dispatches ----------------------------------------------------------------------------------

    def dispatched(
        self,
        seconds: float,
        dispatch_id: str,
        department: str,
        *,
        role: int = LEAD,
        accept_in: float = DAY,
        due_in: float = 5 * DAY,
        redo: bool = False,
        replaces: str = "",
    ) -> list[Envelope]:
        self.departments[dispatch_id] = department
        self.due[dispatch_id] = seconds + due_in
        return self.at(
            seconds,
            ev.TicketDispatched(
                ticket_id=self.ticket_id,
                dispatch_id=dispatch_id,
                department=department,
                due_at=ts(seconds + due_in),
                role=role,
                accept_due=ts(seconds + accept_in),
                redo=redo,
                replaces_dispatch_id=replaces,
                category="environment.noise",
                ticket_type=self.type,
                priority=self.priority,
            ),
            self.clock_started(ACCEPTANCE, dispatch_id, seconds + accept_in),
            self.clock_started(COMPLETION, dispatch_id, seconds + due_in),
        )

    def _of(self, dispatch_id: str) -> dict[str, str]:
        return {
            "ticket_id": self.ticket_id,
            "dispatch_id": dispatch_id,
            "department": self.departments[dispatch_id],
        }

    def accepted(self, seconds: float, dispatch_id: str, on_time: bool = True) -> list[Envelope]:
        return self.at(
            seconds,
            ev.DispatchAccepted(**self._of(dispatch_id), on_time=on_time),
            self.fulfilled(ACCEPTANCE, dispatch_id, seconds, breached=not on_time),
        )

    def returned(self, seconds: float, dispatch_id: str, *, answers: bool = True) -> list[Envelope]:
        """Returned as not theirs; ``answers``: the first answer, so the acceptance clock stops with it."""
        events: list[Message] = [ev.DispatchReturned(**self._of(dispatch_id), reason="not ours")]
        if answers:
            events.append(self.fulfilled(ACCEPTANCE, dispatch_id, seconds, breached=False))
        events.append(ev.SlaClockPaused(ticket_id=self.ticket_id, clock=COMPLETION, dispatch_id=dispatch_id))
        return self.at(seconds, *events)

    def return_refused(self, seconds: float, dispatch_id: str) -> list[Envelope]:
        return self.at(
            seconds,
            ev.DispatchReturnRefused(**self._of(dispatch_id), note="it is yours"),
            ev.SlaClockResumed(
                ticket_id=self.ticket_id,
                clock=COMPLETION,
                dispatch_id=dispatch_id,
                due_at=ts(self.due[dispatch_id]),
            ),
        )

    def return_accepted(self, seconds: float, dispatch_id: str) -> list[Envelope]:
        return self.at(
            seconds,
            ev.DispatchReturnAccepted(**self._of(dispatch_id), note="agreed"),
            ev.SlaClockCancelled(ticket_id=self.ticket_id, clock=COMPLETION, dispatch_id=dispatch_id),
        )

    def extension_requested(self, seconds: float, dispatch_id: str, to: float) -> list[Envelope]:
        return self.at(
            seconds, ev.DispatchExtensionRequested(**self._of(dispatch_id), requested_due_at=ts(to))
        )

    def extension_granted(self, seconds: float, dispatch_id: str, to: float) -> list[Envelope]:
        self.due[dispatch_id] = to
        return self.at(
            seconds,
            ev.DispatchExtensionGranted(**self._of(dispatch_id), due_at=ts(to)),
            ev.SlaClockExtended(
                ticket_id=self.ticket_id, clock=COMPLETION, dispatch_id=dispatch_id, due_at=ts(to)
            ),
        )

    def extension_refused(self, seconds: float, dispatch_id: str) -> list[Envelope]:
        return self.at(seconds, ev.DispatchExtensionRefused(**self._of(dispatch_id)))

    def supervised(self, seconds: float, dispatch_id: str) -> list[Envelope]:
        return self.at(seconds, ev.SupervisionNoticeIssued(**self._of(dispatch_id)))

    def dispatch_escalated(self, seconds: float, dispatch_id: str) -> list[Envelope]:
        return self.at(seconds, ev.DispatchEscalated(**self._of(dispatch_id)))

    def progress(self, seconds: float, dispatch_id: str) -> list[Envelope]:
        return self.at(seconds, ev.DispatchProgressReported(**self._of(dispatch_id), note="digging"))

    def completed(self, seconds: float, dispatch_id: str, *, resolved: bool = True) -> list[Envelope]:
        late = seconds > self.due[dispatch_id]
        return self.at(
            seconds,
            ev.DispatchCompleted(**self._of(dispatch_id), result="done", resolved=resolved, on_time=not late),
            self.fulfilled(COMPLETION, dispatch_id, seconds, breached=late),
        )


def closed_loop(ticket_id: str = "t-1", housing: str = "housing", water: str = "water_supply") -> TicketStory:
    """A complaint through the 12345 loop. Dispatched to housing, which returns it as not theirs; the
    center refuses the return, housing returns it again and the center accepts: re-dispatched to
    water_supply, which accepts on time, asks for an extension (granted), still completes late after a
    supervision notice. The follow-up finds the citizen dissatisfied through water_supply's fault: the
    ticket reopens, water_supply redoes it on time, and the next follow-up closes it."""
    story = TicketStory(ticket_id)
    story.created(0, group_id="desk")
    story.work_started(60)
    story.first_response(600, elapsed_s=540)
    story.dispatched(HOUR, "d1", housing, accept_in=DAY, due_in=5 * DAY)
    story.returned(2 * HOUR, "d1")
    story.return_refused(3 * HOUR, "d1")
    story.returned(5 * HOUR, "d1", answers=False)
    story.return_accepted(6 * HOUR, "d1")
    story.dispatched(6 * HOUR, "d2", water, accept_in=DAY, due_in=5 * DAY, replaces="d1")
    story.accepted(DAY, "d2", on_time=True)
    story.extension_requested(3 * DAY, "d2", to=6 * HOUR + 7 * DAY)
    story.extension_granted(4 * DAY, "d2", to=6 * HOUR + 7 * DAY)
    story.breached(5 * DAY, RESOLUTION)
    story.escalated(5 * DAY, to_group_id="second_line", new_priority=4)
    story.breached(6 * HOUR + 7 * DAY, COMPLETION, "d2")
    story.progress(7.5 * DAY, "d2")
    story.supervised(8 * DAY, "d2")
    story.completed(9 * DAY, "d2")
    story.resolved(9 * DAY + HOUR, elapsed_s=9 * DAY, breached=True)
    story.follow_up(10 * DAY, DISSATISFIED, department=water, at_fault=True)
    story.reopened(10 * DAY, redo=True)
    story.dispatched(10 * DAY, "d3", water, accept_in=DAY, due_in=3 * DAY, redo=True, replaces="d2")
    story.accepted(10 * DAY + HOUR, "d3")
    story.completed(11 * DAY, "d3")
    story.resolved(11 * DAY + HOUR, elapsed_s=HOUR)
    story.follow_up(12 * DAY, BASICALLY_SATISFIED, department=water)
    story.closed(12 * DAY)
    return story
