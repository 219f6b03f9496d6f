"""The ACD: queues, the contacts waiting in them, routing's view of the agents, and the router that
decides who gets which contact next. Pure: no I/O; the service layer loads, decides and appends.

- ``Queue`` (keyed by queue id): its configuration, replaced whole by UpsertQueue.
- ``Entry`` (a QueueEntry, keyed by contact id): the contact's wait in its current queue, visit by
  visit (an overflow or a transfer starts the next visit).
- ``Seat`` (a table kept from agents.events.v1): what routing needs to know of an agent.
- ``plan`` matches routable entries with free seats: the highest-priority, longest-waiting contact
  first, each to the agent its queue's strategy ranks first among those eligible at its step.

The Agent aggregate decides how an offer ends (accepted, rejected, rung out, withdrawn); routing
follows its verdict, so an accept and a ring timeout racing are settled once, over there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum
from functools import cached_property
from typing import Protocol

from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as ev
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from services.platform.envelope import Envelope
from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.eventstore import Deadline
from services.routing.selection import (
    AgentSlot,
    Ranked,
    Requirement,
    Step,
    Strategy,
    eligible,
    rank,
    requirement_at_step,
    service_order,
)

Channel = types_pb2.Channel
AgentState = agent_ev.AgentState
Outcome = agent_ev.OfferOutcome
Fallback = ev.FallbackOutcome
EmptyRule = ev.EmptyQueueRule
EndReason = intake_ev.ContactEndReason

STEP_DEADLINE = "step"
MAX_WAIT_DEADLINE = "max_wait"
CALLBACK_DEADLINE = "callback"
SKIP_DEADLINE = "skip"
TARGET_DEADLINE = "target"

DEFAULT_RING_TIMEOUT = timedelta(seconds=20)
DEFAULT_SHORT_ABANDON = timedelta(seconds=5)
DEFAULT_MISSED_OFFER_REASON = "missed_offer"
# How long a contact transferred to a named agent waits for them before the queue's agents may take it.
TARGET_WAIT = timedelta(seconds=30)
MAX_OVERFLOW_HOPS = 5
EXPLAINED_CANDIDATES = 5
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Ends by the caller: an abandon while no agent has the contact; any other end is telephony's.
_CALLER_ENDS = (EndReason.CONTACT_END_REASON_CALLER, EndReason.CONTACT_END_REASON_UNSPECIFIED)
_QUEUE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_REASONS = {
    name.removeprefix("NOT_READY_REASON_").lower(): value
    for name, value in agent_ev.NotReadyReason.items()
    if value != agent_ev.NotReadyReason.NOT_READY_REASON_UNSPECIFIED
}


def _duration(value: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(value)
    return message


def _at(timestamp: Message) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


# Queue ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """A queue (skill group) as ops configured it; ``config`` is None until it is first upserted."""

    queue_id: str
    config: ev.QueueConfig | None = None

    @property
    def exists(self) -> bool:
        return self.config is not None

    @cached_property
    def skills(self) -> dict[str, int]:
        return {s.skill: s.proficiency for s in self._config.required_skills}

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        return tuple(
            Step(
                after=step.after.ToTimedelta(),
                min_proficiency=step.min_proficiency,
                backup_skill_groups=frozenset(step.backup_skill_groups),
                overflow_queue_id=step.overflow_queue_id,
                priority_boost=step.priority_boost,
            )
            for step in self._config.escalation_steps
        )

    @property
    def strategy(self) -> Strategy:
        return Strategy(self._config.strategy)

    @cached_property
    def widest(self) -> Requirement:
        """Who may take its contacts once every step is passed (the empty-queue rules count these)."""
        return requirement_at_step(self.skills, self.steps, len(self.steps))

    @property
    def _config(self) -> ev.QueueConfig:
        if self.config is None:
            raise FailedPrecondition(f"queue {self.queue_id} does not exist")
        return self.config


@dataclass(frozen=True)
class UpsertQueue:
    config: ev.QueueConfig
    expected_version: int
    current_version: int
    changed_by: str = ""
    # The queues that exist now: a queue may only overflow into one of them.
    existing_queues: frozenset[str] = frozenset()


def upsert(queue: Queue, command: UpsertQueue) -> list[Message]:
    """A new configuration, checked and completed with defaults; a stale expected version is refused."""
    if command.expected_version != command.current_version:
        if command.current_version == 0:
            raise FailedPrecondition(
                f"queue {queue.queue_id} does not exist; create it with expected_version 0, "
                f"not {command.expected_version}"
            )
        raise FailedPrecondition(
            f"queue {queue.queue_id} is at version {command.current_version}, but the change was made "
            f"against version {command.expected_version}; read it again"
        )
    config = checked_config(command.config)
    _overflow_targets_exist(config, command.existing_queues)
    if queue.exists and queue.config == config:
        return []
    return [ev.QueueUpserted(config=config, changed_by=command.changed_by)]


def _overflow_targets_exist(config: ev.QueueConfig, existing: frozenset[str]) -> None:
    """A queue may only send its callers on to a queue that exists (create that one first)."""
    targets = [("fallback_queue_id", config.fallback_queue_id)] + [
        (f"escalation_steps[{n}].overflow_queue_id", step.overflow_queue_id)
        for n, step in enumerate(config.escalation_steps)
    ]
    for field_name, target in targets:
        if target and target not in existing:
            raise FailedPrecondition(
                f"queue {config.queue_id}: {field_name} {target!r} names no existing queue; create it first"
            )


def checked_config(given: ev.QueueConfig) -> ev.QueueConfig:
    """The configuration with defaults filled in, or InvalidArgument naming the first thing wrong."""
    config = ev.QueueConfig()
    config.CopyFrom(given)
    name = config.queue_id
    if not _QUEUE_ID.match(name):
        raise InvalidArgument(f"queue_id {name!r} must be 1 to 64 letters, digits, '_', '.' or '-'")
    config.priority = config.priority or 1
    if not 1 <= config.priority <= 99:
        raise InvalidArgument(f"queue {name}: priority must be 1 to 99, not {config.priority}")
    seen: set[str] = set()
    for skill in config.required_skills:
        if not skill.skill.strip() or skill.skill in seen:
            raise InvalidArgument(f"queue {name}: skill {skill.skill!r} is empty or named twice")
        seen.add(skill.skill)
        if not 1 <= skill.proficiency <= 5:
            raise InvalidArgument(
                f"queue {name}: proficiency of {skill.skill!r} must be 1 to 5, not {skill.proficiency}"
            )
    if not config.HasField("service_level"):
        config.service_level.percent = 80
        config.service_level.threshold.FromSeconds(20)
    if (
        not 1 <= config.service_level.percent <= 100
        or config.service_level.threshold.ToTimedelta() <= timedelta(0)
    ):
        raise InvalidArgument(f"queue {name}: the service level needs a percent of 1 to 100 and a threshold")
    if config.strategy not in ev.SelectionStrategy.values():
        raise InvalidArgument(f"queue {name}: unknown selection strategy {config.strategy}")
    config.strategy = config.strategy or ev.SelectionStrategy.SELECTION_STRATEGY_LONGEST_IDLE
    for duration, label in ((config.max_wait, "max_wait"), (config.reject_delay, "reject_delay")):
        if duration.ToTimedelta() < timedelta(0):
            raise InvalidArgument(f"queue {name}: {label} cannot be negative")
    if not config.HasField("ring_timeout"):
        config.ring_timeout.FromTimedelta(DEFAULT_RING_TIMEOUT)
    if not timedelta(seconds=1) <= config.ring_timeout.ToTimedelta() <= timedelta(minutes=10):
        raise InvalidArgument(f"queue {name}: ring_timeout must be 1 s to 10 min")
    config.missed_offer_reason = config.missed_offer_reason or DEFAULT_MISSED_OFFER_REASON
    if config.missed_offer_reason not in _REASONS:
        raise InvalidArgument(
            f"queue {name}: missed_offer_reason {config.missed_offer_reason!r} "
            f"is not one of {', '.join(sorted(_REASONS))}"
        )
    config.empty_queue_rule = config.empty_queue_rule or EmptyRule.EMPTY_QUEUE_RULE_JOIN
    config.fallback = config.fallback or Fallback.FALLBACK_OUTCOME_DISCONNECT
    if config.fallback == Fallback.FALLBACK_OUTCOME_OVERFLOW and config.fallback_queue_id in ("", name):
        raise InvalidArgument(f"queue {name}: overflow needs a fallback_queue_id other than the queue itself")
    config.wrap_up_mode = config.wrap_up_mode or ev.WrapUpMode.WRAP_UP_MODE_OPTIONAL
    if (
        config.wrap_up_mode != ev.WrapUpMode.WRAP_UP_MODE_OPTIONAL
        and config.wrap_up_time.ToTimedelta() <= timedelta(0)
    ):
        raise InvalidArgument(f"queue {name}: a mandatory or forced wrap-up needs a wrap_up_time")
    config.channel = config.channel or Channel.CHANNEL_VOICE
    if not config.HasField("short_abandon_threshold"):
        config.short_abandon_threshold.FromTimedelta(DEFAULT_SHORT_ABANDON)
    if config.vip_priority_boost > 99 or config.callback_priority_boost > 99:
        raise InvalidArgument(f"queue {name}: a priority boost is at most 99")
    previous = timedelta(0)
    for index, step in enumerate(config.escalation_steps, start=1):
        after = step.after.ToTimedelta()
        if after <= previous:
            raise InvalidArgument(
                f"queue {name}: step {index} must come after the step before it (and after 0 s)"
            )
        previous = after
        if step.min_proficiency > 5:
            raise InvalidArgument(f"queue {name}: step {index} min_proficiency must be 0 to 5")
        if step.overflow_queue_id == name:
            raise InvalidArgument(f"queue {name}: step {index} cannot overflow into the queue itself")
    return config


def evolve_queue(queue: Queue, envelope: Envelope) -> Queue:
    if envelope.event_type == "QueueUpserted":
        return Queue(queue.queue_id, envelope.payload.config)
    return queue


# Entry ---------------------------------------------------------------------------------------------


class Status(IntEnum):
    NEW = 0
    WAITING = 1
    OFFERED = 2
    CONNECTED = 3
    LEFT = 4


@dataclass(frozen=True)
class Offered:
    offer_id: str
    agent_id: str
    at: datetime


@dataclass(frozen=True)
class EndNoted:
    """The contact's end, heard while an offer of it rang: the visit closes on the agent's verdict."""

    reason: int
    detail: str
    at: datetime


@dataclass(frozen=True)
class Entry:
    """One contact's wait: where it waits, since when, how urgent, and the offer ringing now."""

    contact_id: str
    status: Status = Status.NEW
    queue_id: str = ""
    visit: int = 0
    channel: int = Channel.CHANNEL_VOICE
    priority: int = 0
    skills: tuple[tuple[str, int], ...] = ()
    # queued_at orders the contact (the customer's original time); entered_at starts this visit's clocks.
    queued_at: datetime = EPOCH
    entered_at: datetime = EPOCH
    step: int = 0
    next_step_at: datetime | None = None
    max_wait_at: datetime | None = None
    target_agent_id: str = ""
    vip: bool = False
    is_callback: bool = False
    callback_not_before: datetime | None = None
    offer: Offered | None = None
    offers: int = 0
    skips: tuple[tuple[str, datetime], ...] = ()
    last_agent_id: str = ""
    hops: int = 0
    outcome: str = ""
    # When this visit ended (answered, or left the queue without an agent).
    ended_at: datetime | None = None
    correlation_id: str = ""
    # The contact's end, when intake reported it while an offer was open.
    ended: EndNoted | None = None
    # When the agent accepted the offer that connected this visit, and which offer it was.
    connected_at: datetime | None = None
    connected_offer_id: str = ""
    # The visits this one follows by overflow, oldest first: (visit, queue id, entered at each).
    overflowed_from: tuple[tuple[int, str, datetime], ...] = ()

    @property
    def open(self) -> bool:
        return self.status in (Status.WAITING, Status.OFFERED)

    def describe(self) -> str:
        where = f" in queue {self.queue_id}" if self.queue_id else ""
        detail = f" ({self.outcome})" if self.outcome else ""
        return f"contact {self.contact_id} is {self.status.name.lower()}{where}{detail}"

    def routable(self, now: datetime) -> bool:
        return self.status == Status.WAITING and (
            self.callback_not_before is None or self.callback_not_before <= now
        )

    def skipped(self, agent_id: str, now: datetime) -> bool:
        return any(skipped == agent_id and until > now for skipped, until in self.skips)


