"""The simulator's scenario: seeded, so runs compare; arrivals follow the hourly profile."""

from __future__ import annotations

import math
from dataclasses import replace

from simulator.scenario import OFFICE_DAY, Scenario, agent_plans, callers

LONG_DAY = replace(Scenario(), duration_s=24 * 600.0, day_s=24 * 600.0, peak_arrivals_per_s=1.0)


def test_one_seed_gives_the_same_callers_and_another_seed_others() -> None:
    first = list(callers(Scenario(seed=3)))
    assert first == list(callers(Scenario(seed=3)))
    assert first != list(callers(Scenario(seed=4)))


def test_arrivals_follow_the_hourly_profile() -> None:
    per_hour = [0] * 24
    for caller in callers(LONG_DAY):
        per_hour[int((LONG_DAY.start_hour + caller.at_s / 600.0) % 24)] += 1
    for hour, count in enumerate(per_hour):
        # The rate runs linearly from one hour's level to the next: its mean over the hour.
        expected = 600.0 * (OFFICE_DAY[hour] + OFFICE_DAY[(hour + 1) % 24]) / 2
        assert abs(count - expected) < 4 * math.sqrt(expected) + 2, (hour, count, expected)


def test_the_expected_arrivals_match_what_is_drawn() -> None:
    drawn = sum(1 for _ in callers(LONG_DAY))
    expected = LONG_DAY.expected_arrivals()
    assert abs(drawn - expected) < 4 * math.sqrt(expected)


def test_handle_times_are_log_normal_around_the_median() -> None:
    handles = sorted(caller.handle_s for caller in callers(LONG_DAY))
    median = handles[len(handles) // 2]
    assert abs(median - LONG_DAY.handle_median_s) < 0.05 * LONG_DAY.handle_median_s


def test_every_queue_has_agents_with_its_skill() -> None:
    skills = {skill for plan in agent_plans(Scenario(agents=6)) for skill, _ in plan.skills}
    assert skills == {q.skill for q in Scenario().queues}


def test_exponential_handle_times_have_the_mean_and_spread_of_an_m_m_c_queue() -> None:
    handles = [caller.handle_s for caller in callers(replace(LONG_DAY, handle_exponential=True))]
    mean = sum(handles) / len(handles)
    spread = math.sqrt(sum((h - mean) ** 2 for h in handles) / (len(handles) - 1))
    assert abs(mean - LONG_DAY.handle_median_s) < 4 * LONG_DAY.handle_median_s / math.sqrt(len(handles))
    assert abs(spread / mean - 1.0) < 0.05  # an exponential's standard deviation is its mean


def test_callers_from_a_customer_base_call_again_and_new_callers_do_not() -> None:
    base = [caller.number for caller in callers(replace(LONG_DAY, customers=500))]
    assert len(set(base)) <= 500 < len(base)
    fresh = [caller.number for caller in callers(LONG_DAY)]
    assert len(set(fresh)) > 0.99 * len(fresh)


def test_patient_callers_never_hang_up() -> None:
    patient = replace(Scenario(), patience_mean_s=math.inf)
    assert all(math.isinf(caller.patience_s) for caller in callers(patient))
