"""The KPI projections' arithmetic: contexts' events folded into facts, with no I/O.

Three folds, each a pure function of (state, event) to the new state, and functions that turn a
state into the rows of a fact table (``deploy/clickhouse``):

- a contact's events from intake (its arrival, IVR, talk, hold, end), routing (each queue visit,
  its offers and how it ended) and agents (wrap-up) into ``contact_facts`` and ``offer_facts``;
- an agent's state changes into ``agent_state_intervals``;
- a queue's configuration into ``queue_settings``.

A fold applies an event at most once: a contact remembers the newest version of its intake and
routing aggregates it has folded and, per agent, the newest version of that agent's events, so a
redelivered or replayed event changes nothing. Events of the three contexts arrive in any order
relative to each other (different topics); each field has one source, so the fold commutes between
them. A fact's ``version`` counts the events folded into it, so a newer row always wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as routing_ev

from services.platform.envelope import Envelope

Row = dict[str, Any]

CONTACT, QUEUE_ENTRY, AGENT, QUEUE = "Contact", "QueueEntry", "Agent", "Queue"

_END = intake_ev.ContactEndReason
# The outcome of a visit that never was (an overflow routing decided after the caller had gone).
VOID = "void"
_STATE = agent_ev.AgentState


def enum_name(enum: Any, number: int, prefix: str) -> str:
    """``CHANNEL_VOICE`` -> ``voice``; 0 (unspecified) -> ``""``."""
    if not number:
        return ""
    return enum.Name(number).removeprefix(prefix).lower()


def channel_name(number: int) -> str:
    return enum_name(types_pb2.Channel, number, "CHANNEL_")


def state_name(number: int) -> str:
    return enum_name(_STATE, number, "AGENT_STATE_")


def reason_name(number: int) -> str:
    return enum_name(agent_ev.NotReadyReason, number, "NOT_READY_REASON_")


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0)


# contacts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    """One agent's part of a contact: talk and hold (from intake), wrap-up (from agents)."""

    answered_at: datetime | None = None
    ended_at: datetime | None = None
    hold_s: float = 0.0
    held_since: datetime | None = None
    transferred: bool = False
    wrap_started_at: datetime | None = None
    wrap_ended_at: datetime | None = None
    disposition: str = ""
    resolved: bool = False
    agent_version: int = 0  # the newest of this agent's events folded into the contact

    @property
    def wrapping(self) -> bool:
        return self.wrap_started_at is not None and self.wrap_ended_at is None


@dataclass(frozen=True)
class Visit:
    """One queue visit, from routing's events."""

    visit: int
    queue_id: str
    queued_at: datetime
    priority: int = 0
    vip: bool = False
    callback: bool = False
    offered_at: datetime | None = None
    offers: int = 0
    escalation_step: int = 0
    answered_at: datetime | None = None
    agent_id: str = ""
    skill_group: str = ""
    ended_at: datetime | None = None
    wait_s: float = 0.0
    outcome: str = ""


@dataclass(frozen=True)
class Offer:
    offer_id: str
    queue_id: str
    agent_id: str
    offered_at: datetime
    ended_at: datetime | None = None
    outcome: str = ""


@dataclass(frozen=True)
class ContactFold:
    """Everything the KPIs know of one contact."""

    contact_id: str
    intake_version: int = 0
    routing_version: int = 0
    agent_events: int = 0
    arrival: datetime | None = None
    channel: str = ""
    caller_hash: str = ""
    first_queue: str = ""
    routed: bool = False
    self_service: bool = False
    ended_at: datetime | None = None
    end_reason: str = ""
    legs: dict[str, Leg] = field(default_factory=dict)
    visits: tuple[Visit, ...] = ()
    offers: dict[str, Offer] = field(default_factory=dict)  # offers still ringing

    @property
    def version(self) -> int:
        return self.intake_version + self.routing_version + self.agent_events

    @property
    def closed(self) -> bool:
        """Ended, and no agent is still wrapping it up: nothing more is expected."""
        return self.ended_at is not None and not any(leg.wrapping for leg in self.legs.values())


