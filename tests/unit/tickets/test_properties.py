"""Properties of a ticket's clocks, dispatches and deadlines, over random histories driven by decide."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from callcenter.tickets.v1 import events_pb2 as ev
from hypothesis import given, note, settings
from hypothesis import strategies as st

from services.platform.calendars import BusinessCalendar
from services.tickets import domain as d
from tests.unit.tickets.conftest import Desk

RESOLUTION, COMPLETION = ev.SLA_CLOCK_RESOLUTION, ev.SLA_CLOCK_DISPATCH_COMPLETION
MINUTE = timedelta(minutes=1)
PROPERTY = settings(max_examples=60, deadline=None)

# Days around the calendar's holidays and make-up working days, where counting goes wrong first.
AWKWARD_DAYS = [
    date(2026, 4, 3),
    date(2026, 4, 30),
    date(2026, 5, 8),
    date(2026, 6, 18),
    date(2026, 9, 18),
    date(2026, 9, 24),
    date(2026, 9, 30),
    date(2026, 10, 9),
]


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


minute_instants = st.one_of(
    st.integers(0, (datetime(2026, 12, 1, tzinfo=UTC) - datetime(2026, 3, 1, tzinfo=UTC)) // MINUTE).map(
        lambda minutes: datetime(2026, 3, 1, tzinfo=UTC) + minutes * MINUTE
    ),
    st.builds(
        lambda day, minutes: _day_start(day) + minutes * MINUTE,
        st.sampled_from(AWKWARD_DAYS),
        st.integers(0, 2 * 24 * 60),
    ),
)
gaps = st.integers(0, 10 * 60).map(lambda minutes: minutes * MINUTE)
# A wait may run over a night, a weekend or a holiday; a day at most keeps every due time in 2026.
waits_for = st.integers(0, 24 * 60).map(lambda minutes: minutes * MINUTE)


def working_minutes(calendar: BusinessCalendar, intervals: list[tuple[datetime, datetime]]) -> timedelta:
    """Brute force: every minute of every interval that falls in the calendar's opening hours."""
    counted = timedelta(0)
    for start, end in intervals:
        minute = start
        while minute < end:
            if calendar.is_working_time(minute):
                counted += MINUTE
            minute += MINUTE
    return counted


# a) An SLA clock counts working time while it runs, and nothing else ---------------------------------


def _pause(desk: Desk, kind: str, now: datetime, n: int) -> None:
    if kind == "customer":
        desk.do(d.AwaitCustomer("t-1", now, "a-1", reason="need the address"))
    else:
        desk.do(d.RequestApproval("t-1", now, "a-1", approval_id=f"ap-{n}", kind="refund"))


def _resume(desk: Desk, kind: str, now: datetime, n: int) -> list:
    if kind == "customer":
        return desk.do(d.RecordCustomerResponse("t-1", now, "a-1"))
    return desk.do(d.ConcludeApproval("t-1", now, "sup-1", approval_id=f"ap-{n}", outcome="approved"))


@PROPERTY
@given(
    created=minute_instants,
    waits=st.lists(st.tuples(st.sampled_from(["customer", "approval"]), gaps, waits_for), max_size=6),
    end_paused=st.booleans(),
    last=gaps,
)
def test_an_sla_clock_never_counts_paused_or_out_of_hours_time(rules, created, waits, end_paused, last):
    calendar = rules.calendars["cn-gov"]
    desk = Desk(rules)
    # 13 working days of resolution: never used up by the few days these histories last.
    desk.create(now=created, type=ev.TICKET_TYPE_SERVICE_REQUEST, priority=3, category="water.billing")
    target = desk.ticket.clocks[(RESOLUTION, "")].target
    running: list[tuple[datetime, datetime]] = []
    since, now = created, created
    for n, (kind, running_for, paused_for) in enumerate(waits):
        now += running_for
        _pause(desk, kind, now, n)
        running.append((since, now))
        clock = desk.ticket.clocks[(RESOLUTION, "")]
        assert clock.paused and clock.elapsed == working_minutes(calendar, running)
        now += paused_for
        _resume(desk, kind, now, n)
        since = now
        clock = desk.ticket.clocks[(RESOLUTION, "")]
        elapsed = working_minutes(calendar, running)
        assert clock.running and clock.due_at == calendar.add(now, target - elapsed)
    now += last
    running.append((since, now))
    if end_paused:
        _pause(desk, "customer", now, len(waits))
        now += last
    expected = working_minutes(calendar, running)
    note(f"running {running}, counted {expected}")
    assert desk.ticket.clocks[(RESOLUTION, "")].counted(now, calendar) == expected
    [fulfilled] = [
        e
        for e in desk.do(d.Resolve("t-1", now, "a-1"))
        if isinstance(e, ev.SlaClockFulfilled) and e.clock == RESOLUTION
    ]
    assert fulfilled.elapsed.ToTimedelta() == expected


# b) A dispatch's life is its time inside the department plus its time back at the center -----------

