"""The ACD's arithmetic, pure: who may take a contact at its escalation step, how a strategy ranks
them, which waiting contact goes first, and how long a caller will wait.

Every choice comes with its reasons (``Ranked``), because a routing decision must be explainable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Protocol, TypeVar


class Strategy(IntEnum):
    """Mirrors callcenter.routing.v1.SelectionStrategy."""

    LONGEST_IDLE = 1
    MOST_PROFICIENT = 2
    LEAST_TALK_TIME = 3
    FEWEST_CONTACTS = 4
    ROUND_ROBIN = 5
    RANDOM = 6


@dataclass(frozen=True)
class Step:
    """An escalation step: after ``after`` in queue, widen who may take the contact."""

    after: timedelta
    min_proficiency: int = 0
    backup_skill_groups: frozenset[str] = frozenset()
    overflow_queue_id: str = ""
    priority_boost: int = 0


@dataclass(frozen=True)
class Requirement:
    """What an agent needs to take a contact now."""

    skills: Mapping[str, int]
    backup_skill_groups: frozenset[str] = frozenset()
    step: int = 0
    overflow_queue_id: str = ""
    priority_boost: int = 0


@dataclass(frozen=True)
class AgentSlot:
    """An agent as routing sees it: skills, availability, and the figures strategies rank by."""

    agent_id: str
    skills: Mapping[str, int] = field(default_factory=dict)
    skill_groups: frozenset[str] = frozenset()
    available: bool = False
    idle_since: datetime | None = None
    talk_time_today: timedelta = timedelta(0)
    contacts_today: int = 0


@dataclass(frozen=True)
class Ranked:
    """One candidate, with the figures its rank came from."""

    agent_id: str
    rank: int
    proficiency: int
    idle_for: timedelta
    talk_time_today: timedelta
    contacts_today: int


def requirement_at(skills: Mapping[str, int], steps: Sequence[Step], waited: timedelta) -> Requirement:
    """The requirement after ``waited`` in queue: each step reached relaxes or widens the last."""
    return requirement_at_step(skills, steps, sum(1 for step in steps if step.after <= waited))


def requirement_at_step(skills: Mapping[str, int], steps: Sequence[Step], reached: int) -> Requirement:
    """The requirement once the first ``reached`` steps (in order of their time) have been passed."""
    requirement = Requirement(dict(skills))
    for index, step in enumerate(sorted(steps, key=lambda s: s.after)[:reached], start=1):
        relaxed = (
            {skill: min(level, step.min_proficiency) for skill, level in requirement.skills.items()}
            if step.min_proficiency
            else requirement.skills
        )
        requirement = Requirement(
            skills=relaxed,
            backup_skill_groups=requirement.backup_skill_groups | step.backup_skill_groups,
            step=index,
            overflow_queue_id=step.overflow_queue_id or requirement.overflow_queue_id,
            priority_boost=requirement.priority_boost + step.priority_boost,
        )
    return requirement


def next_step_after(steps: Sequence[Step], waited: timedelta) -> timedelta | None:
    """When the next escalation step is reached, measured from queue entry; None when none is left."""
    upcoming = [step.after for step in steps if step.after > waited]
    return min(upcoming) if upcoming else None


def eligible(agent: AgentSlot, requirement: Requirement) -> bool:
    """Has every required skill at the required proficiency, or belongs to a backup skill group."""
    if agent.skill_groups & requirement.backup_skill_groups:
        return True
    return all(agent.skills.get(skill, 0) >= level for skill, level in requirement.skills.items())


def proficiency(agent: AgentSlot, requirement: Requirement) -> int:
    """The agent's proficiency for the contact: its weakest required skill (5 when none is required)."""
    if not requirement.skills:
        return 5
    return min(agent.skills.get(skill, 0) for skill in requirement.skills)


def rank(
    agents: Iterable[AgentSlot],
    requirement: Requirement,
    strategy: Strategy,
    now: datetime,
    *,
    contact_id: str = "",
    last_offered: str = "",
) -> list[Ranked]:
    """Available, eligible agents, best first under the strategy (ties: longest idle, then id)."""
    candidates = [a for a in agents if a.available and eligible(a, requirement)]

    def idle_for(agent: AgentSlot) -> timedelta:
        return now - agent.idle_since if agent.idle_since is not None else timedelta(0)

    def tie_break(agent: AgentSlot) -> tuple:
        return (-idle_for(agent), agent.agent_id)

    match strategy:
        case Strategy.MOST_PROFICIENT:
            ordered = sorted(candidates, key=lambda a: (-proficiency(a, requirement), *tie_break(a)))
        case Strategy.LEAST_TALK_TIME:
            ordered = sorted(candidates, key=lambda a: (a.talk_time_today, *tie_break(a)))
        case Strategy.FEWEST_CONTACTS:
            ordered = sorted(candidates, key=lambda a: (a.contacts_today, *tie_break(a)))
        case Strategy.ROUND_ROBIN:
            # The next agent id after the one offered last, wrapping around.
            ordered = sorted(candidates, key=lambda a: (a.agent_id <= last_offered, a.agent_id))
        case Strategy.RANDOM:
            # Seeded by contact and agent, so a decision can be replayed and explained.
            ordered = sorted(
                candidates, key=lambda a: hashlib.sha256(f"{contact_id}/{a.agent_id}".encode()).digest()
            )
        case _:
            ordered = sorted(candidates, key=tie_break)
    return [
        Ranked(a.agent_id, n, proficiency(a, requirement), idle_for(a), a.talk_time_today, a.contacts_today)
        for n, a in enumerate(ordered, start=1)
    ]


class _Orderable(Protocol):
    @property
    def contact_id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def queued_at(self) -> datetime: ...


W = TypeVar("W", bound=_Orderable)


@dataclass(frozen=True)
class Waiting:
    """A waiting contact, as far as ordering is concerned."""

    contact_id: str
    priority: int
    queued_at: datetime


def service_order(waiting: Iterable[W]) -> list[W]:
    """Priority first (higher first), then the longest waiting, then contact id for a total order."""
    return sorted(waiting, key=lambda w: (-w.priority, w.queued_at, w.contact_id))


def estimate_wait(answers: Iterable[tuple[datetime, timedelta]], position: int) -> timedelta | None:
    """How long the caller at ``position`` will wait, from the queue's recent answers (answered at, waited).

    A caller at position p waits about p answer intervals, the interval being the mean spacing of the
    recent answers. One answer alone gives its wait; none gives no estimate. The answers may come in
    any order (a replay meets partitions one after another), so the estimate depends on the set only.
    """
    ordered = sorted(answers)
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0][1]
    interval = (ordered[-1][0] - ordered[0][0]) / (len(ordered) - 1)
    return interval * max(position, 1)
