"""The ApprovalRequest aggregate, pure: a chain of steps chosen by a policy, decided place by place.

A request is pending until its last step approves (granted), a step rejects (rejected), a deadline
passes with no backup left (expired) or its requester withdraws it (withdrawn). Its steps run in
order; a step's deciders answer in parallel, each decision taking one place of the step's deciders,
and the step completes as soon as its outcome is certain: approved at the ``needed``-th approval,
rejected once so many have rejected that ``needed`` approvals can no longer come. The places still
open then are no longer asked, so the outcome never depends on the order of the answers.

An approver may ask for more information instead: the step waits, its clock paused, until the
requester answers, and its deadline and reminders move by the working time it waited. At a step's
deadline its backup (when the policy names one) decides it alone on a fresh deadline of the same
length; past that, or without a backup, the request expires. Every decision is an event, never
changed: the events are the audit trail. ``decide`` refuses with the current state named.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.common.v1 import types_pb2
from google.protobuf.duration_pb2 import Duration as PbDuration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.approvals.policies import CENTER, ApprovalPolicy, ApprovalRule, Decider, StepSpec
from services.platform.calendars import BusinessCalendar, Duration
from services.platform.envelope import Envelope
from services.platform.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.platform.eventstore import Deadline
from services.platform.timestamps import dt, pb_duration, ts

KIND = "ApprovalRequest"
Decision = ev.Decision
APPROVE, REJECT, REQUEST_INFO = (
    Decision.DECISION_APPROVE,
    Decision.DECISION_REJECT,
    Decision.DECISION_REQUEST_INFO,
)

PENDING, GRANTED, REJECTED, EXPIRED, WITHDRAWN = "pending", "granted", "rejected", "expired", "withdrawn"
# The reviews of a department's dispatch that tickets may send through approvals.
DISPATCH_RETURN, DISPATCH_EXTENSION = "dispatch_return", "dispatch_extension"
DISPATCH_KINDS = (DISPATCH_RETURN, DISPATCH_EXTENSION)


# State --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """One decider's place in a step, and the decision that took it."""

    decider: Decider
    decision: int = Decision.DECISION_UNSPECIFIED
    approver_id: str = ""


@dataclass(frozen=True)
class Step:
    index: int
    name: str
    places: tuple[Place, ...]
    needed: int
    deadline: Duration
    remind_at: tuple[float, ...]
    escalate_to: Decider | None
    status: str = "waiting"  # waiting, open, info (paused), approved, rejected, cancelled
    deadline_at: datetime | None = None
    reminders: tuple[tuple[float, datetime], ...] = ()  # (share, when), those not yet sent
    escalated: bool = False
    info_asked_at: datetime | None = None
    decided_by: frozenset[str] = frozenset()

    @property
    def approvals(self) -> int:
        return sum(place.decision == APPROVE for place in self.places)

    @property
    def rejections(self) -> int:
        return sum(place.decision == REJECT for place in self.places)

    @property
    def open_places(self) -> list[int]:
        return [n for n, place in enumerate(self.places) if not place.decision]

    def describe(self) -> str:
        return f"step {self.index} ({self.name})"