# From each dispatch status, the moves that keep it open; then the ones that end it, without more returns.
MOVES = {
    d.DispatchStatus.DISPATCH_STATUS_DISPATCHED: ["accept", "return"],
    d.DispatchStatus.DISPATCH_STATUS_ACCEPTED: ["progress", "return"],
    d.DispatchStatus.DISPATCH_STATUS_RETURNED: ["refuse"],
}
ENDING = {
    d.DispatchStatus.DISPATCH_STATUS_DISPATCHED: ["accept"],
    d.DispatchStatus.DISPATCH_STATUS_ACCEPTED: ["complete"],
    d.DispatchStatus.DISPATCH_STATUS_RETURNED: ["withdraw", "refuse"],
}


def _department_or_center(move: str, now: datetime) -> d.Command:
    department = ("t-1", now, "clerk-7", "environment")
    match move:
        case "accept":
            return d.AcceptDispatch(*department, dispatch_id="d-1")
        case "progress":
            return d.ReportProgress(*department, dispatch_id="d-1", note="on site")
        case "return":
            return d.ReturnDispatch(*department, dispatch_id="d-1", reason="not ours")
        case "complete":
            return d.CompleteDispatch(*department, dispatch_id="d-1", result="done")
        case "refuse":
            return d.ReviewReturn("t-1", now, "sup-1", dispatch_id="d-1", accept=False)
    return d.ReviewReturn("t-1", now, "sup-1", dispatch_id="d-1", accept=True)


@PROPERTY
@given(created=minute_instants, data=st.data())
def test_the_time_inside_the_department_and_at_the_center_add_up_to_the_dispatchs_life(rules, created, data):
    desk = Desk(rules)
    desk.create(now=created, category="environment.noise")
    dispatched_at = created + data.draw(gaps)
    desk.do(d.DispatchTicket("t-1", dispatched_at, "a-1", dispatch_ids=("d-1", "d-2")))
    now, entered, returned_at = dispatched_at, dispatched_at, dispatched_at
    inside: list[tuple[datetime, datetime]] = []
    at_center = timedelta(0)
    steps = data.draw(st.integers(0, 8))
    moves: list[str] = []
    while desk.ticket.dispatches["d-1"].open:
        status = desk.ticket.dispatches["d-1"].status
        move = data.draw(st.sampled_from(MOVES[status] if len(moves) < steps else ENDING[status]))
        now += data.draw(gaps)
        desk.do(_department_or_center(move, now))
        moves.append(move)
        if move in ("return", "complete"):
            inside.append((entered, now))
            returned_at = now
        if move in ("refuse", "withdraw"):
            at_center += now - returned_at
            entered = now
    note(f"moves {moves}")
    dispatch = desk.ticket.dispatches["d-1"]
    assert dispatch.ended_at == now
    assert dispatch.inside == tuple(inside)
    assert dispatch.time_inside(now) + at_center == dispatch.ended_at - dispatch.dispatched_at
    for (start, end), (next_start, _) in zip(dispatch.inside, dispatch.inside[1:], strict=False):
        assert start <= end <= next_start
    assert all(dispatched_at <= start <= end <= now for start, end in dispatch.inside)
    completion = desk.ticket.clocks[(COMPLETION, "d-1")]
    assert completion.done
    if dispatch.status == d.DispatchStatus.DISPATCH_STATUS_COMPLETED:
        # The department's completion clock counts working time inside it only, never the center's.
        calendar = rules.calendar_of("environment")
        assert completion.elapsed == sum(
            (calendar.working_between(start, end) for start, end in dispatch.inside), timedelta(0)
        )


# c) Deadlines: each one listed is one not yet decided ----------------------------------------------


@PROPERTY
@given(
    created=minute_instants,
    ticket_type=st.sampled_from(
        [ev.TICKET_TYPE_INQUIRY, ev.TICKET_TYPE_COMPLAINT, ev.TICKET_TYPE_SERVICE_REQUEST]
    ),
    priority=st.integers(1, 5),
    dispatch=st.booleans(),
    accept=st.booleans(),
)
def test_a_fired_deadline_is_decided_once_and_is_listed_no_more(
    rules, created, ticket_type, priority, dispatch, accept
):
    desk = Desk(rules)
    desk.create(now=created, type=ticket_type, priority=priority, category="environment.noise")
    if dispatch:
        desk.do(d.DispatchTicket("t-1", created, "a-1", dispatch_ids=("d-1", "d-2")))
        if accept:
            desk.do(d.AcceptDispatch("t-1", created, "clerk-7", "environment", dispatch_id="d-1"))
    fired = []
    while pending := sorted(d.deadlines(desk.ticket), key=lambda x: (x.due_at, x.name)):
        deadline = pending[0]
        assert deadline.name not in fired, f"{deadline.name} is listed again after firing"
        events = d.on_deadline(desk.ticket, deadline, deadline.due_at, rules)
        assert events, f"{deadline.name} is listed but decides nothing"
        desk.apply(events, deadline.due_at)
        fired.append(deadline.name)
        assert deadline not in set(d.deadlines(desk.ticket))
        assert d.on_deadline(desk.ticket, deadline, deadline.due_at, rules) == []
        assert d.on_deadline(desk.ticket, deadline, deadline.due_at + timedelta(hours=1), rules) == []
    note(f"fired {fired}")
    assert fired