def contact_of(envelope: Envelope) -> str:
    """The contact an event is about ("" when none): intake's and routing's key, or the agent's contact."""
    if envelope.aggregate_type in (CONTACT, QUEUE_ENTRY):
        return envelope.aggregate_id
    if envelope.event_type == "WrapUpCompleted":
        return envelope.payload.contact_id
    if envelope.event_type == "AgentStateChanged" and (
        envelope.payload.new_state == _STATE.AGENT_STATE_WRAP_UP
    ):
        return envelope.payload.contact_id
    return ""


def fold_contact(
    fold: ContactFold, envelope: Envelope, skill_group_of: Callable[[str], str] = lambda _agent: ""
) -> tuple[ContactFold, list[Offer]]:
    """The contact after one event, and the offers the event opened or settled (for offer facts).

    ``skill_group_of`` names an agent's skill group, recorded on the visit the agent answers.
    An event already folded returns the fold unchanged and no offers.
    """
    match envelope.aggregate_type:
        case "Contact":
            if envelope.aggregate_version <= fold.intake_version:
                return fold, []
            fold = _fold_intake(fold, envelope)
            return replace(fold, intake_version=envelope.aggregate_version), []
        case "QueueEntry":
            if envelope.aggregate_version <= fold.routing_version:
                return fold, []
            fold, offers = _fold_routing(fold, envelope, skill_group_of)
            return replace(fold, routing_version=envelope.aggregate_version), offers
        case "Agent":
            agent_id = envelope.aggregate_id
            leg = fold.legs.get(agent_id, Leg())
            if envelope.aggregate_version <= leg.agent_version:
                return fold, []
            leg = _fold_wrap_up(leg, envelope)
            leg = replace(leg, agent_version=envelope.aggregate_version)
            return replace(fold, legs={**fold.legs, agent_id: leg}, agent_events=fold.agent_events + 1), []
    return fold, []


def _fold_intake(fold: ContactFold, envelope: Envelope) -> ContactFold:
    event, at = envelope.payload, envelope.occurred_at
    match envelope.event_type:
        case "ContactStarted":
            return replace(
                fold, arrival=at, channel=channel_name(event.channel), caller_hash=event.caller.hash
            )
        case "IvrSelectionRecorded":
            if event.self_service_completed:
                return replace(fold, self_service=True)
        case "RoutingRequested":
            return replace(fold, routed=True, first_queue=fold.first_queue or event.queue_id)
        case "ContactAnswered":
            return _with_leg(fold, event.agent_id, answered_at=at, ended_at=None)
        case "ContactHeld":
            return _with_leg(fold, event.agent_id, held_since=at)
        case "ContactResumed":
            leg = fold.legs.get(event.agent_id, Leg())
            return _with_leg(fold, event.agent_id, held_since=None, hold_s=leg.hold_s + _held(leg, at))
        case "ContactTransferred":
            leg = fold.legs.get(event.from_agent_id, Leg())
            return _with_leg(
                fold, event.from_agent_id, ended_at=at, transferred=True, held_since=None,
                hold_s=leg.hold_s + _held(leg, at),
            )  # fmt: skip
        case "ContactEnded":
            # Telephony's moment of the end, when intake recorded one (a late report).
            at = event.ended_at.ToDatetime(UTC) if event.HasField("ended_at") else at
            fold = replace(fold, ended_at=at, end_reason=enum_name(_END, event.reason, "CONTACT_END_REASON_"))
            for agent_id, leg in fold.legs.items():
                if leg.answered_at is not None and leg.ended_at is None:
                    fold = _with_leg(
                        fold, agent_id, ended_at=at, held_since=None, hold_s=leg.hold_s + _held(leg, at)
                    )
            return fold
    return fold


def _held(leg: Leg, until: datetime) -> float:
    return _seconds(leg.held_since, until) if leg.held_since is not None else 0.0


def _with_leg(fold: ContactFold, agent_id: str, **changes: Any) -> ContactFold:
    leg = replace(fold.legs.get(agent_id, Leg()), **changes)
    return replace(fold, legs={**fold.legs, agent_id: leg})


