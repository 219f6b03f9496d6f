"""Plays the back office of a scenario: the center's ticket desk and one actor per department.

Wrap-ups that ask for a ticket open one in the tickets service (its reaction to WrapUpCompleted);
the center finds it on the agent's list (ListTickets), dispatches it by the catalogue, reviews
returns (re-dispatching them) and extensions (granting them), resolves the ticket once every
dispatch is done and records the citizen's verdict at the follow-up call. Each department, with its
own DEPARTMENT token, polls its work list (ListDispatches), then accepts, reports progress, asks for
an extension or returns a case as not its own, and completes, each after a seeded delay. Everything
runs on the simulation's loop through its ``call`` and ``later``; the ground truth records each
step when the service has accepted it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from callcenter.tickets.v1 import events_pb2 as tickets_ev
from callcenter.tickets.v1 import service_pb2 as tickets_pb
from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc

from simulator.callers import CallerChannel, department_caller
from simulator.scenario import BackOffice, TicketPlan

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
        }


class Backoffice:
    """The center's ticket desk and the departments of the catalogue, on one simulation's loop."""

    def __init__(self, sim: Simulation, address: str, departments: list[str]) -> None:
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
        """Every dispatch of the ticket is done: the center resolves it and calls the citizen back."""
        if ticket.phase != "dispatched" or any(d.open for d in ticket.dispatches):
            return
        ticket.phase = "resolving"
        request = tickets_pb.ResolveRequest(
            request_id=self.sim.request_id("resolve"),
            ticket_id=ticket.ticket_id,
            resolution_code="departments_done",
            resolution="The departments completed their parts.",
        )

        def resolved(_: Any) -> None:
            ticket.phase = "resolved"
            ticket.resolutions += 1
            self.sim.later(
                ticket.rng.uniform(*self.habits.follow_up_delay_s), lambda: self._follow_up(ticket)
            )

        self.sim.call(self.center.Resolve, request, then=resolved)

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
