"""The KPI projection of tickets: a ticket's events folded into its facts, with no I/O.

One fold per ticket (``TicketFold``), a pure function of (fold, event) to the new fold, gives three
fact tables (``deploy/clickhouse``):

- ``ticket_facts``: one row per ticket, rewritten with the ticket's version as it moves;
- ``dispatch_facts``: one row per dispatch to a department, rewritten when one of its events comes;
- ``ticket_state_intervals``: one row per stretch of time the ticket spent in one status.

The fold follows the tickets context's ``evolve`` for the status (the same rules, read from the same
events), and takes SLA outcomes from the clocks' events: a clock's breach is the ``SlaBreached`` or the
``SlaClockFulfilled(breached)`` of that clock, ``dispatch_id`` "" for the ticket's own clocks. An
event at or below the fold's version changes nothing, so a redelivered or replayed event is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from callcenter.tickets.v1 import events_pb2 as ticket_ev
from google.protobuf.timestamp_pb2 import Timestamp

from services.kpi.projection import Row, channel_name, enum_name
from services.platform.envelope import Envelope

TICKET = "Ticket"

_CLOCK = ticket_ev.SlaClock
WAITING = ("waiting_on_customer", "waiting_for_approval")
DONE = ("resolved", "closed", "merged")
OPEN_DISPATCH = ("dispatched", "accepted", "returned")
SATISFIED = ("satisfied", "basically_satisfied")


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _time_if_set(message: Any, name: str) -> datetime | None:
    return _time(getattr(message, name)) if message.HasField(name) else None


@dataclass(frozen=True)
class DispatchFold:
    """One dispatch to a department as the KPIs see it; ``version`` is the ticket's when it last changed."""

    dispatch_id: str
    department: str
    role: str
    dispatched_at: datetime
    # The ticket as it was dispatched.
    ticket_type: str = ""
    priority: int = 0
    category: str = ""
    accept_due_at: datetime | None = None
    first_due_at: datetime | None = None
    due_at: datetime | None = None
    redo: bool = False
    replaces_dispatch_id: str = ""
    status: str = "dispatched"
    accepted_at: datetime | None = None
    accepted_on_time: bool = False
    answered_at: datetime | None = None
    accept_breached: bool = False
    completed_at: datetime | None = None
    completed_on_time: bool = False
    completion_breached: bool = False
    completion_working_s: float | None = None
    resolved: bool = False
    returns: int = 0
    returns_refused: int = 0
    return_accepted: bool = False
    extensions_requested: int = 0
    extensions_granted: int = 0
    extensions_refused: int = 0
    progress_reports: int = 0
    supervision_notices: int = 0
    escalated: bool = False
    inside_s: float = 0.0
    inside_since: datetime | None = None
    ended_at: datetime | None = None
    followed_up_at: datetime | None = None
    follow_up_reached: bool = False
    satisfaction: str = ""
    department_at_fault: bool = False
    version: int = 0

    @property
    def open(self) -> bool:
        return self.status in OPEN_DISPATCH

    def leave(self, at: datetime) -> DispatchFold:
        """The dispatch leaves the department (completed, or returned to the center for review)."""
        if self.inside_since is None:
            return self
        spent = max((at - self.inside_since).total_seconds(), 0.0)
        return replace(self, inside_s=self.inside_s + spent, inside_since=None)

    def answer(self, at: datetime) -> DispatchFold:
        """The department's first answer (acceptance or return), judged against its acceptance deadline
        when its acceptance clock says nothing (the clock's own fulfilment decides otherwise)."""
        if self.answered_at is not None:
            return self
        late = self.accept_due_at is not None and at > self.accept_due_at
        return replace(self, answered_at=at, accept_breached=self.accept_breached or late)


