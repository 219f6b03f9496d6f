"""The ACD's decisions, pure: given an entry and the board, when something happens, then these events."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.common.v1 import types_pb2
from callcenter.routing.v1 import events_pb2 as ev

from services.platform.envelope import Cause, EventRegistry, make_envelope
from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.eventstore import Deadline
from services.routing import domain
from services.routing.domain import Entry, Queue, Seat, Status
from services.routing.selection import requirement_at_step

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
VOICE, CHAT = types_pb2.Channel.CHANNEL_VOICE, types_pb2.Channel.CHANNEL_CHAT
A = agent_ev.AgentState
REGISTRY = EventRegistry.of(ev, agent_ev)


def config(queue_id: str = "billing", **fields) -> ev.QueueConfig:
    steps = fields.pop("steps", [])
    message = ev.QueueConfig(
        queue_id=queue_id,
        required_skills=[types_pb2.SkillLevel(skill="billing", proficiency=4)],
        priority=fields.pop("priority", 10),
        **fields,
    )
    for after, extra in steps:
        step = message.escalation_steps.add(**extra)
        step.after.FromSeconds(after)
    return domain.checked_config(message)


def queue(queue_id: str = "billing", **fields) -> Queue:
    return Queue(queue_id, config(queue_id, **fields))


def seat(agent_id: str, state=A.AGENT_STATE_READY, idle_s: float = 0, chat_capacity=0, **skills) -> Seat:
    return Seat(
        agent_id,
        state=state,
        state_since=T0 - timedelta(seconds=idle_s),
        skills=tuple(skills.items()) or (("billing", 4),),
        chat_capacity=chat_capacity,
    )


@dataclass
class FakeBoard:
    """A board as the decisions see it: queues, seats and who waits where."""

    queues: dict[str, Queue] = field(default_factory=dict)
    seats: dict[str, Seat] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[datetime, timedelta]] = field(default_factory=list)

    def queue(self, queue_id: str) -> Queue | None:
        return self.queues.get(queue_id)

    def waiting_count(self, queue_id: str) -> int:
        return self.waiting.get(queue_id, 0)

    def position(self, queue_id: str, priority: int, queued_at: datetime) -> int:
        return self.waiting.get(queue_id, 0) + 1

    def agents_able(self, queue: Queue) -> int:
        return sum(1 for s in self.seats.values() if s.logged_in)

    def seat(self, agent_id: str) -> Seat | None:
        return self.seats.get(agent_id)

    def estimate(self, queue_id: str, position: int, now: datetime) -> timedelta | None:
        return timedelta(seconds=30 * position)


def board(*queues: Queue, seats: tuple[Seat, ...] | None = None) -> FakeBoard:
    seats = (seat("a-1"),) if seats is None else seats
    return FakeBoard({q.queue_id: q for q in queues}, {s.agent_id: s for s in seats})


def fold(entry: Entry, events, at: datetime = T0) -> Entry:
    for n, payload in enumerate(events, start=1):
        envelope = make_envelope(
            payload,
            registry=REGISTRY,
            aggregate_type="QueueEntry",
            aggregate_id=entry.contact_id,
            aggregate_version=n,
            occurred_at=at,
            cause=Cause.request("test"),
        )
        entry = domain.evolve_entry(entry, envelope)
    return entry


def joined(look: FakeBoard, queue_id: str = "billing", **fields) -> Entry:
    command = domain.Join("c-1", queue_id, VOICE, T0, **fields)
    return fold(Entry("c-1"), domain.join(Entry("c-1"), command, look))


# Queue configuration ------------------------------------------------------------------------------


def test_a_new_queue_gets_the_usual_defaults() -> None:
    checked = config()
    assert (checked.service_level.percent, checked.service_level.threshold.seconds) == (80, 20)
    assert checked.ring_timeout.seconds == 20
    assert checked.strategy == ev.SelectionStrategy.SELECTION_STRATEGY_LONGEST_IDLE
    assert checked.missed_offer_reason == "missed_offer"
    assert checked.fallback == ev.FallbackOutcome.FALLBACK_OUTCOME_DISCONNECT


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"priority": 100}, "priority must be 1 to 99, not 100"),
        ({"fallback": ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW}, "overflow needs a fallback_queue_id"),
        ({"steps": [(30, {}), (20, {})]}, "step 2 must come after the step before it"),
        ({"steps": [(30, {"overflow_queue_id": "billing"})]}, "cannot overflow into the queue itself"),
        ({"missed_offer_reason": "nap"}, "'nap' is not one of break, coaching, lunch"),
        ({"wrap_up_mode": ev.WrapUpMode.WRAP_UP_MODE_FORCED_DURATION}, "needs a wrap_up_time"),
    ],
)
def test_a_queue_configuration_that_cannot_work_is_refused_saying_why(fields, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        config(**fields)


def test_a_bad_queue_id_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="queue_id 'bad id!' must be"):
        domain.checked_config(ev.QueueConfig(queue_id="bad id!"))


def test_a_stale_expected_version_is_refused_and_an_unchanged_config_appends_nothing() -> None:
    current = queue()
    with pytest.raises(
        FailedPrecondition, match="is at version 3, but the change was made against version 2"
    ):
        domain.upsert(current, domain.UpsertQueue(config(), 2, 3))
    with pytest.raises(FailedPrecondition, match="does not exist; create it with expected_version 0"):
        domain.upsert(Queue("billing"), domain.UpsertQueue(config(), 4, 0))
    assert domain.upsert(current, domain.UpsertQueue(config(), 3, 3)) == []


# Joining ------------------------------------------------------------------------------------------


def test_a_contact_joins_with_the_queue_priority_its_boosts_and_a_position_and_estimate() -> None:
    look = board(queue(vip_priority_boost=20))
    look.waiting["billing"] = 2

    [queued] = domain.join(
        Entry("c-1"), domain.Join("c-1", "billing", VOICE, T0, priority_boost=5, vip=True), look
    )

    assert (queued.priority, queued.position, queued.visit) == (35, 3, 1)
    assert queued.estimated_wait.seconds == 90
    assert [(s.skill, s.proficiency) for s in queued.required_skills] == [("billing", 4)]


def test_a_contact_needing_a_language_needs_it_on_top_of_the_queue_skills() -> None:
    look = board(queue())
    [queued] = domain.join(
        Entry("c-1"), domain.Join("c-1", "billing", VOICE, T0, skills=[("lang.fr", 3)]), look
    )
    assert [(s.skill, s.proficiency) for s in queued.required_skills] == [("billing", 4), ("lang.fr", 3)]


def test_an_unknown_queue_refuses_the_contact_which_is_disconnected() -> None:
    [refused] = domain.join(Entry("c-1"), domain.Join("c-1", "nowhere", VOICE, T0), board())
    assert refused.reason == "queue nowhere does not exist"
    assert refused.outcome == ev.FallbackOutcome.FALLBACK_OUTCOME_DISCONNECT


def test_a_full_queue_overflows_the_contact_to_its_fallback_queue() -> None:
    look = board(
        queue(
            max_queue_length=2,
            fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW,
            fallback_queue_id="spill",
        ),
        queue("spill"),
    )
    look.waiting["billing"] = 2

    refused, queued = domain.join(Entry("c-1"), domain.Join("c-1", "billing", VOICE, T0), look)

    assert refused.reason == "queue billing is full (2 waiting, at most 2)"
    assert (refused.outcome, refused.overflow_queue_id) == (
        ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW,
        "spill",
    )
    assert (queued.queue_id, queued.visit) == ("spill", 1)


def test_a_queue_that_refuses_to_join_empty_sends_the_contact_to_voicemail_with_no_agent_logged_in() -> None:
    look = board(
        queue(
            empty_queue_rule=ev.EmptyQueueRule.EMPTY_QUEUE_RULE_REFUSE_JOIN,
            fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_VOICEMAIL,
        ),
        seats=(),
    )
    [refused] = domain.join(Entry("c-1"), domain.Join("c-1", "billing", VOICE, T0), look)
    assert refused.reason == "no agent able to serve queue billing is logged in"
    assert refused.outcome == ev.FallbackOutcome.FALLBACK_OUTCOME_VOICEMAIL


def test_overflow_that_goes_round_in_circles_ends_in_a_disconnect() -> None:
    overflow = {"fallback": ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW, "max_queue_length": 1}
    look = board(queue("a", fallback_queue_id="b", **overflow), queue("b", fallback_queue_id="a", **overflow))
    look.waiting.update(a=1, b=1)

    events = domain.join(Entry("c-1"), domain.Join("c-1", "a", VOICE, T0), look)

    assert [e.queue_id for e in events] == ["a", "b", "a", "b", "a", "b"]
    assert events[-1].outcome == ev.FallbackOutcome.FALLBACK_OUTCOME_DISCONNECT
    assert "it already overflowed 5 times" in events[-1].reason


def test_a_transfer_to_an_agent_who_is_not_logged_in_goes_to_the_queue() -> None:
    look = board(queue())
    [queued] = domain.join(
        Entry("c-1"), domain.Join("c-1", "billing", VOICE, T0, target_agent_id="gone"), look
    )
    assert queued.target_agent_id == ""


def test_a_second_request_for_the_same_queue_changes_nothing_and_for_another_is_refused() -> None:
    look = board(queue(), queue("sales"))
    entry = joined(look)
    assert domain.join(entry, domain.Join("c-1", "billing", VOICE, T0), look) == []
    with pytest.raises(FailedPrecondition, match="contact c-1 is waiting in queue billing; it cannot join"):
        domain.join(entry, domain.Join("c-1", "sales", VOICE, T0), look)


# Waiting: escalation, maximum wait, abandon, callback -----------------------------------------------


def test_escalation_steps_are_reached_in_time_and_an_overflow_step_moves_the_contact() -> None:
    steps = [(30, {"min_proficiency": 2}), (60, {"priority_boost": 5}), (90, {"overflow_queue_id": "spill"})]
    look = board(queue(steps=steps), queue("spill"))
    entry = joined(look)
    assert entry.next_step_at == T0 + timedelta(seconds=30)

    [step_1] = domain.on_deadline(
        entry, Deadline("step", entry.next_step_at), T0 + timedelta(seconds=30), look
    )
    entry = fold(entry, [step_1])
    assert (entry.step, entry.next_step_at) == (1, T0 + timedelta(seconds=60))
    assert requirement_at_step(dict(entry.skills), look.queues["billing"].steps, entry.step).skills == {
        "billing": 2
    }

    late = T0 + timedelta(seconds=95)
    step_2, overflowed, queued = domain.on_deadline(entry, Deadline("step", entry.next_step_at), late, look)
    assert (step_2.step, step_2.priority_boost) == (2, 5)
    assert (overflowed.to_queue_id, overflowed.reason) == (
        "spill",
        ev.OverflowReason.OVERFLOW_REASON_ESCALATION_STEP,
    )
    assert (queued.queue_id, queued.visit, queued.queued_at.ToDatetime(tzinfo=UTC)) == ("spill", 2, T0)


def test_an_overflow_step_past_the_hop_limit_disconnects_without_claiming_an_overflow() -> None:
    look = board(queue(steps=[(30, {"overflow_queue_id": "spill"})]), queue("spill"))
    entry = replace(joined(look), hops=domain.MAX_OVERFLOW_HOPS)

    [disconnected] = domain.on_deadline(
        entry, Deadline("step", entry.next_step_at), T0 + timedelta(seconds=30), look
    )

    assert type(disconnected).__name__ == "ContactDisconnected"
    assert "already overflowed 5 times" in disconnected.reason


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        (ev.FallbackOutcome.FALLBACK_OUTCOME_VOICEMAIL, "ContactDisconnected"),
        (ev.FallbackOutcome.FALLBACK_OUTCOME_OFFER_CALLBACK, "CallbackOffered"),
    ],
)
def test_the_maximum_wait_gives_the_queue_fallback(fallback, expected) -> None:
    look = board(queue(fallback=fallback, max_wait={"seconds": 120}))
    entry = joined(look)
    assert entry.max_wait_at == T0 + timedelta(seconds=120)

    [event] = domain.on_deadline(entry, Deadline("max_wait", entry.max_wait_at), entry.max_wait_at, look)

    assert type(event).__name__ == expected
    assert "max_wait" not in {d.name for d in domain.entry_deadlines(fold(entry, [event]))}, "fires once"


def test_no_deadline_is_listed_while_an_offer_rings() -> None:
    look = board(queue(steps=[(30, {})], max_wait={"seconds": 60}))
    entry = joined(look)
    assert {d.name for d in domain.entry_deadlines(entry)} == {"step", "max_wait"}
    assert domain.entry_deadlines(replace(entry, status=Status.OFFERED)) == []


def test_a_caller_hanging_up_while_queued_or_ringing_is_an_abandon_short_ones_marked() -> None:
    look = board(queue())
    entry = joined(look)
    quick = domain.ContactGone(
        "c-1", domain.EndReason.CONTACT_END_REASON_CALLER, "", T0 + timedelta(seconds=3)
    )
    [abandoned] = domain.contact_ended(entry, quick, look.queue)
    assert (abandoned.stage, abandoned.short_abandon) == (ev.AbandonStage.ABANDON_STAGE_QUEUED, True)

    ringing = replace(entry, status=Status.OFFERED)
    later = replace(quick, now=T0 + timedelta(seconds=40))
    [abandoned] = domain.contact_ended(ringing, later, look.queue)
    assert (abandoned.stage, abandoned.short_abandon) == (ev.AbandonStage.ABANDON_STAGE_RINGING, False)


def test_a_callback_keeps_the_place_and_is_not_an_abandon_when_the_caller_hangs_up() -> None:
    look = board(queue(callback_priority_boost=7, max_wait={"seconds": 60}))
    entry = joined(look)
    request = domain.RequestCallback("c-1", T0 + timedelta(seconds=10), not_before=T0 + timedelta(minutes=5))

    [scheduled] = domain.request_callback(entry, request, look)
    entry = fold(entry, [scheduled], at=T0 + timedelta(seconds=10))

    assert (entry.is_callback, entry.priority, entry.queued_at, entry.max_wait_at) == (True, 17, T0, None)
    assert not entry.routable(T0 + timedelta(minutes=4))
    assert entry.routable(T0 + timedelta(minutes=5))
    hung_up = domain.ContactGone("c-1", domain.EndReason.CONTACT_END_REASON_CALLBACK_ACCEPTED, "", T0)
    assert domain.contact_ended(entry, hung_up, look.queue) == []


def test_a_contact_refused_at_a_full_queue_can_still_ask_for_a_callback() -> None:
    look = board(queue(max_queue_length=1, fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_OFFER_CALLBACK))
    look.waiting["billing"] = 1
    entry = joined(look)
    assert (entry.status, entry.outcome) == (Status.LEFT, "refused")

    queued, scheduled = domain.request_callback(entry, domain.RequestCallback("c-1", T0), look)

    assert (queued.is_callback, queued.reason, scheduled.queue_id) == (True, "callback", "billing")
    assert fold(entry, [queued, scheduled]).status == Status.WAITING


# Offers -------------------------------------------------------------------------------------------


def _offered(look: FakeBoard, agent_id: str = "a-1") -> Entry:
    entry = joined(look)
    match = domain.Match("c-1", agent_id, (), domain.Requirement({}))
    return fold(entry, domain.offer(entry, match, look.queue("billing"), T0 + timedelta(seconds=5)))


def test_an_offer_carries_the_queue_rules_and_an_id_unique_to_the_visit() -> None:
    look = board(queue(ring_timeout={"seconds": 15}, missed_offer_reason="break"))
    entry = joined(look)
    [offered] = domain.offer(
        entry, domain.Match("c-1", "a-1", (), domain.Requirement({})), look.queue("billing"), T0
    )
    assert offered.offer_id.startswith("c-1:1:1:"), "contact, visit, offer number, and when the visit began"
    assert offered.ring_deadline.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=15)
    assert offered.missed_offer_reason == "break"


def test_an_accepted_offer_connects_the_contact_with_its_wait() -> None:
    look = board(queue())
    entry = _offered(look)
    accepted = domain.OfferEnded(
        "c-1",
        "a-1",
        entry.offer.offer_id,
        domain.Outcome.OFFER_OUTCOME_ACCEPTED,
        "",
        T0 + timedelta(seconds=9),
    )

    events = domain.offer_ended(entry, accepted, look.queue)

    assert [type(e).__name__ for e in events] == ["OfferAccepted", "ContactConnected"]
    assert events[1].waited.seconds == 9
    assert domain.entry_closed(fold(entry, events))


def test_a_rejected_offer_puts_the_contact_back_and_skips_that_agent_for_the_reject_delay() -> None:
    look = board(queue(reject_delay={"seconds": 30}))
    entry = _offered(look)
    rejected = domain.OfferEnded(
        "c-1", "a-1", entry.offer.offer_id, domain.Outcome.OFFER_OUTCOME_REJECTED, "busy", T0
    )

    entry = fold(entry, domain.offer_ended(entry, rejected, look.queue))

    assert (entry.status, entry.offer) == (Status.WAITING, None)
    assert entry.skipped("a-1", T0 + timedelta(seconds=29))
    assert not entry.skipped("a-1", T0 + timedelta(seconds=30))


def test_an_offer_outcome_for_another_offer_changes_nothing() -> None:
    look = board(queue())
    entry = _offered(look)
    stale = domain.OfferEnded("c-1", "a-1", "another-offer", domain.Outcome.OFFER_OUTCOME_ACCEPTED, "", T0)
    assert domain.offer_ended(entry, stale, look.queue) == []


def test_the_caller_hanging_up_while_it_rings_waits_for_the_agents_verdict_then_is_an_abandon() -> None:
    look = board(queue())
    entry = _offered(look)
    gone = domain.ContactGone(
        "c-1", domain.EndReason.CONTACT_END_REASON_CALLER, "", T0 + timedelta(seconds=8)
    )
    [noted] = domain.contact_ended(entry, gone, look.queue)
    entry = fold(entry, [noted])
    assert isinstance(noted, ev.ContactEndedWhileOffered)
    assert (noted.agent_id, noted.ended_at.ToDatetime(UTC)) == ("a-1", T0 + timedelta(seconds=8))
    assert (entry.status, entry.offer is not None, domain.entry_closed(entry)) == (
        Status.OFFERED,
        True,
        False,
    )

    withdrawn = domain.OfferEnded(
        "c-1",
        "a-1",
        entry.offer.offer_id,
        domain.Outcome.OFFER_OUTCOME_CONTACT_ENDED,
        "gone",
        T0 + timedelta(seconds=9),
    )
    events = domain.offer_ended(entry, withdrawn, look.queue)
    entry = fold(entry, events)
    assert [type(e).__name__ for e in events] == ["OfferWithdrawn", "ContactAbandoned"]
    assert events[1].stage == ev.AbandonStage.ABANDON_STAGE_RINGING
    assert events[1].waited.ToTimedelta() == timedelta(seconds=8)
    assert (entry.status, entry.offer, domain.entry_closed(entry)) == (Status.LEFT, None, True)


def test_an_accept_read_after_the_contacts_end_still_makes_the_visit_answered() -> None:
    look = board(queue())
    entry = _offered(look)
    gone = domain.ContactGone(
        "c-1", domain.EndReason.CONTACT_END_REASON_AGENT, "", T0 + timedelta(seconds=40)
    )
    entry = fold(entry, domain.contact_ended(entry, gone, look.queue))

    accepted = domain.OfferEnded(
        "c-1",
        "a-1",
        entry.offer.offer_id,
        domain.Outcome.OFFER_OUTCOME_ACCEPTED,
        "",
        T0 + timedelta(seconds=7),
    )
    events = domain.offer_ended(entry, accepted, look.queue)

    assert [type(e).__name__ for e in events] == ["OfferAccepted", "ContactConnected"]
    assert events[1].waited.ToTimedelta() == timedelta(seconds=7), (
        "the wait ends at the accept, not when heard"
    )
    assert fold(entry, events).status == Status.CONNECTED


def test_a_rejection_before_the_end_makes_the_end_an_abandon_in_the_queue() -> None:
    look = board(queue())
    entry = _offered(look)
    gone = domain.ContactGone(
        "c-1", domain.EndReason.CONTACT_END_REASON_CALLER, "", T0 + timedelta(seconds=30)
    )
    entry = fold(entry, domain.contact_ended(entry, gone, look.queue))

    rejected = domain.OfferEnded(
        "c-1",
        "a-1",
        entry.offer.offer_id,
        domain.Outcome.OFFER_OUTCOME_REJECTED,
        "busy",
        T0 + timedelta(seconds=6),
    )
    events = domain.offer_ended(entry, rejected, look.queue)

    assert [type(e).__name__ for e in events] == ["OfferRejected", "ContactAbandoned"]
    assert events[1].stage == ev.AbandonStage.ABANDON_STAGE_QUEUED
    assert events[1].waited.ToTimedelta() == timedelta(seconds=30)


def test_a_telephony_end_heard_while_it_rang_is_a_disconnect_once_the_offer_is_settled() -> None:
    look = board(queue())
    entry = _offered(look)
    gone = domain.ContactGone(
        "c-1", domain.EndReason.CONTACT_END_REASON_SYSTEM, "trunk down", T0 + timedelta(seconds=9)
    )
    entry = fold(entry, domain.contact_ended(entry, gone, look.queue))
    timed_out = domain.OfferEnded(
        "c-1",
        "a-1",
        entry.offer.offer_id,
        domain.Outcome.OFFER_OUTCOME_TIMED_OUT,
        "",
        T0 + timedelta(seconds=25),
    )

    events = domain.offer_ended(entry, timed_out, look.queue)

    assert [type(e).__name__ for e in events] == ["OfferTimedOut", "ContactDisconnected"]
    assert "trunk down" in events[1].reason


# The router ---------------------------------------------------------------------------------------


def waiting(
    contact_id: str, queue_id: str = "billing", priority: int = 10, waited_s: int = 0, **fields
) -> Entry:
    return Entry(
        contact_id,
        Status.WAITING,
        queue_id,
        visit=1,
        priority=priority,
        skills=(("billing", 4),),
        queued_at=T0 - timedelta(seconds=waited_s),
        entered_at=T0 - timedelta(seconds=waited_s),
        **fields,
    )


def test_the_router_serves_priority_first_then_the_longest_waiting() -> None:
    queues = {"billing": queue()}
    entries = [waiting("old", waited_s=90), waiting("vip", priority=50), waiting("older", waited_s=120)]

    matches = domain.plan(entries, [seat("a-1"), seat("a-2")], queues, {}, T0)

    assert [m.contact_id for m in matches] == ["vip", "older"]


def test_the_router_gives_the_longest_idle_agent_and_explains_the_choice() -> None:
    queues = {"billing": queue()}
    [match] = domain.plan([waiting("c-1")], [seat("a-1", idle_s=10), seat("a-2", idle_s=60)], queues, {}, T0)
    assert match.agent_id == "a-2"
    assert [(r.agent_id, r.rank, r.idle_for.seconds) for r in match.ranked] == [
        ("a-2", 1, 60),
        ("a-1", 2, 10),
    ]


def test_the_router_never_gives_one_agent_two_contacts_at_once() -> None:
    queues = {"billing": queue(), "sales": queue("sales")}
    matches = domain.plan([waiting("c-1"), waiting("c-2", "sales")], [seat("a-1")], queues, {}, T0)
    assert [(m.contact_id, m.agent_id) for m in matches] == [("c-1", "a-1")]


def test_an_agent_below_the_proficiency_waits_until_the_step_that_relaxes_it() -> None:
    queues = {"billing": queue(steps=[(30, {"min_proficiency": 2})])}
    novice = seat("a-1", billing=2)
    assert domain.plan([waiting("c-1")], [novice], queues, {}, T0) == []
    [match] = domain.plan([waiting("c-1", step=1)], [novice], queues, {}, T0)
    assert match.agent_id == "a-1"


def test_skipped_agents_and_other_agents_than_a_transfer_target_are_passed_over() -> None:
    queues = {"billing": queue()}
    skipped = waiting("c-1", skips=(("a-2", T0 + timedelta(seconds=5)),))
    [match] = domain.plan([skipped], [seat("a-1", idle_s=1), seat("a-2", idle_s=99)], queues, {}, T0)
    assert match.agent_id == "a-1"
    targeted = waiting("c-2", target_agent_id="a-1")
    [match] = domain.plan([targeted], [seat("a-1", idle_s=1), seat("a-2", idle_s=99)], queues, {}, T0)
    assert match.agent_id == "a-1"


def test_chats_go_to_agents_with_a_free_chat_slot_and_voice_only_to_idle_agents() -> None:
    queues = {"billing": queue()}
    chatting = replace(seat("a-1", A.AGENT_STATE_ON_CONTACT, chat_capacity=2), contacts=(("x", CHAT),))
    full = replace(seat("a-2", A.AGENT_STATE_ON_CONTACT, chat_capacity=1), contacts=(("y", CHAT),))
    assert [
        m.agent_id for m in domain.plan([waiting("c-1", channel=CHAT)], [chatting, full], queues, {}, T0)
    ] == ["a-1"]
    assert domain.plan([waiting("c-2")], [chatting, full], queues, {}, T0) == []


def test_a_callback_not_yet_due_is_not_routed() -> None:
    queues = {"billing": queue()}
    later = waiting("c-1", is_callback=True, callback_not_before=T0 + timedelta(minutes=1))
    assert domain.plan([later], [seat("a-1")], queues, {}, T0) == []


# Routing's view of an agent -----------------------------------------------------------------------


def _agent_event(payload, version: int, at: datetime = T0):
    return make_envelope(
        payload,
        registry=REGISTRY,
        aggregate_type="Agent",
        aggregate_id="a-1",
        aggregate_version=version,
        occurred_at=at,
        cause=Cause.request("test"),
    )


def test_a_seat_follows_the_agent_through_a_contact_and_counts_its_day() -> None:
    changes = [
        agent_ev.AgentLoggedIn(agent_id="a-1", skills=[types_pb2.SkillLevel(skill="billing", proficiency=4)]),
        agent_ev.AgentStateChanged(previous_state=A.AGENT_STATE_LOGGED_OUT, new_state=A.AGENT_STATE_READY),
        agent_ev.AgentStateChanged(
            previous_state=A.AGENT_STATE_READY,
            new_state=A.AGENT_STATE_RESERVED,
            offer_id="o",
            contact_id="c",
            channel=VOICE,
        ),
        agent_ev.AgentStateChanged(
            previous_state=A.AGENT_STATE_RESERVED,
            new_state=A.AGENT_STATE_ON_CONTACT,
            offer_id="o",
            contact_id="c",
            offer_outcome=agent_ev.OfferOutcome.OFFER_OUTCOME_ACCEPTED,
        ),
        agent_ev.AgentStateChanged(
            previous_state=A.AGENT_STATE_ON_CONTACT, new_state=A.AGENT_STATE_WRAP_UP, contact_id="c"
        ),
    ]
    current = Seat("a-1")
    for version, change in enumerate(changes, start=1):
        current = domain.seat_after(
            current, _agent_event(change, version, T0 + timedelta(seconds=10 * version))
        )
        if version == 3:
            assert not current.can_take_any, "reserved"
        if version == 4:
            assert current.contacts == (("c", VOICE),)

    assert (current.state, current.contacts, current.contacts_today) == (A.AGENT_STATE_WRAP_UP, (), 1)
    assert current.talk_today == timedelta(seconds=10)
    assert domain.seat_after(current, _agent_event(changes[1], 2)) == current, (
        "an event applied twice counts once"
    )


# An end read after a late overflow ------------------------------------------------------------------


def _overflowed_late(look: FakeBoard) -> Entry:
    """Queued at T0 in billing (maximum wait 60 s, overflow to spill); routing fires the maximum wait
    only at T0+90 s (it could not write before), and the contact is in spill from then."""
    entry = joined(look)
    late = T0 + timedelta(seconds=90)
    events = domain.on_deadline(entry, Deadline("max_wait", entry.max_wait_at), late, look)
    assert [type(e).__name__ for e in events] == ["ContactOverflowed", "ContactQueued"]
    return fold(entry, events, at=late)


def _spilling() -> FakeBoard:
    overflow = {"fallback": ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW, "fallback_queue_id": "spill"}
    return board(
        queue(max_wait={"seconds": 60}, **overflow), queue("spill", short_abandon_threshold={"seconds": 3})
    )


def _verdict(entry: Entry, outcome: int, seconds: float) -> domain.OfferEnded:
    return domain.OfferEnded("c-1", "a-1", entry.offer.offer_id, outcome, "", T0 + timedelta(seconds=seconds))


def _gone(seconds: float, reason=domain.EndReason.CONTACT_END_REASON_CALLER) -> domain.ContactGone:
    return domain.ContactGone("c-1", reason, "", T0 + timedelta(seconds=seconds))


def test_an_end_from_before_a_late_overflow_settles_the_visit_the_caller_was_in() -> None:
    look = _spilling()
    entry = _overflowed_late(look)
    assert (entry.queue_id, entry.visit, entry.status) == ("spill", 2, Status.WAITING)

    [voided] = domain.contact_ended(entry, _gone(40), look.queue)

    assert isinstance(voided, ev.OverflowVoided)
    assert (voided.visit, voided.queue_id, voided.last_visit) == (1, "billing", 2)
    assert (voided.waited.ToTimedelta(), voided.short_abandon) == (timedelta(seconds=40), False)
    assert voided.ended_at.ToDatetime(UTC) == T0 + timedelta(seconds=40)
    entry = fold(entry, [voided], at=T0 + timedelta(seconds=95))
    assert (entry.status, entry.outcome, domain.entry_closed(entry)) == (Status.LEFT, "abandoned", True)


def test_an_end_after_the_overflow_is_an_abandon_in_the_queue_it_overflowed_to() -> None:
    look = _spilling()
    entry = _overflowed_late(look)

    [abandoned] = domain.contact_ended(entry, _gone(92), look.queue)

    assert isinstance(abandoned, ev.ContactAbandoned)
    assert (abandoned.queue_id, abandoned.short_abandon) == ("spill", True), "spill's own threshold"


def test_a_telephony_end_before_the_overflow_is_a_disconnect_of_the_first_visit() -> None:
    look = _spilling()
    entry = _overflowed_late(look)

    [voided] = domain.contact_ended(entry, _gone(2, domain.EndReason.CONTACT_END_REASON_SYSTEM), look.queue)

    assert (voided.visit, voided.short_abandon) == (1, False), "only a caller's end is an abandon"
    assert fold(entry, [voided]).outcome == "disconnected"


def test_an_end_from_before_the_overflow_heard_while_spill_rings_waits_for_the_verdict() -> None:
    look = _spilling()
    entry = _overflowed_late(look)
    match = domain.Match("c-1", "a-1", (), domain.Requirement({}))
    entry = fold(entry, domain.offer(entry, match, look.queue("spill"), T0 + timedelta(seconds=91)))

    [noted] = domain.contact_ended(entry, _gone(40), look.queue)
    entry = fold(entry, [noted])
    rang_out = _verdict(entry, domain.Outcome.OFFER_OUTCOME_TIMED_OUT, 99)
    events = domain.offer_ended(entry, rang_out, look.queue)

    assert [type(e).__name__ for e in events] == ["OfferTimedOut", "OverflowVoided"]
    assert (events[1].visit, events[1].last_visit) == (1, 2)


def test_an_accept_in_spill_after_the_caller_had_gone_voids_the_connection_and_the_overflow() -> None:
    look = _spilling()
    entry = _overflowed_late(look)
    match = domain.Match("c-1", "a-1", (), domain.Requirement({}))
    entry = fold(entry, domain.offer(entry, match, look.queue("spill"), T0 + timedelta(seconds=91)))
    accepted = _verdict(entry, domain.Outcome.OFFER_OUTCOME_ACCEPTED, 93)
    entry = fold(entry, domain.offer_ended(entry, accepted, look.queue))
    assert entry.status == Status.CONNECTED

    events = domain.contact_ended(entry, _gone(40), look.queue)

    assert [type(e).__name__ for e in events] == ["ConnectionVoided", "OverflowVoided"]
    assert events[0].agent_id == "a-1", "the agents service frees the agent"
    assert fold(entry, events).outcome == "abandoned"


def test_a_transfer_after_an_answer_keeps_no_overflow_to_void() -> None:
    look = _spilling()
    entry = _overflowed_late(look)
    entry = replace(entry, outcome="answered", status=Status.CONNECTED)
    rejoined = domain.join(entry, domain.Join("c-1", "billing", VOICE, T0 + timedelta(seconds=200)), look)
    entry = fold(entry, rejoined)

    assert entry.overflowed_from == ()
