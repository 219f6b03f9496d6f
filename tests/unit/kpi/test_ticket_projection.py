"""The ticket fold: a ticket's events, given in its order, become its ticket, dispatch and state facts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from callcenter.tickets.v1 import events_pb2 as ev
from google.protobuf.message import Message

from services.kpi.projection import Row
from services.kpi.tickets import TICKET, TicketFold, dispatch_rows, fold_ticket, ticket_row
from services.platform.envelope import Cause, Envelope, EventRegistry, make_envelope
from services.tickets import domain
from services.tickets.policies import Rules, load_rules
from tests.unit.kpi.facts import project
from tests.unit.kpi.ticket_events import (
    ACCEPTANCE,
    ASSISTING,
    BASICALLY_SATISFIED,
    COMPLETION,
    DAY,
    DISSATISFIED,
    HOUR,
    SATISFIED,
    TicketStory,
    closed_loop,
    t,
)


def fold_all(events: Iterable[Envelope], fold: TicketFold | None = None) -> tuple[TicketFold, dict[str, Row]]:
    """The fold after the events, and its state intervals as a FINAL read gives them."""
    fold = fold or TicketFold("t-1")
    intervals: dict[str, Row] = {}
    for envelope in events:
        fold, rows = fold_ticket(fold, envelope)
        for row in rows:
            if (
                row["interval_id"] not in intervals
                or row["version"] >= intervals[row["interval_id"]]["version"]
            ):
                intervals[row["interval_id"]] = row
    return fold, intervals


def dispatches(fold: TicketFold) -> dict[str, Row]:
    return {row["dispatch_id"]: row for row in dispatch_rows(fold)}


def states(intervals: dict[str, Row]) -> list[tuple[str, Any, Any]]:
    return [
        (row["status"], row["started_at"], row["ended_at"])
        for row in sorted(intervals.values(), key=lambda row: (row["started_at"], row["interval_id"]))
    ]


def test_a_dispatch_returned_refused_back_redispatched_extended_and_completed_late_has_its_facts() -> None:
    fold, _ = fold_all(closed_loop().events)

    d1, d2, d3 = (dispatches(fold)[key] for key in ("d1", "d2", "d3"))
    assert d1 == d1 | {
        "department": "housing",
        "role": "lead",
        "priority": 3,  # the ticket's when dispatched
        "category": "environment.noise",
        "status": "withdrawn",
        "returns": 2,
        "returns_refused": 1,
        "return_accepted": True,
        "answered_at": t(2 * HOUR),  # the first return answered the dispatch, within its day
        "accept_breached": False,
        "accepted_at": None,
        "completed_at": None,
        # with housing from the dispatch to the first return, and from the refusal to the second return
        "inside_s": HOUR + 2 * HOUR,
        "inside_since": None,
        "ended_at": t(6 * HOUR),
        "satisfaction": "",
    }
    assert d2 == d2 | {
        "department": "water_supply",
        "replaces_dispatch_id": "d1",
        "redo": False,
        "status": "completed",
        "accepted_at": t(DAY),
        "accepted_on_time": True,
        "answered_at": t(DAY),
        "accept_breached": False,
        "first_due_at": t(6 * HOUR + 5 * DAY),
        "due_at": t(6 * HOUR + 7 * DAY),
        "extensions_requested": 1,
        "extensions_granted": 1,
        "extensions_refused": 0,
        "progress_reports": 1,
        "supervision_notices": 1,
        "escalated": False,
        "completed_at": t(9 * DAY),
        "completed_on_time": False,
        "completion_breached": True,
        "resolved": True,
        "returns": 0,
        "inside_s": 9 * DAY - 6 * HOUR,
        "ended_at": t(9 * DAY),
        "followed_up_at": t(10 * DAY),
        "follow_up_reached": True,
        "satisfaction": "dissatisfied",
        "department_at_fault": True,
    }
    assert d3 == d3 | {
        "redo": True,
        "replaces_dispatch_id": "d2",
        "priority": 4,  # dispatched after the escalation raised it
        "status": "completed",
        "completed_on_time": True,
        "completion_breached": False,
        "inside_s": DAY,
        "satisfaction": "basically_satisfied",
        "department_at_fault": False,
    }
    assert {row["dispatch_fact_id"] for row in (d1, d2, d3)} == {"t-1:d1", "t-1:d2", "t-1:d3"}


def test_the_closed_loop_tickets_fact_holds_its_newest_state_and_its_history() -> None:
    fold, _ = fold_all(closed_loop().events)

    row = ticket_row(fold)

    assert row is not None
    assert row == row | {
        "ticket_id": "t-1",
        "ticket_type": "complaint",
        "priority": 4,  # raised by the escalation
        "department": "water_supply",  # the newest lead dispatch (the redo)
        "channel": "voice",
        "origin": "wrap_up",
        "origin_contact_id": "c-1",
        "issue_code": "environment.noise",
        "sla_rule": "complaint",
        "status": "closed",
        "status_since": t(12 * DAY),
        "created_at": t(0),
        "first_response_at": t(600),
        "first_response_s": 600.0,
        "first_response_working_s": 540.0,
        "first_response_breached": False,
        "resolved_at": t(11 * DAY + HOUR),
        "resolution_s": 11 * DAY + HOUR,
        "resolution_working_s": HOUR,
        "resolution_breached": True,  # the first resolution clock breached; the reopening does not forgive it
        "resolution_due_at": t(15 * DAY),  # the clock the reopening started
        "resolved_on_first_contact": False,
        "reopen_count": 1,
        "redo_count": 1,
        "escalation_count": 1,
        "dispatch_count": 3,
        "csat_score": 5,
        "satisfaction": "basically_satisfied",
        "outcome": "fixed",
        "closed_at": t(12 * DAY),
        "version": len(closed_loop().events),
    }


def test_each_status_is_an_interval_from_the_move_into_it_to_the_next_move() -> None:
    _, intervals = fold_all(closed_loop().events)

    assert states(intervals) == [
        ("assigned", t(0), t(60)),
        ("in_progress", t(60), t(HOUR)),
        ("dispatched", t(HOUR), t(6 * HOUR)),
        # the return accepted leaves no open dispatch for an instant, until the re-dispatch
        ("in_progress", t(6 * HOUR), t(6 * HOUR)),
        ("dispatched", t(6 * HOUR), t(9 * DAY)),
        ("in_progress", t(9 * DAY), t(9 * DAY + HOUR)),
        ("resolved", t(9 * DAY + HOUR), t(10 * DAY)),
        ("in_progress", t(10 * DAY), t(10 * DAY)),
        ("dispatched", t(10 * DAY), t(11 * DAY)),
        ("in_progress", t(11 * DAY), t(11 * DAY + HOUR)),
        ("resolved", t(11 * DAY + HOUR), t(12 * DAY)),
        ("closed", t(12 * DAY), None),
    ]
    closed = [row for row in intervals.values() if row["ended_at"] is not None]
    assert all(row["version"] == 2 for row in closed)
    assert sum(row["seconds"] for row in closed) == 12 * DAY


def test_an_event_folded_again_changes_nothing() -> None:
    story = closed_loop()
    fold, _ = fold_all(story.events)

    again, rows = fold_all(story.events[10:20], fold)

    assert again is fold
    assert rows == {}


def test_a_dispatch_never_answered_breaches_its_acceptance_and_runs_on_inside_the_department() -> None:
    story = TicketStory()
    story.created(0)
    story.dispatched(HOUR, "d1", "housing", accept_in=DAY)
    story.breached(HOUR + DAY, ACCEPTANCE, "d1")
    story.supervised(7 * DAY, "d1")
    story.dispatch_escalated(11 * DAY, "d1")

    fold, _ = fold_all(story.events)

    [row] = dispatch_rows(fold)
    assert row == row | {
        "status": "dispatched",
        "answered_at": None,
        "accept_breached": True,
        "inside_s": 0.0,
        "inside_since": t(HOUR),
        "ended_at": None,
        "supervision_notices": 1,
        "escalated": True,
    }
    assert ticket_row(fold)["status"] == "dispatched"  # type: ignore[index]


def test_an_acceptance_after_its_deadline_is_late_and_a_return_answers_in_time() -> None:
    story = TicketStory()
    story.created(0)
    story.dispatched(0, "late", "housing", accept_in=HOUR)
    story.dispatched(0, "returned", "transport", role=ASSISTING, accept_in=HOUR)
    story.breached(HOUR, ACCEPTANCE, "late")
    story.accepted(2 * HOUR, "late", on_time=False)
    story.returned(0.5 * HOUR, "returned")

    fold, _ = fold_all(story.events)

    rows = dispatches(fold)
    assert project(
        [rows["late"], rows["returned"]], "answered_at", "accepted_on_time", "accept_breached", "role"
    ) == [
        {"answered_at": t(2 * HOUR), "accepted_on_time": False, "accept_breached": True, "role": "lead"},
        {
            "answered_at": t(0.5 * HOUR),
            "accepted_on_time": False,
            "accept_breached": False,
            "role": "assisting",
        },
    ]


def test_an_extension_granted_after_a_breach_forgives_it_until_the_new_due_time() -> None:
    story = TicketStory()
    story.created(0)
    story.dispatched(0, "d1", "housing", due_in=2 * DAY)
    story.accepted(HOUR, "d1")
    story.extension_requested(DAY, "d1", to=4 * DAY)
    story.breached(2 * DAY, COMPLETION, "d1")
    story.extension_granted(2.5 * DAY, "d1", to=4 * DAY)
    breached_then = dispatches(fold_all(story.events[:-2])[0])["d1"]["completion_breached"]
    story.completed(3 * DAY, "d1", resolved=False)

    fold, _ = fold_all(story.events)

    [row] = dispatch_rows(fold)
    assert breached_then
    assert project(
        [row], "completion_breached", "completed_on_time", "resolved", "due_at", "first_due_at"
    ) == [
        {
            "completion_breached": False,
            "completed_on_time": True,
            "resolved": False,
            "due_at": t(4 * DAY),
            "first_due_at": t(2 * DAY),
        }
    ]


def test_the_follow_up_judges_the_newest_completed_lead_dispatch_of_its_department() -> None:
    story = TicketStory()
    story.created(0)
    story.dispatched(0, "lead", "housing")
    story.dispatched(0, "helper", "transport", role=ASSISTING)
    story.accepted(HOUR, "lead")
    story.accepted(HOUR, "helper")
    story.completed(DAY, "helper")
    story.completed(2 * DAY, "lead")
    story.resolved(2 * DAY, elapsed_s=2 * DAY)
    story.follow_up(3 * DAY, SATISFIED, department="housing")

    fold, _ = fold_all(story.events)

    rows = dispatches(fold)
    assert (rows["lead"]["satisfaction"], rows["helper"]["satisfaction"]) == ("satisfied", "")
    assert ticket_row(fold)["department"] == "housing"  # type: ignore[index]


def test_a_follow_up_that_misses_the_customer_gives_no_verdict() -> None:
    story = TicketStory()
    story.created(0)
    story.dispatched(0, "d1", "housing")
    story.accepted(HOUR, "d1")
    story.completed(DAY, "d1")
    story.resolved(DAY, elapsed_s=DAY)
    story.follow_up(2 * DAY, SATISFIED, department="housing", reached=False)

    fold, _ = fold_all(story.events)

    [row] = dispatch_rows(fold)
    assert project([row], "follow_up_reached", "satisfaction", "followed_up_at") == [
        {"follow_up_reached": False, "satisfaction": "", "followed_up_at": t(2 * DAY)}
    ]
    assert ticket_row(fold)["satisfaction"] == ""  # type: ignore[index]


def test_a_ticket_resolved_on_the_first_contact_counts_so_until_it_is_reopened() -> None:
    story = TicketStory()
    story.created(0)
    story.work_started(10)
    story.resolved(120, elapsed_s=110, first_contact=True)
    resolved, _ = fold_all(story.events)
    story.reopened(DAY)

    reopened, _ = fold_all(story.events)

    assert ticket_row(resolved) == ticket_row(resolved) | {  # type: ignore[operator]
        "status": "resolved",
        "resolved_on_first_contact": True,
        "first_response_at": t(120),  # the resolution answered the customer first
        "first_response_s": 120.0,
        "department": "",
        "dispatch_count": 0,
    }
    assert ticket_row(reopened) == ticket_row(reopened) | {  # type: ignore[operator]
        "status": "in_progress",
        "resolved_on_first_contact": False,
        "resolved_at": None,
        "resolution_s": None,
        "outcome": "",
        "reopen_count": 1,
        "redo_count": 0,
    }


def test_waiting_and_escalation_follow_the_tickets_rules_for_the_status() -> None:
    story = TicketStory()
    story.created(0)
    story.work_started(10)
    story.awaiting_customer(20)
    story.escalated(30)  # waiting on the customer: the status stays
    story.customer_responded(40)
    story.escalated(50)
    story.dispatched(60, "d1", "housing")
    story.escalated(70)  # dispatched: the status stays
    story.at(80, ev.TicketApprovalRequested(ticket_id="t-1", approval_id="a-1", kind="refund"))

    fold, intervals = fold_all(story.events)

    assert [status for status, _, _ in states(intervals)] == [
        "new",
        "in_progress",
        "waiting_on_customer",
        "in_progress",
        "escalated",
        "dispatched",
        "waiting_for_approval",
    ]
    assert ticket_row(fold)["escalation_count"] == 3  # type: ignore[index]


def test_a_merged_ticket_is_settled_at_once_and_a_closed_one_after_its_reopening_window() -> None:
    merged, closed = TicketStory("t-dup"), TicketStory("t-done")
    merged.created(0)
    merged.merged(HOUR)
    closed.created(0)
    closed.resolved(HOUR, elapsed_s=HOUR)
    closed.closed(DAY, reopen_within=30 * DAY)

    merged_fold, _ = fold_all(merged.events, TicketFold("t-dup"))
    closed_fold, _ = fold_all(closed.events, TicketFold("t-done"))
    reopened_fold, _ = fold_all(closed.reopened(2 * DAY), closed_fold)

    assert (merged_fold.forget_after, ticket_row(merged_fold)["status"]) == (t(HOUR), "merged")  # type: ignore[index]
    assert closed_fold.forget_after == t(31 * DAY)
    assert reopened_fold.forget_after is None


def test_events_of_a_ticket_whose_creation_was_never_folded_make_no_facts() -> None:
    story = TicketStory()
    story.created(0)
    story.dispatched(HOUR, "d1", "housing")

    fold, intervals = fold_all(story.events[3:])

    assert ticket_row(fold) is None
    assert dispatch_rows(fold) == []
    assert intervals == {}


def test_only_the_dispatches_changed_after_a_version_are_rows_again() -> None:
    story = TicketStory()
    story.created(0)
    story.dispatched(0, "d1", "housing")
    story.dispatched(0, "d2", "transport", role=ASSISTING)
    before, _ = fold_all(story.events)
    story.accepted(HOUR, "d2")

    after, _ = fold_all(story.events[before.version :], before)

    assert [row["dispatch_id"] for row in dispatch_rows(after, since_version=before.version)] == ["d2"]
    assert [row["version"] for row in dispatch_rows(after, since_version=before.version)] == [after.version]


# against the tickets context's own decide and evolve ---------------------------------------------


class Desk:
    """One ticket driven by commands through the tickets context's decide, deadlines and evolve, its
    events folded by the KPIs beside it."""

    def __init__(self, rules: Rules, now: datetime) -> None:
        self.rules = rules
        self.now = now
        self.ticket = domain.Ticket("t-1")
        self.fold = TicketFold("t-1")
        self.intervals: dict[str, Row] = {}
        self.version = 0
        self.statuses: list[tuple[str, str]] = []  # (the domain's status, the fold's) after each event

    def at(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def apply(self, events: Iterable[Message], when: datetime) -> None:
        for payload in events:
            self.version += 1
            envelope = make_envelope(
                payload,
                registry=EventRegistry.of(ev),
                aggregate_type=TICKET,
                aggregate_id="t-1",
                aggregate_version=self.version,
                occurred_at=when,
                cause=Cause.request(f"r-{self.version}"),
            )
            self.ticket = domain.evolve(self.ticket, envelope)
            self.fold, rows = fold_ticket(self.fold, envelope)
            self.intervals.update({row["interval_id"]: row for row in rows})
            self.statuses.append((domain.status_name(self.ticket.status), self.fold.status))

    def do(self, command_type: type, department: str = "", **fields: Any) -> None:
        command = command_type(
            "t-1", self.now, "sup-1" if not department else f"dept-{department}", department, **fields
        )
        self.apply(domain.decide(self.ticket, command, self.rules), self.now)

    def fire(self, prefix: str) -> None:
        [deadline] = [x for x in domain.deadlines(self.ticket) if x.name.startswith(prefix)]
        self.now = deadline.due_at
        self.apply(domain.on_deadline(self.ticket, deadline, self.now, self.rules), self.now)


def test_the_fold_follows_the_tickets_contexts_status_and_time_inside_through_the_closed_loop() -> None:
    # Monday 2 March 2026, 10:00 in Beijing: a working morning of the cn-gov calendar.
    desk = Desk(load_rules(), datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    desk.do(
        domain.CreateTicket,
        type=ev.TICKET_TYPE_COMPLAINT,
        priority=3,
        summary="Noise at night",
        category="environment.noise",
    )
    desk.at(minutes=5)
    desk.do(domain.StartWork)
    desk.at(minutes=5)
    desk.do(domain.AddNote, note_id="n-1", text="We are on it", internal=False)
    desk.at(minutes=10)
    desk.do(domain.DispatchTicket, dispatch_ids=("d1",), to_department="housing")
    desk.at(hours=1)
    desk.do(domain.ReturnDispatch, "housing", dispatch_id="d1", reason="not ours")
    desk.at(minutes=30)
    desk.do(domain.ReviewReturn, dispatch_id="d1", accept=False, note="it is yours")
    desk.at(hours=1)
    desk.do(domain.ReturnDispatch, "housing", dispatch_id="d1", reason="really not ours")
    desk.at(minutes=30)
    desk.do(
        domain.ReviewReturn, dispatch_id="d1", accept=True, redispatch_to="water_supply", new_dispatch_id="d2"
    )
    desk.at(hours=2)
    desk.do(domain.AcceptDispatch, "water_supply", dispatch_id="d2")
    due = desk.ticket.dispatches["d2"].due_at
    desk.at(hours=1)
    desk.do(
        domain.RequestExtension, "water_supply", dispatch_id="d2", requested_due_at=due + timedelta(days=2)
    )
    desk.at(hours=1)
    desk.do(domain.ReviewExtension, dispatch_id="d2", grant=True)
    desk.fire("dispatch/d2/supervise")
    desk.at(hours=1)
    desk.do(domain.CompleteDispatch, "water_supply", dispatch_id="d2", result="fixed the pump", resolved=True)
    desk.at(hours=1)
    desk.do(domain.Resolve, resolution_code="fixed", resolution="pump fixed")
    desk.at(days=1)
    desk.do(
        domain.RecordFollowUp,
        reached=True,
        satisfaction=DISSATISFIED,
        csat_score=1,
        department_at_fault=True,
        redo_dispatch_id="d3",
    )
    desk.at(hours=1)
    desk.do(domain.AcceptDispatch, "water_supply", dispatch_id="d3")
    desk.at(hours=2)
    desk.do(domain.CompleteDispatch, "water_supply", dispatch_id="d3", result="fixed for good", resolved=True)
    desk.at(hours=1)
    desk.do(domain.Resolve, resolution_code="fixed", resolution="fixed for good")
    desk.at(days=1)
    desk.do(domain.RecordFollowUp, reached=True, satisfaction=BASICALLY_SATISFIED, csat_score=4)

    assert [ours for _, ours in desk.statuses] == [theirs for theirs, _ in desk.statuses]
    assert desk.fold.status == "closed"
    rows = dispatches(desk.fold)
    for dispatch_id, dispatch in desk.ticket.dispatches.items():
        assert rows[dispatch_id]["inside_s"] == dispatch.time_inside(desk.now).total_seconds(), dispatch_id
        assert rows[dispatch_id]["status"] == dispatch.describe().rsplit(" ", 1)[-1], dispatch_id
    assert project(
        [rows["d1"], rows["d2"], rows["d3"]],
        "returns",
        "return_accepted",
        "accept_breached",
        "extensions_granted",
        "supervision_notices",
        "completed_on_time",
        "satisfaction",
        "redo",
    ) == [
        {
            "returns": 2,
            "return_accepted": True,
            "accept_breached": False,
            "extensions_granted": 0,
            "supervision_notices": 0,
            "completed_on_time": False,
            "satisfaction": "",
            "redo": False,
        },
        {
            "returns": 0,
            "return_accepted": False,
            "accept_breached": False,
            "extensions_granted": 1,
            "supervision_notices": 1,
            "completed_on_time": False,  # after the supervision notice, past the extended due time
            "satisfaction": "dissatisfied",
            "redo": False,
        },
        {
            "returns": 0,
            "return_accepted": False,
            "accept_breached": False,
            "extensions_granted": 0,
            "supervision_notices": 0,
            "completed_on_time": True,
            "satisfaction": "basically_satisfied",
            "redo": True,
        },
    ]
    row = ticket_row(desk.fold)
    assert row is not None
    assert (row["department"], row["reopen_count"], row["redo_count"], row["csat_score"]) == (
        "water_supply",
        1,
        1,
        4,
    )
    assert row["first_response_at"] == desk.ticket.first_response_at
