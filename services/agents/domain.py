"""The Agent aggregate: presence, offers, contacts and after-contact work, as pure decide and evolve.

Logged out -> ready -> reserved (offered) -> on contact -> wrap-up -> ready; not ready carries a
reason. The Agent alone decides how an offer ends: the ring deadline lives in its state, so an
accept and a ring timeout arriving together are settled here once, and routing follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from callcenter.agents.v1 import events_pb2 as ev
from callcenter.common.v1 import types_pb2
from callcenter.routing.v1 import events_pb2 as routing_ev
from google.protobuf.message import Message

from services.platform.envelope import Envelope
from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from services.platform.eventstore import Deadline

State = ev.AgentState
Reason = ev.NotReadyReason
Outcome = ev.OfferOutcome
ChangedBy = ev.ChangedBy
Channel = types_pb2.Channel
WrapUpMode = routing_ev.WrapUpMode

RING_DEADLINE = "ring"
WRAP_UP_DEADLINE = "wrap_up"
MAX_CHAT_CAPACITY = 10


class Actor(Enum):
    AGENT = ChangedBy.CHANGED_BY_AGENT
    SUPERVISOR = ChangedBy.CHANGED_BY_SUPERVISOR
    SYSTEM = ChangedBy.CHANGED_BY_SYSTEM


@dataclass(frozen=True)
class Offer:
    offer_id: str
    contact_id: str
    queue_id: str
    channel: int
    ring_deadline: datetime
    wrap_up_time: timedelta
    wrap_up_mode: int
    # Where an agent who lets it ring out goes: the queue's setting, "missed offer" by default.
    missed_reason: int = Reason.NOT_READY_REASON_MISSED_OFFER


@dataclass(frozen=True)
class WrapUp:
    contact_id: str
    queue_id: str
    deadline: datetime | None
    mode: int
    disposition_recorded: bool = False


@dataclass(frozen=True)
class Agent:
    """One agent's session, as the agents context knows it."""

    agent_id: str
    state: int = State.AGENT_STATE_LOGGED_OUT
    reason: int = Reason.NOT_READY_REASON_UNSPECIFIED
    state_since: datetime | None = None
    display_name: str = ""
    skills: tuple[tuple[str, int], ...] = ()
    skill_groups: tuple[str, ...] = ()
    chat_capacity: int = 0
    # Contacts held now, by contact id: (queue id, channel, wrap-up time, wrap-up mode).
    contacts: dict[str, tuple[str, int, timedelta, int]] = field(default_factory=dict)
    offer: Offer | None = None
    wrap_up: WrapUp | None = None

    @property
    def logged_in(self) -> bool:
        return self.state != State.AGENT_STATE_LOGGED_OUT

    @property
    def has_voice(self) -> bool:
        return any(channel == Channel.CHANNEL_VOICE for _, channel, _, _ in self.contacts.values())

    def describe(self) -> str:
        text = State.Name(self.state).removeprefix("AGENT_STATE_").lower()
        if self.state == State.AGENT_STATE_NOT_READY:
            text += f" ({Reason.Name(self.reason).removeprefix('NOT_READY_REASON_').lower()})"
        if self.offer is not None:
            text += f", offered contact {self.offer.contact_id}"
        if self.contacts:
            text += f", holding {', '.join(sorted(self.contacts))}"
        return f"agent {self.agent_id} is {text}"


# Commands -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    agent_id: str
    display_name: str
    skills: Sequence[tuple[str, int]]
    skill_groups: Sequence[str]
    chat_capacity: int
    ready: bool
    now: datetime
    seat: str = ""
    team_id: str = ""


@dataclass(frozen=True)
class SetReady:
    agent_id: str
    now: datetime
    by: Actor = Actor.AGENT


@dataclass(frozen=True)
class SetNotReady:
    agent_id: str
    reason: int
    now: datetime
    detail: str = ""
    by: Actor = Actor.AGENT
    by_id: str = ""