def entry_closed(entry: Entry) -> bool:
    """Nothing more will happen to it unless the contact comes back (a transfer starts a new visit)."""
    return entry.status in (Status.CONNECTED, Status.LEFT) and entry.offer is None


class Lookup(Protocol):
    """What a decision about one entry may read of the others: the router's live board."""

    def queue(self, queue_id: str) -> Queue | None: ...

    def waiting_count(self, queue_id: str) -> int: ...

    def position(self, queue_id: str, priority: int, queued_at: datetime) -> int: ...

    def agents_able(self, queue: Queue) -> int: ...

    def seat(self, agent_id: str) -> Seat | None: ...

    def estimate(self, queue_id: str, position: int, now: datetime) -> timedelta | None: ...


@dataclass(frozen=True)
class Join:
    """Intake asks for the contact to be routed to a queue (IVR choice, gateway, transfer)."""

    contact_id: str
    queue_id: str
    channel: int
    now: datetime
    priority_boost: int = 0
    skills: Sequence[tuple[str, int]] = ()
    vip: bool = False
    reason: str = ""
    target_agent_id: str = ""


def join(entry: Entry, command: Join, look: Lookup) -> list[Message]:
    if entry.open:
        if entry.queue_id == command.queue_id:
            return []
        raise FailedPrecondition(f"{entry.describe()}; it cannot join queue {command.queue_id} as well")
    return _enter(entry, command.queue_id, command, look, queued_at=command.now, hops=entry.hops)