def _fold_wrap_up(leg: Leg, envelope: Envelope) -> Leg:
    event = envelope.payload
    if envelope.event_type == "AgentStateChanged":
        return replace(leg, wrap_started_at=envelope.occurred_at, wrap_ended_at=None)
    if envelope.event_type == "WrapUpCompleted":
        return replace(
            leg,
            wrap_started_at=leg.wrap_started_at or envelope.occurred_at,
            wrap_ended_at=envelope.occurred_at,
            disposition=event.disposition_code,
            resolved=event.resolved,
        )
    return leg


_OFFER_OUTCOMES = {
    "OfferAccepted": "accepted",
    "OfferRejected": "rejected",
    "OfferTimedOut": "timed_out",
}


def _fold_routing(
    fold: ContactFold, envelope: Envelope, skill_group_of: Callable[[str], str]
) -> tuple[ContactFold, list[Offer]]:
    event, at, kind = envelope.payload, envelope.occurred_at, envelope.event_type
    if kind == "ContactQueued":
        if fold.visits and fold.visits[-1].visit >= event.visit:
            return fold, []
        visit = Visit(
            visit=event.visit,
            queue_id=event.queue_id,
            queued_at=at,
            priority=event.priority,
            vip=event.vip,
            callback=event.is_callback,
        )
        return replace(fold, visits=(*fold.visits, visit)), []
    if kind == "ContactOffered":
        offer = Offer(event.offer_id, event.queue_id, event.agent_id, at)
        fold = _with_visit(
            fold,
            lambda v: replace(
                v,
                offered_at=v.offered_at or at,
                offers=v.offers + 1,
                escalation_step=max(v.escalation_step, event.escalation_step),
            ),
        )
        return replace(fold, offers={**fold.offers, offer.offer_id: offer}), [offer]
    if kind in _OFFER_OUTCOMES or kind == "OfferWithdrawn":
        outcome = _OFFER_OUTCOMES.get(kind) or ("contact_ended" if event.contact_ended else "withdrawn")
        offer = fold.offers.get(event.offer_id)
        if offer is None:
            return fold, []
        settled = replace(offer, ended_at=at, outcome=outcome)
        rest = {key: value for key, value in fold.offers.items() if key != event.offer_id}
        return replace(fold, offers=rest), [settled]
    if kind == "OverflowVoided":
        return replace(fold, visits=tuple(_unoverflowed(v, event) for v in fold.visits)), []
    return _with_visit(fold, lambda v: _end_visit(v, kind, event, at, skill_group_of)), []


def _unoverflowed(visit: Visit, event: Any) -> Visit:
    """The caller had gone before the overflow: the visit it was in ends as the end says, in place of
    the overflow, and the visits after it up to ``last_visit`` are void (no visit at all)."""
    if event.visit < visit.visit <= event.last_visit:
        return replace(visit, answered_at=None, agent_id="", skill_group="", outcome=VOID)
    if visit.visit != event.visit:
        return visit
    return replace(
        visit,
        answered_at=None,
        agent_id="",
        skill_group="",
        ended_at=event.ended_at.ToDatetime(UTC),
        wait_s=event.waited.ToTimedelta().total_seconds(),
        outcome=_ended_outcome(event),
    )


def _ended_outcome(event: Any) -> str:
    """A visit ended by the contact's end: abandoned (short or not) by the caller, else disconnected."""
    if event.end_reason in (_END.CONTACT_END_REASON_CALLER, _END.CONTACT_END_REASON_UNSPECIFIED):
        return "short_abandon" if event.short_abandon else "abandoned"
    return "disconnected"