@dataclass(frozen=True)
class Logout:
    agent_id: str
    now: datetime
    by: Actor = Actor.AGENT
    by_id: str = ""


@dataclass(frozen=True)
class Reserve:
    """Routing offers a contact to this agent."""

    agent_id: str
    offer: Offer
    now: datetime


@dataclass(frozen=True)
class AcceptOffer:
    agent_id: str
    offer_id: str
    now: datetime


@dataclass(frozen=True)
class RejectOffer:
    agent_id: str
    offer_id: str
    now: datetime
    reason: str = ""


@dataclass(frozen=True)
class WithdrawOffer:
    """The offered contact went away before the agent answered (the caller hung up)."""

    agent_id: str
    contact_id: str
    now: datetime
    reason: str = ""


@dataclass(frozen=True)
class ContactAnswered:
    """Telephony reports the agent connected to the contact (auto-answer, or after accepting)."""

    agent_id: str
    contact_id: str
    now: datetime


@dataclass(frozen=True)
class ContactEnded:
    agent_id: str
    contact_id: str
    now: datetime


@dataclass(frozen=True)
class CompleteWrapUp:
    agent_id: str
    contact_id: str
    disposition_code: str
    now: datetime
    resolved: bool = False
    ticket: ev.TicketRequest | None = None
    customer: types_pb2.PartyReference | None = None


@dataclass(frozen=True)
class UpdateSkills:
    agent_id: str
    skills: Sequence[tuple[str, int]]
    skill_groups: Sequence[str]
    chat_capacity: int
    by_id: str = ""


Command = (
    Login
    | SetReady
    | SetNotReady
    | Logout
    | Reserve
    | AcceptOffer
    | RejectOffer
    | WithdrawOffer
    | ContactAnswered
    | ContactEnded
    | CompleteWrapUp
    | UpdateSkills
)


# decide -------------------------------------------------------------------------------------------


def decide(agent: Agent, command: Command) -> list[Message]:
    """The events a command causes, or a domain error naming what was wrong and the agent's state."""
    if not isinstance(command, Login) and not agent.logged_in and not isinstance(command, Reserve):
        raise NotFound(f"agent {agent.agent_id} is not logged in")
    match command:
        case Login():
            return _login(agent, command)
        case SetReady():
            return _set_ready(agent, command)
        case SetNotReady():
            return _set_not_ready(agent, command)
        case Logout():
            return _logout(agent, command)
        case Reserve():
            return _reserve(agent, command)
        case AcceptOffer():
            offer = _current_offer(agent, command.offer_id)
            return [
                _change(
                    agent,
                    State.AGENT_STATE_ON_CONTACT,
                    command.now,
                    offer=offer,
                    outcome=Outcome.OFFER_OUTCOME_ACCEPTED,
                )
            ]
        case RejectOffer():
            offer = _current_offer(agent, command.offer_id)
            return [
                _change(
                    agent,
                    _state_without_offer(agent),
                    command.now,
                    offer=offer,
                    outcome=Outcome.OFFER_OUTCOME_REJECTED,
                    detail=command.reason,
                )
            ]
        case WithdrawOffer():
            if agent.offer is None or agent.offer.contact_id != command.contact_id:
                return []
            return [
                _change(
                    agent,
                    _state_without_offer(agent),
                    command.now,
                    offer=agent.offer,
                    outcome=Outcome.OFFER_OUTCOME_CONTACT_ENDED,
                    detail=command.reason,
                    by=Actor.SYSTEM,
                )
            ]
        case ContactAnswered():
            return _answered(agent, command)
        case ContactEnded():
            return _ended(agent, command)
        case CompleteWrapUp():
            return _complete_wrap_up(agent, command)
        case UpdateSkills():
            _validate_skills(command.skills, command.chat_capacity)
            return [
                ev.AgentSkillsChanged(
                    agent_id=agent.agent_id,
                    skills=[types_pb2.SkillLevel(skill=s, proficiency=p) for s, p in command.skills],
                    skill_groups=list(command.skill_groups),
                    chat_capacity=command.chat_capacity,
                    changed_by_id=command.by_id,
                )
            ]
    raise InvalidArgument(f"unknown command {type(command).__name__}")