@dataclass(frozen=True)
class ApprovalRequest:
    approval_id: str = ""
    status: str = ""
    ticket_id: str = ""
    kind: str = ""
    amount_minor: int = 0
    currency: str = ""
    dispatch_id: str = ""  # the ticket's dispatch under review (the dispatch kinds)
    extension_s: int = 0  # the extra time a dispatch_extension asks for
    requested_by: str = ""
    requested_by_department: str = ""
    requested_at: datetime | None = None
    policy_id: str = ""
    policy_version: int = 0
    rule: str = ""
    customer_tier: str = ""
    ticket_type: str = ""
    justification: str = ""
    steps: tuple[Step, ...] = ()
    current: int = 0
    ended_at: datetime | None = None
    outcome_reason: str = ""
    trail: tuple[ev.ApprovalDecided, ...] = field(default=(), compare=False)
    decided_at: tuple[datetime, ...] = ()  # when each decision of the trail was made

    @property
    def exists(self) -> bool:
        return bool(self.status)

    @property
    def open_step(self) -> Step | None:
        if self.status != PENDING or self.current >= len(self.steps):
            return None
        return self.steps[self.current]

    @property
    def values(self) -> dict[str, str]:
        """The parameters a policy chooses this request's chain by, besides the amount."""
        return {"kind": self.kind, "customer_tier": self.customer_tier, "ticket_type": self.ticket_type}

    @property
    def money(self) -> types_pb2.Money | None:
        """The amount asked for; none for a dispatch review (its measure is the extension)."""
        if self.kind in DISPATCH_KINDS:
            return None
        return types_pb2.Money(minor_units=self.amount_minor, currency=self.currency)

    @property
    def extension(self) -> PbDuration | None:
        return pb_duration(timedelta(seconds=self.extension_s)) if self.extension_s else None

    def involves(self, department: str) -> bool:
        """Whether any step of the chain (or its backup) is decided in ``department``."""
        return any(
            place.decider.department == department
            or (step.escalate_to is not None and step.escalate_to.department == department)
            for step in self.steps
            for place in step.places
        )

    def describe(self) -> str:
        if self.status != PENDING:
            return f"approval {self.approval_id} is {self.status}"
        step = self.open_step
        waiting = "waiting for information at" if step and step.status == "info" else "pending at"
        return f"approval {self.approval_id} is {waiting} {step.describe() if step else 'no step'}"


# Commands -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requester:
    """Who acts: the token's subject and department ("" for the contact center's own people)."""

    subject: str
    department: str = ""
    titles: frozenset[str] = frozenset()  # the roles the subject holds in its department
    supervisor: bool = False  # a supervisor of the contact center, who may act for any requester


@dataclass(frozen=True)
class Delegation:
    """``delegator`` (a member of ``department`` holding ``titles``) lets the delegate decide for them."""

    delegation_id: str
    delegator_id: str
    department: str
    valid_from: datetime
    valid_until: datetime
    titles: frozenset[str] = frozenset()

    def valid_at(self, at: datetime) -> bool:
        return self.valid_from <= at < self.valid_until


@dataclass(frozen=True)
class RequestApproval:
    approval_id: str
    ticket_id: str
    kind: str
    amount_minor: int
    currency: str
    customer_tier: str
    ticket_type: str
    justification: str
    by: Requester
    now: datetime
    dispatch_id: str = ""
    extension_s: int = 0


@dataclass(frozen=True)
class DecideStep:
    step_index: int
    decision: int
    comment: str
    by: Requester
    now: datetime
    delegations: tuple[Delegation, ...] = ()


@dataclass(frozen=True)
class ProvideInfo:
    answer: str
    by: Requester
    now: datetime


@dataclass(frozen=True)
class Withdraw:
    reason: str
    by: Requester
    now: datetime


Command = RequestApproval | DecideStep | ProvideInfo | Withdraw


# Decide -------------------------------------------------------------------------------------------


def decide(request: ApprovalRequest, command: Command, policy: ApprovalPolicy) -> list[Message]:
    """The events a command causes; a refusal names the request's current state. ``policy``: the
    version the request started with (for a new request, the active one)."""
    if isinstance(command, RequestApproval):
        if request.exists:
            raise FailedPrecondition(f"{request.describe()}: it was requested already")
        return _request(command, policy)
    if not request.exists:
        raise FailedPrecondition("no such approval request")  # the service answers NOT_FOUND first
    if request.status != PENDING:
        raise FailedPrecondition(f"{request.describe()}; it takes no more decisions")
    step = request.open_step
    assert step is not None
    calendar = policy.calendar
    match command:
        case DecideStep():
            return _decide(request, step, command, calendar)
        case ProvideInfo():
            _require_requester(request, command.by, "answer for it")
            if step.status != "info":
                raise FailedPrecondition(f"{request.describe()}; nobody asked for more information")
            return [_info_provided(request, step, command, calendar)]
        case Withdraw():
            _require_requester(request, command.by, "withdraw it")
            return [
                ev.ApprovalWithdrawn(
                    approval_id=request.approval_id,
                    ticket_id=request.ticket_id,
                    withdrawn_by=command.by.subject,
                    reason=command.reason,
                )
            ]
    raise AssertionError(f"unknown command {command!r}")


