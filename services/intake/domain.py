"""The Contact aggregate: telephony's and gateways' reports about one contact, as pure decide and evolve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as ev
from callcenter.intake.v1 import service_pb2 as pb
from callcenter.routing.v1 import events_pb2 as routing_ev
from google.protobuf.message import Message

from services.platform.envelope import Envelope
from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound

Stage = pb.ContactStage
Channel = types_pb2.Channel
EndReason = ev.ContactEndReason
Fallback = routing_ev.FallbackOutcome

MAX_PRIORITY_BOOST = 99
# A caller lost in the menus is routed or ended long before this; the bound keeps a contact small.
MAX_IVR_SELECTIONS = 64
WITH_AN_AGENT = (Stage.CONTACT_STAGE_TALKING, Stage.CONTACT_STAGE_ON_HOLD)


@dataclass(frozen=True)
class Party:
    """A customer without personal data: the keyed HMAC to join on and the masked form to show."""

    hash: str = ""
    masked: str = ""

    def message(self) -> types_pb2.PartyReference:
        return types_pb2.PartyReference(hash=self.hash, masked=self.masked)


@dataclass(frozen=True)
class Contact:
    """One contact, as telephony and the channel gateways reported it.

    IVR -> queued -> talking (<-> on hold) -> ended. A transfer queues it again; a callback request
    keeps its place in the queue (callback pending) until an agent's call-out is answered. The caller
    is known only by a keyed HMAC and a masked form: the number in clear never reaches this module.
    """

    contact_id: str
    stage: int = Stage.CONTACT_STAGE_UNSPECIFIED
    channel: int = Channel.CHANNEL_UNSPECIFIED
    caller: Party = Party()
    dialed_number: str = ""
    gateway: str = ""
    language: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # When intake recorded the contact's last report.
    reported_at: datetime | None = None
    queue_id: str = ""
    agent_id: str = ""
    # The IVR choices in order, each "menu:selection".
    ivr_path: tuple[str, ...] = ()
    self_service_completed: bool = False
    vip: bool = False
    end_reason: int = EndReason.CONTACT_END_REASON_UNSPECIFIED
    # The version of the last event applied, as the read model reports it.
    version: int = 0

    @property
    def exists(self) -> bool:
        return self.stage != Stage.CONTACT_STAGE_UNSPECIFIED

    def describe(self) -> str:
        """The contact's state in the words of an error message: "contact c-1 is queued in billing"."""
        match self.stage:
            case Stage.CONTACT_STAGE_IVR:
                where = "in the IVR"
            case Stage.CONTACT_STAGE_QUEUED:
                where = f"queued in {self.queue_id}"
            case Stage.CONTACT_STAGE_TALKING:
                where = f"talking with agent {self.agent_id}"
            case Stage.CONTACT_STAGE_ON_HOLD:
                where = f"on hold with agent {self.agent_id}"
            case Stage.CONTACT_STAGE_CALLBACK_PENDING:
                where = f"waiting for a callback from {self.queue_id}"
            case Stage.CONTACT_STAGE_ENDED:
                when = f" at {self.ended_at:%H:%M:%S}" if self.ended_at else ""
                where = f"ended (by {_end_reason_name(self.end_reason)}{when})"
            case _:
                where = "not known"
        return f"contact {self.contact_id} is {where}"


def closed(contact: Contact) -> bool:
    """An ended contact's life is over: the store may forget it."""
    return contact.stage == Stage.CONTACT_STAGE_ENDED


def _end_reason_name(reason: int) -> str:
    return EndReason.Name(reason).removeprefix("CONTACT_END_REASON_").lower().replace("_", " ")


# Commands -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartContact:
    """A contact reached the platform; ``caller`` is already pseudonymised."""

    contact_id: str
    channel: int
    caller: Party = Party()
    dialed_number: str = ""
    gateway: str = ""
    language: str = ""
    subject: str = ""


@dataclass(frozen=True)
class RecordIvrSelection:
    contact_id: str
    menu: str
    selection: str
    queue_id: str = ""
    self_service_completed: bool = False


@dataclass(frozen=True)
class RequestRouting:
    """A gateway sends the contact straight to a queue, without an IVR."""

    contact_id: str
    queue_id: str
    priority_boost: int = 0
    required_skills: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True)
class ReportAnswered:
    contact_id: str
    agent_id: str


@dataclass(frozen=True)
class ReportHold:
    contact_id: str


@dataclass(frozen=True)
class ReportResume:
    contact_id: str


@dataclass(frozen=True)
class ReportTransfer:
    contact_id: str
    to_queue_id: str = ""
    to_agent_id: str = ""
    consulted: bool = False


