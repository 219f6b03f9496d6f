"""The approval fold: a request's events, as the approvals domain writes them, become one step fact per
stint of a step in a department."""

from __future__ import annotations

from collections.abc import Iterable

from services.approvals.domain import REJECT, REQUEST_INFO
from services.kpi.approvals import ApprovalFold, fold_approval, step_rows
from services.kpi.projection import Row
from services.platform.envelope import Envelope
from tests.unit.kpi.approval_events import (
    DUTY,
    FINANCE,
    FINANCE_DIRECTOR,
    HOUR,
    LEAD,
    LEGAL,
    ApprovalStory,
    h,
)

SMALL, MEDIUM, LARGE = 80_000, 500_000, 2_000_000  # 800, 5,000 and 20,000 CNY


def fold_all(events: Iterable[Envelope], fold: ApprovalFold | None = None) -> ApprovalFold:
    fold = fold or ApprovalFold("ap-1")
    for envelope in events:
        fold = fold_approval(fold, envelope)
    return fold


def rows(story: ApprovalStory) -> dict[str, Row]:
    return {row["step_fact_id"]: row for row in step_rows(fold_all(story.events))}


def test_a_refund_approved_through_three_steps_has_one_fact_per_step_in_its_department() -> None:
    story = ApprovalStory()
    story.requested(LARGE)
    story.decided(LEAD, at=1)
    story.decided(FINANCE, at=3)
    story.decided(LEGAL, at=6)

    facts = rows(story)

    assert sorted(facts) == ["ap-1:0:0", "ap-1:1:0", "ap-1:2:0"]
    lead, finance, legal = facts["ap-1:0:0"], facts["ap-1:1:0"], facts["ap-1:2:0"]
    assert lead == {
        "step_fact_id": "ap-1:0:0",
        "request_id": "ap-1",
        "ticket_id": "t-1",
        "kind": "refund",
        "rule": "refund-large",
        "policy_id": "approvals",
        "policy_version": 1,
        "step": 0,
        "step_name": "team-lead",
        "stint": 0,
        "department": "center",
        "opened_at": h(0),
        "deadline_at": lead["deadline_at"],
        "paused_since": None,
        "ended_at": h(1),
        "duration_s": 3600.0,
        "paused_s": 0.0,
        "info_requests": 0,
        "reminders": 0,
        "within_deadline": True,
        "outcome": "approved",
        "version": 4,  # requested, opened, decided, completed
    }
    assert lead["deadline_at"] > h(1)
    assert (finance["department"], finance["step_name"], finance["opened_at"]) == ("finance", "finance", h(1))
    assert (finance["duration_s"], finance["outcome"], finance["within_deadline"]) == (
        2 * 3600.0,
        "approved",
        True,
    )
    assert (legal["department"], legal["duration_s"], legal["outcome"]) == ("legal", 3 * 3600.0, "approved")
    assert legal["version"] == len(story.events) - 1, "the grant after it changes no stint"


def test_a_rejection_ends_its_stint_and_the_steps_after_it_never_open() -> None:
    story = ApprovalStory()
    story.requested(LARGE)
    story.decided(LEAD, at=1)
    story.decided(FINANCE, REJECT, at=2)

    facts = rows(story)

    assert sorted(facts) == ["ap-1:0:0", "ap-1:1:0"], "legal was never asked: no stint, no fact"
    assert (facts["ap-1:1:0"]["outcome"], facts["ap-1:1:0"]["ended_at"]) == ("rejected", h(2))
    assert facts["ap-1:1:0"]["within_deadline"]


def test_while_waiting_on_the_requester_the_stint_is_paused_and_open() -> None:
    story = ApprovalStory()
    story.requested(SMALL)
    story.decided(LEAD, REQUEST_INFO, at=1)

    [fact] = rows(story).values()

    assert (fact["outcome"], fact["ended_at"], fact["paused_since"]) == ("", None, h(1))
    assert (fact["info_requests"], fact["paused_s"], fact["duration_s"]) == (1, 0.0, 0.0)


def test_the_wait_for_information_is_not_time_in_the_department_and_moves_the_deadline() -> None:
    story = ApprovalStory()
    story.requested(SMALL)
    first_deadline = story.open_deadline
    story.decided(LEAD, REQUEST_INFO, at=1)
    story.info_provided(at=23)  # the next working morning
    moved = story.open_deadline
    story.decided(LEAD, at=24)  # long after the first deadline, within the moved one

    [fact] = rows(story).values()

    assert first_deadline < h(24) <= moved
    assert fact["deadline_at"] == moved
    assert (fact["paused_since"], fact["paused_s"]) == (None, 22 * 3600.0)
    assert fact["duration_s"] == 2 * 3600.0  # 24 h open less 22 h waiting on the requester
    assert (fact["outcome"], fact["within_deadline"], fact["info_requests"]) == ("approved", True, 1)


