"""The ApprovalRequest aggregate: chains decided step by step, parallel steps and quorums, more
information asked and given, deadlines with reminders, escalation and expiry, delegation, withdrawal;
every refusal names the state and changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from callcenter.approvals.v1 import events_pb2 as ev
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from services.approvals import domain
from services.approvals.domain import (
    APPROVE,
    REJECT,
    REQUEST_INFO,
    ApprovalRequest,
    DecideStep,
    Delegation,
    ProvideInfo,
    RequestApproval,
    Requester,
    Withdraw,
)
from services.approvals.policies import DEFAULT_CALENDARS_DIR, DEFAULT_POLICY_DIR, ApprovalPolicy, load_policy
from services.platform.calendars import load_calendars
from services.platform.envelope import Cause, EventRegistry, make_envelope
from services.platform.errors import FailedPrecondition, PermissionDenied
from services.platform.eventstore import Deadline
from services.platform.timestamps import dt
from services.platform.topics import department_codes

REGISTRY = EventRegistry.of(ev)
# Monday 2 March 2026, 10:00 in Beijing: a working morning of the cn-gov calendar.
MONDAY = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
CALENDARS = load_calendars(DEFAULT_CALENDARS_DIR)
SHIPPED = load_policy(DEFAULT_POLICY_DIR / "approvals-v1.yaml", CALENDARS, department_codes())

AGENT = Requester("agent-7")
LEAD = Requester("lead-1", titles=frozenset({"team_lead"}))
DUTY = Requester("duty-1", titles=frozenset({"duty_manager"}))
SUPERVISOR = Requester("sup-1", supervisor=True)


def member(department: str, subject: str = "", *titles: str) -> Requester:
    return Requester(subject or f"{department}-1", department, frozenset(titles))


class Story:
    """One request's life: commands decided against the folded state, their events folded in."""

    def __init__(self, policy: ApprovalPolicy = SHIPPED) -> None:
        self.policy = policy
        self.state = ApprovalRequest()
        self.events: list[Message] = []

    def do(self, command: domain.Command) -> list[Message]:
        events = domain.decide(self.state, command, self.policy)
        self.apply(events, command.now)
        return events

    def apply(self, events: Sequence[Message], at: datetime) -> None:
        for event in events:
            envelope = make_envelope(
                event,
                registry=REGISTRY,
                aggregate_type=domain.KIND,
                aggregate_id="ap-1",
                aggregate_version=len(self.events) + 1,
                occurred_at=at,
                cause=Cause.request(f"r-{len(self.events)}"),
            )
            self.state = domain.evolve(self.state, envelope)
            self.events.append(event)

    def request(self, amount: int = 50_000, kind: str = "refund", at: datetime = MONDAY) -> list[Message]:
        return self.do(
            RequestApproval(
                "ap-1", "t-1", kind, amount, "CNY", "standard", "complaint", "goodwill", AGENT, at
            )
        )

    def decide(self, who: Requester, decision: int = APPROVE, at: datetime = MONDAY, **kw) -> list[Message]:
        step = self.state.open_step
        index = kw.pop("step_index", step.index if step else 0)
        return self.do(DecideStep(index, decision, kw.pop("comment", "ok"), who, at, **kw))

    def fire(self, at: datetime) -> list[Message]:
        """Every deadline due by ``at``, in order, as the scheduler would fire them."""
        fired: list[Message] = []
        while True:
            due = sorted((d for d in domain.deadlines(self.state) if d.due_at <= at), key=lambda d: d.due_at)
            if not due:
                return fired
            events = domain.on_deadline(self.state, due[0], due[0].due_at, self.policy)
            self.apply(events, due[0].due_at)
            fired += events


