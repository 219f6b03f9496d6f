"""The Agent aggregate: given past events, when a command, then new events or a clear refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from callcenter.agents.v1 import events_pb2 as ev
from hypothesis import given, note, settings
from hypothesis import strategies as st

from services.agents import domain as d
from services.platform.envelope import Cause, EventRegistry, make_envelope
from services.platform.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from services.platform.eventstore import Deadline

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
REGISTRY = EventRegistry.of(ev)
S = d.State


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def apply(agent: d.Agent, events: list) -> d.Agent:
    for payload in events:
        envelope = make_envelope(
            payload,
            registry=REGISTRY,
            aggregate_type="Agent",
            aggregate_id=agent.agent_id,
            aggregate_version=1,
            occurred_at=T0,
            cause=Cause.request("test"),
        )
        agent = d.evolve(agent, envelope)
    return agent


def run(agent: d.Agent, *commands) -> tuple[d.Agent, list]:
    events: list = []
    for command in commands:
        new = d.decide(agent, command)
        agent = apply(agent, new)
        events = new
    return agent, events


def offer(
    offer_id: str = "o-1", contact_id: str = "c-1", channel: int = d.Channel.CHANNEL_VOICE, **rules
) -> d.Offer:
    return d.Offer(
        offer_id=offer_id,
        contact_id=contact_id,
        queue_id="billing",
        channel=channel,
        ring_deadline=at(20),
        wrap_up_time=rules.get("wrap_up_time", timedelta(seconds=60)),
        wrap_up_mode=rules.get("wrap_up_mode", d.WrapUpMode.WRAP_UP_MODE_MANDATORY_WITH_TIMEOUT),
    )


def ready_agent(chat_capacity: int = 0) -> d.Agent:
    agent, _ = run(
        d.Agent("a-1"), d.Login("a-1", "Ada", [("billing", 4)], ["billing"], chat_capacity, True, at(0))
    )
    return agent


def on_voice_contact() -> d.Agent:
    agent, _ = run(ready_agent(), d.Reserve("a-1", offer(), at(1)), d.AcceptOffer("a-1", "o-1", at(2)))
    return agent


def states(events: list) -> list[tuple[int, int]]:
    return [(e.previous_state, e.new_state) for e in events if isinstance(e, ev.AgentStateChanged)]


def test_login_ready_records_skills_and_the_first_state() -> None:
    agent, events = run(d.Agent("a-1"), d.Login("a-1", "Ada", [("billing", 4)], ["billing"], 3, True, at(0)))

    assert isinstance(events[0], ev.AgentLoggedIn)
    assert [(s.skill, s.proficiency) for s in events[0].skills] == [("billing", 4)]
    assert states(events) == [(S.AGENT_STATE_LOGGED_OUT, S.AGENT_STATE_READY)]
    assert agent.state == S.AGENT_STATE_READY and agent.chat_capacity == 3


def test_login_twice_is_refused_naming_the_state() -> None:
    with pytest.raises(FailedPrecondition, match="agent a-1 is ready; it is already logged in"):
        run(ready_agent(), d.Login("a-1", "Ada", [], [], 0, True, at(5)))


@pytest.mark.parametrize(
    ("skills", "capacity", "message"),
    [
        ([("billing", 7)], 0, "proficiency of 'billing' must be 1 to 5, not 7"),
        ([], 11, "chat capacity must be 0 to 10"),
    ],
)
def test_malformed_login_is_an_invalid_argument(skills, capacity, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        run(d.Agent("a-1"), d.Login("a-1", "Ada", skills, [], capacity, True, at(0)))


def test_commands_for_a_logged_out_agent_are_not_found() -> None:
    with pytest.raises(NotFound, match="agent a-9 is not logged in"):
        run(d.Agent("a-9"), d.SetReady("a-9", at(0)))


def test_not_ready_with_a_reason_then_ready_again() -> None:
    agent, events = run(ready_agent(), d.SetNotReady("a-1", d.Reason.NOT_READY_REASON_LUNCH, at(10)))
    assert events[0].reason == d.Reason.NOT_READY_REASON_LUNCH
    assert events[0].previous_state_since.ToDatetime(tzinfo=UTC) == T0

    agent, events = run(agent, d.SetReady("a-1", at(1800)))
    assert states(events) == [(S.AGENT_STATE_NOT_READY, S.AGENT_STATE_READY)]


def test_ready_while_on_a_call_is_refused_with_the_current_state() -> None:
    with pytest.raises(
        FailedPrecondition, match="agent a-1 is on_contact, holding c-1; it cannot be set ready"
    ):
        run(on_voice_contact(), d.SetReady("a-1", at(30)))


def test_an_offer_reserves_a_ready_agent_with_its_ring_deadline() -> None:
    agent, events = run(ready_agent(), d.Reserve("a-1", offer(), at(1)))

    assert states(events) == [(S.AGENT_STATE_READY, S.AGENT_STATE_RESERVED)]
    assert events[0].offer_id == "o-1" and events[0].ring_deadline.ToDatetime(tzinfo=UTC) == at(20)
    assert d.deadlines(agent) == [Deadline(d.RING_DEADLINE, at(20))]


def test_an_agent_is_never_offered_two_voice_contacts() -> None:
    agent, _ = run(ready_agent(), d.Reserve("a-1", offer(), at(1)))

    _, events = run(agent, d.Reserve("a-1", offer("o-2", "c-2"), at(2)))

    [refused] = events
    assert isinstance(refused, ev.ReservationRefused)
    assert (refused.offer_id, refused.contact_id, refused.agent_state) == (
        "o-2",
        "c-2",
        S.AGENT_STATE_RESERVED,
    )


def test_an_offer_to_an_agent_who_just_went_not_ready_is_refused_not_lost() -> None:
    agent, _ = run(ready_agent(), d.SetNotReady("a-1", d.Reason.NOT_READY_REASON_BREAK, at(1)))
    _, [refused] = run(agent, d.Reserve("a-1", offer(), at(2)))
    assert isinstance(refused, ev.ReservationRefused)
    assert "only a ready agent takes a voice contact" in refused.reason


def test_an_offer_to_a_logged_out_agent_is_refused() -> None:
    _, [refused] = run(d.Agent("a-7"), d.Reserve("a-7", offer(), at(2)))
    assert refused.reason == "agent a-7 is logged out"


def test_accepting_puts_the_agent_on_the_contact() -> None:
    agent, events = run(ready_agent(), d.Reserve("a-1", offer(), at(1)), d.AcceptOffer("a-1", "o-1", at(3)))

    assert events[0].offer_outcome == d.Outcome.OFFER_OUTCOME_ACCEPTED
    assert agent.state == S.AGENT_STATE_ON_CONTACT and set(agent.contacts) == {"c-1"}
    assert d.deadlines(agent) == []


def test_accepting_a_stale_offer_is_refused() -> None:
    agent, _ = run(ready_agent(), d.Reserve("a-1", offer(), at(1)))
    with pytest.raises(FailedPrecondition, match="offer o-9 is not the current offer o-1"):
        run(agent, d.AcceptOffer("a-1", "o-9", at(2)))


def test_ring_timeout_makes_the_agent_not_ready_with_missed_offer() -> None:
    agent, _ = run(ready_agent(), d.Reserve("a-1", offer(), at(1)))

    events = d.on_deadline(agent, Deadline(d.RING_DEADLINE, at(20)), at(20))

    [changed] = events
    assert (changed.new_state, changed.reason) == (
        S.AGENT_STATE_NOT_READY,
        d.Reason.NOT_READY_REASON_MISSED_OFFER,
    )
    assert changed.offer_outcome == d.Outcome.OFFER_OUTCOME_TIMED_OUT


def test_a_ring_timeout_after_the_accept_decides_nothing() -> None:
    agent, _ = run(ready_agent(), d.Reserve("a-1", offer(), at(1)), d.AcceptOffer("a-1", "o-1", at(19)))
    assert d.on_deadline(agent, Deadline(d.RING_DEADLINE, at(20)), at(20)) == []


def test_rejecting_returns_the_agent_to_ready() -> None:
    agent, events = run(
        ready_agent(), d.Reserve("a-1", offer(), at(1)), d.RejectOffer("a-1", "o-1", at(3), "busy")
    )
    assert events[0].offer_outcome == d.Outcome.OFFER_OUTCOME_REJECTED
    assert agent.state == S.AGENT_STATE_READY and agent.offer is None


def test_going_not_ready_while_offered_rejects_the_offer() -> None:
    agent, _ = run(ready_agent(), d.Reserve("a-1", offer(), at(1)))

    agent, [changed] = run(agent, d.SetNotReady("a-1", d.Reason.NOT_READY_REASON_BREAK, at(3)))

    assert (changed.new_state, changed.offer_outcome) == (
        S.AGENT_STATE_NOT_READY,
        d.Outcome.OFFER_OUTCOME_REJECTED,
    )
    assert changed.contact_id == "c-1"
    assert agent.offer is None


def test_the_caller_hanging_up_while_it_rings_withdraws_the_offer() -> None:
    agent, _ = run(ready_agent(), d.Reserve("a-1", offer(), at(1)))

    agent, [changed] = run(agent, d.ContactEnded("a-1", "c-1", at(5)))

    assert changed.offer_outcome == d.Outcome.OFFER_OUTCOME_CONTACT_ENDED
    assert agent.state == S.AGENT_STATE_READY


def test_contact_end_starts_wrap_up_with_the_queues_timeout() -> None:
    agent, [changed] = run(on_voice_contact(), d.ContactEnded("a-1", "c-1", at(200)))

    assert (changed.new_state, changed.wrap_up_deadline.ToDatetime(tzinfo=UTC)) == (
        S.AGENT_STATE_WRAP_UP,
        at(260),
    )
    assert d.deadlines(agent) == [Deadline(d.WRAP_UP_DEADLINE, at(260))]


def test_completing_wrap_up_records_the_disposition_and_makes_the_agent_ready() -> None:
    agent, _ = run(on_voice_contact(), d.ContactEnded("a-1", "c-1", at(200)))

    agent, events = run(
        agent,
        d.CompleteWrapUp(
            "a-1",
            "c-1",
            "billing.refund",
            at(230),
            resolved=True,
            ticket=ev.TicketRequest(ticket_type="complaint"),
        ),
    )

    completed, changed = events
    assert (completed.disposition_code, completed.resolved, completed.ticket.ticket_type) == (
        "billing.refund",
        True,
        "complaint",
    )
    assert changed.new_state == S.AGENT_STATE_READY
    assert agent.wrap_up is None and d.deadlines(agent) == []


def test_wrap_up_timeout_completes_it_and_makes_the_agent_ready() -> None:
    agent, _ = run(on_voice_contact(), d.ContactEnded("a-1", "c-1", at(200)))

    completed, changed = d.on_deadline(agent, Deadline(d.WRAP_UP_DEADLINE, at(260)), at(260))

    assert completed.timed_out and changed.new_state == S.AGENT_STATE_READY


def test_forced_wrap_up_lasts_its_full_time_even_after_the_disposition() -> None:
    agent, _ = run(
        ready_agent(),
        d.Reserve("a-1", offer(wrap_up_mode=d.WrapUpMode.WRAP_UP_MODE_FORCED_DURATION), at(1)),
        d.AcceptOffer("a-1", "o-1", at(2)),
        d.ContactEnded("a-1", "c-1", at(100)),
    )
    agent, events = run(agent, d.CompleteWrapUp("a-1", "c-1", "info", at(110)))
    assert [type(e).__name__ for e in events] == ["WrapUpCompleted"]
    with pytest.raises(FailedPrecondition, match="wrap-up lasts its full time"):
        run(agent, d.SetReady("a-1", at(120)))

    [changed] = d.on_deadline(agent, Deadline(d.WRAP_UP_DEADLINE, at(160)), at(160))
    assert changed.new_state == S.AGENT_STATE_READY


def test_mandatory_wrap_up_needs_a_disposition_before_ready() -> None:
    agent, _ = run(on_voice_contact(), d.ContactEnded("a-1", "c-1", at(100)))
    with pytest.raises(FailedPrecondition, match="complete wrap-up with a disposition first"):
        run(agent, d.SetReady("a-1", at(110)))


def test_a_chat_agent_takes_chats_up_to_capacity() -> None:
    agent = ready_agent(chat_capacity=2)
    for n in (1, 2):
        agent, _ = run(agent, d.Reserve("a-1", offer(f"o-{n}", f"chat-{n}", d.Channel.CHANNEL_CHAT), at(n)))
        agent, _ = run(agent, d.AcceptOffer("a-1", f"o-{n}", at(n)))

    _, [refused] = run(agent, d.Reserve("a-1", offer("o-3", "chat-3", d.Channel.CHANNEL_CHAT), at(5)))
    assert "all 2 chat slots are taken" in refused.reason

    agent, _ = run(agent, d.ContactEnded("a-1", "chat-1", at(60)))
    assert agent.state == S.AGENT_STATE_ON_CONTACT and set(agent.contacts) == {"chat-2"}
    agent, _ = run(agent, d.ContactEnded("a-1", "chat-2", at(70)))
    assert agent.state == S.AGENT_STATE_WRAP_UP


def test_the_last_chat_ending_while_another_chat_rings_leaves_the_agent_reserved() -> None:
    agent, _ = run(
        ready_agent(chat_capacity=2),
        d.Reserve("a-1", offer("o-1", "chat-1", d.Channel.CHANNEL_CHAT), at(1)),
        d.AcceptOffer("a-1", "o-1", at(2)),
        d.Reserve("a-1", offer("o-2", "chat-2", d.Channel.CHANNEL_CHAT), at(3)),
    )

    agent, events = run(agent, d.ContactEnded("a-1", "chat-1", at(4)))

    assert states(events) == [
        (S.AGENT_STATE_ON_CONTACT, S.AGENT_STATE_ON_CONTACT),
        (S.AGENT_STATE_ON_CONTACT, S.AGENT_STATE_RESERVED),
    ]
    assert [e.contact_id for e in events] == ["chat-1", "chat-2"]
    assert agent.state == S.AGENT_STATE_RESERVED and agent.contacts == {} and agent.wrap_up is None
    assert d.deadlines(agent) == [Deadline(d.RING_DEADLINE, at(20))]
    rejected, _ = run(agent, d.RejectOffer("a-1", "o-2", at(5)))
    assert rejected.state == S.AGENT_STATE_READY and rejected.offer is None
    accepted, _ = run(agent, d.AcceptOffer("a-1", "o-2", at(5)))
    assert accepted.state == S.AGENT_STATE_ON_CONTACT and set(accepted.contacts) == {"chat-2"}


def test_a_chatting_agent_who_lets_a_chat_ring_out_is_back_on_contact_when_ready_not_offered_voice() -> None:
    agent, _ = run(
        ready_agent(chat_capacity=2),
        d.Reserve("a-1", offer("o-1", "chat-1", d.Channel.CHANNEL_CHAT), at(1)),
        d.AcceptOffer("a-1", "o-1", at(2)),
        d.Reserve("a-1", offer("o-2", "chat-2", d.Channel.CHANNEL_CHAT), at(3)),
    )
    agent = apply(agent, d.on_deadline(agent, Deadline(d.RING_DEADLINE, at(20)), at(20)))
    assert agent.describe() == "agent a-1 is not_ready (missed_offer), holding chat-1"

    agent, events = run(agent, d.SetReady("a-1", at(30)))

    assert states(events) == [(S.AGENT_STATE_NOT_READY, S.AGENT_STATE_ON_CONTACT)]
    assert set(agent.contacts) == {"chat-1"}
    _, [refused] = run(agent, d.Reserve("a-1", offer("o-3", "call-3"), at(31)))
    assert isinstance(refused, ev.ReservationRefused)


def test_logout_with_a_contact_is_refused_but_a_supervisor_can_end_a_wrap_up() -> None:
    with pytest.raises(FailedPrecondition, match="finish the contacts before logging out"):
        run(on_voice_contact(), d.Logout("a-1", at(50)))
    agent, _ = run(on_voice_contact(), d.ContactEnded("a-1", "c-1", at(100)))

    agent, events = run(agent, d.Logout("a-1", at(110), by=d.Actor.SUPERVISOR, by_id="sup-1"))

    assert [type(e).__name__ for e in events] == ["WrapUpCompleted", "AgentStateChanged", "AgentLoggedOut"]
    assert not agent.logged_in


# Property: whatever happens, in whatever order, the invariants hold -------------------------------

OFFERS = [
    offer(f"o-{n}", f"c-{n}", channel)
    for n, channel in enumerate([d.Channel.CHANNEL_VOICE] * 2 + [d.Channel.CHANNEL_CHAT] * 2)
]


def _current_offer_id(agent: d.Agent) -> str:
    return agent.offer.offer_id if agent.offer else "o-none"


def _held(agent: d.Agent, fallback: str) -> str:
    return next(iter(sorted(agent.contacts)), fallback)


def _wrapping(agent: d.Agent, fallback: str) -> str:
    return agent.wrap_up.contact_id if agent.wrap_up else fallback


def _commands():
    """Desktop, telephony and routing actions; each is a function of the agent's state and the time."""
    offers = st.sampled_from(OFFERS)
    contact_ids = st.sampled_from([o.contact_id for o in OFFERS])
    return st.one_of(
        st.booleans().map(
            lambda r: lambda a, now: d.Login("a-1", "Ada", [("billing", 3)], ["billing"], 2, r, now)
        ),
        st.just(lambda a, now: d.SetReady("a-1", now)),
        st.sampled_from([1, 2, 3, 7]).map(lambda r: lambda a, now: d.SetNotReady("a-1", r, now)),
        st.sampled_from(list(d.Actor)).map(lambda by: lambda a, now: d.Logout("a-1", now, by=by)),
        offers.map(lambda o: lambda a, now: d.Reserve("a-1", o, now)),
        offers.map(lambda o: lambda a, now: d.Reserve("a-1", o, now)),
        st.just(lambda a, now: d.AcceptOffer("a-1", _current_offer_id(a), now)),
        st.just(lambda a, now: d.AcceptOffer("a-1", _current_offer_id(a), now)),
        st.just(lambda a, now: d.RejectOffer("a-1", _current_offer_id(a), now)),
        contact_ids.map(lambda c: lambda a, now: d.ContactAnswered("a-1", c, now)),
        contact_ids.map(lambda c: lambda a, now: d.ContactEnded("a-1", _held(a, c), now)),
        contact_ids.map(lambda c: lambda a, now: d.CompleteWrapUp("a-1", _wrapping(a, c), "done", now)),
        st.sampled_from([d.RING_DEADLINE, d.WRAP_UP_DEADLINE]),
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=120), _commands()), min_size=1, max_size=60))
def test_random_command_sequences_keep_the_agent_invariants(steps: list) -> None:
    agent, now = d.Agent("a-1"), T0
    for advance, make in steps:
        now += timedelta(seconds=advance)
        try:
            if isinstance(make, str):
                note(f"+{advance}s: {make} deadline")
                events = next(
                    (d.on_deadline(agent, dl, now) for dl in d.deadlines(agent) if dl.name == make), []
                )
            else:
                command = make(agent, now)
                note(f"+{advance}s: {command!r}")
                events = d.decide(agent, command)
        except DomainError as refusal:
            note(f"  refused: {refusal}")
            continue
        for event in events:
            if isinstance(event, ev.AgentStateChanged) and event.offer_id and not event.offer_outcome:
                assert agent.logged_in, "no contact is offered to a logged-out agent"
                if event.channel == d.Channel.CHANNEL_VOICE:
                    assert agent.state == S.AGENT_STATE_READY, "voice goes to ready agents only"
        agent = apply(agent, events)
        voice = [c for c, (_, channel, _, _) in agent.contacts.items() if channel == d.Channel.CHANNEL_VOICE]
        assert len(voice) <= 1, "an agent holds at most one voice contact"
        assert not (voice and len(agent.contacts) > 1), "voice is never mixed with chats"
        assert len(agent.contacts) <= max(1, agent.chat_capacity)
        assert agent.logged_in or (not agent.contacts and agent.offer is None and agent.wrap_up is None)
        assert (agent.state == S.AGENT_STATE_WRAP_UP) == (agent.wrap_up is not None)
        assert (agent.state == S.AGENT_STATE_RESERVED) == (agent.offer is not None and not agent.contacts)
        assert not (agent.state == S.AGENT_STATE_READY and agent.contacts), "a ready agent holds no contact"