@dataclass(frozen=True)
class TicketFold:
    """Everything the KPIs know of one ticket."""

    ticket_id: str
    version: int = 0
    created_at: datetime | None = None
    ticket_type: str = ""
    priority: int = 0
    category: str = ""
    channel: str = ""
    origin: str = ""
    source_contact_id: str = ""
    customer_hash: str = ""
    sla_rule: str = ""
    status: str = ""
    status_since: datetime | None = None
    status_version: int = 0  # the version of the event that began the current status
    first_response_at: datetime | None = None
    first_response_due_at: datetime | None = None
    first_response_breached: bool = False
    first_response_working_s: float | None = None
    resolved_at: datetime | None = None
    resolution_due_at: datetime | None = None
    resolution_breached: bool = False
    resolution_working_s: float | None = None
    resolution_code: str = ""
    first_contact: bool = False  # the first resolution's flag
    resolutions: int = 0
    closed_at: datetime | None = None
    reopen_until: datetime | None = None
    reopen_count: int = 0
    redo_count: int = 0
    escalation_count: int = 0
    csat_score: int | None = None
    satisfaction: str = ""
    dispatches: dict[str, DispatchFold] = field(default_factory=dict)

    @property
    def open_dispatches(self) -> list[DispatchFold]:
        return [d for d in self.dispatches.values() if d.open]

    @property
    def department(self) -> str:
        """The lead department of the newest lead dispatch whose return was not accepted; "" if none."""
        leads = [d for d in self.dispatches.values() if d.role == "lead" and not d.return_accepted]
        newest = max(leads, key=lambda d: (d.dispatched_at, d.version), default=None)
        return newest.department if newest is not None else ""

    @property
    def forget_after(self) -> datetime | None:
        """When nothing can change the ticket any more: merged, or closed past its reopening window."""
        if self.status == "merged":
            return self.closed_at
        if self.status == "closed":
            return self.reopen_until or self.closed_at
        return None


def fold_ticket(fold: TicketFold, envelope: Envelope) -> tuple[TicketFold, list[Row]]:
    """The ticket after one of its events, and the state interval rows the event closed or opened."""
    if envelope.aggregate_version <= fold.version:
        return fold, []
    before = fold
    fold = replace(_apply(fold, envelope), version=envelope.aggregate_version)
    if fold.status == before.status or fold.created_at is None:
        return fold, []
    at = envelope.occurred_at
    rows = []
    if before.status and before.status_since is not None:
        rows.append(interval_row(before, ended_at=at))
    fold = replace(fold, status_since=at, status_version=envelope.aggregate_version)
    rows.append(interval_row(fold, ended_at=None))
    return fold, rows


def _apply(fold: TicketFold, envelope: Envelope) -> TicketFold:
    event, at = envelope.payload, envelope.occurred_at
    match envelope.event_type:
        case "TicketCreated":
            return replace(
                fold,
                created_at=at,
                ticket_type=enum_name(ticket_ev.TicketType, event.type, "TICKET_TYPE_"),
                priority=min(event.priority, 255),
                category=event.category,
                channel=channel_name(event.channel),
                origin=enum_name(ticket_ev.TicketOrigin, event.origin, "TICKET_ORIGIN_"),
                source_contact_id=event.source_contact_id,
                customer_hash=event.customer.hash,
                sla_rule=event.sla_rule,
                status="assigned" if event.group_id else "new",
                first_response_due_at=_time_if_set(event, "first_response_due"),
                resolution_due_at=_time_if_set(event, "resolution_due"),
            )
        case "TicketAssigned":
            return replace(fold, status="assigned") if fold.status == "new" else fold
        case "TicketWorkStarted" | "TicketCustomerResponded" | "TicketApprovalConcluded":
            return replace(fold, status="dispatched" if fold.open_dispatches else "in_progress")
        case "TicketAwaitingCustomer":
            return replace(fold, status="waiting_on_customer")
        case "TicketApprovalRequested":
            return replace(fold, status="waiting_for_approval")
        case "TicketNoteAdded":
            if event.first_response and fold.first_response_at is None:
                return replace(fold, first_response_at=at)
        case "TicketEscalated":
            fold = replace(
                fold,
                escalation_count=fold.escalation_count + 1,
                priority=min(event.new_priority or fold.priority, 255),
            )
            if event.to_group_id and fold.status not in (*DONE, "dispatched", *WAITING):
                return replace(fold, status="escalated")
        case "TicketResolved":
            return replace(
                fold,
                status="resolved",
                resolved_at=at,
                resolution_code=event.resolution_code,
                first_contact=event.first_contact if fold.resolutions == 0 else fold.first_contact,
                resolutions=fold.resolutions + 1,
            )
        case "TicketClosed":
            return replace(
                fold, status="closed", closed_at=at, reopen_until=_time_if_set(event, "reopen_until")
            )
        case "TicketReopened":
            return replace(
                fold,
                status="in_progress",
                reopen_count=fold.reopen_count + 1,
                redo_count=fold.redo_count + (1 if event.redo else 0),
                resolved_at=None,
                resolution_code="",
                resolution_working_s=None,
                closed_at=None,
                reopen_until=None,
                resolution_due_at=_time_if_set(event, "resolution_due") or fold.resolution_due_at,
            )
        case "TicketMerged":
            return replace(fold, status="merged", closed_at=at)
        case "CsatRecorded":
            return replace(fold, csat_score=min(event.score, 255))
        case "FollowUpRecorded":
            return _follow_up(fold, event, at, envelope.aggregate_version)
        case kind if kind.startswith("Sla"):
            return _clock(fold, event, kind, at, envelope.aggregate_version)
        case _:
            return _dispatch(fold, event, envelope.event_type, at, envelope.aggregate_version)
    return fold