def on_deadline(agent: Agent, deadline: Deadline, now: datetime) -> list[Message]:
    """Ring timeout: missed offer, agent not ready. Wrap-up timeout: wrap-up ends, agent ready."""
    if deadline.name == RING_DEADLINE and agent.offer is not None and agent.offer.ring_deadline <= now:
        return [
            _change(
                agent,
                State.AGENT_STATE_NOT_READY,
                now,
                reason=agent.offer.missed_reason,
                offer=agent.offer,
                outcome=Outcome.OFFER_OUTCOME_TIMED_OUT,
                by=Actor.SYSTEM,
            )
        ]
    wrap = agent.wrap_up
    if (
        deadline.name == WRAP_UP_DEADLINE
        and wrap is not None
        and wrap.deadline is not None
        and wrap.deadline <= now
    ):
        events: list[Message] = []
        if not wrap.disposition_recorded:
            events.append(
                ev.WrapUpCompleted(
                    agent_id=agent.agent_id,
                    contact_id=wrap.contact_id,
                    queue_id=wrap.queue_id,
                    timed_out=True,
                )
            )
        events.append(
            _change(
                agent,
                State.AGENT_STATE_READY,
                now,
                contact_id=wrap.contact_id,
                queue_id=wrap.queue_id,
                by=Actor.SYSTEM,
            )
        )
        return events
    return []


def deadlines(agent: Agent) -> list[Deadline]:
    found = []
    if agent.offer is not None:
        found.append(Deadline(RING_DEADLINE, agent.offer.ring_deadline))
    if agent.wrap_up is not None and agent.wrap_up.deadline is not None:
        found.append(Deadline(WRAP_UP_DEADLINE, agent.wrap_up.deadline))
    return found


def _login(agent: Agent, command: Login) -> list[Message]:
    if agent.logged_in:
        raise FailedPrecondition(f"{agent.describe()}; it is already logged in")
    if not command.agent_id.strip():
        raise InvalidArgument("agent_id is required")
    _validate_skills(command.skills, command.chat_capacity)
    logged_in = ev.AgentLoggedIn(
        agent_id=agent.agent_id,
        display_name=command.display_name,
        skills=[types_pb2.SkillLevel(skill=s, proficiency=p) for s, p in command.skills],
        skill_groups=list(command.skill_groups),
        chat_capacity=command.chat_capacity,
        seat=command.seat,
        team_id=command.team_id,
    )
    if command.ready:
        return [logged_in, _change(agent, State.AGENT_STATE_READY, command.now)]
    return [
        logged_in,
        _change(
            agent,
            State.AGENT_STATE_NOT_READY,
            command.now,
            reason=Reason.NOT_READY_REASON_SYSTEM,
            detail="logged in",
        ),
    ]


def _set_ready(agent: Agent, command: SetReady) -> list[Message]:
    if agent.state == State.AGENT_STATE_READY:
        return []
    if agent.state == State.AGENT_STATE_NOT_READY:
        # Not ready with chats still held (it let one more ring out): ready again means back on them.
        return [_change(agent, _state_without_offer(agent), command.now, by=command.by)]
    if agent.state == State.AGENT_STATE_WRAP_UP and agent.wrap_up is not None:
        if agent.wrap_up.mode == WrapUpMode.WRAP_UP_MODE_FORCED_DURATION and command.by is Actor.AGENT:
            raise FailedPrecondition(f"{agent.describe()}; this queue's wrap-up lasts its full time")
        if (
            agent.wrap_up.mode == WrapUpMode.WRAP_UP_MODE_MANDATORY_WITH_TIMEOUT
            and not agent.wrap_up.disposition_recorded
            and command.by is Actor.AGENT
        ):
            raise FailedPrecondition(f"{agent.describe()}; complete wrap-up with a disposition first")
        events: list[Message] = []
        if not agent.wrap_up.disposition_recorded:
            events.append(
                ev.WrapUpCompleted(
                    agent_id=agent.agent_id,
                    contact_id=agent.wrap_up.contact_id,
                    queue_id=agent.wrap_up.queue_id,
                )
            )
        events.append(
            _change(
                agent,
                State.AGENT_STATE_READY,
                command.now,
                contact_id=agent.wrap_up.contact_id,
                by=command.by,
            )
        )
        return events
    raise FailedPrecondition(f"{agent.describe()}; it cannot be set ready now")