@dataclass(frozen=True)
class EndContact:
    """Telephony's end of the contact; ``ended_at`` is when it saw the end (None: ``now``, intake's clock)."""

    contact_id: str
    reason: int
    detail: str = ""
    ended_at: datetime | None = None
    now: datetime | None = None


@dataclass(frozen=True)
class RequestCallback:
    """The customer would rather be called back; an empty ``callback_party`` means the caller."""

    contact_id: str
    callback_party: Party = Party()
    window_start: datetime | None = None
    window_end: datetime | None = None


Command = (
    StartContact
    | RecordIvrSelection
    | RequestRouting
    | ReportAnswered
    | ReportHold
    | ReportResume
    | ReportTransfer
    | EndContact
    | RequestCallback
)


# decide -------------------------------------------------------------------------------------------


def decide(contact: Contact, command: Command, vip_callers: frozenset[str] = frozenset()) -> list[Message]:
    """The events a report causes, or a domain error naming what was wrong and the contact's state.

    ``vip_callers`` is the center's VIP list (caller hashes) at the time of the report; a contact is
    routed as a VIP when its caller is on it.
    """
    if isinstance(command, StartContact):
        return _start(contact, command)
    _check_arguments(command)
    if not contact.exists:
        raise NotFound(f"contact {command.contact_id} is not known (never started, or ended long ago)")
    vip = contact.vip or (bool(contact.caller.hash) and contact.caller.hash in vip_callers)
    match command:
        case RecordIvrSelection():
            _require(contact, "given an IVR selection", Stage.CONTACT_STAGE_IVR)
            if len(contact.ivr_path) >= MAX_IVR_SELECTIONS:
                raise FailedPrecondition(
                    f"contact {contact.contact_id} already made {len(contact.ivr_path)} IVR selections, "
                    f"the most one contact may; route it or end it"
                )
            return _ivr_selection(contact, command, vip)
        case RequestRouting():
            _require(contact, "routed by its gateway", Stage.CONTACT_STAGE_IVR)
            skills = command.required_skills
            return [_routing(contact, command.queue_id, "gateway", vip, command.priority_boost, skills)]
        case ReportAnswered():
            return _answered(contact, command)
        case ReportHold():
            _require(contact, "put on hold", Stage.CONTACT_STAGE_TALKING)
            return [ev.ContactHeld(contact_id=contact.contact_id, agent_id=contact.agent_id)]
        case ReportResume():
            _require(contact, "resumed", Stage.CONTACT_STAGE_ON_HOLD)
            return [ev.ContactResumed(contact_id=contact.contact_id, agent_id=contact.agent_id)]
        case ReportTransfer():
            _require(contact, "transferred", *WITH_AN_AGENT)
            return _transfer(contact, command, vip)
        case EndContact():
            if closed(contact):
                raise FailedPrecondition(f"{contact.describe()}; it cannot be ended again")
            if command.reason == EndReason.CONTACT_END_REASON_CALLBACK_ACCEPTED:
                # Only the caller's line ended: the contact lives on until the agent's call-out ends.
                _require(
                    contact,
                    "left for a callback before one is requested",
                    Stage.CONTACT_STAGE_CALLBACK_PENDING,
                )
                return []
            ended = ev.ContactEnded(
                contact_id=contact.contact_id,
                reason=command.reason,
                detail=command.detail,
                agent_id=contact.agent_id,
            )
            at = _ended_at(contact, command)
            if at is not None:
                ended.ended_at.FromDatetime(at)
            return [ended]
        case RequestCallback():
            _require(contact, "called back instead of waiting", Stage.CONTACT_STAGE_QUEUED)
            return _callback(contact, command)
    raise InvalidArgument(f"intake has no report {type(command).__name__}")


# How far ahead of intake's clock telephony's clock may be before its times are refused.
CLOCK_SKEW = timedelta(seconds=5)


def _ended_at(contact: Contact, command: EndContact) -> datetime | None:
    """Telephony's moment of the end, within the contact's reported life: after its last recorded
    report and not after intake's now (clocks differ by a little); refused when far ahead."""
    if command.ended_at is None:
        return None
    at = command.ended_at
    if command.now is not None:
        if at > command.now + CLOCK_SKEW:
            ahead = (at - command.now).total_seconds()
            raise InvalidArgument(
                f"ended_at {at.isoformat()} is {ahead:.1f} s after intake's clock (at most "
                f"{CLOCK_SKEW.total_seconds():g} s): telephony's clock is wrong"
            )
        at = min(at, command.now)
    if contact.reported_at is not None:
        at = max(at, contact.reported_at)
    return at