def _request(command: RequestApproval, policy: ApprovalPolicy) -> list[Message]:
    amount = measure(command.kind, command.amount_minor, command.currency, command.extension_s, policy)
    values = {
        "kind": command.kind,
        "customer_tier": command.customer_tier,
        "ticket_type": command.ticket_type,
    }
    rule = policy.choose(values, amount)
    calendar = policy.calendar
    requested = ev.ApprovalRequested(
        approval_id=command.approval_id,
        ticket_id=command.ticket_id,
        kind=command.kind,
        amount=None
        if command.kind in DISPATCH_KINDS
        else types_pb2.Money(minor_units=command.amount_minor, currency=command.currency or policy.currency),
        dispatch_id=command.dispatch_id,
        extension=pb_duration(timedelta(seconds=command.extension_s)) if command.extension_s else None,
        justification=command.justification,
        requested_by=command.by.subject,
        requested_by_department=command.by.department,
        policy_id=policy.policy_id,
        policy_version=policy.version,
        rule=rule.name,
        customer_tier=command.customer_tier,
        ticket_type=command.ticket_type,
        calendar_id=calendar.calendar_id,
        calendar_version=calendar.version,
        chain=chain_messages(rule),
    )
    first = _step_of(0, rule.steps[0])
    return [requested, _opened(command.approval_id, first, command.now, calendar)]


def _decide(
    request: ApprovalRequest, step: Step, command: DecideStep, calendar: BusinessCalendar
) -> list[Message]:
    if command.decision not in (APPROVE, REJECT, REQUEST_INFO):
        raise InvalidArgument("decision: DECISION_APPROVE, DECISION_REJECT or DECISION_REQUEST_INFO")
    if command.step_index != step.index:
        raise FailedPrecondition(f"{request.describe()}, not at step {command.step_index}")
    if step.status == "info":
        raise FailedPrecondition(f"{request.describe()}; it takes decisions again once the requester answers")
    who = command.by
    if who.subject in step.decided_by:
        raise FailedPrecondition(f"{request.describe()}; {who.subject} has decided this step already")
    place, on_behalf_of = _place_for(step, who, command.delegations, command.now)
    if place is None:
        deciders = ", ".join(sorted({str(step.places[n].decider) for n in step.open_places}))
        acting = f"{who.department}" if who.department else "the contact center"
        raise PermissionDenied(
            f"{step.describe()} of approval {request.approval_id} is for {deciders}; you act for {acting}"
        )
    decided = ev.ApprovalDecided(
        approval_id=request.approval_id,
        step_index=step.index,
        department=step.places[place].decider.department,
        approver_id=who.subject,
        decision=command.decision,
        comment=command.comment,
        on_behalf_of=on_behalf_of,
        place=place,
    )
    if command.decision == REQUEST_INFO:
        return [decided]
    decisions = [p.decision for p in step.places]
    decisions[place] = command.decision
    approvals, rejections = decisions.count(APPROVE), decisions.count(REJECT)
    if approvals >= step.needed:
        outcome = APPROVE
    elif rejections > len(decisions) - step.needed:
        outcome = REJECT
    else:
        return [decided]
    events: list[Message] = [
        decided,
        ev.ApprovalStepCompleted(
            approval_id=request.approval_id,
            step_index=step.index,
            department=step.places[0].decider.department,
            outcome=outcome,
            approvals=approvals,
            rejections=rejections,
            cancelled=len(decisions) - approvals - rejections,
        ),
    ]
    if outcome == REJECT:
        events.append(
            ev.ApprovalRejected(
                approval_id=request.approval_id,
                ticket_id=request.ticket_id,
                step_index=step.index,
                department=decided.department,
                reason=command.comment,
            )
        )
    elif step.index + 1 < len(request.steps):
        events.append(_opened(request.approval_id, request.steps[step.index + 1], command.now, calendar))
    else:
        events.append(ev.ApprovalGranted(approval_id=request.approval_id, ticket_id=request.ticket_id))
    return events