def _end_visit(
    visit: Visit, kind: str, event: Any, at: datetime, skill_group_of: Callable[[str], str]
) -> Visit:
    live_wait = _seconds(visit.queued_at, at)
    match kind:
        case "EscalationStepReached":
            return replace(visit, escalation_step=max(visit.escalation_step, event.step))
        case "ContactConnected":
            wait = visit.wait_s if visit.callback else event.waited.ToTimedelta().total_seconds()
            return replace(
                visit,
                answered_at=at,
                agent_id=event.agent_id,
                skill_group=skill_group_of(event.agent_id),
                wait_s=wait,
                outcome="answered",
            )
        case "ContactAbandoned":
            outcome = "short_abandon" if event.short_abandon else "abandoned"
            wait = event.waited.ToTimedelta().total_seconds()
            return replace(visit, ended_at=at, wait_s=wait, outcome=outcome)
        case "ContactOverflowed":
            wait = event.waited.ToTimedelta().total_seconds()
            return replace(visit, ended_at=at, wait_s=wait, outcome="overflowed")
        case "CallbackScheduled":
            return replace(
                visit, callback=True, wait_s=0.0 if visit.callback else live_wait, outcome="callback"
            )
        case "CallbackCancelled":
            return replace(visit, ended_at=at, outcome="callback_cancelled")
        case "ContactDisconnected":
            return replace(visit, ended_at=at, wait_s=live_wait, outcome="disconnected")
        case "ConnectionVoided":
            # The accept came after the contact had ended: the visit was not answered after all.
            outcome = _ended_outcome(event)
            wait = event.waited.ToTimedelta().total_seconds()
            return replace(
                visit,
                answered_at=None,
                agent_id="",
                skill_group="",
                ended_at=at,
                wait_s=wait,
                outcome=outcome,
            )
    return visit


def _with_visit(fold: ContactFold, change: Callable[[Visit], Visit]) -> ContactFold:
    if not fold.visits:
        return fold
    return replace(fold, visits=(*fold.visits[:-1], change(fold.visits[-1])))


def contact_rows(fold: ContactFold, skill_group_of: Callable[[str], str] = lambda _agent: "") -> list[Row]:
    """The contact's facts: visit 0 (the contact) and one per queue visit; none before its arrival.

    A visit answered before its agent's skills were folded (topics read in another order) takes the
    agent's skill group from ``skill_group_of`` now.
    """
    if fold.arrival is None:
        return []
    if fold.self_service:
        outcome = "self_service" if fold.ended_at is not None else ""
    elif fold.routed:
        outcome = "routed"
    else:
        outcome = "ivr_abandon" if fold.ended_at is not None else ""
    rows = [_row(fold, 0, fold.first_queue, queued_at=None, ended_at=fold.ended_at, outcome=outcome)]
    for visit in fold.visits:
        leg = fold.legs.get(visit.agent_id, Leg()) if visit.agent_id else Leg()
        answered = visit.answered_at is not None
        ended_at = visit.ended_at or (leg.ended_at if answered else None)
        talk = _seconds(leg.answered_at, leg.ended_at) - leg.hold_s if leg.ended_at else 0.0
        rows.append(
            _row(
                fold,
                visit.visit,
                visit.queue_id,
                queued_at=visit.queued_at,
                offered_at=visit.offered_at,
                answered_at=visit.answered_at,
                ended_at=ended_at,
                wait_s=round(visit.wait_s, 3),
                talk_s=round(max(talk, 0.0), 3) if answered else 0.0,
                hold_s=round(leg.hold_s, 3) if answered else 0.0,
                wrap_s=round(_seconds(leg.wrap_started_at, leg.wrap_ended_at), 3) if answered else 0.0,
                outcome=visit.outcome,
                agent_id=visit.agent_id,
                skill_group=visit.skill_group or (skill_group_of(visit.agent_id) if visit.agent_id else ""),
                priority=min(visit.priority, 255),
                escalation_step=min(visit.escalation_step, 255),
                offers=visit.offers,
                disposition=leg.disposition if answered else "",
                resolved=leg.resolved if answered else False,
                transferred=leg.transferred if answered else False,
                callback=visit.callback,
                vip=visit.vip,
            )
        )
    return rows


def _row(fold: ContactFold, visit: int, queue_id: str, **values: Any) -> Row:
    row: Row = {
        "fact_id": f"{fold.contact_id}:{visit}",
        "contact_id": fold.contact_id,
        "visit": visit,
        "queue_id": queue_id,
        "channel": fold.channel,
        "arrival": fold.arrival,
        "queued_at": None,
        "offered_at": None,
        "answered_at": None,
        "ended_at": None,
        "wait_s": 0.0,
        "talk_s": 0.0,
        "hold_s": 0.0,
        "wrap_s": 0.0,
        "outcome": "",
        "agent_id": "",
        "skill_group": "",
        "priority": 0,
        "escalation_step": 0,
        "offers": 0,
        "disposition": "",
        "resolved": False,
        "caller_hash": fold.caller_hash,
        "transferred": False,
        "callback": False,
        "vip": False,
        "version": fold.version,
    }
    row.update(values)
    return row


