"""The ACD's arithmetic: eligibility, escalation steps, strategies, contact order, wait estimates."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.routing.selection import (
    AgentSlot,
    Requirement,
    Step,
    Strategy,
    Waiting,
    eligible,
    estimate_wait,
    next_step_after,
    rank,
    requirement_at,
    service_order,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def agent(
    agent_id: str,
    idle_s: float = 0,
    available: bool = True,
    groups=(),
    talk_s: float = 0,
    contacts=0,
    **skills,
):
    return AgentSlot(
        agent_id,
        skills=skills,
        skill_groups=frozenset(groups),
        available=available,
        idle_since=NOW - timedelta(seconds=idle_s),
        talk_time_today=timedelta(seconds=talk_s),
        contacts_today=contacts,
    )


BILLING_4 = Requirement({"billing": 4})
STEPS = [
    Step(after=timedelta(seconds=30), min_proficiency=2),
    Step(after=timedelta(seconds=60), backup_skill_groups=frozenset({"second_line"}), priority_boost=5),
    Step(after=timedelta(seconds=120), overflow_queue_id="overflow"),
]


def test_an_agent_needs_every_required_skill_at_its_level() -> None:
    assert eligible(agent("a", billing=4, french=2), Requirement({"billing": 4, "french": 2}))
    assert not eligible(agent("b", billing=3, french=5), Requirement({"billing": 4, "french": 2}))
    assert not eligible(agent("c", billing=5), Requirement({"billing": 4, "french": 1}))


def test_a_backup_group_member_is_eligible_without_the_skills() -> None:
    assert eligible(
        agent("a", groups=["second_line"]), Requirement({"billing": 4}, frozenset({"second_line"}))
    )


def test_escalation_steps_relax_then_widen_then_overflow_as_the_wait_grows() -> None:
    skills = {"billing": 4}
    assert requirement_at(skills, STEPS, timedelta(seconds=29)) == Requirement({"billing": 4})
    assert requirement_at(skills, STEPS, timedelta(seconds=30)) == Requirement({"billing": 2}, step=1)
    at_60 = requirement_at(skills, STEPS, timedelta(seconds=60))
    assert (at_60.step, at_60.backup_skill_groups, at_60.priority_boost) == (2, frozenset({"second_line"}), 5)
    assert requirement_at(skills, STEPS, timedelta(seconds=500)).overflow_queue_id == "overflow"
    assert next_step_after(STEPS, timedelta(seconds=45)) == timedelta(seconds=60)
    assert next_step_after(STEPS, timedelta(seconds=500)) is None


def test_longest_idle_is_the_default_and_explains_itself() -> None:
    ranked = rank(
        [agent("a", idle_s=10, billing=5), agent("b", idle_s=90, billing=4)],
        BILLING_4,
        Strategy.LONGEST_IDLE,
        NOW,
    )

    assert [r.agent_id for r in ranked] == ["b", "a"]
    assert (ranked[0].rank, ranked[0].idle_for, ranked[0].proficiency) == (1, timedelta(seconds=90), 4)


def test_unavailable_or_unskilled_agents_are_never_candidates() -> None:
    ranked = rank(
        [
            agent("busy", idle_s=500, available=False, billing=5),
            agent("novice", idle_s=400, billing=1),
            agent("ok", billing=4),
        ],
        BILLING_4,
        Strategy.LONGEST_IDLE,
        NOW,
    )
    assert [r.agent_id for r in ranked] == ["ok"]


def test_most_proficient_then_longest_idle() -> None:
    agents = [
        agent("a", idle_s=100, billing=4),
        agent("b", idle_s=5, billing=5),
        agent("c", idle_s=50, billing=5),
    ]
    assert [r.agent_id for r in rank(agents, BILLING_4, Strategy.MOST_PROFICIENT, NOW)] == ["c", "b", "a"]


def test_least_talk_time_and_fewest_contacts_balance_the_load() -> None:
    agents = [agent("a", talk_s=900, contacts=3, billing=4), agent("b", talk_s=300, contacts=9, billing=4)]
    assert [r.agent_id for r in rank(agents, BILLING_4, Strategy.LEAST_TALK_TIME, NOW)] == ["b", "a"]
    assert [r.agent_id for r in rank(agents, BILLING_4, Strategy.FEWEST_CONTACTS, NOW)] == ["a", "b"]


def test_round_robin_continues_after_the_agent_offered_last() -> None:
    agents = [agent(name, billing=4) for name in ("a", "b", "c")]
    assert [r.agent_id for r in rank(agents, BILLING_4, Strategy.ROUND_ROBIN, NOW, last_offered="b")] == [
        "c",
        "a",
        "b",
    ]
    assert [r.agent_id for r in rank(agents, BILLING_4, Strategy.ROUND_ROBIN, NOW, last_offered="c")] == [
        "a",
        "b",
        "c",
    ]


def test_random_is_repeatable_for_one_contact_and_spreads_across_contacts() -> None:
    agents = [agent(f"a{n}", billing=4) for n in range(8)]
    first = rank(agents, BILLING_4, Strategy.RANDOM, NOW, contact_id="c-1")
    assert first == rank(agents, BILLING_4, Strategy.RANDOM, NOW, contact_id="c-1")
    winners = {
        rank(agents, BILLING_4, Strategy.RANDOM, NOW, contact_id=f"c-{n}")[0].agent_id for n in range(40)
    }
    assert len(winners) > 3


@given(st.lists(st.tuples(st.integers(1, 99), st.integers(0, 10_000)), max_size=30))
def test_service_order_is_by_priority_then_wait(entries) -> None:
    waiting = [Waiting(f"c{n}", p, NOW - timedelta(seconds=w)) for n, (p, w) in enumerate(entries)]
    ordered = service_order(waiting)
    for before, after in itertools.pairwise(ordered):
        assert before.priority > after.priority or (
            before.priority == after.priority and before.queued_at <= after.queued_at
        )


def test_wait_estimate_is_position_times_the_mean_spacing_of_recent_answers() -> None:
    assert estimate_wait([], 3) is None
    assert estimate_wait([(NOW, timedelta(seconds=40))], 1) == timedelta(seconds=40)
    answers = [(NOW + timedelta(seconds=s), timedelta(seconds=20)) for s in (30, 0, 10)]
    assert estimate_wait(answers, 4) == timedelta(seconds=60)


@given(st.permutations([(NOW + timedelta(seconds=s), timedelta(seconds=s % 7)) for s in (0, 5, 9, 30, 31)]))
def test_wait_estimate_does_not_depend_on_the_order_answers_are_met(answers) -> None:
    assert estimate_wait(answers, 2) == timedelta(seconds=31) / 4 * 2