def _follow_up(fold: TicketFold, event: Any, at: datetime, version: int) -> TicketFold:
    """The verdict goes to the ticket and to the lead dispatch it judges: the newest completed lead
    dispatch of the follow-up's department (else its newest lead dispatch), as the tickets context
    chooses the department the follow-up names."""
    verdict = enum_name(ticket_ev.Satisfaction, event.satisfaction, "SATISFACTION_") if event.reached else ""
    fold = replace(fold, satisfaction=verdict or fold.satisfaction)
    leads = [
        d
        for d in fold.dispatches.values()
        if d.role == "lead" and (not event.department or d.department == event.department)
    ]
    completed = [d for d in leads if d.status == "completed"]
    judged = max(completed or leads, key=lambda d: (d.dispatched_at, d.version), default=None)
    if judged is None:
        return fold
    judged = replace(
        judged,
        followed_up_at=at,
        follow_up_reached=event.reached,
        satisfaction=verdict,
        department_at_fault=event.reached and event.department_at_fault,
        version=version,
    )
    return replace(fold, dispatches={**fold.dispatches, judged.dispatch_id: judged})


def _clock(fold: TicketFold, event: Any, kind: str, at: datetime, version: int) -> TicketFold:
    if kind not in (
        "SlaClockStarted",
        "SlaClockResumed",
        "SlaClockExtended",
        "SlaBreached",
        "SlaClockFulfilled",
    ):
        return fold  # paused, warned, cancelled: no KPI reads them
    due = _time_if_set(event, "due_at")
    breached = kind == "SlaBreached" or (kind == "SlaClockFulfilled" and event.breached)
    elapsed = event.elapsed.ToTimedelta().total_seconds() if kind == "SlaClockFulfilled" else None
    if not event.dispatch_id:
        if event.clock == _CLOCK.SLA_CLOCK_FIRST_RESPONSE:
            fold = replace(
                fold,
                first_response_due_at=due or fold.first_response_due_at,
                first_response_breached=fold.first_response_breached or breached,
            )
            if kind == "SlaClockFulfilled":
                fold = replace(
                    fold, first_response_working_s=elapsed, first_response_at=fold.first_response_at or at
                )
        elif event.clock == _CLOCK.SLA_CLOCK_RESOLUTION:
            fold = replace(
                fold,
                resolution_due_at=due or fold.resolution_due_at,
                resolution_breached=fold.resolution_breached or breached,
            )
            if kind == "SlaClockFulfilled":
                fold = replace(fold, resolution_working_s=elapsed)
        return fold
    dispatch = fold.dispatches.get(event.dispatch_id)
    if dispatch is None:
        return fold
    if event.clock == _CLOCK.SLA_CLOCK_DISPATCH_ACCEPTANCE:
        if kind == "SlaClockFulfilled":
            dispatch = replace(dispatch, answered_at=dispatch.answered_at or at, accept_breached=breached)
        elif breached:
            dispatch = replace(dispatch, accept_breached=True)
        elif due is not None and kind == "SlaClockStarted":
            dispatch = replace(dispatch, accept_due_at=due)
    elif event.clock in (_CLOCK.SLA_CLOCK_DISPATCH_COMPLETION, _CLOCK.SLA_CLOCK_DISPATCH):
        if kind == "SlaClockExtended":
            # An extension granted moves the due time and forgives a breach, as the tickets context does.
            dispatch = replace(dispatch, due_at=due or dispatch.due_at, completion_breached=False)
        elif kind == "SlaClockFulfilled":
            dispatch = replace(dispatch, completion_breached=breached, completion_working_s=elapsed)
        elif breached:
            dispatch = replace(dispatch, completion_breached=True)
        else:
            return fold
    else:
        return fold
    return replace(
        fold, dispatches={**fold.dispatches, dispatch.dispatch_id: replace(dispatch, version=version)}
    )