def offer_row(offer: Offer, contact_id: str) -> Row:
    return {
        "offer_id": offer.offer_id,
        "contact_id": contact_id,
        "queue_id": offer.queue_id,
        "agent_id": offer.agent_id,
        "offered_at": offer.offered_at,
        "ended_at": offer.ended_at,
        "ring_s": round(_seconds(offer.offered_at, offer.ended_at), 3),
        "outcome": offer.outcome,
        "version": 2 if offer.outcome else 1,
    }


# agents -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentFold:
    """An agent as the KPIs see it: skills, and the state interval it is in."""

    agent_id: str
    version: int = 0
    skill_groups: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    state: str = "logged_out"
    reason: str = ""
    since: datetime | None = None
    queue_id: str = ""
    contact_id: str = ""
    interval_group: str = ""  # the skill group when the current interval began

    @property
    def skill_group(self) -> str:
        return self.skill_groups[0] if self.skill_groups else ""

    @property
    def logged_in(self) -> bool:
        return self.state != "logged_out"


def fold_agent(fold: AgentFold, envelope: Envelope) -> tuple[AgentFold, list[Row]]:
    """The agent after one of its events, and the interval rows it closed or opened."""
    if envelope.aggregate_version <= fold.version:
        return fold, []
    event, at = envelope.payload, envelope.occurred_at
    fold = replace(fold, version=envelope.aggregate_version)
    match envelope.event_type:
        case "AgentLoggedIn" | "AgentSkillsChanged":
            return replace(
                fold,
                skill_groups=tuple(event.skill_groups),
                skills=tuple(skill.skill for skill in event.skills),
            ), []
        case "AgentStateChanged":
            rows = []
            if fold.since is not None and fold.logged_in:
                rows.append(_interval_row(fold, ended_at=at))
            fold = replace(
                fold,
                state=state_name(event.new_state),
                reason=reason_name(event.reason) if event.new_state == _STATE.AGENT_STATE_NOT_READY else "",
                since=at,
                queue_id=event.queue_id,
                contact_id=event.contact_id,
            )
            fold = replace(fold, interval_group=fold.skill_group)
            if fold.logged_in:
                rows.append(_interval_row(fold, ended_at=None))
            return fold, rows
    return fold, []


def _interval_row(fold: AgentFold, ended_at: datetime | None) -> Row:
    assert fold.since is not None
    return {
        "interval_id": f"{fold.agent_id}:{int(fold.since.timestamp() * 1000)}",
        "agent_id": fold.agent_id,
        "state": fold.state,
        "reason": fold.reason,
        "started_at": fold.since,
        "ended_at": ended_at,
        "duration_s": round(_seconds(fold.since, ended_at), 3),
        "queue_id": fold.queue_id,
        "skill_group": fold.interval_group,
        "contact_id": fold.contact_id,
        "version": 2 if ended_at is not None else 1,
    }


# queues -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFold:
    """What the live board needs of a queue: the skills its contacts need."""

    queue_id: str
    skills: tuple[str, ...] = ()


DEFAULT_SERVICE_LEVEL_S = 20.0
DEFAULT_SERVICE_LEVEL_PERCENT = 80


def queue_settings_row(envelope: Envelope) -> Row:
    """A queue's KPI settings from its QueueUpserted: service-level target and short-abandon threshold."""
    config: routing_ev.QueueConfig = envelope.payload.config
    target = config.service_level
    threshold = target.threshold.ToTimedelta().total_seconds() if target.HasField("threshold") else 0.0
    return {
        "queue_id": config.queue_id,
        "name": config.name or config.queue_id,
        "sl_threshold_s": threshold or DEFAULT_SERVICE_LEVEL_S,
        "sl_target_percent": min(target.percent or DEFAULT_SERVICE_LEVEL_PERCENT, 100),
        "short_abandon_s": config.short_abandon_threshold.ToTimedelta().total_seconds(),
        "skills": [skill.skill for skill in config.required_skills],
        "version": envelope.aggregate_version,
    }
