"""A desk's timeline: what the agent saw, as the KPIs must record it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from simulator.driver import Agent, Visit
from simulator.scenario import AgentPlan, Habits, Scenario

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _desk_logged_out_in_wrap_up() -> Agent:
    agent = Agent(AgentPlan(0, (("billing", 5),), 1), "a-1", Habits(Scenario()))
    agent.timeline = [(T0, "ready", ""), (T0 + timedelta(seconds=10), "wrap_up", "")]
    agent.wrapping = Visit("billing", T0)
    agent.timeline.append((T0 + timedelta(seconds=19), "logged_out", ""))
    return agent


def test_a_wrap_up_the_service_ended_just_before_the_logout_is_on_the_timeline() -> None:
    agent = _desk_logged_out_in_wrap_up()

    agent.ended_wrap_up_before_logout(T0 + timedelta(seconds=18))

    assert [state for _, state, _ in agent.timeline] == ["ready", "wrap_up", "ready", "logged_out"]
    assert agent.timeline[2][0] == T0 + timedelta(seconds=18)
    assert agent.wrapping is not None and agent.wrapping.wrapped_at == T0 + timedelta(seconds=18)


def test_a_late_push_of_a_ready_from_before_the_wrap_up_changes_nothing() -> None:
    agent = _desk_logged_out_in_wrap_up()

    agent.ended_wrap_up_before_logout(T0 + timedelta(seconds=5))

    assert [state for _, state, _ in agent.timeline] == ["ready", "wrap_up", "logged_out"]