def _set_not_ready(agent: Agent, command: SetNotReady) -> list[Message]:
    if command.reason == Reason.NOT_READY_REASON_UNSPECIFIED:
        raise InvalidArgument("a not-ready reason is required")
    if agent.state == State.AGENT_STATE_NOT_READY and agent.reason == command.reason:
        return []
    if agent.state in (State.AGENT_STATE_READY, State.AGENT_STATE_NOT_READY):
        return [
            _change(
                agent,
                State.AGENT_STATE_NOT_READY,
                command.now,
                reason=command.reason,
                detail=command.detail,
                by=command.by,
                by_id=command.by_id,
            )
        ]
    if agent.state == State.AGENT_STATE_RESERVED and agent.offer is not None and not agent.contacts:
        # Not ready while the offer rings: the offer is rejected and the contact goes back to its queue.
        return [
            _change(
                agent,
                State.AGENT_STATE_NOT_READY,
                command.now,
                reason=command.reason,
                detail=command.detail,
                offer=agent.offer,
                outcome=Outcome.OFFER_OUTCOME_REJECTED,
                by=command.by,
                by_id=command.by_id,
            )
        ]
    if (
        agent.state == State.AGENT_STATE_WRAP_UP
        and command.by is Actor.SUPERVISOR
        and agent.wrap_up is not None
    ):
        return [
            *(
                []
                if agent.wrap_up.disposition_recorded
                else [
                    ev.WrapUpCompleted(
                        agent_id=agent.agent_id,
                        contact_id=agent.wrap_up.contact_id,
                        queue_id=agent.wrap_up.queue_id,
                    )
                ]
            ),
            _change(
                agent,
                State.AGENT_STATE_NOT_READY,
                command.now,
                reason=command.reason,
                detail=command.detail,
                by=command.by,
                by_id=command.by_id,
            ),
        ]
    raise FailedPrecondition(
        f"{agent.describe()}; not ready is possible when ready, not ready or being offered"
    )


def _logout(agent: Agent, command: Logout) -> list[Message]:
    if agent.contacts:
        raise FailedPrecondition(f"{agent.describe()}; finish the contacts before logging out")
    events: list[Message] = []
    if agent.wrap_up is not None:
        if command.by is not Actor.SUPERVISOR:
            raise FailedPrecondition(f"{agent.describe()}; complete wrap-up before logging out")
        if not agent.wrap_up.disposition_recorded:
            events.append(
                ev.WrapUpCompleted(
                    agent_id=agent.agent_id,
                    contact_id=agent.wrap_up.contact_id,
                    queue_id=agent.wrap_up.queue_id,
                )
            )
    outcome = (
        Outcome.OFFER_OUTCOME_WITHDRAWN if agent.offer is not None else Outcome.OFFER_OUTCOME_UNSPECIFIED
    )
    events.append(
        _change(
            agent,
            State.AGENT_STATE_LOGGED_OUT,
            command.now,
            offer=agent.offer,
            outcome=outcome,
            by=command.by,
            by_id=command.by_id,
        )
    )
    events.append(
        ev.AgentLoggedOut(agent_id=agent.agent_id, changed_by=command.by.value, changed_by_id=command.by_id)
    )
    return events