def _dispatch(fold: TicketFold, event: Any, kind: str, at: datetime, version: int) -> TicketFold:
    if kind == "TicketDispatched":
        due = _time_if_set(event, "due_at")
        dispatch = DispatchFold(
            dispatch_id=event.dispatch_id,
            department=event.department,
            role=enum_name(ticket_ev.DispatchRole, event.role, "DISPATCH_ROLE_") or "lead",
            dispatched_at=at,
            ticket_type=enum_name(ticket_ev.TicketType, event.ticket_type, "TICKET_TYPE_")
            or fold.ticket_type,
            priority=min(event.priority or fold.priority, 255),
            category=event.category or fold.category,
            accept_due_at=_time_if_set(event, "accept_due") or due,
            first_due_at=due,
            due_at=due,
            redo=event.redo,
            replaces_dispatch_id=event.replaces_dispatch_id,
            inside_since=at,
            version=version,
        )
        status = fold.status if fold.status in (*DONE, *WAITING) else "dispatched"
        return replace(fold, status=status, dispatches={**fold.dispatches, dispatch.dispatch_id: dispatch})
    dispatch = fold.dispatches.get(getattr(event, "dispatch_id", "") or "")
    if dispatch is None:
        return fold
    match kind:
        case "DispatchAccepted":
            dispatch = replace(dispatch, status="accepted", accepted_at=at, accepted_on_time=event.on_time)
            dispatch = dispatch.answer(at)
        case "DispatchProgressReported":
            dispatch = replace(dispatch, progress_reports=dispatch.progress_reports + 1)
        case "DispatchCompleted":
            dispatch = replace(
                dispatch.leave(at),
                status="completed",
                completed_at=at,
                completed_on_time=event.on_time,
                resolved=event.resolved,
                ended_at=at,
            )
        case "DispatchReturned":
            dispatch = replace(dispatch.answer(at).leave(at), status="returned", returns=dispatch.returns + 1)
        case "DispatchReturnAccepted":
            dispatch = replace(dispatch, status="withdrawn", return_accepted=True, ended_at=at)
        case "DispatchReturnRefused":
            dispatch = replace(
                dispatch,
                status="accepted" if dispatch.accepted_at is not None else "dispatched",
                returns_refused=dispatch.returns_refused + 1,
                inside_since=at,
            )
        case "DispatchExtensionRequested":
            dispatch = replace(dispatch, extensions_requested=dispatch.extensions_requested + 1)
        case "DispatchExtensionGranted":
            dispatch = replace(
                dispatch,
                extensions_granted=dispatch.extensions_granted + 1,
                due_at=_time_if_set(event, "due_at") or dispatch.due_at,
            )
        case "DispatchExtensionRefused":
            dispatch = replace(dispatch, extensions_refused=dispatch.extensions_refused + 1)
        case "SupervisionNoticeIssued":
            dispatch = replace(dispatch, supervision_notices=dispatch.supervision_notices + 1)
        case "DispatchEscalated":
            dispatch = replace(dispatch, escalated=True)
        case _:
            return fold
    fold = replace(
        fold, dispatches={**fold.dispatches, dispatch.dispatch_id: replace(dispatch, version=version)}
    )
    if fold.status == "dispatched" and not fold.open_dispatches:
        fold = replace(fold, status="in_progress")
    return fold


# rows ---------------------------------------------------------------------------------------------