def _enter(
    entry: Entry,
    queue_id: str,
    command: Join,
    look: Lookup,
    *,
    queued_at: datetime,
    hops: int,
    callback: bool = False,
) -> list[Message]:
    """The contact joins ``queue_id``, or is refused and follows the queue's fallback."""
    queue, now = look.queue(queue_id), command.now
    if queue is None or not queue.exists:
        why = f"queue {queue_id} does not exist"
        return [_refused(entry, queue_id, why, Fallback.FALLBACK_OUTCOME_DISCONNECT, vip=command.vip)]
    refusal = None
    waiting = look.waiting_count(queue_id)
    if not callback and queue.config.max_queue_length and waiting >= queue.config.max_queue_length:
        refusal = f"queue {queue_id} is full ({waiting} waiting, at most {queue.config.max_queue_length})"
    elif (
        not callback
        and queue.config.empty_queue_rule != EmptyRule.EMPTY_QUEUE_RULE_JOIN
        and look.agents_able(queue) == 0
    ):
        refusal = f"no agent able to serve queue {queue_id} is logged in"
    if refusal is not None:
        return _fall_back(entry, queue, refusal, command, look, queued_at=queued_at, hops=hops, refused=True)
    skills = dict(queue.skills)
    for skill, level in command.skills:
        skills[skill] = max(level, skills.get(skill, 0))
    priority = (
        queue.config.priority
        + command.priority_boost
        + (queue.config.vip_priority_boost if command.vip else 0)
    )
    if callback:
        priority += queue.config.callback_priority_boost
    position = look.position(queue_id, priority, queued_at)
    target = command.target_agent_id
    seat = look.seat(target) if target else None
    if seat is None or not seat.logged_in:
        target = ""  # the named agent is not there: the queue's agents take it
    queued = ev.ContactQueued(
        contact_id=entry.contact_id,
        queue_id=queue_id,
        priority=priority,
        channel=command.channel or Channel.CHANNEL_VOICE,
        required_skills=[types_pb2.SkillLevel(skill=s, proficiency=p) for s, p in sorted(skills.items())],
        is_callback=callback,
        position=position,
        visit=entry.visit + 1,
        target_agent_id=target,
        reason=command.reason,
        vip=command.vip,
    )
    queued.queued_at.FromDatetime(queued_at)
    queued.entered_at.FromDatetime(now)
    if queue.steps:
        queued.next_step_at.FromDatetime(now + queue.steps[0].after)
    if queue.config.max_wait.ToTimedelta() > timedelta(0) and not callback:
        queued.max_wait_at.FromDatetime(now + queue.config.max_wait.ToTimedelta())
    estimate = look.estimate(queue_id, position, now)
    if estimate is not None:
        queued.estimated_wait.FromTimedelta(estimate)
    return [queued]


def _refused(
    entry: Entry, queue_id: str, reason: str, outcome: int, overflow_to: str = "", vip: bool = False
) -> Message:
    return ev.QueueJoinRefused(
        contact_id=entry.contact_id,
        queue_id=queue_id,
        reason=reason,
        outcome=outcome,
        overflow_queue_id=overflow_to,
        vip=vip,
    )


