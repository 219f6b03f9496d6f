"""Dispatches to departments: sending (by the catalogue or to a named department), reviews of returns and
extensions; a dispatch's clocks start when it is sent."""

from __future__ import annotations

import uuid
from datetime import datetime

from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message

from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.tickets import clocks
from services.tickets.domain.commands import (
    Command,
    ConcludeApproval,
    DispatchTicket,
    ReviewExtension,
    ReviewReturn,
)
from services.tickets.domain.state import (
    WAITING,
    Dispatch,
    DispatchStatus,
    Role,
    SlaClock,
    Ticket,
    refuse_if_done,
)
from services.tickets.domain.ticket_clocks import after, basis_for, cancel_clock, resume_clock, rule_of
from services.tickets.policies import Rules

# The namespace of the approval ids of dispatch reviews: never change it, or a replayed decision would
# name a second approval.
REVIEW_IDS = uuid.UUID("0b6f3c52-7d4e-4a19-9e2c-5f8a1d3b7c60")
RETURN_REVIEW, EXTENSION_REVIEW = "dispatch_return", "dispatch_extension"


def dispatch_of(ticket: Ticket, command: Command) -> Dispatch:
    dispatch_id = command.dispatch_id  # type: ignore[attr-defined]
    dispatch = ticket.dispatches.get(dispatch_id)
    if dispatch is None:
        raise NotFound(f"ticket {ticket.ticket_id} has no dispatch {dispatch_id}")
    if command.department and dispatch.department != command.department:
        raise PermissionDenied(
            f"dispatch {dispatch_id} is {dispatch.department}'s; {command.department} answers only its own"
        )
    return dispatch


def send(ticket: Ticket, command: DispatchTicket, rules: Rules) -> list[Message]:
    refuse_if_done(ticket, "dispatched")
    if ticket.status in WAITING:
        raise FailedPrecondition(f"{ticket.describe()}; dispatch it once it is worked on again")
    catalogue = rules.catalogue
    route = catalogue.categories.get(ticket.category)
    if command.to_department:
        targets = [(command.to_department, command.role or Role.DISPATCH_ROLE_LEAD)]
    elif route is not None:
        targets = [(route.lead, Role.DISPATCH_ROLE_LEAD)]
        targets += [(code, Role.DISPATCH_ROLE_ASSISTING) for code in route.assisting]
    else:
        raise InvalidArgument(
            f"department is required: the ticket's category {ticket.category!r} has no entry in dispatch "
            f"catalogue {catalogue.catalogue_id} v{catalogue.version}"
        )
    if len(command.dispatch_ids) < len(targets):
        raise InvalidArgument(
            f"{len(targets)} dispatch ids are needed, {len(command.dispatch_ids)} were given"
        )
    events: list[Message] = []
    for (department, role), dispatch_id in zip(targets, command.dispatch_ids, strict=False):
        holding = [d for d in ticket.open_dispatches if d.department == department]
        if holding:
            raise FailedPrecondition(f"{holding[0].describe()} already")
        events += dispatch_events(
            ticket,
            rules,
            dispatch_id=dispatch_id,
            department=department,
            role=role,
            instructions=command.instructions,
            now=command.now,
            by=command.by,
            due_at=command.due_at,
            from_catalogue=not command.to_department,
        )
    return events