def ticket_row(fold: TicketFold) -> Row | None:
    """The ticket's fact at its version; None before its TicketCreated was folded."""
    if fold.created_at is None:
        return None
    return {
        "ticket_id": fold.ticket_id,
        "ticket_type": fold.ticket_type,
        "priority": fold.priority,
        "department": fold.department,
        "channel": fold.channel,
        "origin_contact_id": fold.source_contact_id,
        "customer_hash": fold.customer_hash,
        "issue_code": fold.category,
        "status": fold.status,
        "created_at": fold.created_at,
        "first_response_at": fold.first_response_at,
        "first_response_due_at": fold.first_response_due_at,
        "resolved_at": fold.resolved_at,
        "resolution_due_at": fold.resolution_due_at,
        "closed_at": fold.closed_at,
        "first_response_s": _seconds(fold.created_at, fold.first_response_at),
        "resolution_s": _seconds(fold.created_at, fold.resolved_at),
        "first_response_breached": fold.first_response_breached,
        "resolution_breached": fold.resolution_breached,
        "resolved_on_first_contact": fold.first_contact and fold.reopen_count == 0 and fold.resolutions > 0,
        "reopen_count": min(fold.reopen_count, 65535),
        "escalation_count": min(fold.escalation_count, 65535),
        "dispatch_count": min(len(fold.dispatches), 65535),
        "csat_score": fold.csat_score,
        "outcome": fold.resolution_code,
        "origin": fold.origin,
        "sla_rule": fold.sla_rule,
        "status_since": fold.status_since or fold.created_at,
        "first_response_working_s": fold.first_response_working_s,
        "resolution_working_s": fold.resolution_working_s,
        "redo_count": min(fold.redo_count, 65535),
        "satisfaction": fold.satisfaction,
        "version": fold.version,
    }


def dispatch_rows(fold: TicketFold, since_version: int = 0) -> list[Row]:
    """The facts of the ticket's dispatches changed after ``since_version`` (all of them by default)."""
    if fold.created_at is None:
        return []
    return [
        _dispatch_row(fold, dispatch)
        for dispatch in fold.dispatches.values()
        if dispatch.version > since_version
    ]


def _dispatch_row(fold: TicketFold, d: DispatchFold) -> Row:
    return {
        "dispatch_fact_id": f"{fold.ticket_id}:{d.dispatch_id}",
        "ticket_id": fold.ticket_id,
        "dispatch_id": d.dispatch_id,
        "department": d.department,
        "role": d.role,
        "ticket_type": d.ticket_type,
        "priority": d.priority,
        "category": d.category,
        "redo": d.redo,
        "replaces_dispatch_id": d.replaces_dispatch_id,
        "status": d.status,
        "dispatched_at": d.dispatched_at,
        "accept_due_at": d.accept_due_at,
        "accepted_at": d.accepted_at,
        "accepted_on_time": d.accepted_on_time,
        "answered_at": d.answered_at,
        "accept_breached": d.accept_breached,
        "first_due_at": d.first_due_at,
        "due_at": d.due_at,
        "completed_at": d.completed_at,
        "completed_on_time": d.completed_on_time,
        "completion_breached": d.completion_breached,
        "completion_working_s": d.completion_working_s,
        "resolved": d.resolved,
        "returns": min(d.returns, 65535),
        "returns_refused": min(d.returns_refused, 65535),
        "return_accepted": d.return_accepted,
        "extensions_requested": min(d.extensions_requested, 65535),
        "extensions_granted": min(d.extensions_granted, 65535),
        "extensions_refused": min(d.extensions_refused, 65535),
        "progress_reports": min(d.progress_reports, 65535),
        "supervision_notices": min(d.supervision_notices, 65535),
        "escalated": d.escalated,
        "inside_s": round(d.inside_s, 3),
        "inside_since": d.inside_since,
        "ended_at": d.ended_at,
        "followed_up_at": d.followed_up_at,
        "follow_up_reached": d.follow_up_reached,
        "satisfaction": d.satisfaction,
        "department_at_fault": d.department_at_fault,
        "version": d.version,
    }


def interval_row(fold: TicketFold, ended_at: datetime | None) -> Row:
    """The ticket's current status interval: open (version 1) or closed at ``ended_at`` (version 2)."""
    assert fold.status_since is not None
    return {
        "interval_id": f"{fold.ticket_id}:{fold.status_version}",
        "ticket_id": fold.ticket_id,
        "status": fold.status,
        "ticket_type": fold.ticket_type,
        "priority": fold.priority,
        "started_at": fold.status_since,
        "ended_at": ended_at,
        "seconds": round(_seconds(fold.status_since, ended_at) or 0.0, 3),
        "version": 2 if ended_at is not None else 1,
    }


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max((end - start).total_seconds(), 0.0), 3)