def _place_for(
    step: Step, who: Requester, delegations: Sequence[Delegation], now: datetime
) -> tuple[int | None, str]:
    """The first open place ``who`` may take (in its own right, else by a delegation valid now)."""
    for index in step.open_places:
        if _fits(step.places[index].decider, who.department, who.titles):
            return index, ""
    for delegation in delegations:
        if not delegation.valid_at(now) or delegation.delegator_id in step.decided_by:
            continue
        for index in step.open_places:
            if _fits(step.places[index].decider, delegation.department, delegation.titles):
                return index, delegation.delegator_id
    return None, ""


def _fits(decider: Decider, department: str, titles: frozenset[str]) -> bool:
    own = department or CENTER
    return decider.department == own and (not decider.role or decider.role in titles)


def _require_requester(request: ApprovalRequest, who: Requester, what: str) -> None:
    if who.subject != request.requested_by and not who.supervisor:
        raise PermissionDenied(f"only the requester ({request.requested_by}) or a supervisor may {what}")


def _info_provided(
    request: ApprovalRequest, step: Step, command: ProvideInfo, calendar: BusinessCalendar
) -> ev.ApprovalInfoProvided:
    assert step.info_asked_at is not None and step.deadline_at is not None
    asked = step.info_asked_at
    deadline = _moved(calendar, step.deadline_at, asked, command.now)
    reminders = [_moved(calendar, at, asked, command.now) for _, at in step.reminders]
    return ev.ApprovalInfoProvided(
        approval_id=request.approval_id,
        step_index=step.index,
        answer=command.answer,
        answered_by=command.by.subject,
        deadline=ts(deadline),
        remind_at=[ts(at) for at in reminders],
    )


def _moved(calendar: BusinessCalendar, due: datetime, paused_at: datetime, resumed_at: datetime) -> datetime:
    """``due`` moved by the working time between pausing and resuming: what was left of it is left."""
    left = calendar.working_between(paused_at, due) if due > paused_at else timedelta(0)
    return calendar.add(resumed_at, left)


def _opened(approval_id: str, step: Step, now: datetime, calendar: BusinessCalendar) -> ev.ApprovalStepOpened:
    deadline = calendar.add_duration(now, step.deadline)
    length = calendar.working_time(step.deadline)
    return ev.ApprovalStepOpened(
        approval_id=approval_id,
        step_index=step.index,
        department=step.places[0].decider.department,
        deadline=ts(deadline),
        deciders=[_decider_message(p.decider) for p in step.places],
        approvals_needed=step.needed,
        remind_at=[ts(calendar.add(now, length * share)) for share in step.remind_at],
    )


# Deadlines ----------------------------------------------------------------------------------------


def deadlines(request: ApprovalRequest) -> Iterable[Deadline]:
    """What the request waits on: its open step's reminders and deadline (none while it waits for
    information: the clock is paused)."""
    step = request.open_step
    if step is None or step.status != "open" or step.deadline_at is None:
        return
    for share, at in step.reminders:
        yield Deadline(f"step/{step.index}/remind/{share}", at)
    yield Deadline(f"step/{step.index}/{'backup' if step.escalated else 'deadline'}", step.deadline_at)


