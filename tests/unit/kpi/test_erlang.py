"""Erlang C staffing arithmetic against published worked examples, an exact oracle and its invariants."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kpi.erlang import (
    Staffing,
    average_speed_of_answer,
    erlang_c,
    occupancy,
    service_level,
    staffing_for,
)

# Call Centre Helper, "Erlang C Formula - Made Simple With an Easy Worked Example":
# https://www.callcentrehelper.com/erlang-c-formula-example-121281.htm
# 100 calls in 30 minutes, AHT 180 s, target 80% answered in 20 s, maximum occupancy 85%.
# Its figures as published, to 7 significant digits, by the CRAN package ErlangC in its README
# (https://stat.ethz.ch/CRAN/web/packages/ErlangC/readme/README.html) and, to full float precision,
# by pyworkforce 0.1.0 in its README (https://pypi.org/project/pyworkforce/0.1.0/).
CCH_ARRIVALS_PER_HOUR = 200.0
CCH_AHT_S = 180.0
CCH_TRAFFIC = 10.0


def test_call_centre_helper_example_traffic_is_ten_erlangs() -> None:
    # CRAN ErlangC README: $traffic_intensity [1] 10
    assert CCH_ARRIVALS_PER_HOUR * CCH_AHT_S / 3600 == CCH_TRAFFIC


def test_call_centre_helper_example_with_eleven_agents() -> None:
    # CRAN ErlangC README, first row of $process: wait_probability 0.6821182, service_level 0.3896138
    assert erlang_c(CCH_TRAFFIC, 11) == pytest.approx(0.6821182, abs=5e-8)
    assert service_level(CCH_TRAFFIC, 11, CCH_AHT_S, 20) == pytest.approx(0.3896138, abs=5e-8)


def test_call_centre_helper_example_with_fourteen_agents() -> None:
    # CRAN ErlangC README: wait_probability 0.1741319, service_level 0.88835,
    # average_speed_of_answer "7.83593701177724s", occupancy 0.7142857
    assert erlang_c(CCH_TRAFFIC, 14) == pytest.approx(0.1741319, abs=5e-8)
    assert service_level(CCH_TRAFFIC, 14, CCH_AHT_S, 20) == pytest.approx(0.88835, abs=5e-6)
    assert average_speed_of_answer(CCH_TRAFFIC, 14, CCH_AHT_S) == pytest.approx(7.83593701177724, rel=1e-12)
    assert occupancy(CCH_TRAFFIC, 14) == pytest.approx(0.7142857, abs=5e-8)
    # pyworkforce README: 'service_level': 0.8883500191794669, 'waiting_probability': 0.1741319335950498
    assert erlang_c(CCH_TRAFFIC, 14) == pytest.approx(0.1741319335950498, rel=1e-12)
    assert service_level(CCH_TRAFFIC, 14, CCH_AHT_S, 20) == pytest.approx(0.8883500191794669, rel=1e-12)


def test_call_centre_helper_example_needs_fourteen_agents() -> None:
    # CRAN ErlangC README: calculate_agents(...) $agents [1] 14; pyworkforce README: 'raw_positions': 14
    staffing = staffing_for(CCH_ARRIVALS_PER_HOUR, CCH_AHT_S, 0.8, 20, max_occupancy=0.85)

    assert staffing.agents == 14
    assert staffing.traffic_erlangs == pytest.approx(CCH_TRAFFIC)
    assert staffing.waiting_probability == pytest.approx(0.1741319335950498, rel=1e-12)
    assert staffing.service_level == pytest.approx(0.8883500191794669, rel=1e-12)
    assert staffing.asa_s == pytest.approx(7.83593701177724, rel=1e-12)
    assert staffing.occupancy == pytest.approx(0.7142857142857143, rel=1e-12)


# Abstract Micro Systems, Erlang Library for Excel, function reference. The library prints 8 to 10
# significant digits and its last digit is sometimes off by a few units, hence rel=1e-6.
def test_waiting_probability_matches_abstract_micro_erlang_library() -> None:
    # http://abstractmicro.com/erlang/helppages/ref-erlcfractiondelayed.htm: ErlcFractionDelayed(11, 10.1)
    assert erlang_c(10.1, 11) == pytest.approx(0.71095477, rel=1e-6)


@pytest.mark.parametrize(
    ("agents", "traffic", "aht_s", "published"),
    [
        # http://abstractmicro.com/erlang/helppages/ref-erlcwait.htm: ErlcWait(100, 95, 300)
        (100, 95.0, 300.0, 30.387409),
        # same page: ErlcWait(13, 10.75, 120.5)
        (13, 10.75, 120.5, 22.270206),
        # http://abstractmicro.com/erlang/helppages/ref-erlcwait4.htm: ErlcWait4(20, 1800, 100, 240),
        # 100 calls in 1800 s with AHT 240 s is 100 * 240 / 1800 Erlangs
        (20, 100 * 240 / 1800, 240.0, 2.243505841),
        # same page: ErlcWait4(20, 1800, 100, 300)
        (20, 100 * 300 / 1800, 300.0, 30.4312286),
    ],
)
def test_average_speed_of_answer_matches_abstract_micro_erlang_library(
    agents: int, traffic: float, aht_s: float, published: float
) -> None:
    assert average_speed_of_answer(traffic, agents, aht_s) == pytest.approx(published, rel=1e-6)


def test_hubers_erlang_vignette_example_needs_twenty_three_agents() -> None:
    # Patrick Hubers, R package "Erlang", vignette "Queuing and Staffing Functions for Contact Centers"
    # (https://rdrr.io/github/phubers/erlang/f/vignettes/vignette.Rmd): 200 calls per half hour, AHT 3 min,
    # "a workload of 20 Erlang and we need 23 agents to hit our service level target [80% in 60 s],
    # we get an occupancy of 20/23 or 87%".
    staffing = staffing_for(400, 180, 0.8, 60)

    assert staffing.traffic_erlangs == pytest.approx(20.0)
    assert staffing.agents == 23
    assert round(staffing.occupancy, 2) == 0.87
    assert service_level(20.0, 22, 180, 60) < 0.8 <= service_level(20.0, 23, 180, 60)


def _erlang_c_exact(traffic: Fraction, agents: int) -> Fraction:
    """The textbook formula in exact arithmetic: (A^N/N! * N/(N-A)) / (sum_{k<N} A^k/k! + that)."""
    terms = [traffic**k / math.factorial(k) for k in range(agents)]
    queued = traffic**agents / math.factorial(agents) * agents / (agents - traffic)
    return queued / (sum(terms) + queued)


def _erlang_c_in_log_space(traffic: float, agents: int) -> float:
    """The textbook formula with every term as a logarithm, an independent check for large centers."""
    logs = [k * math.log(traffic) - math.lgamma(k + 1) for k in range(agents)]
    queued = agents * math.log(traffic) - math.lgamma(agents + 1) + math.log(agents / (agents - traffic))
    top = max([*logs, queued])
    total = math.fsum(math.exp(x - top) for x in [*logs, queued])
    return math.exp(queued - top) / total


@given(
    traffic=st.fractions(min_value=0, max_value=60, max_denominator=20),
    extra_agents=st.integers(min_value=1, max_value=30),
)
def test_waiting_probability_matches_the_textbook_formula_in_exact_arithmetic(
    traffic: Fraction, extra_agents: int
) -> None:
    agents = math.floor(traffic) + extra_agents

    assert erlang_c(float(traffic), agents) == pytest.approx(
        float(_erlang_c_exact(traffic, agents)), rel=1e-9, abs=1e-300
    )


@given(
    traffic=st.floats(min_value=0, max_value=6000, allow_nan=False),
    agents=st.integers(min_value=0, max_value=7000),
)
def test_waiting_probability_is_a_probability(traffic: float, agents: int) -> None:
    assert 0.0 <= erlang_c(traffic, agents) <= 1.0


@given(
    traffic=st.floats(min_value=0.01, max_value=500),
    aht_s=st.floats(min_value=1, max_value=3600),
    threshold_s=st.floats(min_value=0, max_value=600),
    extra_agents=st.integers(min_value=0, max_value=60),
)
def test_service_level_rises_with_every_added_agent(
    traffic: float, aht_s: float, threshold_s: float, extra_agents: int
) -> None:
    agents = math.floor(traffic) + 1 + extra_agents

    fewer = service_level(traffic, agents, aht_s, threshold_s)
    more = service_level(traffic, agents + 1, aht_s, threshold_s)

    assert 0.0 <= fewer <= more <= 1.0
    assert average_speed_of_answer(traffic, agents + 1, aht_s) <= average_speed_of_answer(
        traffic, agents, aht_s
    )


@given(
    arrivals_per_hour=st.floats(min_value=0.1, max_value=50_000),
    aht_s=st.floats(min_value=10, max_value=1800),
    target=st.floats(min_value=0.05, max_value=0.99),
    threshold_s=st.floats(min_value=0, max_value=300),
    max_occupancy=st.floats(min_value=0.5, max_value=1.0),
)
def test_staffing_is_the_fewest_agents_that_meet_the_target(
    arrivals_per_hour: float, aht_s: float, target: float, threshold_s: float, max_occupancy: float
) -> None:
    staffing = staffing_for(arrivals_per_hour, aht_s, target, threshold_s, max_occupancy=max_occupancy)
    traffic = staffing.traffic_erlangs
    agents = staffing.agents

    assert agents > traffic
    assert agents >= 1
    assert staffing.service_level >= target
    assert staffing.occupancy <= max_occupancy
    assert staffing.service_level == pytest.approx(service_level(traffic, agents, aht_s, threshold_s))
    assert staffing.waiting_probability == pytest.approx(erlang_c(traffic, agents))
    assert staffing.asa_s == pytest.approx(average_speed_of_answer(traffic, agents, aht_s))
    assert staffing.occupancy == pytest.approx(occupancy(traffic, agents))
    one_fewer = agents - 1
    assert (
        one_fewer <= traffic
        or service_level(traffic, one_fewer, aht_s, threshold_s) < target
        or traffic / one_fewer > max_occupancy
    )


def test_large_center_is_staffed_with_a_finite_answer_close_to_the_traffic() -> None:
    # 36,000 calls an hour at AHT 300 s: 3000 Erlangs, 80% in 20 s.
    staffing = staffing_for(36_000, 300, 0.8, 20)

    assert staffing.traffic_erlangs == pytest.approx(3000.0)
    assert 3000 < staffing.agents <= 3000 + 5 * math.sqrt(3000)
    assert service_level(3000.0, staffing.agents - 1, 300, 20) < 0.8 <= staffing.service_level
    assert 0.0 < staffing.waiting_probability < 1.0
    assert math.isfinite(staffing.asa_s)


@pytest.mark.parametrize(
    ("traffic", "agents"), [(3000.0, 3018), (3000.0, 3100), (5000.0, 5050), (4999.5, 6000)]
)
def test_large_center_waiting_probability_matches_the_formula_in_log_space(
    traffic: float, agents: int
) -> None:
    assert erlang_c(traffic, agents) == pytest.approx(_erlang_c_in_log_space(traffic, agents), rel=1e-8)


def test_unstable_queue_waits_always_and_never_meets_a_service_level() -> None:
    assert erlang_c(10.0, 10) == 1.0
    assert erlang_c(10.0, 3) == 1.0
    assert service_level(10.0, 10, 180, 20) == 0.0
    assert average_speed_of_answer(10.0, 10, 180) == math.inf
    assert occupancy(10.0, 5) == 1.0


def test_no_traffic_means_no_wait_and_no_occupancy() -> None:
    assert erlang_c(0.0, 1) == 0.0
    assert service_level(0.0, 1, 180, 20) == 1.0
    assert average_speed_of_answer(0.0, 1, 180) == 0.0
    assert occupancy(0.0, 0) == 0.0


def test_zero_arrivals_need_no_agents() -> None:
    assert staffing_for(0, 180, 0.8, 20) == Staffing(
        agents=0, traffic_erlangs=0.0, service_level=1.0, asa_s=0.0, occupancy=0.0, waiting_probability=0.0
    )


def test_any_traffic_needs_at_least_one_agent() -> None:
    assert staffing_for(0.5, 30, 0.1, 600).agents == 1


def test_occupancy_cap_adds_agents_beyond_the_service_level_answer() -> None:
    staffing = staffing_for(CCH_ARRIVALS_PER_HOUR, CCH_AHT_S, 0.8, 20, max_occupancy=0.5)

    assert staffing.agents == 20
    assert staffing.occupancy == 0.5


@pytest.mark.parametrize(
    ("arguments", "bad_value"),
    [
        ({"arrivals_per_hour": -1.0}, "arrivals_per_hour"),
        ({"arrivals_per_hour": math.nan}, "arrivals_per_hour"),
        ({"aht_s": 0.0}, "aht_s"),
        ({"aht_s": -180.0}, "aht_s"),
        ({"target_service_level": 0.0}, "target_service_level"),
        ({"target_service_level": 1.01}, "target_service_level"),
        ({"target_service_level": -0.8}, "target_service_level"),
        ({"threshold_s": -1.0}, "threshold_s"),
        ({"max_occupancy": 0.0}, "max_occupancy"),
        ({"max_occupancy": 1.5}, "max_occupancy"),
    ],
)
def test_staffing_refuses_invalid_input_naming_the_bad_value(arguments: dict, bad_value: str) -> None:
    valid = {"arrivals_per_hour": 200.0, "aht_s": 180.0, "target_service_level": 0.8, "threshold_s": 20.0}

    with pytest.raises(ValueError, match=bad_value):
        staffing_for(**(valid | arguments))


def test_staffing_refuses_when_max_agents_is_not_enough() -> None:
    with pytest.raises(ValueError, match="max_agents=13"):
        staffing_for(CCH_ARRIVALS_PER_HOUR, CCH_AHT_S, 0.8, 20, max_agents=13)
    with pytest.raises(ValueError, match="max_agents=5"):
        staffing_for(CCH_ARRIVALS_PER_HOUR, CCH_AHT_S, 0.8, 20, max_agents=5)


def test_formulas_refuse_negative_traffic_or_agents_and_non_positive_aht() -> None:
    with pytest.raises(ValueError, match="traffic_erlangs"):
        erlang_c(-1.0, 5)
    with pytest.raises(ValueError, match="agents"):
        occupancy(1.0, -1)
    with pytest.raises(ValueError, match="aht_s"):
        average_speed_of_answer(1.0, 5, 0.0)
    with pytest.raises(ValueError, match="threshold_s"):
        service_level(1.0, 5, 180.0, -20.0)