def _reserve(agent: Agent, command: Reserve) -> list[Message]:
    offer = command.offer
    refusal = _why_not_reservable(agent, offer)
    if refusal is not None:
        return [
            ev.ReservationRefused(
                agent_id=agent.agent_id,
                offer_id=offer.offer_id,
                contact_id=offer.contact_id,
                queue_id=offer.queue_id,
                agent_state=agent.state,
                reason=refusal,
            )
        ]
    # A chatting agent offered one more chat stays on contact; the offer waits beside the chats.
    return [
        _change(
            agent,
            _state_without_offer(agent) if agent.contacts else State.AGENT_STATE_RESERVED,
            command.now,
            offer=offer,
        )
    ]


def _why_not_reservable(agent: Agent, offer: Offer) -> str | None:
    if not agent.logged_in:
        return f"agent {agent.agent_id} is logged out"
    if agent.offer is not None:
        return f"{agent.describe()}; one offer at a time"
    if offer.contact_id in agent.contacts:
        return f"{agent.describe()}; it already holds this contact"
    if offer.channel == Channel.CHANNEL_CHAT:
        chats = sum(1 for _, channel, _, _ in agent.contacts.values() if channel == Channel.CHANNEL_CHAT)
        if agent.state not in (State.AGENT_STATE_READY, State.AGENT_STATE_ON_CONTACT) or agent.has_voice:
            return f"{agent.describe()}; chats go to agents ready or chatting"
        if chats >= agent.chat_capacity:
            return f"{agent.describe()}; all {agent.chat_capacity} chat slots are taken"
        return None
    if agent.state != State.AGENT_STATE_READY:
        return f"{agent.describe()}; only a ready agent takes a voice contact"
    return None


def _current_offer(agent: Agent, offer_id: str) -> Offer:
    if agent.offer is None:
        raise FailedPrecondition(f"{agent.describe()}; there is no offer to answer")
    if agent.offer.offer_id != offer_id:
        raise FailedPrecondition(
            f"{agent.describe()}; offer {offer_id} is not the current offer {agent.offer.offer_id}"
        )
    return agent.offer


def _state_without_offer(agent: Agent) -> int:
    return State.AGENT_STATE_ON_CONTACT if agent.contacts else State.AGENT_STATE_READY


def _answered(agent: Agent, command: ContactAnswered) -> list[Message]:
    if command.contact_id in agent.contacts:
        return []
    if agent.offer is not None and agent.offer.contact_id == command.contact_id:
        return [
            _change(
                agent,
                State.AGENT_STATE_ON_CONTACT,
                command.now,
                offer=agent.offer,
                outcome=Outcome.OFFER_OUTCOME_ACCEPTED,
            )
        ]
    raise FailedPrecondition(f"{agent.describe()}; contact {command.contact_id} was not offered to it")


def _ended(agent: Agent, command: ContactEnded) -> list[Message]:
    if agent.state_since is not None and command.now < agent.state_since:
        # The end came before the agent's last change (it was heard late): it takes effect now.
        command = replace(command, now=agent.state_since)
    held = agent.contacts.get(command.contact_id)
    if held is None:
        if agent.offer is not None and agent.offer.contact_id == command.contact_id:
            return decide(
                agent, WithdrawOffer(agent.agent_id, command.contact_id, command.now, "contact ended")
            )
        return []
    queue_id, _, wrap_up_time, mode = held
    if len(agent.contacts) > 1 or agent.offer is not None:
        # Other contacts go on, or another one is being offered: this one leaves without wrap-up of its own.
        ended = _change(
            agent,
            agent.state,
            command.now,
            contact_id=command.contact_id,
            queue_id=queue_id,
            detail="contact ended",
            by=Actor.SYSTEM,
        )
        if len(agent.contacts) > 1 or agent.offer is None:
            return [ended]
        # That was the last contact held and an offer still rings: the agent is reserved for it alone.
        return [
            ended,
            _change(
                agent,
                State.AGENT_STATE_RESERVED,
                command.now,
                contact_id=agent.offer.contact_id,
                queue_id=agent.offer.queue_id,
                detail="last contact ended while offered",
                by=Actor.SYSTEM,
            ),
        ]
    deadline = (
        command.now + wrap_up_time if mode != WrapUpMode.WRAP_UP_MODE_OPTIONAL and wrap_up_time else None
    )
    return [
        _change(
            agent,
            State.AGENT_STATE_WRAP_UP,
            command.now,
            contact_id=command.contact_id,
            queue_id=queue_id,
            wrap_up_deadline=deadline,
            by=Actor.SYSTEM,
        )
    ]