def _fall_back(
    entry: Entry,
    queue: Queue,
    why: str,
    command: Join,
    look: Lookup,
    *,
    queued_at: datetime,
    hops: int,
    refused: bool,
    overflow_reason: int = ev.OverflowReason.OVERFLOW_REASON_UNSPECIFIED,
) -> list[Message]:
    """What a contact gets when it cannot join, or can wait no longer: the queue's fallback outcome."""
    fallback = queue.config.fallback
    now = command.now
    if fallback == Fallback.FALLBACK_OUTCOME_OVERFLOW and hops >= MAX_OVERFLOW_HOPS:
        why = f"{why}; it already overflowed {hops} times"
        fallback = Fallback.FALLBACK_OUTCOME_DISCONNECT
    if refused:
        first = _refused(
            entry,
            queue.queue_id,
            why,
            fallback,
            queue.config.fallback_queue_id if fallback == Fallback.FALLBACK_OUTCOME_OVERFLOW else "",
            vip=command.vip,
        )
    elif fallback == Fallback.FALLBACK_OUTCOME_OVERFLOW:
        first = _overflowed(entry, queue.config.fallback_queue_id, overflow_reason, now)
    elif fallback == Fallback.FALLBACK_OUTCOME_OFFER_CALLBACK:
        offered = ev.CallbackOffered(contact_id=entry.contact_id, queue_id=queue.queue_id)
        estimate = look.estimate(
            queue.queue_id, look.position(queue.queue_id, entry.priority, entry.queued_at), now
        )
        if estimate is not None:
            offered.estimated_wait.FromTimedelta(estimate)
        return [offered]
    else:
        return [
            ev.ContactDisconnected(
                contact_id=entry.contact_id, queue_id=queue.queue_id, outcome=fallback, reason=why
            )
        ]
    if fallback != Fallback.FALLBACK_OUTCOME_OVERFLOW:
        return [first]
    return [
        first,
        *_enter(entry, queue.config.fallback_queue_id, command, look, queued_at=queued_at, hops=hops + 1),
    ]


def _overflowed(entry: Entry, to_queue_id: str, reason: int, now: datetime) -> Message:
    overflowed = ev.ContactOverflowed(
        contact_id=entry.contact_id, from_queue_id=entry.queue_id, to_queue_id=to_queue_id, reason=reason
    )
    overflowed.waited.FromTimedelta(now - entry.entered_at)
    return overflowed


def on_deadline(entry: Entry, deadline: Deadline, now: datetime, look: Lookup) -> list[Message]:
    """An escalation step or the maximum wait came due; callback and skip deadlines only wake the router."""
    if entry.status != Status.WAITING:
        return []
    queue = look.queue(entry.queue_id)
    if queue is None or not queue.exists:
        return []
    if deadline.name == STEP_DEADLINE and entry.next_step_at is not None and entry.next_step_at <= now:
        return _reach_steps(entry, queue, now, look)
    if (
        deadline.name == MAX_WAIT_DEADLINE
        and entry.max_wait_at is not None
        and entry.max_wait_at <= now
        and not entry.is_callback
    ):
        waited = int((now - entry.entered_at).total_seconds())
        return _fall_back(
            entry,
            queue,
            f"waited the queue's maximum of {waited} s",
            _rejoin(entry, now, "overflow"),
            look,
            queued_at=entry.queued_at,
            hops=entry.hops,
            refused=False,
            overflow_reason=ev.OverflowReason.OVERFLOW_REASON_MAX_WAIT,
        )
    return []


def _rejoin(entry: Entry, now: datetime, reason: str) -> Join:
    """The contact joining another queue as it is (its channel and VIP flag); that queue sets the skills."""
    return Join(entry.contact_id, "", entry.channel, now, vip=entry.vip, reason=reason)


def _reach_steps(entry: Entry, queue: Queue, now: datetime, look: Lookup) -> list[Message]:
    steps = sorted(queue.steps, key=lambda s: s.after)
    waited = now - entry.entered_at
    reached = sum(1 for step in steps if step.after <= waited)
    events: list[Message] = []
    for index in range(entry.step + 1, reached + 1):
        step = steps[index - 1]
        if step.overflow_queue_id:
            if entry.hops >= MAX_OVERFLOW_HOPS:
                disconnected = ev.ContactDisconnected(
                    contact_id=entry.contact_id,
                    queue_id=entry.queue_id,
                    outcome=Fallback.FALLBACK_OUTCOME_DISCONNECT,
                    reason=f"step {index} overflows, but it already overflowed {entry.hops} times",
                )
                return [*events, disconnected]
            reason = ev.OverflowReason.OVERFLOW_REASON_ESCALATION_STEP
            events.append(_overflowed(entry, step.overflow_queue_id, reason, now))
            return events + _enter(
                entry,
                step.overflow_queue_id,
                _rejoin(entry, now, "overflow"),
                look,
                queued_at=entry.queued_at,
                hops=entry.hops + 1,
            )
        reached_step = ev.EscalationStepReached(
            contact_id=entry.contact_id,
            queue_id=entry.queue_id,
            step=index,
            min_proficiency=step.min_proficiency,
            backup_skill_groups=sorted(step.backup_skill_groups),
            priority_boost=step.priority_boost,
        )
        if index < len(steps):
            reached_step.next_step_at.FromDatetime(entry.entered_at + steps[index].after)
        events.append(reached_step)
    return events


@dataclass(frozen=True)
class ContactGone:
    """Intake reports the contact ended (the caller hung up, or telephony ended it)."""

    contact_id: str
    reason: int
    detail: str
    now: datetime


def contact_ended(entry: Entry, command: ContactGone, queues: Callable[[str], Queue | None]) -> list[Message]:
    """Intake's end of the contact. While an offer of it is open, the agent may already have taken it
    (routing reads the agents' topic apart from intake's, in any order): the end is noted, and the
    visit closes on the agent's verdict (``offer_ended``), whichever of the two routing reads first.
    An end from before the overflow that opened this visit settles the visit the caller was in."""
    if command.reason == EndReason.CONTACT_END_REASON_CALLBACK_ACCEPTED:
        return []
    end = EndNoted(command.reason, command.detail, command.now)
    if entry.status == Status.CONNECTED and entry.connected_at is not None and end.at < entry.connected_at:
        return [_voided(entry, end, queues), *_overflows_voided(entry, end, queues)]
    if not entry.open or entry.ended is not None:
        return []
    if entry.offer is not None:
        noted = ev.ContactEndedWhileOffered(
            contact_id=entry.contact_id,
            queue_id=entry.queue_id,
            agent_id=entry.offer.agent_id,
            offer_id=entry.offer.offer_id,
            end_reason=command.reason,
            detail=command.detail,
        )
        noted.ended_at.FromDatetime(command.now)
        return [noted]
    ringing = entry.status == Status.OFFERED  # the agent answered "the contact ended" before intake did
    return _ends(entry, end, queues, ringing)


