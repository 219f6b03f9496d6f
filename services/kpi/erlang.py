"""Staffing arithmetic (Erlang C): how long contacts wait with a given number of agents, and how many
agents a queue needs to meet its service level.

Pure functions, no I/O. Traffic is in Erlangs (arrivals per hour x AHT in hours); times are in seconds.
Erlang C assumes Poisson arrivals, exponential handle times and callers who never abandon, so its
service level counts every offered contact and its staffing errs on the side of more agents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Staffing:
    """The agents a queue needs and the service it gives with them."""

    agents: int
    traffic_erlangs: float
    service_level: float
    asa_s: float
    occupancy: float
    waiting_probability: float


def erlang_c(traffic_erlangs: float, agents: int) -> float:
    """Probability that an arriving contact waits (Pw); 1.0 when the queue is unstable (agents <= traffic)."""
    _check_traffic(traffic_erlangs, agents)
    if agents <= traffic_erlangs:
        return 1.0
    return _waiting_probability(traffic_erlangs, agents, _erlang_b(traffic_erlangs, agents))


def service_level(traffic_erlangs: float, agents: int, aht_s: float, threshold_s: float) -> float:
    """Fraction of contacts answered within ``threshold_s`` seconds; 0.0 when agents <= traffic."""
    _check_aht(aht_s)
    _check_threshold(threshold_s)
    waiting = erlang_c(traffic_erlangs, agents)
    if agents <= traffic_erlangs:
        return 0.0
    return _service_level(waiting, traffic_erlangs, agents, aht_s, threshold_s)


def average_speed_of_answer(traffic_erlangs: float, agents: int, aht_s: float) -> float:
    """Mean wait in seconds over all contacts (ASA); ``math.inf`` when agents <= traffic."""
    _check_aht(aht_s)
    waiting = erlang_c(traffic_erlangs, agents)
    if agents <= traffic_erlangs:
        return math.inf
    return waiting * aht_s / (agents - traffic_erlangs)


def occupancy(traffic_erlangs: float, agents: int) -> float:
    """Share of agent time spent on contacts (traffic / agents), capped at 1."""
    _check_traffic(traffic_erlangs, agents)
    if traffic_erlangs == 0:
        return 0.0
    if agents <= traffic_erlangs:
        return 1.0
    return traffic_erlangs / agents


def staffing_for(
    arrivals_per_hour: float,
    aht_s: float,
    target_service_level: float,
    threshold_s: float,
    max_occupancy: float = 1.0,
    max_agents: int = 100_000,
) -> Staffing:
    """The fewest agents (more than the traffic) that answer ``target_service_level`` of contacts within
    ``threshold_s`` seconds without occupancy rising above ``max_occupancy``.

    Raises ``ValueError`` on invalid input, or when more than ``max_agents`` agents would be needed.
    """
    if not (math.isfinite(arrivals_per_hour) and arrivals_per_hour >= 0):
        raise ValueError(f"arrivals_per_hour must be a finite number >= 0, got {arrivals_per_hour!r}")
    _check_aht(aht_s)
    _check_threshold(threshold_s)
    if not 0 < target_service_level <= 1:
        raise ValueError(f"target_service_level must be in (0, 1], got {target_service_level!r}")
    if not 0 < max_occupancy <= 1:
        raise ValueError(f"max_occupancy must be in (0, 1], got {max_occupancy!r}")

    traffic = arrivals_per_hour * aht_s / SECONDS_PER_HOUR
    if traffic == 0:
        return Staffing(0, 0.0, 1.0, 0.0, 0.0, 0.0)

    # The smallest stable center is floor(A) + 1 agents; the answer is a few sqrt(A) above it. Erlang B
    # is carried from one agent count to the next, so the whole search costs O(answer) steps.
    first = math.floor(traffic) + 1
    if first > max_agents:
        raise _not_enough(max_agents, traffic, target_service_level, threshold_s)
    blocking = _erlang_b(traffic, first - 1)
    for agents in range(first, max_agents + 1):
        blocking = _next_erlang_b(traffic, agents, blocking)
        waiting = _waiting_probability(traffic, agents, blocking)
        level = _service_level(waiting, traffic, agents, aht_s, threshold_s)
        if level >= target_service_level and traffic / agents <= max_occupancy:
            return Staffing(
                agents=agents,
                traffic_erlangs=traffic,
                service_level=level,
                asa_s=waiting * aht_s / (agents - traffic),
                occupancy=traffic / agents,
                waiting_probability=waiting,
            )
    raise _not_enough(max_agents, traffic, target_service_level, threshold_s)


def _erlang_b(traffic: float, agents: int) -> float:
    # The recursion B(n) = A B(n-1) / (n + A B(n-1)) stays in [0, 1]: no factorials, no overflow.
    blocking = 1.0
    for n in range(1, agents + 1):
        blocking = _next_erlang_b(traffic, n, blocking)
    return blocking


def _next_erlang_b(traffic: float, agents: int, previous: float) -> float:
    return traffic * previous / (agents + traffic * previous)


def _waiting_probability(traffic: float, agents: int, blocking: float) -> float:
    return agents * blocking / (agents - traffic * (1.0 - blocking))


def _service_level(waiting: float, traffic: float, agents: int, aht_s: float, threshold_s: float) -> float:
    return 1.0 - waiting * math.exp(-(agents - traffic) * threshold_s / aht_s)


def _check_traffic(traffic_erlangs: float, agents: int) -> None:
    if not (math.isfinite(traffic_erlangs) and traffic_erlangs >= 0):
        raise ValueError(f"traffic_erlangs must be a finite number >= 0, got {traffic_erlangs!r}")
    if agents < 0:
        raise ValueError(f"agents must be >= 0, got {agents!r}")


def _check_aht(aht_s: float) -> None:
    if not (math.isfinite(aht_s) and aht_s > 0):
        raise ValueError(f"aht_s must be a finite number > 0, got {aht_s!r}")


def _check_threshold(threshold_s: float) -> None:
    if not (math.isfinite(threshold_s) and threshold_s >= 0):
        raise ValueError(f"threshold_s must be a finite number >= 0, got {threshold_s!r}")


def _not_enough(max_agents: int, traffic: float, target: float, threshold_s: float) -> ValueError:
    return ValueError(
        f"max_agents={max_agents} is not enough for {traffic:.1f} Erlangs "
        f"at a service level of {target:.1%} within {threshold_s:g} s"
    )