def dispatch_events(
    ticket: Ticket,
    rules: Rules,
    *,
    dispatch_id: str,
    department: str,
    role: int,
    instructions: str,
    now: datetime,
    by: str,
    due_at: datetime | None = None,
    from_catalogue: bool = False,
    replaces: str = "",
    redo: bool = False,
) -> list[Message]:
    policy, catalogue = rules.policy, rules.catalogue
    calendar = rules.calendar_of(department)
    route = catalogue.categories.get(ticket.category)
    rule = rule_of(ticket, rules)
    targets = policy.dispatch_targets(rule, route.complete if route is not None else None)
    assert targets.accept and targets.complete and targets.supervise_after and targets.escalate_after
    t = ticket.ticket_id
    accept = clocks.start(
        t, SlaClock.SLA_CLOCK_DISPATCH_ACCEPTANCE, dispatch_id, targets.accept, calendar, now, None
    )
    complete = clocks.start(
        t,
        SlaClock.SLA_CLOCK_DISPATCH_COMPLETION,
        dispatch_id,
        targets.complete,
        calendar,
        now,
        policy.warn_share,
    )
    if due_at is not None:
        policy_due = clocks.dt(complete.due_at)
        if due_at > policy_due:
            raise InvalidArgument(
                f"due_at {due_at.isoformat()} is later than the SLA policy's {policy_due.isoformat()}"
            )
        if due_at <= now:
            raise InvalidArgument(f"due_at {due_at.isoformat()} is not in the future")
        basis = basis_for(rules, complete.calendar_id)
        complete.due_at.CopyFrom(clocks.ts(due_at))
        complete.target.FromTimedelta(basis.working_between(now, due_at))
        complete.ClearField("warn_at")
    due = clocks.dt(complete.due_at)
    dispatched = ev.TicketDispatched(
        ticket_id=t,
        dispatch_id=dispatch_id,
        department=department,
        instructions=instructions,
        due_at=complete.due_at,
        dispatched_by=by,
        role=role,
        accept_due=accept.due_at,
        category=ticket.category,
        calendar_id=calendar.calendar_id,
        calendar_version=calendar.version,
        supervise_at=clocks.ts(after(due, targets.supervise_after, calendar)),
        escalate_at=clocks.ts(after(due, targets.escalate_after, calendar)),
        replaces_dispatch_id=replaces,
        redo=redo,
        ticket_type=ticket.type,
        priority=ticket.priority,
        summary=ticket.summary,
    )
    if from_catalogue:
        dispatched.catalogue_id = catalogue.catalogue_id
        dispatched.catalogue_version = catalogue.version
    return [dispatched, accept, complete]


def review_return(ticket: Ticket, command: ReviewReturn, rules: Rules) -> list[Message]:
    dispatch = dispatch_of(ticket, command)
    if dispatch.status != DispatchStatus.DISPATCH_STATUS_RETURNED:
        raise FailedPrecondition(f"{dispatch.describe()}; only a returned dispatch is reviewed")
    t, d, now, by = ticket.ticket_id, dispatch.dispatch_id, command.now, command.by
    if not command.accept:
        return [
            ev.DispatchReturnRefused(
                ticket_id=t, dispatch_id=d, department=dispatch.department, note=command.note, reviewed_by=by
            ),
            *resume_clock(ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d, now, rules),
        ]
    events: list[Message] = [
        ev.DispatchReturnAccepted(
            ticket_id=t, dispatch_id=d, department=dispatch.department, note=command.note, reviewed_by=by
        ),
        *cancel_clock(ticket, SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d, "return accepted"),
    ]
    if command.redispatch_to:
        if command.redispatch_to == dispatch.department:
            raise InvalidArgument(f"redispatch_to is {dispatch.department}, the department that returned it")
        holding = [x for x in ticket.open_dispatches if x.department == command.redispatch_to]
        if holding:
            raise FailedPrecondition(f"{holding[0].describe()} already")
        events += dispatch_events(
            ticket,
            rules,
            dispatch_id=command.new_dispatch_id,
            department=command.redispatch_to,
            role=dispatch.role,
            instructions=dispatch.instructions,
            now=now,
            by=by,
            replaces=d,
        )
    return events