def names(events: Sequence[Message]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_a_refund_up_to_1000_needs_the_team_lead_alone() -> None:
    story = Story()
    requested, opened = story.request(amount=80_000)  # 800.00 CNY
    assert (requested.rule, requested.policy_id, requested.policy_version) == ("refund-small", "approvals", 1)
    assert [step.name for step in requested.chain] == ["team-lead"]
    # 10:00 plus four working hours: two before the lunch break (12:00-13:30), two after.
    assert dt(opened.deadline) == MONDAY + timedelta(hours=5, minutes=30)
    assert names(story.decide(LEAD)) == ["ApprovalDecided", "ApprovalStepCompleted", "ApprovalGranted"]
    assert story.state.status == domain.GRANTED


def test_a_large_refund_goes_through_three_steps_in_order() -> None:
    story = Story()
    [requested, _] = story.request(amount=2_000_000)  # 20,000.00 CNY
    assert [(s.name, s.deciders[0].department) for s in requested.chain] == [
        ("team-lead", "center"),
        ("finance", "finance"),
        ("legal", "legal"),
    ]
    assert names(story.decide(LEAD))[-1] == "ApprovalStepOpened"
    with pytest.raises(PermissionDenied, match="step 1 \\(finance\\) of approval ap-1 is for finance"):
        story.decide(member("legal"))
    assert names(story.decide(member("finance")))[-1] == "ApprovalStepOpened"
    assert names(story.decide(member("legal"))) == [
        "ApprovalDecided",
        "ApprovalStepCompleted",
        "ApprovalGranted",
    ]
    assert [d.department for d in story.state.trail] == ["center", "finance", "legal"]


def test_a_rejection_stops_the_chain_with_its_reason() -> None:
    story = Story()
    story.request(amount=2_000_000)
    story.decide(LEAD)
    events = story.decide(member("finance"), REJECT, comment="over the yearly limit")
    assert names(events) == ["ApprovalDecided", "ApprovalStepCompleted", "ApprovalRejected"]
    assert events[-1].reason == "over the yearly limit" and events[-1].department == "finance"
    with pytest.raises(FailedPrecondition, match="approval ap-1 is rejected; it takes no more decisions"):
        story.decide(member("legal"), step_index=2)


def test_a_named_role_is_needed_and_a_center_member_without_it_is_refused() -> None:
    story = Story()
    story.request(amount=10_000)
    before = story.state
    with pytest.raises(PermissionDenied, match="is for center/team_lead; you act for the contact center"):
        story.decide(Requester("agent-9"))
    with pytest.raises(PermissionDenied, match="you act for finance"):
        story.decide(member("finance", "f-1", "team_lead"))
    assert story.state == before, "a refusal changes nothing"


def test_a_decision_for_another_step_than_the_open_one_is_refused_naming_it() -> None:
    story = Story()
    story.request(amount=2_000_000)
    with pytest.raises(FailedPrecondition, match="is pending at step 0 \\(team-lead\\), not at step 1"):
        story.decide(member("finance"), step_index=1)


def test_a_quorum_of_two_of_three_completes_at_the_second_approval_and_no_longer_asks_the_third() -> None:
    story = Story()
    story.request(kind="contract_change", amount=0)
    assert names(story.decide(member("finance"))) == ["ApprovalDecided"]
    with pytest.raises(FailedPrecondition, match="finance-1 has decided this step already"):
        story.decide(member("finance"))
    with pytest.raises(PermissionDenied, match="is for center/duty_manager, legal; you act for finance"):
        story.decide(member("finance", "finance-2"))
    events = story.decide(member("legal"))
    assert names(events) == ["ApprovalDecided", "ApprovalStepCompleted", "ApprovalGranted"]
    assert (events[1].approvals, events[1].rejections, events[1].cancelled) == (2, 0, 1)


def test_more_information_pauses_the_step_and_the_answer_moves_its_deadline_by_the_wait() -> None:
    story = Story()
    story.request(amount=80_000)
    story.decide(LEAD, REQUEST_INFO, at=MONDAY + timedelta(hours=1), comment="which order?")
    assert story.state.open_step.status == "info"
    assert list(domain.deadlines(story.state)) == [], "no clock runs while it waits"
    with pytest.raises(FailedPrecondition, match="waiting for information at step 0"):
        story.decide(LEAD, at=MONDAY + timedelta(hours=2))
    with pytest.raises(PermissionDenied, match="only the requester \\(agent-7\\) or a supervisor"):
        story.do(ProvideInfo("order 1234", Requester("agent-9"), MONDAY + timedelta(hours=2)))
    # Asked at 11:00 with 3 working hours left; answered the next morning at 09:00 Beijing time.
    answered_at = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    [provided] = story.do(ProvideInfo("order 1234", AGENT, answered_at))
    assert dt(provided.deadline) == answered_at + timedelta(hours=3)
    assert names(story.decide(LEAD, at=answered_at + timedelta(minutes=5)))[-1] == "ApprovalGranted"


def test_reminders_come_at_their_shares_then_the_backup_decides_alone_then_the_request_expires() -> None:
    story = Story()
    story.request(amount=80_000)  # team lead, 4 working hours, a reminder at half
    fired = story.fire(MONDAY + timedelta(hours=5, minutes=30))  # four working hours, over lunch
    assert names(fired) == ["ApprovalReminderSent", "ApprovalStepEscalated"]
    assert fired[0].share == 0.5
    escalated = fired[1]
    assert (escalated.to.department, escalated.to.role) == ("center", "duty_manager")
    with pytest.raises(PermissionDenied, match="is for center/duty_manager"):
        story.decide(LEAD, at=MONDAY + timedelta(hours=5))
    assert names(story.fire(dt(escalated.new_deadline))) == ["ApprovalExpired"]
    assert story.state.status == domain.EXPIRED


def test_a_step_without_a_backup_expires_at_its_deadline() -> None:
    story = Story()
    story.request(amount=2_000_000)
    story.decide(LEAD)
    story.decide(member("finance"))
    assert names(story.fire(MONDAY + timedelta(days=30)))[-1] == "ApprovalExpired"


def test_a_deadline_after_the_request_moved_on_does_nothing() -> None:
    story = Story()
    story.request(amount=80_000)
    [due] = [d for d in domain.deadlines(story.state) if d.name.endswith("deadline")]
    story.decide(LEAD)
    assert domain.on_deadline(story.state, due, due.due_at, SHIPPED) == []
    assert domain.on_deadline(story.state, Deadline("step/0/remind/0.5", MONDAY), MONDAY, SHIPPED) == []


def test_a_delegate_decides_for_the_member_within_the_period_only() -> None:
    story = Story()
    story.request(amount=500_000)
    story.decide(LEAD)
    deputy = Requester("deputy-1", "housing")
    holiday = Delegation("dl-1", "finance-7", "finance", MONDAY, MONDAY + timedelta(days=5))
    late = MONDAY + timedelta(days=6)
    with pytest.raises(PermissionDenied):
        story.decide(deputy, at=late, delegations=(holiday,))
    [decided, *_] = story.decide(deputy, at=MONDAY + timedelta(hours=1), delegations=(holiday,))
    assert (decided.approver_id, decided.on_behalf_of, decided.department) == (
        "deputy-1",
        "finance-7",
        "finance",
    )


def test_the_requester_or_a_supervisor_may_withdraw_and_nothing_is_decided_after() -> None:
    story = Story()
    story.request(amount=80_000)
    with pytest.raises(PermissionDenied):
        story.do(Withdraw("no longer needed", LEAD, MONDAY))
    assert names(story.do(Withdraw("no longer needed", SUPERVISOR, MONDAY))) == ["ApprovalWithdrawn"]
    with pytest.raises(FailedPrecondition, match="approval ap-1 is withdrawn"):
        story.decide(LEAD)


def test_a_second_request_with_the_same_id_is_refused() -> None:
    story = Story()
    story.request()
    with pytest.raises(FailedPrecondition, match="it was requested already"):
        story.request()


# Properties ---------------------------------------------------------------------------------------

QUORUM_POLICY = """policy: quorum
version: 1
calendar: cn-gov
currency: CNY
values: {{kind: [board], customer_tier: [standard], ticket_type: [complaint]}}
rules:
  - name: board
    steps:
      - name: board
        deciders: [{deciders}]
        approvals_needed: {k}
        deadline: 2wd
        at_deadline: expire
"""


def quorum_policy(directory: Path, n: int, k: int) -> ApprovalPolicy:
    path = directory / f"quorum-{n}-{k}.yaml"
    path.write_text(QUORUM_POLICY.format(deciders=", ".join(["{department: finance}"] * n), k=k))
    return load_policy(path, CALENDARS, ["finance"])


@pytest.fixture(scope="module")
def quorum_policies(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], ApprovalPolicy]:
    directory = tmp_path_factory.mktemp("quorum")
    return {(n, k): quorum_policy(directory, n, k) for n in range(1, 6) for k in range(1, n + 1)}