def _complete_wrap_up(agent: Agent, command: CompleteWrapUp) -> list[Message]:
    wrap = agent.wrap_up
    if wrap is None or wrap.contact_id != command.contact_id:
        raise FailedPrecondition(f"{agent.describe()}; it is not wrapping up contact {command.contact_id}")
    if wrap.disposition_recorded:
        raise FailedPrecondition(f"{agent.describe()}; wrap-up of {command.contact_id} is already recorded")
    if not command.disposition_code.strip():
        raise InvalidArgument("a disposition code is required to complete wrap-up")
    completed = ev.WrapUpCompleted(
        agent_id=agent.agent_id,
        contact_id=wrap.contact_id,
        queue_id=wrap.queue_id,
        disposition_code=command.disposition_code,
        resolved=command.resolved,
    )
    if command.ticket is not None:
        completed.ticket.CopyFrom(command.ticket)
    if command.customer is not None:
        completed.customer.CopyFrom(command.customer)
    if wrap.mode == WrapUpMode.WRAP_UP_MODE_FORCED_DURATION and wrap.deadline is not None:
        return [completed]  # the agent stays in wrap-up until its time is up
    return [
        completed,
        _change(
            agent, State.AGENT_STATE_READY, command.now, contact_id=wrap.contact_id, queue_id=wrap.queue_id
        ),
    ]


def _validate_skills(skills: Sequence[tuple[str, int]], chat_capacity: int) -> None:
    for skill, proficiency in skills:
        if not skill.strip():
            raise InvalidArgument("a skill needs a name")
        if not 1 <= proficiency <= 5:
            raise InvalidArgument(f"proficiency of {skill!r} must be 1 to 5, not {proficiency}")
    if not 0 <= chat_capacity <= MAX_CHAT_CAPACITY:
        raise InvalidArgument(f"chat capacity must be 0 to {MAX_CHAT_CAPACITY}, not {chat_capacity}")


def _change(
    agent: Agent,
    new_state: int,
    now: datetime,
    *,
    reason: int = Reason.NOT_READY_REASON_UNSPECIFIED,
    detail: str = "",
    offer: Offer | None = None,
    outcome: int = Outcome.OFFER_OUTCOME_UNSPECIFIED,
    contact_id: str = "",
    queue_id: str = "",
    wrap_up_deadline: datetime | None = None,
    by: Actor = Actor.AGENT,
    by_id: str = "",
) -> ev.AgentStateChanged:
    changed = ev.AgentStateChanged(
        agent_id=agent.agent_id,
        previous_state=agent.state,
        new_state=new_state,
        reason=reason,
        reason_detail=detail,
        changed_by=by.value,
        changed_by_id=by_id,
        contact_id=contact_id or (offer.contact_id if offer else ""),
        queue_id=queue_id or (offer.queue_id if offer else ""),
        offer_id=offer.offer_id if offer else "",
        offer_outcome=outcome,
    )
    if agent.state_since is not None:
        changed.previous_state_since.FromDatetime(agent.state_since)
    if wrap_up_deadline is not None:
        changed.wrap_up_deadline.FromDatetime(wrap_up_deadline)
    if offer is not None and outcome == Outcome.OFFER_OUTCOME_UNSPECIFIED:
        changed.ring_deadline.FromDatetime(offer.ring_deadline)
        changed.channel = offer.channel
        changed.wrap_up_time.FromTimedelta(offer.wrap_up_time)
        changed.wrap_up_mode = offer.wrap_up_mode
        changed.missed_offer_reason = offer.missed_reason
    return changed