def review_extension(ticket: Ticket, command: ReviewExtension, rules: Rules) -> list[Message]:
    dispatch = dispatch_of(ticket, command)
    if dispatch.requested_due_at is None:
        raise FailedPrecondition(f"{dispatch.describe()} with no extension waiting for review")
    t, d, now, by = ticket.ticket_id, dispatch.dispatch_id, command.now, command.by
    if not command.grant:
        return [
            ev.DispatchExtensionRefused(
                ticket_id=t, dispatch_id=d, department=dispatch.department, note=command.note, reviewed_by=by
            )
        ]
    due = command.due_at or dispatch.requested_due_at
    if due <= dispatch.due_at:
        raise InvalidArgument(f"due_at must be later than the current due time {dispatch.due_at.isoformat()}")
    calendar = rules.calendar_of(dispatch.department)
    targets = rules.policy.dispatch_targets(rule_of(ticket, rules), None)
    assert targets.supervise_after and targets.escalate_after
    events: list[Message] = [
        ev.DispatchExtensionGranted(
            ticket_id=t,
            dispatch_id=d,
            department=dispatch.department,
            due_at=clocks.ts(due),
            supervise_at=clocks.ts(after(due, targets.supervise_after, calendar)),
            escalate_at=clocks.ts(after(due, targets.escalate_after, calendar)),
            note=command.note,
            reviewed_by=by,
        )
    ]
    clock = ticket.clocks.get((SlaClock.SLA_CLOCK_DISPATCH_COMPLETION, d))
    if clock is not None and not clock.done:
        basis = basis_for(rules, clock.calendar_id)
        target = clock.counted(now, basis) + basis.working_between(now, due)
        events.append(
            ev.SlaClockExtended(
                ticket_id=t,
                clock=clock.clock,
                dispatch_id=d,
                due_at=clocks.ts(due),
                target=clocks.pb_duration(target),
            )
        )
    return events


def review_requested(
    ticket: Ticket,
    dispatch: Dispatch,
    kind: str,
    reason: str,
    by: str,
    rules: Rules,
    requested_due_at: datetime | None = None,
) -> list[Message]:
    """When the catalogue sends this kind of review through the approvals service: the request for it
    (the approval id derived from the dispatch and how many reviews it has had, so a retry names the
    same approval)."""
    if kind not in rules.catalogue.reviewed_by_approvals:
        return []
    approval_id = str(uuid.uuid5(REVIEW_IDS, f"{dispatch.dispatch_id}/{kind}/{dispatch.review_requests + 1}"))
    requested = ev.DispatchReviewRequested(
        ticket_id=ticket.ticket_id,
        dispatch_id=dispatch.dispatch_id,
        department=dispatch.department,
        approval_id=approval_id,
        kind=kind,
        reason=reason,
        requested_by=by,
        ticket_type=ticket.type,
    )
    if requested_due_at is not None:
        requested.extension.FromTimedelta(requested_due_at - dispatch.due_at)
    return [requested]


def refuse_if_under_review(dispatch: Dispatch) -> None:
    """The center's own review is refused while the approvals service reviews the dispatch."""
    if dispatch.review_approval_id:
        raise FailedPrecondition(
            f"{dispatch.describe()}, under review by approval {dispatch.review_approval_id}: "
            f"its outcome decides"
        )


def conclude_review(
    ticket: Ticket, dispatch: Dispatch, command: ConcludeApproval, rules: Rules
) -> list[Message]:
    """The approval's outcome reviews the return or extension: granted accepts or grants it; rejected
    or expired refuses it, with the approval's reason."""
    if not dispatch.open:
        raise FailedPrecondition(f"{dispatch.describe()}; approval {command.approval_id} decides nothing now")
    granted = command.outcome == "granted"
    note = command.reason or f"approval {command.approval_id} {command.outcome}"
    base = {
        "ticket_id": ticket.ticket_id,
        "now": command.now,
        "by": command.by,
        "dispatch_id": dispatch.dispatch_id,
    }
    if dispatch.status == DispatchStatus.DISPATCH_STATUS_RETURNED:
        return review_return(ticket, ReviewReturn(**base, accept=granted, note=note), rules)
    return review_extension(ticket, ReviewExtension(**base, grant=granted, note=note), rules)