def _ends(entry: Entry, end: EndNoted, queues: Callable[[str], Queue | None], ringing: bool) -> list[Message]:
    """The events that close the visit on the contact's end: this visit's, or, when the end came
    before the overflow that opened it, the earlier visit's."""
    return _overflows_voided(entry, end, queues) or _visit_ends(entry, end, queues(entry.queue_id), ringing)


def _overflows_voided(entry: Entry, end: EndNoted, queues: Callable[[str], Queue | None]) -> list[Message]:
    """The caller was gone before routing overflowed the contact (the end, timed by telephony, read
    after a late timer): the visit it was in ends as the end says, and the later ones are void."""
    if end.at >= entry.entered_at or not entry.overflowed_from:
        return []
    earlier = [left for left in entry.overflowed_from if left[2] <= end.at] or [entry.overflowed_from[0]]
    visit, queue_id, entered_at = earlier[-1]
    waited = max(end.at - entered_at, timedelta(0))
    voided = ev.OverflowVoided(
        contact_id=entry.contact_id,
        visit=visit,
        queue_id=queue_id,
        last_visit=entry.visit,
        end_reason=end.reason,
        short_abandon=end.reason in _CALLER_ENDS and waited < _short_abandon(queues(queue_id)),
    )
    voided.ended_at.FromDatetime(end.at)
    voided.waited.FromTimedelta(waited)
    return [voided]


def _short_abandon(queue: Queue | None) -> timedelta:
    if queue is not None and queue.exists:
        return queue.config.short_abandon_threshold.ToTimedelta()
    return DEFAULT_SHORT_ABANDON


def _voided(entry: Entry, end: EndNoted, queues: Callable[[str], Queue | None]) -> Message:
    """The visit connected by an accept that came after the contact had ended: it was not answered."""
    queue = queues(entry.queue_id)
    [ended] = _visit_ends(replace(entry, is_callback=False), end, queue, ringing=True)
    voided = ev.ConnectionVoided(
        contact_id=entry.contact_id,
        queue_id=entry.queue_id,
        agent_id=entry.last_agent_id,
        offer_id=entry.connected_offer_id,
        end_reason=end.reason,
        short_abandon=getattr(ended, "short_abandon", False),
    )
    voided.ended_at.FromDatetime(end.at)
    voided.waited.FromTimedelta(end.at - entry.entered_at)
    return voided


def _visit_ends(entry: Entry, end: EndNoted, queue: Queue | None, ringing: bool) -> list[Message]:
    """The visit of a contact that ended with no agent on it: a cancelled callback, a disconnect by
    telephony, or an abandon (short, under the queue's threshold)."""
    waited = end.at - entry.entered_at
    if entry.is_callback and not ringing:
        cancelled = ev.CallbackCancelled(
            contact_id=entry.contact_id, queue_id=entry.queue_id, reason=end.detail
        )
        cancelled.waited.FromTimedelta(waited)
        return [cancelled]
    if end.reason not in _CALLER_ENDS:
        return [
            ev.ContactDisconnected(
                contact_id=entry.contact_id,
                queue_id=entry.queue_id,
                reason=f"ended by telephony ({_end_reason(end.reason)}"
                f"{': ' + end.detail if end.detail else ''})",
            )
        ]
    abandoned = ev.ContactAbandoned(
        contact_id=entry.contact_id,
        queue_id=entry.queue_id,
        stage=ev.AbandonStage.ABANDON_STAGE_RINGING if ringing else ev.AbandonStage.ABANDON_STAGE_QUEUED,
        short_abandon=waited < _short_abandon(queue),
    )
    abandoned.waited.FromTimedelta(waited)
    return [abandoned]


def _end_reason(reason: int) -> str:
    return EndReason.Name(reason).removeprefix("CONTACT_END_REASON_").lower()


@dataclass(frozen=True)
class RequestCallback:
    contact_id: str
    now: datetime
    not_before: datetime | None = None
    not_after: datetime | None = None


def request_callback(entry: Entry, command: RequestCallback, look: Lookup) -> list[Message]:
    """The customer keeps their place and is called back when reached; a refused contact joins as one."""
    events: list[Message] = []
    if entry.status == Status.LEFT and entry.outcome == "refused" and entry.queue_id:
        joining = Join(
            entry.contact_id, entry.queue_id, entry.channel, command.now, vip=entry.vip, reason="callback"
        )
        events = _enter(
            entry, entry.queue_id, joining, look, queued_at=entry.queued_at, hops=entry.hops, callback=True
        )
        if not isinstance(events[-1], ev.ContactQueued):
            return events
        priority = events[-1].priority
    elif entry.open:
        if entry.is_callback:
            return []
        queue = look.queue(entry.queue_id)
        priority = entry.priority + (
            queue.config.callback_priority_boost if queue is not None and queue.exists else 0
        )
    else:
        raise FailedPrecondition(f"{entry.describe()}; a callback keeps the place of a waiting contact")
    scheduled = ev.CallbackScheduled(contact_id=entry.contact_id, queue_id=entry.queue_id, priority=priority)
    scheduled.not_before.FromDatetime(command.not_before or command.now)
    if command.not_after is not None:
        scheduled.not_after.FromDatetime(command.not_after)
    return [*events, scheduled]


@dataclass(frozen=True)
class Match:
    """The router's choice for one entry, with what it considered (the explanation)."""

    contact_id: str
    agent_id: str
    ranked: Sequence[Ranked]
    requirement: Requirement