# evolve -------------------------------------------------------------------------------------------


def evolve(agent: Agent, envelope: Envelope) -> Agent:
    event = envelope.payload
    match envelope.event_type:
        case "AgentLoggedIn":
            return replace(
                agent,
                display_name=event.display_name,
                skills=tuple((s.skill, s.proficiency) for s in event.skills),
                skill_groups=tuple(event.skill_groups),
                chat_capacity=event.chat_capacity,
            )
        case "AgentSkillsChanged":
            return replace(
                agent,
                skills=tuple((s.skill, s.proficiency) for s in event.skills),
                skill_groups=tuple(event.skill_groups),
                chat_capacity=event.chat_capacity,
            )
        case "AgentStateChanged":
            return _evolve_state(agent, event, envelope.occurred_at)
        case "WrapUpCompleted":
            if agent.wrap_up is not None and agent.wrap_up.contact_id == event.contact_id:
                return replace(agent, wrap_up=replace(agent.wrap_up, disposition_recorded=True))
            return agent
        case "AgentLoggedOut":
            return Agent(agent.agent_id, display_name=agent.display_name, state_since=envelope.occurred_at)
    return agent


def _evolve_state(agent: Agent, event: ev.AgentStateChanged, at: datetime) -> Agent:
    contacts = dict(agent.contacts)
    offer, wrap_up = agent.offer, agent.wrap_up
    if event.offer_id and event.offer_outcome == Outcome.OFFER_OUTCOME_UNSPECIFIED:
        offer = _offer_from(event, at)
    elif event.offer_outcome != Outcome.OFFER_OUTCOME_UNSPECIFIED:
        if event.offer_outcome == Outcome.OFFER_OUTCOME_ACCEPTED and offer is not None:
            contacts[offer.contact_id] = (
                offer.queue_id,
                offer.channel,
                offer.wrap_up_time,
                offer.wrap_up_mode,
            )
        offer = None
    elif event.new_state == event.previous_state and event.contact_id in contacts:
        del contacts[event.contact_id]  # one of several contacts ended; the others go on
    if event.new_state == State.AGENT_STATE_WRAP_UP:
        queue_id, _, _, mode = contacts.pop(event.contact_id, (event.queue_id, 0, timedelta(0), 0))
        deadline = (
            event.wrap_up_deadline.ToDatetime(tzinfo=at.tzinfo)
            if event.HasField("wrap_up_deadline")
            else None
        )
        wrap_up = WrapUp(event.contact_id, queue_id, deadline, mode)
    elif agent.state == State.AGENT_STATE_WRAP_UP and event.new_state != State.AGENT_STATE_WRAP_UP:
        wrap_up = None
    return replace(
        agent,
        state=event.new_state,
        reason=event.reason
        if event.new_state == State.AGENT_STATE_NOT_READY
        else Reason.NOT_READY_REASON_UNSPECIFIED,
        state_since=at
        if event.new_state != agent.state or event.reason != agent.reason
        else agent.state_since,
        contacts=contacts,
        offer=offer,
        wrap_up=wrap_up,
    )


def _offer_from(event: ev.AgentStateChanged, at: datetime) -> Offer:
    return Offer(
        offer_id=event.offer_id,
        contact_id=event.contact_id,
        queue_id=event.queue_id,
        channel=event.channel,
        ring_deadline=event.ring_deadline.ToDatetime(tzinfo=at.tzinfo),
        wrap_up_time=event.wrap_up_time.ToTimedelta(),
        wrap_up_mode=event.wrap_up_mode,
        missed_reason=event.missed_offer_reason or Reason.NOT_READY_REASON_MISSED_OFFER,
    )