def on_deadline(
    request: ApprovalRequest, deadline: Deadline, now: datetime, policy: ApprovalPolicy
) -> list[Message]:
    """What a due deadline causes; nothing when the request has moved on since it was set."""
    if deadline not in set(deadlines(request)):
        return []
    step = request.open_step
    assert step is not None and step.deadline_at is not None
    parts = deadline.name.split("/")
    if parts[2] == "remind":
        return [
            ev.ApprovalReminderSent(
                approval_id=request.approval_id,
                step_index=step.index,
                department=step.places[0].decider.department,
                deadline=ts(step.deadline_at),
                share=float(parts[3]),
            )
        ]
    if step.escalate_to is not None and not step.escalated:
        calendar = policy.calendar
        new_deadline = calendar.add_duration(now, step.deadline)
        return [
            ev.ApprovalStepEscalated(
                approval_id=request.approval_id,
                step_index=step.index,
                from_department=step.places[0].decider.department,
                to_department=step.escalate_to.department,
                new_deadline=ts(new_deadline),
                to=_decider_message(step.escalate_to),
                missed_deadline=ts(step.deadline_at),
            )
        ]
    return [
        ev.ApprovalExpired(
            approval_id=request.approval_id,
            ticket_id=request.ticket_id,
            step_index=step.index,
            missed_deadline=ts(step.deadline_at),
        )
    ]


# Evolve -------------------------------------------------------------------------------------------


def evolve(request: ApprovalRequest, envelope: Envelope) -> ApprovalRequest:
    event, at = envelope.payload, envelope.occurred_at
    match event:
        case ev.ApprovalRequested():
            return ApprovalRequest(
                approval_id=event.approval_id,
                status=PENDING,
                ticket_id=event.ticket_id,
                kind=event.kind,
                amount_minor=event.amount.minor_units,
                currency=event.amount.currency,
                dispatch_id=event.dispatch_id,
                extension_s=event.extension.seconds,
                requested_by=event.requested_by,
                requested_by_department=event.requested_by_department,
                requested_at=at,
                policy_id=event.policy_id,
                policy_version=event.policy_version,
                rule=event.rule,
                customer_tier=event.customer_tier,
                ticket_type=event.ticket_type,
                justification=event.justification,
                steps=tuple(_step_from_message(step) for step in event.chain),
            )
        case ev.ApprovalStepOpened():
            return _with_step(
                replace(request, current=event.step_index),
                event.step_index,
                status="open",
                deadline_at=dt(event.deadline),
                reminders=_reminders(request.steps[event.step_index].remind_at, event.remind_at),
            )
        case ev.ApprovalDecided():
            step = request.steps[event.step_index]
            request = replace(request, trail=(*request.trail, event), decided_at=(*request.decided_at, at))
            if event.decision == REQUEST_INFO:
                return _with_step(request, step.index, status="info", info_asked_at=at)
            places = list(step.places)
            places[event.place] = replace(
                places[event.place], decision=event.decision, approver_id=event.approver_id
            )
            decided_by = step.decided_by | {event.approver_id} | ({event.on_behalf_of} - {""})
            return _with_step(request, step.index, places=tuple(places), decided_by=decided_by)
        case ev.ApprovalInfoProvided():
            step = request.steps[event.step_index]
            return _with_step(
                request,
                step.index,
                status="open",
                info_asked_at=None,
                deadline_at=dt(event.deadline),
                reminders=tuple(zip([s for s, _ in step.reminders], map(dt, event.remind_at), strict=True)),
            )
        case ev.ApprovalReminderSent():
            step = request.steps[event.step_index]
            return _with_step(
                request, step.index, reminders=tuple(r for r in step.reminders if r[0] != event.share)
            )
        case ev.ApprovalStepEscalated():
            backup = Decider(event.to.department, event.to.role)
            return _with_step(
                request,
                event.step_index,
                places=(Place(backup),),
                needed=1,
                escalated=True,
                reminders=(),
                deadline_at=dt(event.new_deadline),
            )
        case ev.ApprovalStepCompleted():
            status = "approved" if event.outcome == APPROVE else "rejected"
            return _with_step(request, event.step_index, status=status)
        case ev.ApprovalGranted():
            return replace(request, status=GRANTED, ended_at=at)
        case ev.ApprovalRejected():
            return replace(request, status=REJECTED, ended_at=at, outcome_reason=event.reason)
        case ev.ApprovalExpired():
            return replace(request, status=EXPIRED, ended_at=at)
        case ev.ApprovalWithdrawn():
            return replace(request, status=WITHDRAWN, ended_at=at, outcome_reason=event.reason)
    return request