def offer(entry: Entry, match: Match, queue: Queue, now: datetime) -> list[Message]:
    if entry.status != Status.WAITING:
        raise FailedPrecondition(f"{entry.describe()}; only a waiting contact is offered")
    offered = ev.ContactOffered(
        contact_id=entry.contact_id,
        queue_id=entry.queue_id,
        agent_id=match.agent_id,
        # Unique even when a forgotten entry's id lives again and counts its visits from one anew.
        offer_id=f"{entry.contact_id}:{entry.visit}:{entry.offers + 1}:{entry.entered_at.timestamp():.3f}",
        strategy=int(queue.strategy),
        escalation_step=entry.step,
        wrap_up_mode=queue.config.wrap_up_mode,
        channel=entry.channel,
        is_callback=entry.is_callback,
        missed_offer_reason=queue.config.missed_offer_reason,
        candidates=[
            ev.Candidate(
                agent_id=r.agent_id,
                proficiency=r.proficiency,
                idle_for=_duration(r.idle_for),
                talk_time_today=_duration(r.talk_time_today),
                contacts_today=r.contacts_today,
                rank=r.rank,
            )
            for r in match.ranked
        ],
    )
    offered.ring_deadline.FromDatetime(now + queue.config.ring_timeout.ToTimedelta())
    offered.waited.FromTimedelta(now - entry.entered_at)
    offered.wrap_up_time.CopyFrom(queue.config.wrap_up_time)
    return [offered]


@dataclass(frozen=True)
class OfferEnded:
    """The agent's verdict on an offer: accepted, rejected, rung out, withdrawn, or refused at reservation."""

    contact_id: str
    agent_id: str
    offer_id: str
    outcome: int
    detail: str
    now: datetime
    refused: bool = False


def offer_ended(entry: Entry, command: OfferEnded, queues: Callable[[str], Queue | None]) -> list[Message]:
    if entry.offer is None or entry.offer.offer_id != command.offer_id:
        return []  # an offer routing no longer waits on (a redelivery, or one already settled)
    events = _offer_outcome(entry, command, queues(entry.queue_id))
    if entry.ended is None:
        return events
    accepted = isinstance(events[0], ev.OfferAccepted)
    if accepted and command.now < entry.ended.at:
        return events  # taken before the contact ended: the visit was answered
    # The contact ended while this offer was open and the agent did not take it before: the visit
    # ends as the end says. (An accept after the end came too late: no ContactConnected.)
    still_ringing = accepted or command.refused or command.now >= entry.ended.at
    return [events[0], *_ends(entry, entry.ended, queues, still_ringing)]


def _offer_outcome(entry: Entry, command: OfferEnded, queue: Queue | None) -> list[Message]:
    ids = {"contact_id": entry.contact_id, "agent_id": command.agent_id, "offer_id": command.offer_id}
    if command.refused:
        return [ev.OfferWithdrawn(**ids, reason=f"the agent could not take it: {command.detail}")]
    if command.outcome == Outcome.OFFER_OUTCOME_CONTACT_ENDED:
        # The caller hung up while it rang; intake's end of the contact may reach routing after this.
        return [ev.OfferWithdrawn(**ids, reason=command.detail or "the contact ended", contact_ended=True)]
    match command.outcome:
        case Outcome.OFFER_OUTCOME_ACCEPTED:
            events: list[Message] = [ev.OfferAccepted(**ids)]
            if entry.status == Status.OFFERED:
                connected = ev.ContactConnected(
                    contact_id=entry.contact_id,
                    queue_id=entry.queue_id,
                    agent_id=command.agent_id,
                    is_callback=entry.is_callback,
                    offer_id=command.offer_id,
                )
                connected.waited.FromTimedelta(command.now - entry.entered_at)
                events.append(connected)
            return events
        case Outcome.OFFER_OUTCOME_REJECTED:
            rejected = ev.OfferRejected(**ids, reason=command.detail)
            delay = (
                queue.config.reject_delay.ToTimedelta()
                if queue is not None and queue.exists
                else timedelta(0)
            )
            rejected.skip_until.FromDatetime(command.now + delay)
            return [rejected]
        case Outcome.OFFER_OUTCOME_TIMED_OUT:
            reason = (
                queue.config.missed_offer_reason
                if queue is not None and queue.exists
                else DEFAULT_MISSED_OFFER_REASON
            )
            return [ev.OfferTimedOut(**ids, agent_reason=reason)]
    return [ev.OfferWithdrawn(**ids, reason=command.detail or "withdrawn")]


def leave_empty_queue(entry: Entry, queue: Queue, now: datetime, look: Lookup) -> list[Message]:
    """The last agent able to serve a leave-when-empty queue left: its waiting contacts take the fallback."""
    if entry.status != Status.WAITING or entry.is_callback:
        return []
    return _fall_back(
        entry,
        queue,
        f"the last agent able to serve queue {queue.queue_id} logged out",
        _rejoin(entry, now, "overflow"),
        look,
        queued_at=entry.queued_at,
        hops=entry.hops,
        refused=False,
        overflow_reason=ev.OverflowReason.OVERFLOW_REASON_NO_AGENTS,
    )


def entry_deadlines(entry: Entry) -> list[Deadline]:
    if entry.status != Status.WAITING:
        return []
    found = []
    if entry.next_step_at is not None:
        found.append(Deadline(STEP_DEADLINE, entry.next_step_at))
    if entry.max_wait_at is not None and not entry.is_callback:
        found.append(Deadline(MAX_WAIT_DEADLINE, entry.max_wait_at))
    if entry.callback_not_before is not None:
        found.append(Deadline(CALLBACK_DEADLINE, entry.callback_not_before))
    # Each skip's end may be the moment an agent becomes eligible again: every one wakes the router.
    found.extend(Deadline(SKIP_DEADLINE, until) for _, until in entry.skips)
    if entry.target_agent_id:
        found.append(Deadline(TARGET_DEADLINE, entry.entered_at + TARGET_WAIT))
    return found


