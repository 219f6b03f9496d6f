"""Plays the back office of a scenario: the center's ticket desk and one actor per department.

Wrap-ups that ask for a ticket open one in the tickets service (its reaction to WrapUpCompleted);
the center finds it on the agent's list (ListTickets), dispatches it by the catalogue, reviews
returns (re-dispatching them) and extensions (granting them), resolves the ticket once every
dispatch is done and records the citizen's verdict at the follow-up call. Each department, with its
own DEPARTMENT token, polls its work list (ListDispatches), then accepts, reports progress, asks for
an extension or returns a case as not its own, and completes, each after a seeded delay. Everything
runs on the simulation's loop through its ``call`` and ``later``; the ground truth records each
step when the service has accepted it.

Given the approvals service, a share of the tickets needs sign-off once their dispatches are done:
the center asks for it (tickets' RequestApproval), follows the request (GetRequest), answers an
approver's question (ProvideInformation) after a seeded delay, and resolves the ticket once the
request ends: granted, or rejected, when the ticket goes back to its assignee, who explains the
refusal to the citizen and resolves it. The approvers, the center's team lead (an agent's token with
the title team_lead, whose list holds the steps a team lead decides) and the finance and legal
departments (their own DEPARTMENT tokens), poll
ListPending and decide each step after a seeded delay: a seeded share of rejections and, once per
step, of questions first.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
from callcenter.approvals.v1 import events_pb2 as approvals_ev
from callcenter.approvals.v1 import service_pb2 as approvals_pb
from callcenter.approvals.v1 import service_pb2_grpc as approvals_grpc
from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as tickets_ev
from callcenter.tickets.v1 import service_pb2 as tickets_pb
from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc

from services.platform.identity import Role
from simulator.callers import CallerChannel, department_caller, member_caller
from simulator.scenario import ApprovalPlan, BackOffice, TicketPlan, approval_plan

if TYPE_CHECKING:
    from simulator.driver import Simulation

ROLES = {
    tickets_ev.DispatchRole.DISPATCH_ROLE_LEAD: "lead",
    tickets_ev.DispatchRole.DISPATCH_ROLE_ASSISTING: "assisting",
}
SATISFACTION = {
    "satisfied": tickets_ev.Satisfaction.SATISFACTION_SATISFIED,
    "basically_satisfied": tickets_ev.Satisfaction.SATISFACTION_BASICALLY_SATISFIED,
    "dissatisfied": tickets_ev.Satisfaction.SATISFACTION_DISSATISFIED,
}
CSAT = {"satisfied": (4, 5), "basically_satisfied": (3, 4), "dissatisfied": (1, 2)}
DISPATCHED = tickets_pb.DispatchStatus.DISPATCH_STATUS_DISPATCHED
APPROVERS = ("center", "finance", "legal")  # the policy's deciders of refunds and compensations
DECISIONS = {
    "info": approvals_ev.Decision.DECISION_REQUEST_INFO,
    "approved": approvals_ev.Decision.DECISION_APPROVE,
    "rejected": approvals_ev.Decision.DECISION_REJECT,
}
ENDED = {
    approvals_pb.ApprovalStatus.APPROVAL_STATUS_GRANTED: "granted",
    approvals_pb.ApprovalStatus.APPROVAL_STATUS_REJECTED: "rejected",
    approvals_pb.ApprovalStatus.APPROVAL_STATUS_EXPIRED: "expired",
    approvals_pb.ApprovalStatus.APPROVAL_STATUS_WITHDRAWN: "withdrawn",
}
STEP_OPEN = approvals_pb.StepStatus.STEP_STATUS_OPEN
STEP_ASKING = approvals_pb.StepStatus.STEP_STATUS_AWAITING_INFORMATION


@dataclass
class DispatchRecord:
    """One dispatch of a ticket to a department, and what the department and the center did with it."""

    dispatch_id: str
    ticket_id: str
    department: str
    role: str
    redo: bool = False
    redispatch: bool = False
    accepted: bool = False
    returned: bool = False
    withdrawn: bool = False
    extension_requested: bool = False
    extension_granted: bool = False
    progress_reports: int = 0
    completed: bool = False
    resolved: bool = False
    # When the center heard the dispatch made, and when the department's return or completion was
    # accepted: the stretch the dispatch spent with the department.
    sent_at: datetime | None = None
    left_at: datetime | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def open(self) -> bool:
        return not (self.completed or self.withdrawn)

    def truth(self) -> dict[str, Any]:
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in vars(self).items()
            if name != "rng"
        }


@dataclass
class StepRecord:
    """One step of an approval as its approver handled it. It opened when the previous step's
    approval was recorded and ended at its own decision, each at the service's own time of it (the
    trail's; the first step at the request's time); it waited on the requester from the question (the
    trail's time) to the answer, which the service recorded between the moment the answer was sent and
    the one it returned: so the time waited is known between ``paused_min_s`` and ``paused_s``, and the
    time in the department between ``duration_s`` and ``duration_max_s``, however slow the machine."""

    index: int
    department: str
    opened_at: datetime
    rng: random.Random = field(default_factory=random.Random, repr=False)
    phase: str = "deciding"  # deciding, asked (a question waits for its answer), decided
    info_requests: int = 0
    asked_version: int = 0  # the request's version the question made
    asked_at: datetime | None = None
    paused_s: float = 0.0  # at most: until each answer returned
    paused_min_s: float = 0.0  # at least: until each answer was sent
    outcome: str = ""  # approved, rejected
    ended_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """Time in the department, at least (less the longest the pauses can have been)."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.opened_at).total_seconds() - self.paused_s

    @property
    def duration_max_s(self) -> float | None:
        """Time in the department, at most (less the shortest the pauses can have been)."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.opened_at).total_seconds() - self.paused_min_s

    def truth(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "department": self.department,
            "opened_at": self.opened_at.isoformat(),
            "info_requests": self.info_requests,
            "paused_s": self.paused_s,
            "paused_min_s": self.paused_min_s,
            "outcome": self.outcome,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_s": self.duration_s,
            "duration_max_s": self.duration_max_s,
        }


@dataclass
class ApprovalRecord:
    """One approval a ticket asked for, its steps as the approvers decided them, and its end."""

    approval_id: str
    ticket_id: str
    plan: ApprovalPlan
    rng: random.Random = field(default_factory=random.Random, repr=False)
    status: str = "pending"  # as the last decision's answer showed it: granted, rejected
    steps: list[StepRecord] = field(default_factory=list)
    next_opened_at: datetime | None = None  # when the step after the last approved one opened
    answering: set[int] = field(default_factory=set)  # steps whose question the center took up
    heard_end: bool = False  # the center saw the request end

    def step(self, index: int) -> StepRecord | None:
        return next((step for step in self.steps if step.index == index), None)

    def truth(self) -> dict[str, Any]:
        return {
            "approval_id": self.approval_id,
            "ticket_id": self.ticket_id,
            "kind": self.plan.kind,
            "amount_minor": self.plan.amount_minor,
            "size": self.plan.size,
            "status": self.status,
            "steps": [step.truth() for step in self.steps],
        }


@dataclass
class TicketRecord:
    """One ticket opened from a wrap-up, as the center handled it."""

    ticket_id: str
    contact_id: str
    agent_id: str
    index: int  # the caller's, which seeds the ticket's draws
    plan: TicketPlan
    rng: random.Random
    phase: str = "found"  # found, dispatched, resolved, closed
    dispatched: bool = False
    resolutions: int = 0
    reopened: int = 0
    dispatches: list[DispatchRecord] = field(default_factory=list)
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    approval_plan: ApprovalPlan | None = None
    approval: ApprovalRecord | None = None

    def truth(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "contact_id": self.contact_id,
            "agent_id": self.agent_id,
            "ticket_type": self.plan.ticket_type,
            "category": self.plan.category,
            "priority": self.plan.priority,
            "phase": self.phase,
            "dispatched": self.dispatched,
            "resolutions": self.resolutions,
            "reopened": self.reopened,
            "dispatches": [d.truth() for d in self.dispatches],
            "follow_ups": self.follow_ups,
            "approval": self.approval.truth() if self.approval is not None else None,
        }


class Backoffice:
    """The center's ticket desk and the departments of the catalogue, on one simulation's loop."""

    def __init__(
        self, sim: Simulation, address: str, departments: list[str], approvals_address: str = ""
    ) -> None:
        self.sim = sim
        self.habits: BackOffice = sim.scenario.back_office
        self.departments = sorted(departments)
        self._channels = [CallerChannel(address)]  # the center: a supervisor's token
        self.center = tickets_grpc.TicketsServiceStub(self._channels[0])
        self.desks: dict[str, tickets_grpc.TicketsServiceStub] = {}
        for code in self.departments:
            self._channels.append(CallerChannel(address, choose=department_caller(code)))
            self.desks[code] = tickets_grpc.TicketsServiceStub(self._channels[-1])
        self.tickets: dict[str, TicketRecord] = {}
        self.dispatches: dict[str, DispatchRecord] = {}
        self.awaited: dict[str, dict[str, tuple[int, TicketPlan]]] = {}  # agent -> contact -> plan
        self._seen: set[str] = set()  # dispatches a department has taken up
        self.approvals: dict[str, ApprovalRecord] = {}
        # The center's approvals desk (a supervisor's token: it asks, follows and answers), and per
        # deciding department the stub it lists its pending steps with and the one it decides with.
        self.approvals_desk: approvals_grpc.ApprovalsServiceStub | None = None
        self.approvers: dict[str, tuple[approvals_grpc.ApprovalsServiceStub, ...]] = {}
        if approvals_address:
            self._channels.append(CallerChannel(approvals_address))
            self.approvals_desk = approvals_grpc.ApprovalsServiceStub(self._channels[-1])
            lead = member_caller(Role.AGENT, f"{sim.run_id}-lead", ("team_lead",))
            self._channels.append(CallerChannel(approvals_address, choose=lead))
            lead_stub = approvals_grpc.ApprovalsServiceStub(self._channels[-1])
            self.approvers["center"] = (lead_stub, lead_stub)
            for code in APPROVERS[1:]:
                self._channels.append(CallerChannel(approvals_address, choose=department_caller(code)))
                stub = approvals_grpc.ApprovalsServiceStub(self._channels[-1])
                self.approvers[code] = (stub, stub)
        self._polling: set[str] = set()  # work lists being fetched now
        self._running = False

    # Lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self.sim.later(self.habits.poll_s, self._poll)

    def busy(self) -> bool:
        """Whether a ticket of the run is still awaited or on its way (the run waits for it)."""
        return any(self.awaited.values()) or any(t.phase != "closed" for t in self.tickets.values())

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        self._running = False
        for channel in self._channels:
            channel.close()

    def expect(self, agent_id: str, contact_id: str, index: int, plan: TicketPlan) -> None:
        """The agent's wrap-up asking for this ticket was accepted: the tickets service will open it."""
        self.awaited.setdefault(agent_id, {})[contact_id] = (index, plan)

    def counts(self) -> Counter[str]:
        """The run's tickets by the center's phase, for the wallboard."""
        return Counter(t.phase for t in self.tickets.values())

    def truth(self) -> list[dict[str, Any]]:
        return [ticket.truth() for ticket in self.tickets.values()]

    def approvals_truth(self) -> list[dict[str, Any]]:
        """The run's approvals, each with its ticket's type, as the center and the approvers left them."""
        return [
            {**approval.truth(), "ticket_type": self.tickets[approval.ticket_id].plan.ticket_type}
            for approval in self.approvals.values()
        ]

    # Polling: the agents' ticket lists and the departments' work lists ----------------------------

    def _poll(self) -> None:
        if not self._running:
            return
        for agent_id, contacts in self.awaited.items():
            if contacts and f"agent/{agent_id}" not in self._polling:
                self._list_tickets(agent_id)
        for code in self.departments:
            if f"dept/{code}" not in self._polling:
                self._list_dispatches(code)
        for code in self.approvers:
            if f"approver/{code}" not in self._polling:
                self._list_pending(code)
        for approval in self.approvals.values():
            if not approval.heard_end and f"approval/{approval.approval_id}" not in self._polling:
                self._follow(approval)
        self.sim.later(self.habits.poll_s, self._poll)

    def _list_tickets(self, agent_id: str) -> None:
        key = f"agent/{agent_id}"
        self._polling.add(key)

        def listed(response: Any) -> None:
            self._polling.discard(key)
            awaited = self.awaited.get(agent_id, {})
            for ticket in response.tickets:
                if ticket.source_contact_id in awaited and ticket.ticket_id not in self.tickets:
                    index, plan = awaited.pop(ticket.source_contact_id)
                    self._found(ticket, agent_id, index, plan)

        self.sim.call(
            self.center.ListTickets,
            tickets_pb.ListTicketsRequest(assignee_id=agent_id, page_size=1000),
            then=listed,
            failed=lambda _: self._polling.discard(key),
        )

    def _list_dispatches(self, code: str) -> None:
        key = f"dept/{code}"
        self._polling.add(key)

        def listed(response: Any) -> None:
            self._polling.discard(key)
            for item in response.dispatches:
                record = self.dispatches.get(item.dispatch_id)
                # A dispatch the center has not heard back about yet waits for the next look.
                if record is None or item.dispatch_id in self._seen:
                    continue
                self._seen.add(item.dispatch_id)
                self._take_up(record, item)

        self.sim.call(
            self.desks[code].ListDispatches,
            tickets_pb.ListDispatchesRequest(department=code, status=DISPATCHED, page_size=1000),
            then=listed,
            failed=lambda _: self._polling.discard(key),
        )

    # The center -----------------------------------------------------------------------------------

    def _found(self, ticket: Any, agent_id: str, index: int, plan: TicketPlan) -> None:
        rng = random.Random(f"{self.sim.scenario.seed}/ticket/{index}")
        record = TicketRecord(ticket.ticket_id, ticket.source_contact_id, agent_id, index, plan, rng)
        if self.approvals_desk is not None:
            record.approval_plan = approval_plan(self.sim.scenario, index)
        self.tickets[record.ticket_id] = record
        self.sim.later(rng.uniform(*self.habits.dispatch_delay_s), lambda: self._dispatch(record))

    def _dispatch(self, ticket: TicketRecord) -> None:
        request = tickets_pb.DispatchRequest(
            request_id=self.sim.request_id("dispatch"),
            ticket_id=ticket.ticket_id,
            instructions=f"Please handle: {ticket.plan.category}",
        )

        def dispatched(response: Any) -> None:
            ticket.phase, ticket.dispatched = "dispatched", True
            self._register(ticket, response.ticket, set(response.dispatch_ids))

        self.sim.call(self.center.Dispatch, request, then=dispatched)

    def _register(
        self, ticket: TicketRecord, state: Any, ids: set[str], **flags: bool
    ) -> list[DispatchRecord]:
        """The dispatches ``ids`` the service made, as the ticket it answered shows them."""
        made = []
        for item in state.dispatches:
            if item.dispatch_id not in ids or item.dispatch_id in self.dispatches:
                continue
            n = sum(d.department == item.department for d in ticket.dispatches)
            rng = random.Random(f"{self.sim.scenario.seed}/dispatch/{ticket.index}/{item.department}/{n}")
            record = DispatchRecord(
                item.dispatch_id,
                ticket.ticket_id,
                item.department,
                ROLES.get(item.role, "lead"),
                sent_at=datetime.now(UTC),
                rng=rng,
                **flags,
            )
            ticket.dispatches.append(record)
            self.dispatches[record.dispatch_id] = record
            made.append(record)
        return made

    def _review_return(self, dispatch: DispatchRecord) -> None:
        ticket = self.tickets[dispatch.ticket_id]
        holding = {d.department for d in ticket.dispatches if d.open}
        others = [code for code in self.departments if code not in holding]
        to = dispatch.rng.choice(others) if others else ""
        request = tickets_pb.ReviewReturnRequest(
            request_id=self.sim.request_id("review-return"),
            ticket_id=dispatch.ticket_id,
            dispatch_id=dispatch.dispatch_id,
            accept=True,
            redispatch_to=to,
            note="Not theirs: re-dispatched",
        )

        def reviewed(response: Any) -> None:
            dispatch.withdrawn = True
            if response.dispatch_id:
                self._register(ticket, response.ticket, {response.dispatch_id}, redispatch=True)
            self._check(ticket)

        self.sim.call(self.center.ReviewReturn, request, then=reviewed)

    def _review_extension(self, dispatch: DispatchRecord, item: Any) -> None:
        request = tickets_pb.ReviewExtensionRequest(
            request_id=self.sim.request_id("review-extension"),
            ticket_id=dispatch.ticket_id,
            dispatch_id=dispatch.dispatch_id,
            grant=True,
            note="Granted",
        )

        def granted(_: Any) -> None:
            dispatch.extension_granted = True
            self._work(dispatch, item)

        self.sim.call(self.center.ReviewExtension, request, then=granted)

    def _check(self, ticket: TicketRecord) -> None:
        """Every dispatch of the ticket is done: the center asks for the sign-off its remedy needs
        (once), or resolves it and calls the citizen back."""
        if ticket.phase != "dispatched" or any(d.open for d in ticket.dispatches):
            return
        if ticket.approval_plan is not None and ticket.approval is None:
            self._ask_approval(ticket, ticket.approval_plan)
            return
        self._resolve(ticket, "departments_done", "The departments completed their parts.")

    def _resolve(self, ticket: TicketRecord, code: str, resolution: str, attempts: int = 60) -> None:
        ticket.phase = "resolving"
        request = tickets_pb.ResolveRequest(
            request_id=self.sim.request_id("resolve"),
            ticket_id=ticket.ticket_id,
            resolution_code=code,
            resolution=resolution,
        )

        def retry(error: Any) -> bool:
            # The approval's end reaches the ticket by the tickets service's reaction: until it
            # has, the ticket still waits for it and refuses to be resolved.
            waits = ticket.approval is not None and attempts > 1
            if waits and error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.sim.later(
                    self.habits.poll_s, lambda: self._resolve(ticket, code, resolution, attempts - 1)
                )
                return True
            return False

        def resolved(_: Any) -> None:
            ticket.phase = "resolved"
            ticket.resolutions += 1
            self.sim.later(
                ticket.rng.uniform(*self.habits.follow_up_delay_s), lambda: self._follow_up(ticket)
            )

        self.sim.call(self.center.Resolve, request, then=resolved, failed=retry)

    def _follow_up(self, ticket: TicketRecord) -> None:
        verdicts, weights = zip(*self.habits.satisfaction, strict=True)
        verdict = ticket.rng.choices(verdicts, weights)[0]
        csat = ticket.rng.randint(*CSAT[verdict])
        at_fault = (
            verdict == "dissatisfied"
            and not any(d.redo for d in ticket.dispatches)
            and ticket.rng.random() < self.habits.at_fault_share
        )
        judged = [d for d in ticket.dispatches if d.role == "lead" and d.completed]
        request = tickets_pb.RecordFollowUpRequest(
            request_id=self.sim.request_id("follow-up"),
            ticket_id=ticket.ticket_id,
            reached=True,
            resolved=verdict != "dissatisfied",
            satisfaction=SATISFACTION[verdict],
            csat_score=csat,
            department_at_fault=at_fault,
        )

        def recorded(response: Any) -> None:
            ticket.follow_ups.append(
                {
                    "satisfaction": verdict,
                    "csat": csat,
                    "department_at_fault": at_fault,
                    "dispatch_id": judged[-1].dispatch_id if judged else "",
                    "department": judged[-1].department if judged else "",
                }
            )
            if at_fault:
                ticket.phase, ticket.reopened = "dispatched", ticket.reopened + 1
                known = {d.dispatch_id for d in ticket.dispatches}
                fresh = {d.dispatch_id for d in response.ticket.dispatches} - known
                self._register(ticket, response.ticket, fresh, redo=True)
            else:
                ticket.phase = "closed"

        self.sim.call(self.center.RecordFollowUp, request, then=recorded)

    # The departments ------------------------------------------------------------------------------

    def _take_up(self, dispatch: DispatchRecord, item: Any) -> None:
        """A department found a new dispatch on its work list."""
        rng = dispatch.rng
        delay = rng.uniform(*self.habits.accept_delay_s)
        first = not (dispatch.redo or dispatch.redispatch)
        if first and rng.random() < self.habits.return_share:
            self.sim.later(delay, lambda: self._return(dispatch))
        else:
            self.sim.later(delay, lambda: self._accept(dispatch, item))

    def _desk(self, dispatch: DispatchRecord) -> tickets_grpc.TicketsServiceStub:
        return self.desks[dispatch.department]

    def _return(self, dispatch: DispatchRecord) -> None:
        request = tickets_pb.ReturnDispatchRequest(
            request_id=self.sim.request_id("return"),
            ticket_id=dispatch.ticket_id,
            dispatch_id=dispatch.dispatch_id,
            reason="Not within our remit",
        )

        def returned(_: Any) -> None:
            dispatch.returned, dispatch.left_at = True, datetime.now(UTC)
            self.sim.later(
                dispatch.rng.uniform(*self.habits.review_delay_s), lambda: self._review_return(dispatch)
            )

        self.sim.call(self._desk(dispatch).ReturnDispatch, request, then=returned)

    def _accept(self, dispatch: DispatchRecord, item: Any) -> None:
        request = tickets_pb.AcceptDispatchRequest(
            request_id=self.sim.request_id("accept-dispatch"),
            ticket_id=dispatch.ticket_id,
            dispatch_id=dispatch.dispatch_id,
        )

        def accepted(response: Any) -> None:
            dispatch.accepted = True
            if dispatch.rng.random() < self.habits.extension_share:
                self._ask_extension(dispatch, response.dispatch)
            else:
                self._work(dispatch, response.dispatch)

        self.sim.call(self._desk(dispatch).AcceptDispatch, request, then=accepted)

    def _ask_extension(self, dispatch: DispatchRecord, item: Any) -> None:
        request = tickets_pb.RequestExtensionRequest(
            request_id=self.sim.request_id("extension"),
            ticket_id=dispatch.ticket_id,
            dispatch_id=dispatch.dispatch_id,
            reason="Waiting for a site visit",
        )
        request.requested_due_at.FromDatetime(item.due_at.ToDatetime() + timedelta(days=3))

        def asked(_: Any) -> None:
            dispatch.extension_requested = True
            self.sim.later(
                dispatch.rng.uniform(*self.habits.review_delay_s),
                lambda: self._review_extension(dispatch, item),
            )

        self.sim.call(self._desk(dispatch).RequestExtension, request, then=asked)

    def _work(self, dispatch: DispatchRecord, item: Any) -> None:
        request = tickets_pb.ReportProgressRequest(
            request_id=self.sim.request_id("progress"),
            ticket_id=dispatch.ticket_id,
            dispatch_id=dispatch.dispatch_id,
            note="On site, working on it",
        )

        def reported(_: Any) -> None:
            dispatch.progress_reports += 1
            self.sim.later(dispatch.rng.uniform(*self.habits.work_s), lambda: self._complete(dispatch))

        self.sim.call(self._desk(dispatch).ReportProgress, request, then=reported)

    def _complete(self, dispatch: DispatchRecord) -> None:
        solved = dispatch.rng.random() >= self.habits.unresolved_share
        request = tickets_pb.CompleteDispatchRequest(
            request_id=self.sim.request_id("complete-dispatch"),
            ticket_id=dispatch.ticket_id,
            dispatch_id=dispatch.dispatch_id,
            result="Done" if solved else "Cannot be solved by us: explained to the citizen",
            resolved=solved,
        )

        def completed(_: Any) -> None:
            dispatch.completed, dispatch.resolved, dispatch.left_at = True, solved, datetime.now(UTC)
            self._check(self.tickets[dispatch.ticket_id])

        self.sim.call(self._desk(dispatch).CompleteDispatch, request, then=completed)

    # Approvals: the center asks, follows and answers --------------------------------------------

    def _ask_approval(self, ticket: TicketRecord, plan: ApprovalPlan) -> None:
        ticket.phase = "approval"
        request = tickets_pb.RequestApprovalRequest(
            request_id=self.sim.request_id("approval"),
            ticket_id=ticket.ticket_id,
            kind=plan.kind,
            amount=types_pb2.Money(minor_units=plan.amount_minor, currency="CNY"),
            justification=f"A {plan.kind} for {ticket.plan.category}",
        )

        def asked(response: Any) -> None:
            rng = random.Random(f"{self.sim.scenario.seed}/approval-answers/{ticket.index}")
            record = ApprovalRecord(response.approval_id, ticket.ticket_id, plan, rng=rng)
            ticket.approval = record
            self.approvals[record.approval_id] = record

        self.sim.call(self.center.RequestApproval, request, then=asked)

    def _follow(self, approval: ApprovalRecord) -> None:
        """The center looks at its request: a question to answer, or its end."""
        assert self.approvals_desk is not None
        key = f"approval/{approval.approval_id}"
        self._polling.add(key)

        def got(response: Any) -> None:
            self._polling.discard(key)
            view = response.approval
            for step in view.steps:
                if step.status == STEP_ASKING and step.index not in approval.answering:
                    approval.answering.add(step.index)
                    delay = approval.rng.uniform(*self.habits.info_answer_delay_s)
                    self.sim.later(delay, lambda index=step.index: self._answer(approval, index))
            if view.status in ENDED and not approval.heard_end:
                approval.heard_end = True
                self._concluded(self.tickets[approval.ticket_id], ENDED[view.status])

        def not_yet(error: Any) -> bool:
            # The approvals service opens the request by its reaction to the ticket's event.
            self._polling.discard(key)
            return error.code() == grpc.StatusCode.NOT_FOUND

        self.sim.call(
            self.approvals_desk.GetRequest,
            approvals_pb.GetRequestRequest(approval_id=approval.approval_id),
            then=got,
            failed=not_yet,
        )

    def _answer(self, approval: ApprovalRecord, index: int) -> None:
        assert self.approvals_desk is not None
        request = approvals_pb.ProvideInformationRequest(
            request_id=self.sim.request_id("provide-info"),
            approval_id=approval.approval_id,
            answer="The receipts and the citizen's bank details are attached.",
        )

        sent = datetime.now(UTC)

        def answered(_: Any) -> None:
            step = approval.step(index)
            if step is not None and step.asked_at is not None:
                step.paused_s += (datetime.now(UTC) - step.asked_at).total_seconds()
                step.paused_min_s += (sent - step.asked_at).total_seconds()
                step.asked_at = None

        self.sim.call(self.approvals_desk.ProvideInformation, request, then=answered)

    def _concluded(self, ticket: TicketRecord, outcome: str) -> None:
        """Granted: the remedy is given and the ticket resolved. Otherwise the ticket goes back to its
        assignee, who explains the refusal to the citizen and resolves it so."""
        kind = ticket.approval_plan.kind if ticket.approval_plan else "remedy"
        if outcome == "granted":
            self._resolve(ticket, "approval_granted", f"The {kind} was approved and paid.")
        else:
            self._resolve(ticket, f"approval_{outcome}", f"The {kind} was refused: explained to the citizen.")

    # Approvals: the approvers ---------------------------------------------------------------------

    def _list_pending(self, code: str) -> None:
        key = f"approver/{code}"
        self._polling.add(key)
        lister, _ = self.approvers[code]

        def listed(response: Any) -> None:
            self._polling.discard(key)
            for view in response.approvals:
                approval = self.approvals.get(view.approval_id)
                if approval is None or not view.open_steps:
                    continue
                step = view.steps[view.open_steps[0]]
                if any(d.department == code for d in step.deciders):
                    self._look_at(approval, code, step, view)

        self.sim.call(
            lister.ListPending,
            approvals_pb.ListPendingRequest(department=code, page_size=1000),
            then=listed,
            failed=lambda _: self._polling.discard(key),
        )

    def _look_at(self, approval: ApprovalRecord, code: str, shown: Any, view: Any) -> None:
        """An approver finds a step of the run open on its list: a new one, or one whose question the
        center has answered since (a newer version of the request than the question's)."""
        step = approval.step(shown.index)
        if step is None:
            if shown.status != STEP_OPEN:
                return
            opened = view.requested_at.ToDatetime(tzinfo=UTC) if shown.index == 0 else approval.next_opened_at
            if opened is None:
                return  # the previous step's approval has not been heard yet
            index = self.tickets[approval.ticket_id].index
            rng = random.Random(f"{self.sim.scenario.seed}/approval-step/{index}/{shown.index}")
            step = StepRecord(shown.index, code, opened, rng=rng)
            approval.steps.append(step)
            self._consider(approval, step, first=True)
        elif step.phase == "asked" and shown.status == STEP_OPEN and view.version > step.asked_version:
            step.phase = "deciding"
            self._consider(approval, step, first=False)

    def _consider(self, approval: ApprovalRecord, step: StepRecord, first: bool) -> None:
        habits = self.habits
        delay = step.rng.uniform(*habits.decide_delay_s)
        if first and step.rng.random() < habits.info_request_share:
            decision = "info"
        else:
            decision = "rejected" if step.rng.random() < habits.approval_reject_share else "approved"
        self.sim.later(delay, lambda: self._decide(approval, step, decision))

    def _decide(self, approval: ApprovalRecord, step: StepRecord, decision: str) -> None:
        _, decider = self.approvers[step.department]
        comments = {
            "info": "Please attach the receipts.",
            "approved": "Approved",
            "rejected": "Not covered by the terms",
        }
        request = approvals_pb.DecideRequest(
            request_id=self.sim.request_id("decide"),
            approval_id=approval.approval_id,
            step_index=step.index,
            decision=DECISIONS[decision],
            comment=comments[decision],
        )

        def decided(response: Any) -> None:
            view = response.approval
            # The decision's time as the service recorded it (the newest entry of the trail): the
            # step's end, the next step's opening, or the start of a wait for information.
            now = view.trail[-1].decided_at.ToDatetime(tzinfo=UTC) if view.trail else datetime.now(UTC)
            if decision == "info":
                step.phase, step.asked_version, step.asked_at = "asked", view.version, now
                step.info_requests += 1
                return
            step.phase, step.outcome, step.ended_at = "decided", decision, now
            approval.status = ENDED.get(view.status, "pending")
            if decision == "approved" and approval.status == "pending":
                approval.next_opened_at = now

        self.sim.call(decider.Decide, request, then=decided)

    # For the wallboard ----------------------------------------------------------------------------

    def board(self) -> tuple[Counter[str], dict[str, Counter[str]]]:
        """The run's tickets by status (ListTickets) and dispatches per department by status
        (ListDispatches), as a supervisor's tool reads them."""
        mine = set(self.tickets)
        tickets: Counter[str] = Counter()
        token = ""
        while True:
            page = self.center.ListTickets(
                tickets_pb.ListTicketsRequest(page_size=1000, page_token=token), timeout=2
            )
            for ticket in page.tickets:
                if ticket.ticket_id in mine:
                    tickets[
                        tickets_pb.TicketStatus.Name(ticket.status).removeprefix("TICKET_STATUS_").lower()
                    ] += 1
            token = page.next_page_token
            if not token:
                break
        departments: dict[str, Counter[str]] = {}
        for code in self.departments:
            listed = self.center.ListDispatches(
                tickets_pb.ListDispatchesRequest(department=code, page_size=1000), timeout=2
            )
            states = Counter(
                tickets_pb.DispatchStatus.Name(d.status).removeprefix("DISPATCH_STATUS_").lower()
                for d in listed.dispatches
                if d.ticket_id in mine
            )
            if states:
                departments[code] = states
        return tickets, departments
