"""The Ticket aggregate: given past events, when a command (or a deadline), then new events or a refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from callcenter.tickets.v1 import events_pb2 as ev

from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.tickets import domain as d
from tests.unit.tickets.conftest import T0, Desk, at, names

S = d.Status
DS = d.DispatchStatus
FIRST, RESOLUTION = ev.SLA_CLOCK_FIRST_RESPONSE, ev.SLA_CLOCK_RESOLUTION
ACCEPTANCE, COMPLETION = ev.SLA_CLOCK_DISPATCH_ACCEPTANCE, ev.SLA_CLOCK_DISPATCH_COMPLETION


def beijing(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour - 8, minute, tzinfo=UTC)


@pytest.fixture
def desk(rules) -> Desk:
    return Desk(rules)


def dispatched(desk: Desk, now: datetime = T0, **fields) -> list[str]:
    desk.create(now=now, **fields)
    events = desk.do(d.DispatchTicket("t-1", now, "a-1", dispatch_ids=("d-1", "d-2", "d-3")))
    return [e.dispatch_id for e in events if isinstance(e, ev.TicketDispatched)]


def dept(
    command_type, dispatch_id: str = "d-1", department: str = "environment", now: datetime = T0, **fields
):
    return command_type("t-1", now, "clerk-7", department, dispatch_id=dispatch_id, **fields)


# Creation and clocks ------------------------------------------------------------------------------


def test_a_complaint_gets_the_complaint_rules_targets_counted_in_working_time(desk):
    # Monday 10:00 Beijing; the complaint rule: first response in 4 h, resolution in 5 working days.
    events = desk.create(now=beijing(2, 10))
    created, first, resolution = events
    assert created.sla_rule == "complaint" and created.calendar_id == "cn-gov"
    # 10:00-12:00 and 13:30-15:30: four working hours.
    assert first.due_at.ToDatetime(tzinfo=UTC) == beijing(2, 15, 30)
    # Five 7-hour working days from Monday 10:00 end the next Monday at 10:00.
    assert resolution.due_at.ToDatetime(tzinfo=UTC) == beijing(9, 10)
    assert desk.ticket.status == S.TICKET_STATUS_NEW


def test_a_ticket_created_over_a_holiday_starts_counting_at_the_next_opening(desk):
    # Labour Day: 1-5 May 2026 are holidays; the desk opens again on Wednesday 6 May at 09:00.
    events = desk.create(now=beijing(2, 11, month=5), priority=3)
    first = events[1]
    assert first.due_at.ToDatetime(tzinfo=UTC) == beijing(6, 14, 30, month=5)


def test_the_first_note_to_the_customer_is_the_first_response(desk):
    desk.create()
    internal = desk.do(d.AddNote("t-1", at(1), "a-1", note_id="n-1", text="called the bureau", internal=True))
    assert names(internal) == ["TicketNoteAdded"]
    public = desk.do(d.AddNote("t-1", at(2), "a-1", note_id="n-2", text="we are on it", internal=False))
    assert names(public) == ["TicketNoteAdded", "SlaClockFulfilled"]
    assert public[0].first_response and not public[1].breached
    again = desk.do(d.AddNote("t-1", at(3), "a-1", note_id="n-3", text="still on it", internal=False))
    assert names(again) == ["TicketNoteAdded"] and not again[0].first_response


def test_waiting_on_the_customer_pauses_the_clocks_and_the_answer_moves_the_due_time(desk):
    desk.create(now=beijing(2, 10))
    before = desk.ticket.clocks[(RESOLUTION, "")].due_at
    paused = desk.do(d.AwaitCustomer("t-1", beijing(2, 11), "a-1", reason="need the address"))
    assert names(paused) == ["TicketAwaitingCustomer", "SlaClockPaused", "SlaClockPaused"]
    assert not list(x for x in d.deadlines(desk.ticket) if x.name.startswith(f"sla/{RESOLUTION}"))
    # The customer answers the next day at 11:00: a full working day (7 h) passed while paused.
    resumed = desk.do(d.RecordCustomerResponse("t-1", beijing(3, 11), "a-1"))
    assert names(resumed) == ["TicketCustomerResponded", "SlaClockResumed", "SlaClockResumed"]
    after = desk.ticket.clocks[(RESOLUTION, "")].due_at
    assert after - before == timedelta(days=1)
    assert desk.ticket.status == S.TICKET_STATUS_IN_PROGRESS


def test_a_missed_resolution_target_is_breached_and_escalates_to_second_line(desk):
    desk.create()
    desk.fire(f"sla/{RESOLUTION}//warn")
    events = desk.fire(f"sla/{RESOLUTION}//due")
    assert names(events) == ["SlaBreached", "TicketEscalated"]
    assert events[1].to_group_id == "second_line" and events[1].new_priority == 4
    assert desk.ticket.status == S.TICKET_STATUS_ESCALATED and desk.ticket.group_id == "second_line"


def test_a_warning_comes_at_the_policys_share_of_the_target(desk):
    desk.create(now=beijing(2, 10))
    [warning] = desk.fire(f"sla/{FIRST}//warn")
    assert warning.share_percent == 80
    # 80% of 4 working hours is 3 h 12 min: 10:00-12:00, then 13:30-14:42.
    warn = desk.ticket.clocks[(FIRST, "")]
    assert warn.warned and warn.warn_at == beijing(2, 14, 42)


# Dispatch -----------------------------------------------------------------------------------------


def test_the_catalogue_sends_a_noise_complaint_to_a_lead_and_an_assisting_department(desk):
    desk.create()
    events = desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1", "d-2")))
    dispatches = [e for e in events if isinstance(e, ev.TicketDispatched)]
    assert [(x.department, x.role) for x in dispatches] == [
        ("environment", ev.DISPATCH_ROLE_LEAD),
        ("urban_management", ev.DISPATCH_ROLE_ASSISTING),
    ]
    assert dispatches[0].catalogue_id == "municipal-12345" and dispatches[0].summary == "Noise at night"
    assert desk.ticket.status == S.TICKET_STATUS_DISPATCHED
    # Both clocks of each dispatch start at the dispatch, not at acceptance.
    assert {key for key in desk.ticket.clocks if key[1]} == {
        (ACCEPTANCE, "d-1"),
        (COMPLETION, "d-1"),
        (ACCEPTANCE, "d-2"),
        (COMPLETION, "d-2"),
    }


def test_a_category_outside_the_catalogue_needs_a_department(desk):
    desk.create(category="something.else")
    with pytest.raises(InvalidArgument, match="department is required"):
        desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1",)))
    with pytest.raises(InvalidArgument, match="'mars' is not in the dispatch catalogue"):
        desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1",), to_department="mars"))


def test_a_department_holds_one_open_dispatch_of_a_ticket(desk):
    dispatched(desk)
    with pytest.raises(FailedPrecondition, match="dispatch d-1 to environment is dispatched already"):
        desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-9",), to_department="environment"))


def test_a_dispatch_must_be_accepted_before_it_is_completed(desk):
    dispatched(desk)
    with pytest.raises(
        FailedPrecondition, match="dispatch d-1 to environment is dispatched; a dispatch must be accepted"
    ):
        desk.do(dept(d.CompleteDispatch, result="fixed"))


def test_a_department_answers_only_its_own_dispatches(desk):
    dispatched(desk)
    with pytest.raises(PermissionDenied, match="d-1 is environment's; urban_management answers only its own"):
        desk.do(dept(d.AcceptDispatch, department="urban_management"))
    with pytest.raises(PermissionDenied, match="never dispatched to transport"):
        desk.do(dept(d.AcceptDispatch, department="transport"))
    with pytest.raises(PermissionDenied, match="may not Resolve"):
        desk.do(d.Resolve("t-1", T0, "clerk-7", "environment"))


def test_lead_and_assisting_complete_and_the_ticket_is_worked_on_again(desk):
    dispatched(desk)
    accepted = desk.do(dept(d.AcceptDispatch, now=at(1)))
    assert names(accepted) == ["DispatchAccepted", "SlaClockFulfilled"] and accepted[0].on_time
    desk.do(dept(d.ReportProgress, now=at(2), note="inspected the site"))
    done = desk.do(dept(d.CompleteDispatch, now=at(3), result="site closed at night", resolved=True))
    assert names(done) == ["DispatchCompleted", "SlaClockFulfilled"] and done[0].on_time
    assert desk.ticket.status == S.TICKET_STATUS_DISPATCHED  # the assisting one is still open
    desk.do(dept(d.AcceptDispatch, "d-2", "urban_management", at(4)))
    desk.do(dept(d.CompleteDispatch, "d-2", "urban_management", at(5), result="fined the site"))
    assert desk.ticket.status == S.TICKET_STATUS_IN_PROGRESS
    assert not desk.ticket.open_dispatches


def test_a_return_accepted_and_redispatched_goes_to_another_department(desk):
    dispatched(desk)
    returned = desk.do(dept(d.ReturnDispatch, now=at(1), reason="construction noise is urban management's"))
    assert names(returned) == ["DispatchReturned", "SlaClockFulfilled", "SlaClockPaused"]
    assert desk.ticket.dispatches["d-1"].status == DS.DISPATCH_STATUS_RETURNED
    with pytest.raises(FailedPrecondition, match="urban_management is dispatched already"):
        desk.do(
            d.ReviewReturn(
                "t-1",
                at(2),
                "sup-1",
                dispatch_id="d-1",
                accept=True,
                redispatch_to="urban_management",
                new_dispatch_id="d-4",
            )
        )
    reviewed = desk.do(
        d.ReviewReturn(
            "t-1",
            at(2),
            "sup-1",
            dispatch_id="d-1",
            accept=True,
            redispatch_to="housing",
            new_dispatch_id="d-4",
        )
    )
    assert names(reviewed)[:2] == ["DispatchReturnAccepted", "SlaClockCancelled"]
    redispatch = reviewed[2]
    assert redispatch.department == "housing" and redispatch.replaces_dispatch_id == "d-1"
    assert desk.ticket.dispatches["d-1"].status == DS.DISPATCH_STATUS_WITHDRAWN


def test_a_return_refused_goes_back_to_the_department_on_the_same_clock(desk):
    dispatched(desk, now=beijing(2, 10))
    desk.do(dept(d.AcceptDispatch, now=beijing(2, 10, 30)))
    due = desk.ticket.clocks[(COMPLETION, "d-1")].due_at
    desk.do(dept(d.ReturnDispatch, now=beijing(2, 11), reason="not ours"))
    refused = desk.do(d.ReviewReturn("t-1", beijing(3, 11), "sup-1", dispatch_id="d-1", accept=False))
    assert names(refused) == ["DispatchReturnRefused", "SlaClockResumed"]
    back = desk.ticket.dispatches["d-1"]
    assert back.status == DS.DISPATCH_STATUS_ACCEPTED and back.with_department
    # The day at the center does not count against the department.
    assert desk.ticket.clocks[(COMPLETION, "d-1")].due_at == due + timedelta(days=1)


def test_an_extension_asked_in_time_and_granted_moves_the_due_time(desk):
    dispatched(desk)
    old_due = desk.ticket.dispatches["d-1"].due_at
    wanted = old_due + timedelta(days=3)
    with pytest.raises(InvalidArgument, match="later than the current due time"):
        desk.do(dept(d.RequestExtension, now=at(1), requested_due_at=old_due, reason="x"))
    desk.do(dept(d.RequestExtension, now=at(1), requested_due_at=wanted, reason="waiting for a permit"))
    with pytest.raises(FailedPrecondition, match="waiting for review"):
        desk.do(dept(d.RequestExtension, now=at(2), requested_due_at=wanted, reason="again"))
    granted = desk.do(d.ReviewExtension("t-1", at(2), "sup-1", dispatch_id="d-1", grant=True))
    assert names(granted) == ["DispatchExtensionGranted", "SlaClockExtended"]
    assert desk.ticket.dispatches["d-1"].due_at == wanted
    assert desk.ticket.clocks[(COMPLETION, "d-1")].due_at == wanted


def test_an_extension_after_the_due_time_is_refused_naming_it(desk):
    dispatched(desk)
    due = desk.ticket.dispatches["d-1"].due_at
    with pytest.raises(FailedPrecondition, match="must be asked before the due time"):
        desk.do(
            dept(
                d.RequestExtension,
                now=due + timedelta(minutes=1),
                requested_due_at=due + timedelta(days=9),
                reason="late",
            )
        )


def test_an_overdue_dispatch_is_breached_then_supervised_then_escalated(desk):
    dispatched(desk)
    desk.do(dept(d.AcceptDispatch, now=at(1)))
    desk.do(dept(d.AcceptDispatch, "d-2", "urban_management", at(1)))
    desk.fire(f"sla/{COMPLETION}/d-1/warn")
    breached = desk.fire(f"sla/{COMPLETION}/d-1/due")
    assert names(breached) == ["SlaBreached"] and breached[0].department == "environment"
    [notice] = desk.fire("dispatch/d-1/supervise")
    assert isinstance(notice, ev.SupervisionNoticeIssued)
    [escalation] = desk.fire("dispatch/d-1/escalate")
    assert isinstance(escalation, ev.DispatchEscalated)
    dispatch = desk.ticket.dispatches["d-1"]
    assert dispatch.notices == 1 and dispatch.escalated
    # Five working days past due, by the policy's defaults.
    assert desk.rules.calendar_of("environment").working_between(
        dispatch.due_at, dispatch.escalate_at
    ) == timedelta(hours=35)


def test_an_answer_and_its_deadline_at_the_same_instant_are_decided_once(desk):
    dispatched(desk)
    [deadline] = [x for x in d.deadlines(desk.ticket) if x.name == f"sla/{ACCEPTANCE}/d-1/due"]
    desk.do(dept(d.AcceptDispatch, now=deadline.due_at))
    assert d.on_deadline(desk.ticket, deadline, deadline.due_at, desk.rules) == []
    assert desk.ticket.clocks[(ACCEPTANCE, "d-1")].done


# Resolution, follow-up, closing -------------------------------------------------------------------


def completed(desk: Desk) -> None:
    dispatched(desk)
    for dispatch_id, department in (("d-1", "environment"), ("d-2", "urban_management")):
        desk.do(dept(d.AcceptDispatch, dispatch_id, department, at(1)))
        desk.do(dept(d.CompleteDispatch, dispatch_id, department, at(2), result="done", resolved=True))


def test_a_ticket_is_not_resolved_while_a_dispatch_is_open(desk):
    dispatched(desk)
    with pytest.raises(
        FailedPrecondition, match="ticket t-1 is dispatched: dispatch d-1 to environment is dispatched"
    ):
        desk.do(d.Resolve("t-1", at(1), "a-1"))


def test_resolving_starts_the_follow_up_clock(desk):
    completed(desk)
    events = desk.do(d.Resolve("t-1", at(3), "a-1", resolution="site closed at night"))
    assert names(events) == ["TicketResolved", "SlaClockFulfilled", "SlaClockFulfilled", "SlaClockStarted"]
    assert events[-1].clock == ev.SLA_CLOCK_FOLLOW_UP
    assert desk.ticket.follow_up_due is not None
    with pytest.raises(
        FailedPrecondition, match="ticket t-1 is resolved; a resolved ticket is not resolved again"
    ):
        desk.do(d.Resolve("t-1", at(4), "a-1"))


def test_a_dissatisfied_follow_up_the_department_controls_is_redone_by_it(desk):
    completed(desk)
    desk.do(d.Resolve("t-1", at(3), "a-1"))
    events = desk.do(
        d.RecordFollowUp(
            "t-1",
            at(20),
            "f-1",
            reached=True,
            satisfaction=ev.SATISFACTION_DISSATISFIED,
            csat_score=1,
            department_at_fault=True,
            redo_dispatch_id="d-redo",
        )
    )
    assert names(events)[:3] == ["FollowUpRecorded", "SlaClockFulfilled", "CsatRecorded"]
    assert events[0].department == "environment"
    reopened = next(e for e in events if isinstance(e, ev.TicketReopened))
    assert reopened.redo
    redo = next(e for e in events if isinstance(e, ev.TicketDispatched))
    assert (redo.department, redo.redo, redo.replaces_dispatch_id) == ("environment", True, "d-1")
    assert desk.ticket.status == S.TICKET_STATUS_DISPATCHED and desk.ticket.reopen_count == 1


def test_a_satisfied_follow_up_closes_the_ticket(desk):
    completed(desk)
    desk.do(d.Resolve("t-1", at(3), "a-1"))
    events = desk.do(
        d.RecordFollowUp(
            "t-1", at(20), "f-1", reached=True, resolved=True, satisfaction=ev.SATISFACTION_SATISFIED
        )
    )
    assert names(events) == ["FollowUpRecorded", "SlaClockFulfilled", "TicketClosed"]
    assert events[-1].reason == "follow-up" and desk.ticket.status == S.TICKET_STATUS_CLOSED


def test_an_unreached_customer_records_an_attempt_only(desk):
    completed(desk)
    desk.do(d.Resolve("t-1", at(3), "a-1"))
    assert names(desk.do(d.RecordFollowUp("t-1", at(20), "f-1", reached=False))) == ["FollowUpRecorded"]
    with pytest.raises(InvalidArgument, match="records no answer"):
        desk.do(d.RecordFollowUp("t-1", at(21), "f-1", reached=False, satisfaction=ev.SATISFACTION_SATISFIED))
    assert desk.ticket.status == S.TICKET_STATUS_RESOLVED


def test_a_resolved_ticket_without_an_answer_closes_by_itself(desk):
    desk.create()
    desk.do(d.Resolve("t-1", at(1), "a-1"))
    [closed, *cancelled] = desk.fire(d.AUTO_CLOSE_DEADLINE)
    assert closed.reason == "no answer" and names(cancelled) == ["SlaClockCancelled"]
    assert desk.ticket.status == S.TICKET_STATUS_CLOSED


def test_reopening_within_the_window_and_after_it(desk):
    desk.create()
    desk.do(d.Resolve("t-1", at(1), "a-1"))
    desk.do(d.Close("t-1", at(2), "a-1", reason="confirmed"))
    until = desk.ticket.reopen_until
    assert until == at(2) + timedelta(days=30)
    late = d.Reopen("t-1", until + timedelta(seconds=1), "a-1", reason="back again")
    with pytest.raises(
        FailedPrecondition, match=r"ticket t-1 is closed; its reopening window ended .*follows_ticket_id=t-1"
    ):
        desk.do(late)
    events = desk.do(d.Reopen("t-1", until, "a-1", reason="back again"))
    assert names(events) == ["TicketReopened", "SlaClockStarted"]
    assert desk.ticket.status == S.TICKET_STATUS_IN_PROGRESS


def test_closing_needs_a_resolved_ticket(desk):
    desk.create()
    with pytest.raises(FailedPrecondition, match="ticket t-1 is new; only a resolved ticket is closed"):
        desk.do(d.Close("t-1", at(1), "a-1"))


# Merging, approval, refusals ----------------------------------------------------------------------


def test_a_merged_duplicate_is_closed_for_good(desk):
    desk.create()
    events = desk.do(
        d.MarkMerged("t-1", at(1), "a-1", into_ticket_id="t-0", reason="same caller, same noise")
    )
    assert names(events) == ["TicketMerged", "SlaClockCancelled", "SlaClockCancelled"]
    assert desk.ticket.status == S.TICKET_STATUS_MERGED and not list(d.deadlines(desk.ticket))
    with pytest.raises(FailedPrecondition, match="ticket t-1 is merged; a closed ticket is not noted"):
        desk.do(d.AddNote("t-1", at(2), "a-1", note_id="n", text="x"))
    with pytest.raises(FailedPrecondition, match="ticket t-1 is merged"):
        desk.do(d.Reopen("t-1", at(2), "a-1"))


def test_a_ticket_with_an_open_dispatch_is_not_merged_and_never_into_itself(desk):
    dispatched(desk)
    with pytest.raises(FailedPrecondition, match="open dispatches"):
        desk.do(d.MarkMerged("t-1", at(1), "a-1", into_ticket_id="t-0"))
    with pytest.raises(InvalidArgument, match="into itself"):
        desk.do(d.MarkMerged("t-1", at(1), "a-1", into_ticket_id="t-1"))


def test_waiting_for_approval_pauses_and_the_outcome_resumes(desk):
    desk.create()
    events = desk.do(d.RequestApproval("t-1", at(1), "a-1", approval_id="ap-1", kind="compensation"))
    assert names(events) == ["TicketApprovalRequested", "SlaClockPaused", "SlaClockPaused"]
    with pytest.raises(FailedPrecondition, match="waiting for approval ap-1"):
        desk.do(d.Resolve("t-1", at(2), "a-1"))
    with pytest.raises(FailedPrecondition, match="waits for approval ap-1, not ap-2"):
        desk.do(d.ConcludeApproval("t-1", at(2), "approvals", approval_id="ap-2", outcome="granted"))
    resumed = desk.do(d.ConcludeApproval("t-1", at(3), "approvals", approval_id="ap-1", outcome="granted"))
    assert names(resumed) == ["TicketApprovalConcluded", "SlaClockResumed", "SlaClockResumed"]
    assert desk.ticket.status == S.TICKET_STATUS_IN_PROGRESS and not desk.ticket.pending_approval_id


def test_commands_on_an_unknown_ticket_are_not_found(desk):
    with pytest.raises(NotFound, match="ticket t-1 does not exist"):
        desk.do(d.StartWork("t-1", T0, "a-1"))


def test_a_ticket_is_created_once(desk):
    desk.create()
    with pytest.raises(FailedPrecondition, match="ticket t-1 is new already"):
        desk.create()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": ev.TICKET_TYPE_UNSPECIFIED}, "type is required"),
        ({"summary": "  "}, "summary is required"),
        ({"priority": 9}, "priority must be 1 to 5"),
        ({"group_id": "nobody"}, "group_id 'nobody' is not a group"),
    ],
)
def test_a_malformed_creation_names_the_field(desk, fields, message):
    with pytest.raises(InvalidArgument, match=message):
        desk.create(**fields)