def _with_step(request: ApprovalRequest, index: int, **changes: object) -> ApprovalRequest:
    steps = list(request.steps)
    steps[index] = replace(steps[index], **changes)  # type: ignore[arg-type]
    return replace(request, steps=tuple(steps))


def _reminders(shares: Sequence[float], times: Sequence[Timestamp]) -> tuple[tuple[float, datetime], ...]:
    return tuple(zip(shares, (dt(t) for t in times), strict=True))


# Messages -----------------------------------------------------------------------------------------


def _step_of(index: int, spec: StepSpec) -> Step:
    return Step(
        index,
        spec.name,
        tuple(Place(decider) for decider in spec.deciders),
        spec.needed,
        spec.deadline,
        spec.remind_at,
        spec.escalate_to,
    )


def chain_messages(rule: ApprovalRule) -> list[ev.ApprovalStep]:
    """A rule's chain as the events and views carry it."""
    return [_step_message(index, spec) for index, spec in enumerate(rule.steps)]


def _step_message(index: int, spec: StepSpec) -> ev.ApprovalStep:
    mode = ev.STEP_MODE_SINGLE
    if spec.parallel:
        mode = ev.STEP_MODE_ALL if spec.needed == len(spec.deciders) else ev.STEP_MODE_ANY
        mode = ev.STEP_MODE_QUORUM if 1 < spec.needed < len(spec.deciders) else mode
    return ev.ApprovalStep(
        index=index,
        name=spec.name,
        department=spec.deciders[0].department,
        mode=mode,
        quorum=spec.needed,
        stage=index,
        deciders=[_decider_message(d) for d in spec.deciders],
        approvals_needed=spec.needed,
        deadline=ev.WorkingDuration(
            working=pb_duration(spec.deadline.working), working_days=spec.deadline.working_days
        ),
        remind_at=list(spec.remind_at),
        escalate_to=spec.escalate_to.department if spec.escalate_to else "",
        escalate_to_decider=_decider_message(spec.escalate_to) if spec.escalate_to else None,
    )


def _step_from_message(message: ev.ApprovalStep) -> Step:
    backup = message.escalate_to_decider if message.HasField("escalate_to_decider") else None
    return Step(
        message.index,
        message.name,
        tuple(Place(Decider(d.department, d.role)) for d in message.deciders),
        message.approvals_needed,
        Duration(working=message.deadline.working.ToTimedelta(), working_days=message.deadline.working_days),
        tuple(message.remind_at),
        Decider(backup.department, backup.role) if backup is not None else None,
    )


def _decider_message(decider: Decider) -> ev.Decider:
    return ev.Decider(department=decider.department, role=decider.role)


def measure(kind: str, amount_minor: int, currency: str, extension_s: int, policy: ApprovalPolicy) -> Decimal:
    """What a policy's amount ranges compare: the money asked for, or for an extension of a
    department's dispatch the extra time asked, in hours."""
    if kind == DISPATCH_EXTENSION:
        return Decimal(extension_s) / 3600
    return policy.amount_of(amount_minor, currency)


def amount_of(request: ApprovalRequest, policy: ApprovalPolicy) -> Decimal:
    return measure(request.kind, request.amount_minor, request.currency, request.extension_s, policy)


def rechoose(request: ApprovalRequest, policy: ApprovalPolicy) -> str:
    """The rule ``policy`` would choose for the request, or why it could not: for dry runs."""
    try:
        return policy.choose(request.values, amount_of(request, policy)).name
    except InvalidArgument as refused:
        return f"refused: {refused}"
