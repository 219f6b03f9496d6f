"""The KPI projection of approvals: a request's events folded into its step facts, with no I/O.

One fold per approval request (``ApprovalFold``), a pure function of (fold, event) to the new fold,
gives ``approval_step_facts`` (``deploy/clickhouse``): one row per stint of a step in a department,
rewritten with the request's version when one of the stint's events comes.

A step's first stint is with the department its ``ApprovalStepOpened`` names. At its deadline, a step
with a backup goes to it (``ApprovalStepEscalated``): the first stint ends ``escalated`` at the missed
deadline and the backup's is a stint of its own (``stint`` 1), on its fresh deadline; a missed deadline
with no backup left ends the stint ``expired`` (``ApprovalExpired``). A stint also ends ``approved`` or
``rejected`` (``ApprovalStepCompleted``), or ``withdrawn`` when the requester withdraws the request
while it is open. A request for more information pauses the stint until the requester answers
(``ApprovalInfoProvided``, which moves the deadline); paused time is not time in the department.

Approver ids are not kept (staff ids stay in the approvals API's trail, as ticket facts keep no
assignee). An event at or below the fold's version changes nothing, so a redelivered or replayed event
is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from callcenter.approvals.v1 import events_pb2 as approval_ev

from services.kpi.projection import Row
from services.platform.envelope import Envelope

REQUEST = "ApprovalRequest"

_DECISION = approval_ev.Decision
OUTCOMES = ("approved", "rejected", "escalated", "expired", "withdrawn")


def _time_if_set(message: Any, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


@dataclass(frozen=True)
class StintFold:
    """One step's time with one department; ``version`` is the request's when the stint last changed."""

    step: int
    stint: int
    department: str
    opened_at: datetime
    deadline_at: datetime | None = None
    paused_since: datetime | None = None
    paused_s: float = 0.0
    info_requests: int = 0
    reminders: int = 0
    ended_at: datetime | None = None
    outcome: str = ""
    within_deadline: bool = False
    version: int = 0

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def resume(self, at: datetime) -> StintFold:
        """The requester answered (or the stint ended while it waited): the pause ends at ``at``."""
        if self.paused_since is None:
            return self
        waited = max((at - self.paused_since).total_seconds(), 0.0)
        return replace(self, paused_s=self.paused_s + waited, paused_since=None)

    def end(self, at: datetime, outcome: str, version: int) -> StintFold:
        within = outcome in ("approved", "rejected") and (self.deadline_at is None or at <= self.deadline_at)
        return replace(self.resume(at), ended_at=at, outcome=outcome, within_deadline=within, version=version)

    @property
    def duration_s(self) -> float:
        """Time in the department, paused time excluded; 0 while open."""
        if self.ended_at is None:
            return 0.0
        return max((self.ended_at - self.opened_at).total_seconds() - self.paused_s, 0.0)


@dataclass(frozen=True)
class ApprovalFold:
    """Everything the KPIs know of one approval request."""

    approval_id: str
    version: int = 0
    requested_at: datetime | None = None
    ticket_id: str = ""
    kind: str = ""
    rule: str = ""
    policy_id: str = ""
    policy_version: int = 0
    step_names: tuple[str, ...] = ()
    ended_at: datetime | None = None
    stints: tuple[StintFold, ...] = ()

    @property
    def forget_after(self) -> datetime | None:
        """When nothing can change the request any more: granted, rejected, expired or withdrawn."""
        return self.ended_at

    def open_stint(self, step: int | None = None) -> int | None:
        """The index (in ``stints``) of the open stint, of ``step`` when given; None when there is none."""
        for index in range(len(self.stints) - 1, -1, -1):
            stint = self.stints[index]
            if stint.open and (step is None or stint.step == step):
                return index
        return None


def fold_approval(fold: ApprovalFold, envelope: Envelope) -> ApprovalFold:
    """The request after one of its events."""
    if envelope.aggregate_version <= fold.version:
        return fold
    return replace(_apply(fold, envelope), version=envelope.aggregate_version)


def _apply(fold: ApprovalFold, envelope: Envelope) -> ApprovalFold:
    event, at, version = envelope.payload, envelope.occurred_at, envelope.aggregate_version
    match envelope.event_type:
        case "ApprovalRequested":
            return replace(
                fold,
                requested_at=at,
                ticket_id=event.ticket_id,
                kind=event.kind,
                rule=event.rule,
                policy_id=event.policy_id,
                policy_version=event.policy_version,
                step_names=tuple(step.name for step in sorted(event.chain, key=lambda s: s.index)),
            )
        case "ApprovalStepOpened":
            opened = StintFold(
                step=event.step_index,
                stint=0,
                department=event.department,
                opened_at=at,
                deadline_at=_time_if_set(event, "deadline"),
                version=version,
            )
            return replace(fold, stints=(*fold.stints, opened))
        case "ApprovalDecided" if event.decision == _DECISION.DECISION_REQUEST_INFO:
            return _change(
                fold,
                event.step_index,
                lambda s: replace(
                    s, paused_since=s.paused_since or at, info_requests=s.info_requests + 1, version=version
                ),
            )
        case "ApprovalInfoProvided":
            return _change(
                fold,
                event.step_index,
                lambda s: replace(
                    s.resume(at),
                    deadline_at=_time_if_set(event, "deadline") or s.deadline_at,
                    version=version,
                ),
            )
        case "ApprovalReminderSent":
            return _change(
                fold, event.step_index, lambda s: replace(s, reminders=s.reminders + 1, version=version)
            )
        case "ApprovalStepCompleted":
            outcome = "approved" if event.outcome == _DECISION.DECISION_APPROVE else "rejected"
            return _change(fold, event.step_index, lambda s: s.end(at, outcome, version))
        case "ApprovalStepEscalated":
            return _escalated(fold, event, at, version)
        case "ApprovalExpired":
            missed = _time_if_set(event, "missed_deadline") or at
            fold = _change(fold, event.step_index, lambda s: s.end(missed, "expired", version))
            return replace(fold, ended_at=at)
        case "ApprovalWithdrawn":
            index = fold.open_stint()
            if index is not None:
                fold = _change_at(fold, index, fold.stints[index].end(at, "withdrawn", version))
            return replace(fold, ended_at=at)
        case "ApprovalGranted" | "ApprovalRejected":
            return replace(fold, ended_at=at)
    return fold


def _escalated(fold: ApprovalFold, event: Any, at: datetime, version: int) -> ApprovalFold:
    """The step's stint ends at the deadline it missed; its backup's stint opens now, on its new deadline."""
    index = fold.open_stint(event.step_index)
    if index is None:
        return fold
    stint = fold.stints[index]
    missed = _time_if_set(event, "missed_deadline") or at
    backup = StintFold(
        step=stint.step,
        stint=stint.stint + 1,
        department=event.to.department or event.to_department,
        opened_at=at,
        deadline_at=_time_if_set(event, "new_deadline"),
        version=version,
    )
    fold = _change_at(fold, index, stint.end(missed, "escalated", version))
    return replace(fold, stints=(*fold.stints, backup))


def _change(fold: ApprovalFold, step: int, change: Any) -> ApprovalFold:
    index = fold.open_stint(step)
    if index is None:
        return fold
    return _change_at(fold, index, change(fold.stints[index]))


def _change_at(fold: ApprovalFold, index: int, stint: StintFold) -> ApprovalFold:
    return replace(fold, stints=(*fold.stints[:index], stint, *fold.stints[index + 1 :]))


# rows ---------------------------------------------------------------------------------------------


def step_rows(fold: ApprovalFold, since_version: int = 0) -> list[Row]:
    """The facts of the request's stints changed after ``since_version`` (all of them by default);
    none before its ApprovalRequested was folded."""
    if fold.requested_at is None:
        return []
    return [_step_row(fold, stint) for stint in fold.stints if stint.version > since_version]


def _step_row(fold: ApprovalFold, s: StintFold) -> Row:
    name = fold.step_names[s.step] if s.step < len(fold.step_names) else ""
    return {
        "step_fact_id": f"{fold.approval_id}:{s.step}:{s.stint}",
        "request_id": fold.approval_id,
        "ticket_id": fold.ticket_id,
        "kind": fold.kind,
        "rule": fold.rule,
        "policy_id": fold.policy_id,
        "policy_version": fold.policy_version,
        "step": s.step,
        "step_name": name,
        "stint": s.stint,
        "department": s.department,
        "opened_at": s.opened_at,
        "deadline_at": s.deadline_at,
        "paused_since": s.paused_since,
        "ended_at": s.ended_at,
        "duration_s": round(s.duration_s, 3),
        "paused_s": round(s.paused_s, 3),
        "info_requests": min(s.info_requests, 65535),
        "reminders": min(s.reminders, 65535),
        "within_deadline": s.within_deadline,
        "outcome": s.outcome,
        "version": s.version,
    }