def _check_arguments(command: Command) -> None:
    """Refuse a malformed report whatever the contact's state."""
    match command:
        case RecordIvrSelection(menu=menu, selection=selection) if not menu.strip() or not selection.strip():
            raise InvalidArgument("an IVR selection needs its menu and the option selected")
        case RequestRouting(queue_id=queue_id, priority_boost=boost, required_skills=skills):
            if not queue_id.strip():
                raise InvalidArgument("queue_id is required: the queue to route the contact to")
            if not 0 <= boost <= MAX_PRIORITY_BOOST:
                raise InvalidArgument(f"priority_boost must be 0 to {MAX_PRIORITY_BOOST}, not {boost}")
            for skill, proficiency in skills:
                if not skill.strip() or not 1 <= proficiency <= 5:
                    raise InvalidArgument(
                        f"skill {skill!r} needs a name and a proficiency of 1 to 5, not {proficiency}"
                    )
        case ReportAnswered(agent_id=agent_id) if not agent_id.strip():
            raise InvalidArgument("agent_id is required: the agent who answered the contact")
        case ReportTransfer(to_queue_id=queue_id, to_agent_id=agent_id) if bool(queue_id) == bool(agent_id):
            raise InvalidArgument("a transfer names its target: either a queue or an agent")
        case EndContact(reason=reason) if reason == EndReason.CONTACT_END_REASON_UNSPECIFIED:
            raise InvalidArgument("an end reason is required (caller, agent, system, self service, ...)")
        case EndContact(reason=reason) if reason not in EndReason.values():
            raise InvalidArgument(f"{reason} is not a contact end reason")
        case RequestCallback(window_start=start, window_end=end) if start and end and end < start:
            raise InvalidArgument(
                f"the callback window ends ({end.isoformat()}) before it starts ({start.isoformat()})"
            )


def _require(contact: Contact, doing: str, *stages: int) -> None:
    if contact.stage not in stages:
        raise FailedPrecondition(f"{contact.describe()}; it cannot be {doing}")


def _start(contact: Contact, command: StartContact) -> list[Message]:
    if not command.contact_id.strip():
        raise InvalidArgument("contact_id is required")
    if command.channel == Channel.CHANNEL_UNSPECIFIED or command.channel not in Channel.values():
        raise InvalidArgument("channel is required: voice, chat, email, sms or web_callback")
    if command.channel == Channel.CHANNEL_WEB_CALLBACK and not command.caller.hash:
        raise InvalidArgument("a web callback needs the customer's number: the center calls them")
    if contact.exists:
        raise FailedPrecondition(f"{contact.describe()}; it was started before and cannot start again")
    return [
        ev.ContactStarted(
            contact_id=command.contact_id,
            channel=command.channel,
            caller=command.caller.message(),
            dialed_number=command.dialed_number,
            gateway=command.gateway,
            language=command.language,
            subject=command.subject,
        )
    ]


def _ivr_selection(contact: Contact, command: RecordIvrSelection, vip: bool) -> list[Message]:
    events: list[Message] = [
        ev.IvrSelectionRecorded(
            contact_id=contact.contact_id,
            menu=command.menu,
            selection=command.selection,
            queue_id=command.queue_id,
            self_service_completed=command.self_service_completed,
        )
    ]
    if command.queue_id:
        events.append(_routing(contact, command.queue_id, "ivr", vip))
    return events


def _routing(
    contact: Contact,
    queue_id: str,
    reason: str,
    vip: bool,
    priority_boost: int = 0,
    required_skills: Sequence[tuple[str, int]] = (),
    target_agent_id: str = "",
) -> ev.RoutingRequested:
    return ev.RoutingRequested(
        contact_id=contact.contact_id,
        queue_id=queue_id,
        priority_boost=priority_boost,
        channel=contact.channel,
        required_skills=[types_pb2.SkillLevel(skill=s, proficiency=p) for s, p in required_skills],
        vip=vip,
        reason=reason,
        target_agent_id=target_agent_id,
    )


def _answered(contact: Contact, command: ReportAnswered) -> list[Message]:
    if contact.stage in WITH_AN_AGENT and contact.agent_id == command.agent_id:
        return []  # the same answer reported again
    _require(
        contact,
        f"answered by agent {command.agent_id}",
        Stage.CONTACT_STAGE_QUEUED,
        Stage.CONTACT_STAGE_CALLBACK_PENDING,
    )
    return [
        ev.ContactAnswered(
            contact_id=contact.contact_id, agent_id=command.agent_id, queue_id=contact.queue_id
        )
    ]