def evolve_entry(entry: Entry, envelope: Envelope) -> Entry:
    event, at = envelope.payload, envelope.occurred_at
    entry = _prune(entry, at)
    match envelope.event_type:
        case "ContactQueued":
            return Entry(
                contact_id=entry.contact_id,
                status=Status.WAITING,
                queue_id=event.queue_id,
                visit=event.visit,
                channel=event.channel,
                priority=event.priority,
                skills=tuple((s.skill, s.proficiency) for s in event.required_skills),
                queued_at=_at(event.queued_at),
                entered_at=_at(event.entered_at),
                next_step_at=_at(event.next_step_at) if event.HasField("next_step_at") else None,
                max_wait_at=_at(event.max_wait_at) if event.HasField("max_wait_at") else None,
                target_agent_id=event.target_agent_id,
                vip=event.vip,
                is_callback=event.is_callback,
                offers=entry.offers,
                last_agent_id=entry.last_agent_id,
                hops=entry.hops,
                correlation_id=entry.correlation_id or envelope.correlation_id,
                overflowed_from=entry.overflowed_from if entry.outcome == "overflowed" else (),
            )
        case "QueueJoinRefused":
            return replace(
                entry,
                status=Status.LEFT,
                queue_id=event.queue_id,
                # A contact refused at its first queue keeps the time it called, for a later callback.
                queued_at=at if entry.queued_at == EPOCH else entry.queued_at,
                vip=entry.vip or event.vip,
                outcome="refused",
                ended_at=at,
                correlation_id=entry.correlation_id or envelope.correlation_id,
            )
        case "ContactOffered":
            return replace(
                entry,
                status=Status.OFFERED,
                offer=Offered(event.offer_id, event.agent_id, at),
                offers=entry.offers + 1,
                last_agent_id=event.agent_id,
            )
        case "OfferAccepted":
            return replace(entry, offer=None)
        case "ContactConnected":
            return replace(
                entry,
                status=Status.CONNECTED,
                offer=None,
                outcome="answered",
                ended_at=at,
                connected_at=entry.entered_at + event.waited.ToTimedelta(),
                connected_offer_id=event.offer_id,
            )
        case "ConnectionVoided":
            outcome = "abandoned" if event.end_reason in _CALLER_ENDS else "disconnected"
            return replace(entry, status=Status.LEFT, outcome=outcome, connected_at=None)
        case "OfferRejected" | "OfferTimedOut" | "OfferWithdrawn":
            skips = entry.skips
            if (
                envelope.event_type == "OfferRejected"
                and event.HasField("skip_until")
                and _at(event.skip_until) > at
            ):
                skips = (*skips, (event.agent_id, _at(event.skip_until)))
            # A contact that ended while it rang stays out of the queue until intake's end closes it.
            gone = envelope.event_type == "OfferWithdrawn" and event.contact_ended
            return replace(
                entry,
                status=Status.WAITING if entry.status == Status.OFFERED and not gone else entry.status,
                offer=None,
                skips=skips,
                target_agent_id="" if entry.target_agent_id == event.agent_id else entry.target_agent_id,
            )
        case "EscalationStepReached":
            return replace(
                entry,
                step=event.step,
                priority=entry.priority + event.priority_boost,
                next_step_at=_at(event.next_step_at) if event.HasField("next_step_at") else None,
            )
        case "ContactOverflowed":
            return replace(
                entry,
                status=Status.LEFT,
                outcome="overflowed",
                hops=entry.hops + 1,
                ended_at=at,
                overflowed_from=(*entry.overflowed_from, (entry.visit, entry.queue_id, entry.entered_at)),
            )
        case "OverflowVoided":
            outcome = "abandoned" if event.end_reason in _CALLER_ENDS else "disconnected"
            return replace(
                entry,
                status=Status.LEFT,
                outcome=outcome,
                offer=None,
                connected_at=None,
                ended_at=_at(event.ended_at),
                overflowed_from=(),
            )
        case "ContactAbandoned":
            return replace(entry, status=Status.LEFT, outcome="abandoned", ended_at=at)
        case "CallbackOffered":
            return replace(entry, max_wait_at=None)
        case "CallbackScheduled":
            not_before = _at(event.not_before) if event.HasField("not_before") else None
            return replace(
                entry,
                is_callback=True,
                priority=event.priority or entry.priority,
                max_wait_at=None,
                callback_not_before=not_before if not_before is not None and not_before > at else None,
            )
        case "CallbackCancelled":
            return replace(entry, status=Status.LEFT, outcome="callback cancelled", ended_at=at)
        case "ContactEndedWhileOffered":
            return replace(entry, ended=EndNoted(event.end_reason, event.detail, _at(event.ended_at)))
        case "ContactDisconnected":
            outcome = "voicemail" if event.outcome == Fallback.FALLBACK_OUTCOME_VOICEMAIL else "disconnected"
            return replace(entry, status=Status.LEFT, outcome=outcome, ended_at=at)
    return entry


def _prune(entry: Entry, at: datetime) -> Entry:
    """Forget what time has made moot, so a passed moment is not listed as a deadline again."""
    skips = tuple((agent, until) for agent, until in entry.skips if until > at)
    not_before = (
        entry.callback_not_before if entry.callback_not_before and entry.callback_not_before > at else None
    )
    if skips == entry.skips and not_before == entry.callback_not_before:
        return entry
    return replace(entry, skips=skips, callback_not_before=not_before)