def test_a_decision_after_the_deadline_before_its_timer_fired_is_not_within_it() -> None:
    story = ApprovalStory()
    story.requested(SMALL)
    late = (story.open_deadline - h(0)) / HOUR + 0.25

    story.decided(LEAD, at=late)

    [fact] = rows(story).values()
    assert (fact["outcome"], fact["within_deadline"]) == ("approved", False)


def test_a_missed_deadline_ends_the_stint_escalated_and_the_backup_decides_in_a_stint_of_its_own() -> None:
    story = ApprovalStory()
    story.requested(SMALL)
    missed = story.open_deadline
    story.fired(until=6)  # the reminder at half, then the escalation at the deadline
    backup_deadline = story.open_deadline
    story.decided(DUTY, at=6)

    facts = rows(story)

    own, backup = facts["ap-1:0:0"], facts["ap-1:0:1"]
    assert own == own | {
        "stint": 0,
        "department": "center",
        "outcome": "escalated",
        "ended_at": missed,
        "duration_s": (missed - h(0)).total_seconds(),
        "reminders": 1,
        "within_deadline": False,
    }
    assert backup == backup | {
        "step": 0,
        "stint": 1,
        "department": "center",
        "opened_at": missed,  # the timer fired when due
        "deadline_at": backup_deadline,
        "ended_at": h(6),
        "duration_s": (h(6) - missed).total_seconds(),
        "outcome": "approved",
        "within_deadline": True,
        "reminders": 0,
    }


def test_a_backup_in_another_role_of_the_department_decides_the_finance_step() -> None:
    story = ApprovalStory()
    story.requested(MEDIUM)
    story.decided(LEAD, at=1)
    missed = (story.open_deadline - h(0)) / HOUR
    story.fired(until=missed)
    story.decided(FINANCE_DIRECTOR, at=missed + 1)

    facts = rows(story)

    assert [(f["step"], f["stint"], f["department"], f["outcome"]) for f in facts.values()] == [
        (0, 0, "center", "approved"),
        (1, 0, "finance", "escalated"),
        (1, 1, "finance", "approved"),
    ]
    assert facts["ap-1:1:0"]["reminders"] == 2


def test_a_backup_that_lets_its_deadline_pass_too_expires_the_request_at_that_deadline() -> None:
    story = ApprovalStory()
    story.requested(SMALL)
    story.fired(until=6)
    backup_deadline = story.open_deadline

    story.fired(until=48)

    fold = fold_all(story.events)
    backup = {row["step_fact_id"]: row for row in step_rows(fold)}["ap-1:0:1"]
    assert (backup["outcome"], backup["ended_at"], backup["within_deadline"]) == (
        "expired",
        backup_deadline,
        False,
    )
    assert backup["duration_s"] == (backup_deadline - backup["opened_at"]).total_seconds()
    assert fold.forget_after == backup_deadline


def test_a_step_without_a_backup_expires_in_its_own_department() -> None:
    story = ApprovalStory()
    story.requested(LARGE)
    story.decided(LEAD, at=1)
    story.decided(FINANCE, at=2)
    legal_deadline = story.open_deadline

    story.fired(until=24 * 30)

    legal = rows(story)["ap-1:2:0"]
    assert (legal["department"], legal["outcome"], legal["ended_at"]) == ("legal", "expired", legal_deadline)
    assert "ap-1:2:1" not in rows(story)


def test_a_request_withdrawn_while_waiting_on_the_requester_ends_the_open_stint_withdrawn() -> None:
    story = ApprovalStory()
    story.requested(MEDIUM)
    story.decided(LEAD, at=1)
    story.decided(FINANCE, REQUEST_INFO, at=2)

    story.withdrawn(at=5)

    facts = rows(story)
    assert facts["ap-1:0:0"]["outcome"] == "approved", "a stint that ended keeps its outcome"
    finance = facts["ap-1:1:0"]
    assert finance == finance | {
        "outcome": "withdrawn",
        "ended_at": h(5),
        "paused_since": None,
        "paused_s": 3 * 3600.0,
        "duration_s": 3600.0,
        "within_deadline": False,
    }
    assert fold_all(story.events).forget_after == h(5)


def test_an_event_folded_already_changes_nothing() -> None:
    story = ApprovalStory()
    story.requested(MEDIUM)
    story.decided(LEAD, at=1)
    fold = fold_all(story.events)

    for envelope in story.events:
        assert fold_approval(fold, envelope) is fold


def test_only_the_stints_changed_after_a_version_are_rows_again() -> None:
    story = ApprovalStory()
    story.requested(MEDIUM)
    story.decided(LEAD, at=1)
    base = fold_all(story.events)
    story.decided(FINANCE, REQUEST_INFO, at=2)

    changed = step_rows(fold_all(story.events[base.version :], base), since_version=base.version)

    assert [row["step_fact_id"] for row in changed] == ["ap-1:1:0"]


def test_events_of_a_request_whose_request_was_never_folded_make_no_fact() -> None:
    story = ApprovalStory()
    story.requested(MEDIUM)
    story.decided(LEAD, at=1)

    fold = fold_all(story.events[1:])

    assert step_rows(fold) == []