def _transfer(contact: Contact, command: ReportTransfer, vip: bool) -> list[Message]:
    if command.to_agent_id == contact.agent_id:
        raise InvalidArgument(
            f"{contact.describe()}; it cannot be transferred to the agent who already has it"
        )
    transferred = ev.ContactTransferred(
        contact_id=contact.contact_id, from_agent_id=contact.agent_id, consulted=command.consulted
    )
    if command.to_queue_id:
        transferred.to_queue_id = command.to_queue_id
    else:
        transferred.to_agent_id = command.to_agent_id
    queue_id = command.to_queue_id or contact.queue_id
    routed = _routing(contact, queue_id, "transfer", vip, target_agent_id=command.to_agent_id)
    return [transferred, routed]


def _callback(contact: Contact, command: RequestCallback) -> list[Message]:
    party = command.callback_party if command.callback_party.hash else contact.caller
    if not party.hash:
        raise InvalidArgument(
            f"{contact.describe()} from an anonymous caller; a callback needs the number to call"
        )
    requested = ev.CallbackRequested(
        contact_id=contact.contact_id, queue_id=contact.queue_id, callback_party=party.message()
    )
    if command.window_start is not None:
        requested.window_start.FromDatetime(command.window_start)
    if command.window_end is not None:
        requested.window_end.FromDatetime(command.window_end)
    return [requested]


# Routing's decisions ------------------------------------------------------------------------------


def ended_by_routing(event_type: str, event: Message) -> EndContact | None:
    """The end a routing event means for the contact: none for a refusal that overflows to another
    queue or offers a callback (routing moves it on, or the IVR offers the callback), an end by the
    system for a disconnect or voicemail."""
    match event_type:
        case "QueueJoinRefused":
            if event.outcome in (
                Fallback.FALLBACK_OUTCOME_OVERFLOW,
                Fallback.FALLBACK_OUTCOME_OFFER_CALLBACK,
            ):
                return None
            detail = event.reason or f"queue {event.queue_id} refused the contact"
        case "ContactDisconnected":
            detail = event.reason or f"disconnected from queue {event.queue_id}"
        case _:
            return None
    if event.outcome == Fallback.FALLBACK_OUTCOME_VOICEMAIL:
        detail = "voicemail"
    return EndContact(event.contact_id, EndReason.CONTACT_END_REASON_SYSTEM, detail)


# evolve -------------------------------------------------------------------------------------------


def evolve(contact: Contact, envelope: Envelope) -> Contact:
    contact = _evolve(contact, envelope)
    return replace(contact, version=envelope.aggregate_version, reported_at=envelope.occurred_at)


def _evolve(contact: Contact, envelope: Envelope) -> Contact:
    event = envelope.payload
    match envelope.event_type:
        case "ContactStarted":
            return Contact(
                contact_id=event.contact_id,
                stage=Stage.CONTACT_STAGE_IVR,
                channel=event.channel,
                caller=Party(event.caller.hash, event.caller.masked),
                dialed_number=event.dialed_number,
                gateway=event.gateway,
                language=event.language,
                started_at=envelope.occurred_at,
                version=envelope.aggregate_version,
            )
        case "IvrSelectionRecorded":
            return replace(
                contact,
                ivr_path=(*contact.ivr_path, f"{event.menu}:{event.selection}"),
                self_service_completed=contact.self_service_completed or event.self_service_completed,
            )
        case "RoutingRequested":
            return replace(
                contact,
                stage=Stage.CONTACT_STAGE_QUEUED,
                queue_id=event.queue_id,
                agent_id="",
                vip=contact.vip or event.vip,
            )
        case "ContactAnswered":
            return replace(contact, stage=Stage.CONTACT_STAGE_TALKING, agent_id=event.agent_id)
        case "ContactHeld":
            return replace(contact, stage=Stage.CONTACT_STAGE_ON_HOLD)
        case "ContactResumed":
            return replace(contact, stage=Stage.CONTACT_STAGE_TALKING)
        case "ContactTransferred":
            return contact  # the RoutingRequested that follows it moves the contact
        case "CallbackRequested":
            return replace(contact, stage=Stage.CONTACT_STAGE_CALLBACK_PENDING, agent_id="")
        case "ContactEnded":
            return replace(
                contact,
                stage=Stage.CONTACT_STAGE_ENDED,
                ended_at=_at(event.ended_at) if event.HasField("ended_at") else envelope.occurred_at,
                end_reason=event.reason,
            )
    return contact


def _at(timestamp) -> datetime:
    return timestamp.ToDatetime(UTC)