# Seat: routing's view of an agent ------------------------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """An agent as routing needs to know them, kept from agents.events.v1 (a table, not an aggregate)."""

    agent_id: str
    version: int = 0
    state: int = AgentState.AGENT_STATE_LOGGED_OUT
    state_since: datetime | None = None
    skills: tuple[tuple[str, int], ...] = ()
    skill_groups: frozenset[str] = frozenset()
    chat_capacity: int = 0
    # Contacts held and the offer ringing, as (contact id, channel), as the agent aggregate sees them.
    contacts: tuple[tuple[str, int], ...] = ()
    offered: tuple[str, int] | None = None
    day: date | None = None
    talk_today: timedelta = timedelta(0)
    contacts_today: int = 0

    @property
    def logged_in(self) -> bool:
        return self.state != AgentState.AGENT_STATE_LOGGED_OUT

    def can_take(self, channel: int) -> bool:
        """Whether the agent aggregate would accept a reservation for this channel now."""
        if not self.logged_in or self.offered is not None:
            return False
        if channel == Channel.CHANNEL_CHAT:
            if any(held != Channel.CHANNEL_CHAT for _, held in self.contacts):
                return False
            return (
                self.state in (AgentState.AGENT_STATE_READY, AgentState.AGENT_STATE_ON_CONTACT)
                and len(self.contacts) < self.chat_capacity
            )
        return self.state == AgentState.AGENT_STATE_READY

    @property
    def can_take_any(self) -> bool:
        return self.can_take(Channel.CHANNEL_VOICE) or self.can_take(Channel.CHANNEL_CHAT)

    def slot(self) -> AgentSlot:
        return AgentSlot(
            self.agent_id,
            skills=dict(self.skills),
            skill_groups=self.skill_groups,
            available=True,
            idle_since=self.state_since,
            talk_time_today=self.talk_today,
            contacts_today=self.contacts_today,
        )


def seat_after(seat: Seat, envelope: Envelope) -> Seat:
    """The seat once an agents event is applied; an event already applied (by version) changes nothing."""
    if envelope.aggregate_version <= seat.version:
        return seat
    event, at = envelope.payload, envelope.occurred_at
    if seat.day != at.date():
        seat = replace(seat, day=at.date(), talk_today=timedelta(0), contacts_today=0)
    match envelope.event_type:
        case "AgentLoggedIn" | "AgentSkillsChanged":
            seat = replace(
                seat,
                skills=tuple((s.skill, s.proficiency) for s in event.skills),
                skill_groups=frozenset(event.skill_groups),
                chat_capacity=event.chat_capacity,
            )
        case "AgentStateChanged":
            seat = _seat_state(seat, event, at)
        case "AgentLoggedOut":
            seat = Seat(
                seat.agent_id,
                state_since=at,
                day=seat.day,
                talk_today=seat.talk_today,
                contacts_today=seat.contacts_today,
            )
    return replace(seat, version=envelope.aggregate_version)


def _seat_state(seat: Seat, event: agent_ev.AgentStateChanged, at: datetime) -> Seat:
    contacts, offered = dict(seat.contacts), seat.offered
    talk, handled = seat.talk_today, seat.contacts_today
    if event.offer_id and event.offer_outcome == Outcome.OFFER_OUTCOME_UNSPECIFIED:
        offered = (event.contact_id, event.channel)
    elif event.offer_outcome != Outcome.OFFER_OUTCOME_UNSPECIFIED:
        if event.offer_outcome == Outcome.OFFER_OUTCOME_ACCEPTED and offered is not None:
            contacts[offered[0]] = offered[1]
            handled += 1
        offered = None
    elif event.new_state == event.previous_state:
        contacts.pop(event.contact_id, None)  # one of several chats ended
    if event.new_state == AgentState.AGENT_STATE_WRAP_UP:
        contacts.pop(event.contact_id, None)
    if seat.state == AgentState.AGENT_STATE_ON_CONTACT and event.new_state != seat.state and seat.state_since:
        talk += at - max(seat.state_since, datetime.combine(at.date(), datetime.min.time(), UTC))
    changed = event.new_state != seat.state
    return replace(
        seat,
        state=event.new_state,
        state_since=at if changed or seat.state_since is None else seat.state_since,
        contacts=tuple(sorted(contacts.items())),
        offered=offered,
        talk_today=talk,
        contacts_today=handled,
    )


# The router -----------------------------------------------------------------------------------------


def plan(
    entries: Iterable[Entry],
    free: Iterable[Seat],
    queues: Mapping[str, Queue],
    last_offered: Mapping[str, str],
    now: datetime,
    present: Callable[[str], bool] = lambda _agent_id: True,
) -> list[Match]:
    """Who gets which contact now: routable entries in service order, each to its queue strategy's best
    free agent eligible at its escalation step.

    A contact transferred to a named agent goes to that agent alone, whatever their skills (the
    transferring agent chose them), for TARGET_WAIT; then, or as soon as they are not ``present``
    (logged out), the queue's agents may take it.
    """
    seats = {seat.agent_id: seat for seat in free}
    taken: set[str] = set()
    # Entries of one queue at one step, on one channel, share their candidates: work them out once.
    pools: dict[tuple[str, int, int, tuple[tuple[str, int], ...]], list[AgentSlot]] = {}
    matches = []
    for entry in service_order(e for e in entries if e.routable(now)):
        if len(taken) == len(seats):
            break
        queue = queues.get(entry.queue_id)
        if queue is None or not queue.exists:
            continue
        target = entry.target_agent_id
        if target and present(target) and now < entry.entered_at + TARGET_WAIT:
            seat = seats.get(target)
            if (
                seat is None
                or target in taken
                or not seat.can_take(entry.channel)
                or entry.skipped(target, now)
            ):
                continue
            requirement, candidates = Requirement({}), [seat.slot()]
        else:
            requirement = requirement_at_step(dict(entry.skills), queue.steps, entry.step)
            key = (entry.queue_id, entry.step, entry.channel, entry.skills)
            pool = pools.get(key)
            if pool is None:
                slots = (seat.slot() for seat in seats.values() if seat.can_take(entry.channel))
                pool = pools[key] = [slot for slot in slots if eligible(slot, requirement)]
            candidates = [s for s in pool if s.agent_id not in taken and not entry.skipped(s.agent_id, now)]
        if not candidates:
            continue
        ranked = rank(
            candidates,
            requirement,
            queue.strategy,
            now,
            contact_id=entry.contact_id,
            last_offered=last_offered.get(entry.queue_id, ""),
        )
        taken.add(ranked[0].agent_id)
        matches.append(
            Match(entry.contact_id, ranked[0].agent_id, ranked[:EXPLAINED_CANDIDATES], requirement)
        )
    return matches