def run_board(policy: ApprovalPolicy, answers: Sequence[int]) -> tuple[Story, list[int]]:
    """The board step answered in this order by distinct finance members, until it completes; which
    answers were taken."""
    story = Story(policy)
    story.do(RequestApproval("ap-1", "t-1", "board", 0, "CNY", "standard", "complaint", "", AGENT, MONDAY))
    taken = []
    for number, answer in enumerate(answers):
        if story.state.status != domain.PENDING:
            break
        story.decide(member("finance", f"finance-{number}"), answer)
        taken.append(answer)
    return story, taken


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_parallel_steps_outcome_never_depends_on_the_order_of_its_answers(
    quorum_policies: dict[tuple[int, int], ApprovalPolicy], data: st.DataObject
) -> None:
    n = data.draw(st.integers(1, 5))
    k = data.draw(st.integers(1, n))
    answers = data.draw(st.lists(st.sampled_from([APPROVE, REJECT]), min_size=n, max_size=n))
    order = data.draw(st.permutations(answers))
    first, _ = run_board(quorum_policies[(n, k)], answers)
    second, _ = run_board(quorum_policies[(n, k)], order)
    expected = domain.GRANTED if answers.count(APPROVE) >= k else domain.REJECTED
    assert first.state.status == second.state.status == expected


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_quorum_of_k_of_n_completes_exactly_at_the_kth_approval_and_cancels_the_rest(
    quorum_policies: dict[tuple[int, int], ApprovalPolicy], data: st.DataObject
) -> None:
    n = data.draw(st.integers(1, 5))
    k = data.draw(st.integers(1, n))
    rejections = data.draw(st.integers(0, n - k))  # few enough that k approvals can still come
    answers = data.draw(st.permutations([APPROVE] * k + [REJECT] * rejections))
    story, taken = run_board(quorum_policies[(n, k)], answers)
    kth = [i for i, answer in enumerate(answers) if answer == APPROVE][k - 1]
    assert len(taken) == kth + 1, "it completes at the k-th approval, not before or after"
    [completed] = [e for e in story.events if isinstance(e, ev.ApprovalStepCompleted)]
    assert (completed.approvals, completed.cancelled) == (k, n - len(taken))
    assert story.state.status == domain.GRANTED


WORKING_MOMENTS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 20), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(opened_at=WORKING_MOMENTS, amount=st.sampled_from([80_000, 500_000, 2_000_000]))
def test_a_deadline_never_fires_for_time_outside_the_calendars_working_hours(
    opened_at: datetime, amount: int
) -> None:
    story = Story()
    story.request(amount=amount, at=opened_at)
    calendar = SHIPPED.calendar
    step = story.state.open_step
    length = calendar.working_time(step.deadline)
    for deadline in domain.deadlines(story.state):
        worked = calendar.working_between(opened_at, deadline.due_at)
        if deadline.name.endswith("deadline"):
            assert worked == length, "the deadline counts working time only"
        else:
            share = float(deadline.name.split("/")[-1])
            assert worked == length * share
        assert worked <= length


def test_each_decide_refusal_leaves_the_state_unchanged() -> None:
    story = Story()
    story.request(kind="contract_change", amount=0)
    story.decide(member("finance"))
    before = story.state
    attempts = [
        lambda: story.decide(member("finance")),
        lambda: story.decide(member("housing")),
        lambda: story.decide(member("legal"), step_index=3),
        lambda: story.do(ProvideInfo("x", AGENT, MONDAY)),
        lambda: story.do(Withdraw("x", member("legal"), MONDAY)),
    ]
    for attempt in attempts:
        with pytest.raises((FailedPrecondition, PermissionDenied)):
            attempt()
        assert story.state == before
