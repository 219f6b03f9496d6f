"""The Contact aggregate: given its events, when telephony reports something, then new events or a refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as ev
from callcenter.routing.v1 import events_pb2 as routing_ev
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from services.intake import domain
from services.intake.domain import Contact, Party, Stage
from services.platform.envelope import Cause, EventRegistry, make_envelope
from services.platform.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from services.platform.privacy import pseudonymise
from services.platform.settings import PrivacySettings

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
REGISTRY = EventRegistry.of(ev)
VOICE = types_pb2.Channel.CHANNEL_VOICE
END = ev.ContactEndReason
FALLBACK = routing_ev.FallbackOutcome
PRIVACY = PrivacySettings(hmac_key=SecretStr("test-key"))
NUMBER = "+44 20 7946 0958"


def party(identifier: str) -> Party:
    reference = pseudonymise(identifier, PRIVACY)
    return Party(reference.hash, reference.masked)


CALLER = party(NUMBER)


def fold(contact: Contact, events: list, at: datetime = T0) -> Contact:
    for payload in events:
        envelope = make_envelope(
            payload,
            registry=REGISTRY,
            aggregate_type="Contact",
            aggregate_id=contact.contact_id,
            aggregate_version=contact.version + 1,
            occurred_at=at,
            cause=Cause.request("test"),
        )
        contact = domain.evolve(contact, envelope)
    return contact


def history(*events, at: datetime = T0) -> Contact:
    return fold(Contact("c-1"), list(events), at)


def started(caller: Party = CALLER) -> ev.ContactStarted:
    return ev.ContactStarted(contact_id="c-1", channel=VOICE, caller=caller.message(), dialed_number="100")


ROUTED = ev.RoutingRequested(contact_id="c-1", queue_id="billing", channel=VOICE, reason="ivr")
ANSWERED = ev.ContactAnswered(contact_id="c-1", agent_id="a-1", queue_id="billing")
HELD = ev.ContactHeld(contact_id="c-1", agent_id="a-1")
CALLBACK = ev.CallbackRequested(contact_id="c-1", queue_id="billing", callback_party=CALLER.message())


def in_ivr() -> Contact:
    return history(started())


def queued() -> Contact:
    return history(started(), ROUTED)


def talking() -> Contact:
    return history(started(), ROUTED, ANSWERED)


def on_hold() -> Contact:
    return history(started(), ROUTED, ANSWERED, HELD)


def callback_pending() -> Contact:
    return history(started(), ROUTED, CALLBACK)


def ended_by_caller() -> Contact:
    contact = talking()
    return fold(
        contact,
        [ev.ContactEnded(contact_id="c-1", reason=END.CONTACT_END_REASON_CALLER, agent_id="a-1")],
        at=T0 + timedelta(minutes=3, seconds=12),
    )


# Start --------------------------------------------------------------------------------------------


def test_a_contact_starts_in_the_ivr_known_only_by_its_pseudonymised_caller() -> None:
    command = domain.StartContact("c-1", VOICE, CALLER, dialed_number="100", gateway="pbx-1", language="en")

    [event] = domain.decide(Contact("c-1"), command)

    assert isinstance(event, ev.ContactStarted)
    assert (event.caller.hash, event.caller.masked) == (CALLER.hash, "*********0958")
    assert (event.dialed_number, event.gateway, event.language) == ("100", "pbx-1", "en")
    contact = fold(Contact("c-1"), [event])
    assert (contact.stage, contact.caller, contact.started_at) == (Stage.CONTACT_STAGE_IVR, CALLER, T0)


def test_a_contact_without_a_channel_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="channel is required"):
        domain.decide(Contact("c-1"), domain.StartContact("c-1", types_pb2.Channel.CHANNEL_UNSPECIFIED))
    with pytest.raises(InvalidArgument, match="channel is required"):
        domain.decide(Contact("c-1"), domain.StartContact("c-1", 42))


def test_a_web_callback_needs_the_number_to_call() -> None:
    command = domain.StartContact("c-1", types_pb2.Channel.CHANNEL_WEB_CALLBACK, Party())

    with pytest.raises(InvalidArgument, match="a web callback needs the customer's number"):
        domain.decide(Contact("c-1"), command)


def test_a_contact_needs_an_id() -> None:
    with pytest.raises(InvalidArgument, match="contact_id is required"):
        domain.decide(Contact(""), domain.StartContact("", VOICE, CALLER))


def test_a_contact_starts_only_once() -> None:
    with pytest.raises(
        FailedPrecondition,
        match="contact c-1 is queued in billing; it was started before and cannot start again",
    ):
        domain.decide(queued(), domain.StartContact("c-1", VOICE, CALLER))


# IVR ----------------------------------------------------------------------------------------------


def test_an_ivr_choice_that_leads_to_a_queue_asks_routing_for_it() -> None:
    command = domain.RecordIvrSelection("c-1", "main", "2", queue_id="billing")

    selected, routed = domain.decide(in_ivr(), command)

    assert (selected.menu, selected.selection, selected.queue_id) == ("main", "2", "billing")
    assert isinstance(routed, ev.RoutingRequested)
    assert (routed.queue_id, routed.channel, routed.reason, routed.vip) == ("billing", VOICE, "ivr", False)
    contact = fold(in_ivr(), [selected, routed])
    assert (contact.stage, contact.queue_id, contact.ivr_path) == (
        Stage.CONTACT_STAGE_QUEUED,
        "billing",
        ("main:2",),
    )


def test_an_ivr_choice_without_a_queue_keeps_the_caller_in_the_ivr() -> None:
    [selected] = domain.decide(in_ivr(), domain.RecordIvrSelection("c-1", "main", "3"))

    contact = fold(in_ivr(), [selected])

    assert (contact.stage, contact.ivr_path) == (Stage.CONTACT_STAGE_IVR, ("main:3",))


def test_self_service_in_the_ivr_is_recorded_and_the_contact_ends_there() -> None:
    [selected] = domain.decide(
        in_ivr(), domain.RecordIvrSelection("c-1", "balance", "1", self_service_completed=True)
    )
    contact = fold(in_ivr(), [selected])

    [ended] = domain.decide(contact, domain.EndContact("c-1", END.CONTACT_END_REASON_SELF_SERVICE))

    contact = fold(contact, [ended])
    assert contact.self_service_completed
    assert (contact.stage, contact.end_reason) == (
        Stage.CONTACT_STAGE_ENDED,
        END.CONTACT_END_REASON_SELF_SERVICE,
    )


def test_an_ivr_choice_needs_its_menu_and_selection() -> None:
    with pytest.raises(InvalidArgument, match="needs its menu and the option selected"):
        domain.decide(in_ivr(), domain.RecordIvrSelection("c-1", "main", ""))
    with pytest.raises(InvalidArgument, match="needs its menu and the option selected"):
        domain.decide(in_ivr(), domain.RecordIvrSelection("c-1", " ", "1"))


def test_an_ivr_choice_is_refused_once_the_caller_left_the_ivr() -> None:
    with pytest.raises(
        FailedPrecondition, match="contact c-1 is queued in billing; it cannot be given an IVR selection"
    ):
        domain.decide(queued(), domain.RecordIvrSelection("c-1", "main", "2", "billing"))


def test_a_caller_on_the_vip_list_is_routed_as_a_vip() -> None:
    vip_list = frozenset({CALLER.hash})

    _, routed = domain.decide(in_ivr(), domain.RecordIvrSelection("c-1", "main", "2", "billing"), vip_list)

    assert routed.vip
    assert fold(in_ivr(), [routed]).vip
    _, other = domain.decide(
        history(started(party("+1 555 0100 200"))),
        domain.RecordIvrSelection("c-1", "main", "2", "billing"),
        vip_list,
    )
    assert not other.vip


def test_an_anonymous_caller_is_never_a_vip() -> None:
    _, routed = domain.decide(
        history(started(Party())), domain.RecordIvrSelection("c-1", "main", "2", "billing"), frozenset({""})
    )

    assert not routed.vip


# Routing requested by a gateway -------------------------------------------------------------------


def test_a_gateway_routes_a_contact_with_a_boost_and_extra_skills() -> None:
    command = domain.RequestRouting("c-1", "billing", priority_boost=5, required_skills=[("lang.fr", 3)])

    [routed] = domain.decide(in_ivr(), command)

    assert (routed.queue_id, routed.priority_boost, routed.reason) == ("billing", 5, "gateway")
    assert [(s.skill, s.proficiency) for s in routed.required_skills] == [("lang.fr", 3)]
    assert fold(in_ivr(), [routed]).stage == Stage.CONTACT_STAGE_QUEUED


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (domain.RequestRouting("c-1", ""), "queue_id is required"),
        (
            domain.RequestRouting("c-1", "billing", priority_boost=100),
            "priority_boost must be 0 to 99, not 100",
        ),
        (domain.RequestRouting("c-1", "billing", 0, [("lang.fr", 6)]), "proficiency of 1 to 5, not 6"),
        (domain.RequestRouting("c-1", "billing", 0, [("lang.fr", 0)]), "proficiency of 1 to 5, not 0"),
        (domain.RequestRouting("c-1", "billing", 0, [("", 3)]), "skill '' needs a name"),
    ],
)
def test_a_malformed_routing_request_is_refused(command: domain.RequestRouting, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        domain.decide(in_ivr(), command)


def test_a_gateway_routes_only_a_contact_still_in_the_ivr() -> None:
    with pytest.raises(
        FailedPrecondition, match="contact c-1 is talking with agent a-1; it cannot be routed"
    ):
        domain.decide(talking(), domain.RequestRouting("c-1", "billing"))


# Answer, hold, resume -----------------------------------------------------------------------------


def test_an_answer_puts_the_queued_contact_with_the_agent() -> None:
    [answered] = domain.decide(queued(), domain.ReportAnswered("c-1", "a-1"))

    assert (answered.agent_id, answered.queue_id) == ("a-1", "billing")
    contact = fold(queued(), [answered])
    assert (contact.stage, contact.agent_id) == (Stage.CONTACT_STAGE_TALKING, "a-1")


def test_an_answered_call_out_puts_a_callback_with_the_agent() -> None:
    [answered] = domain.decide(callback_pending(), domain.ReportAnswered("c-1", "a-2"))

    contact = fold(callback_pending(), [answered])
    assert (contact.stage, contact.agent_id) == (Stage.CONTACT_STAGE_TALKING, "a-2")


def test_the_same_answer_reported_again_changes_nothing() -> None:
    assert domain.decide(talking(), domain.ReportAnswered("c-1", "a-1")) == []
    assert domain.decide(on_hold(), domain.ReportAnswered("c-1", "a-1")) == []


def test_an_answer_by_another_agent_is_refused() -> None:
    with pytest.raises(
        FailedPrecondition, match="contact c-1 is talking with agent a-1; it cannot be answered by agent a-2"
    ):
        domain.decide(talking(), domain.ReportAnswered("c-1", "a-2"))


def test_an_answer_before_the_contact_was_queued_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="contact c-1 is in the IVR; it cannot be answered"):
        domain.decide(in_ivr(), domain.ReportAnswered("c-1", "a-1"))


def test_an_answer_after_the_end_says_when_and_why_it_ended() -> None:
    with pytest.raises(
        FailedPrecondition,
        match=r"contact c-1 is ended \(by caller at 09:03:12\); it cannot be answered by agent a-1",
    ):
        domain.decide(ended_by_caller(), domain.ReportAnswered("c-1", "a-1"))


def test_an_answer_names_the_agent() -> None:
    with pytest.raises(InvalidArgument, match="agent_id is required"):
        domain.decide(queued(), domain.ReportAnswered("c-1", ""))


def test_hold_and_resume_take_turns() -> None:
    [held] = domain.decide(talking(), domain.ReportHold("c-1"))
    assert isinstance(held, ev.ContactHeld) and held.agent_id == "a-1"
    assert fold(talking(), [held]).stage == Stage.CONTACT_STAGE_ON_HOLD

    [resumed] = domain.decide(on_hold(), domain.ReportResume("c-1"))
    assert isinstance(resumed, ev.ContactResumed) and resumed.agent_id == "a-1"
    assert fold(on_hold(), [resumed]).stage == Stage.CONTACT_STAGE_TALKING


def test_a_hold_is_refused_unless_talking() -> None:
    with pytest.raises(
        FailedPrecondition, match="contact c-1 is on hold with agent a-1; it cannot be put on hold"
    ):
        domain.decide(on_hold(), domain.ReportHold("c-1"))
    with pytest.raises(
        FailedPrecondition, match="contact c-1 is queued in billing; it cannot be put on hold"
    ):
        domain.decide(queued(), domain.ReportHold("c-1"))


def test_a_resume_is_refused_unless_on_hold() -> None:
    with pytest.raises(
        FailedPrecondition, match="contact c-1 is talking with agent a-1; it cannot be resumed"
    ):
        domain.decide(talking(), domain.ReportResume("c-1"))


# Transfer -----------------------------------------------------------------------------------------


def test_a_transfer_to_a_queue_routes_the_contact_there_and_frees_the_agent() -> None:
    transferred, routed = domain.decide(
        talking(), domain.ReportTransfer("c-1", to_queue_id="sales", consulted=True)
    )

    assert (transferred.from_agent_id, transferred.to_queue_id, transferred.consulted) == (
        "a-1",
        "sales",
        True,
    )
    assert (routed.queue_id, routed.target_agent_id, routed.reason, routed.channel) == (
        "sales",
        "",
        "transfer",
        VOICE,
    )
    contact = fold(talking(), [transferred, routed])
    assert (contact.stage, contact.queue_id, contact.agent_id) == (Stage.CONTACT_STAGE_QUEUED, "sales", "")


def test_a_transfer_to_an_agent_asks_routing_for_that_agent_in_the_current_queue() -> None:
    transferred, routed = domain.decide(on_hold(), domain.ReportTransfer("c-1", to_agent_id="a-2"))

    assert transferred.WhichOneof("target") == "to_agent_id" and transferred.to_agent_id == "a-2"
    assert (routed.queue_id, routed.target_agent_id) == ("billing", "a-2")


def test_a_transfer_carries_the_vip_flag() -> None:
    _, routed = domain.decide(talking(), domain.ReportTransfer("c-1", "sales"), frozenset({CALLER.hash}))

    assert routed.vip


def test_a_transfer_needs_exactly_one_target() -> None:
    with pytest.raises(InvalidArgument, match="either a queue or an agent"):
        domain.decide(talking(), domain.ReportTransfer("c-1"))
    with pytest.raises(InvalidArgument, match="either a queue or an agent"):
        domain.decide(talking(), domain.ReportTransfer("c-1", "sales", "a-2"))


def test_a_transfer_to_the_agent_who_has_it_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="cannot be transferred to the agent who already has it"):
        domain.decide(talking(), domain.ReportTransfer("c-1", to_agent_id="a-1"))


def test_a_contact_no_agent_has_cannot_be_transferred() -> None:
    with pytest.raises(
        FailedPrecondition, match="contact c-1 is queued in billing; it cannot be transferred"
    ):
        domain.decide(queued(), domain.ReportTransfer("c-1", "sales"))


# End ----------------------------------------------------------------------------------------------


def test_the_end_names_the_agent_who_had_the_contact() -> None:
    [ended] = domain.decide(talking(), domain.EndContact("c-1", END.CONTACT_END_REASON_AGENT, "sip 200"))

    assert (ended.reason, ended.detail, ended.agent_id) == (END.CONTACT_END_REASON_AGENT, "sip 200", "a-1")
    contact = fold(talking(), [ended], at=T0 + timedelta(minutes=5))
    assert (contact.stage, contact.ended_at) == (Stage.CONTACT_STAGE_ENDED, T0 + timedelta(minutes=5))
    assert domain.closed(contact)


def test_a_caller_who_hangs_up_in_the_queue_ends_without_an_agent() -> None:
    [ended] = domain.decide(queued(), domain.EndContact("c-1", END.CONTACT_END_REASON_CALLER))

    assert ended.agent_id == ""


def test_an_end_reported_late_keeps_telephonys_moment_within_the_contacts_reported_life() -> None:
    contact = queued()  # every report recorded at T0
    now = T0 + timedelta(minutes=2)

    def end_at(at: datetime) -> datetime:
        command = domain.EndContact("c-1", END.CONTACT_END_REASON_CALLER, ended_at=at, now=now)
        [ended] = domain.decide(contact, command)
        assert fold(contact, [ended], at=now).ended_at == ended.ended_at.ToDatetime(UTC)
        return ended.ended_at.ToDatetime(UTC)

    assert end_at(T0 + timedelta(seconds=40)) == T0 + timedelta(seconds=40), "the caller left then"
    assert end_at(now + timedelta(seconds=3)) == now, "a clock a little ahead"
    assert end_at(T0 - timedelta(seconds=2)) == T0, "not before the last recorded report"


def test_an_end_far_ahead_of_intakes_clock_is_refused_naming_ended_at() -> None:
    command = domain.EndContact(
        "c-1", END.CONTACT_END_REASON_CALLER, ended_at=T0 + timedelta(hours=1), now=T0
    )
    with pytest.raises(InvalidArgument, match=r"ended_at .* is 3600\.0 s after intake's clock"):
        domain.decide(queued(), command)


def test_an_end_without_telephonys_time_is_when_intake_records_it() -> None:
    [ended] = domain.decide(queued(), domain.EndContact("c-1", END.CONTACT_END_REASON_CALLER, now=T0))

    assert not ended.HasField("ended_at")
    assert fold(queued(), [ended], at=T0 + timedelta(seconds=9)).ended_at == T0 + timedelta(seconds=9)


def test_an_end_needs_a_reason() -> None:
    with pytest.raises(InvalidArgument, match="an end reason is required"):
        domain.decide(talking(), domain.EndContact("c-1", END.CONTACT_END_REASON_UNSPECIFIED))
    with pytest.raises(InvalidArgument, match="77 is not a contact end reason"):
        domain.decide(talking(), domain.EndContact("c-1", 77))


def test_a_contact_ends_once_and_the_refusal_says_when_and_why() -> None:
    with pytest.raises(
        FailedPrecondition, match=r"contact c-1 is ended \(by caller at 09:03:12\); it cannot be ended again"
    ):
        domain.decide(ended_by_caller(), domain.EndContact("c-1", END.CONTACT_END_REASON_AGENT))


def test_ending_a_pending_callback_cancels_it() -> None:
    [ended] = domain.decide(
        callback_pending(), domain.EndContact("c-1", END.CONTACT_END_REASON_SYSTEM, "no answer")
    )

    assert (ended.reason, ended.detail) == (END.CONTACT_END_REASON_SYSTEM, "no answer")
    assert fold(callback_pending(), [ended]).stage == Stage.CONTACT_STAGE_ENDED


# Callback -----------------------------------------------------------------------------------------


def test_the_caller_leaving_the_line_after_asking_for_a_callback_keeps_the_contact_for_the_call_out() -> None:
    accepted = domain.EndContact("c-1", END.CONTACT_END_REASON_CALLBACK_ACCEPTED)
    assert domain.decide(callback_pending(), accepted) == []
    answered = fold(
        callback_pending(), domain.decide(callback_pending(), domain.ReportAnswered("c-1", "a-1"))
    )
    [ended] = domain.decide(answered, domain.EndContact("c-1", END.CONTACT_END_REASON_AGENT))
    assert ended.agent_id == "a-1", "the agent's call-out ends, and with it the agent's part"
    with pytest.raises(FailedPrecondition, match="cannot be left for a callback before one is requested"):
        domain.decide(queued(), accepted)


def test_a_queued_caller_asks_for_a_callback_to_their_own_number_by_default() -> None:
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)

    [requested] = domain.decide(queued(), domain.RequestCallback("c-1", window_start=start, window_end=end))

    assert (requested.queue_id, requested.callback_party.hash) == ("billing", CALLER.hash)
    assert requested.window_start.ToDatetime(UTC) == start
    assert requested.window_end.ToDatetime(UTC) == end
    contact = fold(queued(), [requested])
    assert (contact.stage, contact.queue_id) == (Stage.CONTACT_STAGE_CALLBACK_PENDING, "billing")


def test_a_callback_goes_to_another_number_when_given() -> None:
    mobile = party("+44 7700 900123")

    [requested] = domain.decide(queued(), domain.RequestCallback("c-1", mobile))

    assert (requested.callback_party.hash, requested.callback_party.masked) == (mobile.hash, mobile.masked)
    assert not requested.HasField("window_start")


def test_a_callback_window_must_not_end_before_it_starts() -> None:
    with pytest.raises(InvalidArgument, match=r"the callback window ends .* before it starts"):
        domain.decide(queued(), domain.RequestCallback("c-1", window_start=T0, window_end=T0 - timedelta(1)))


def test_a_callback_is_only_for_a_contact_waiting_in_a_queue() -> None:
    with pytest.raises(FailedPrecondition, match="contact c-1 is in the IVR; it cannot be called back"):
        domain.decide(in_ivr(), domain.RequestCallback("c-1"))
    with pytest.raises(
        FailedPrecondition,
        match="contact c-1 is waiting for a callback from billing; it cannot be called back",
    ):
        domain.decide(callback_pending(), domain.RequestCallback("c-1"))


def test_an_anonymous_caller_needs_a_number_to_be_called_back() -> None:
    anonymous = history(started(Party()), ROUTED)

    with pytest.raises(InvalidArgument, match="anonymous caller; a callback needs the number to call"):
        domain.decide(anonymous, domain.RequestCallback("c-1"))


# Unknown contacts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        domain.RecordIvrSelection("c-9", "main", "1"),
        domain.RequestRouting("c-9", "billing"),
        domain.ReportAnswered("c-9", "a-1"),
        domain.ReportHold("c-9"),
        domain.ReportResume("c-9"),
        domain.ReportTransfer("c-9", "sales"),
        domain.EndContact("c-9", END.CONTACT_END_REASON_CALLER),
        domain.RequestCallback("c-9"),
    ],
)
def test_a_report_on_an_unknown_contact_is_not_found(command: domain.Command) -> None:
    with pytest.raises(NotFound, match="contact c-9 is not known"):
        domain.decide(Contact("c-9"), command)


# Routing's decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "detail"),
    [
        (FALLBACK.FALLBACK_OUTCOME_DISCONNECT, "queue billing is full"),
        (FALLBACK.FALLBACK_OUTCOME_UNSPECIFIED, "queue billing is full"),
        (FALLBACK.FALLBACK_OUTCOME_VOICEMAIL, "voicemail"),
    ],
)
def test_a_refused_queue_join_that_leaves_nowhere_to_go_ends_the_contact(outcome: int, detail: str) -> None:
    refused = routing_ev.QueueJoinRefused(
        contact_id="c-1", queue_id="billing", reason="queue billing is full", outcome=outcome
    )

    command = domain.ended_by_routing("QueueJoinRefused", refused)

    assert command == domain.EndContact("c-1", END.CONTACT_END_REASON_SYSTEM, detail)
    [ended] = domain.decide(queued(), command)
    assert (ended.reason, ended.detail) == (END.CONTACT_END_REASON_SYSTEM, detail)


@pytest.mark.parametrize(
    "outcome", [FALLBACK.FALLBACK_OUTCOME_OVERFLOW, FALLBACK.FALLBACK_OUTCOME_OFFER_CALLBACK]
)
def test_a_refused_queue_join_that_overflows_or_offers_a_callback_leaves_the_contact(outcome: int) -> None:
    refused = routing_ev.QueueJoinRefused(contact_id="c-1", queue_id="billing", outcome=outcome)

    assert domain.ended_by_routing("QueueJoinRefused", refused) is None


def test_routing_disconnecting_the_contact_ends_it_with_routings_reason() -> None:
    disconnected = routing_ev.ContactDisconnected(
        contact_id="c-1", queue_id="billing", outcome=FALLBACK.FALLBACK_OUTCOME_DISCONNECT, reason="max wait"
    )
    voicemail = routing_ev.ContactDisconnected(
        contact_id="c-1", queue_id="billing", outcome=FALLBACK.FALLBACK_OUTCOME_VOICEMAIL, reason="max wait"
    )

    assert domain.ended_by_routing("ContactDisconnected", disconnected) == domain.EndContact(
        "c-1", END.CONTACT_END_REASON_SYSTEM, "max wait"
    )
    assert domain.ended_by_routing("ContactDisconnected", voicemail).detail == "voicemail"


def test_routings_other_events_change_nothing_here() -> None:
    queued_event = routing_ev.ContactQueued(contact_id="c-1", queue_id="billing")

    assert domain.ended_by_routing("ContactQueued", queued_event) is None


def test_routing_ending_a_contact_that_already_ended_is_refused_as_a_late_report() -> None:
    command = domain.ended_by_routing(
        "ContactDisconnected", routing_ev.ContactDisconnected(contact_id="c-1", reason="ended by telephony")
    )

    with pytest.raises(FailedPrecondition, match="it cannot be ended again"):
        domain.decide(ended_by_caller(), command)


# Properties of any sequence of reports ------------------------------------------------------------

# Numbers as telephony writes them: E.164, after the international prefix, national (read in CN).
numbers = st.one_of(
    st.from_regex(r"(\+|00)?861[3-9][0-9]{9}", fullmatch=True),
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.from_regex(r"(\+|00)44[1-9][0-9]{9}", fullmatch=True),
)
agents = st.sampled_from(["a-1", "a-2", "a-3", ""])
queues = st.sampled_from(["billing", "sales", ""])


def reports(callback_numbers: st.SearchStrategy[str]) -> st.SearchStrategy[domain.Command]:
    """Any report telephony could send about c-1, well or badly formed; an end is rarer than the rest,
    so that sequences live long enough to reach every stage."""
    selection = st.builds(
        domain.RecordIvrSelection,
        st.just("c-1"),
        st.sampled_from(["main", "main", ""]),
        st.sampled_from(["1", "9"]),
        queues,
        st.booleans(),
    )
    routing = st.builds(
        domain.RequestRouting,
        st.just("c-1"),
        queues,
        st.integers(0, 120),
        st.lists(st.tuples(st.sampled_from(["lang.fr", ""]), st.integers(0, 6)), max_size=2),
    )
    answered = st.builds(domain.ReportAnswered, st.just("c-1"), agents)
    hold = st.builds(domain.ReportHold, st.just("c-1"))
    resume = st.builds(domain.ReportResume, st.just("c-1"))
    transfer = st.builds(domain.ReportTransfer, st.just("c-1"), queues, agents, st.booleans())
    callback = st.builds(
        domain.RequestCallback, st.just("c-1"), st.one_of(st.just(Party()), callback_numbers.map(party))
    )
    end = st.builds(domain.EndContact, st.just("c-1"), st.sampled_from(list(END.values())), st.just(""))
    return st.one_of(
        selection, selection, routing, answered, answered, answered, hold, resume, transfer, callback, end
    )


def run_reports(number: str, commands: list, vip: bool) -> tuple[list, list[Contact]]:
    """Start a contact for ``number``, then apply every report decide accepts; returns what each
    accepted report appended, and the contact after each."""
    vip_list = frozenset({party(number).hash}) if vip else frozenset()
    contact = Contact("c-1")
    appended, states = [], []
    for command in [domain.StartContact("c-1", VOICE, party(number)), *commands]:
        try:
            events = domain.decide(contact, command, vip_list)
        except DomainError:
            continue
        appended.append(events)
        contact = fold(contact, events)
        states.append(contact)
    return appended, states


@settings(max_examples=300, deadline=None)
@given(numbers, st.lists(reports(numbers), min_size=10, max_size=40), st.booleans())
def test_nothing_is_recorded_after_a_contact_ends(number: str, commands: list, vip: bool) -> None:
    appended, _ = run_reports(number, commands, vip)

    flat = [event for events in appended for event in events]
    ends = [i for i, event in enumerate(flat) if isinstance(event, ev.ContactEnded)]
    assert ends == [] or ends == [len(flat) - 1], "one end at most, and nothing after it"


@settings(max_examples=300, deadline=None)
@given(numbers, st.lists(reports(numbers), min_size=10, max_size=40), st.booleans())
def test_a_talking_contact_always_has_an_agent(number: str, commands: list, vip: bool) -> None:
    _, states = run_reports(number, commands, vip)

    for contact in states:
        if contact.stage in (Stage.CONTACT_STAGE_TALKING, Stage.CONTACT_STAGE_ON_HOLD):
            assert contact.agent_id, f"{contact.describe()} without an agent"
        if contact.stage == Stage.CONTACT_STAGE_QUEUED:
            assert contact.queue_id and not contact.agent_id


@settings(max_examples=300, deadline=None)
@given(numbers, numbers, st.data())
def test_no_event_holds_a_number_in_clear(number: str, callback_number: str, data: st.DataObject) -> None:
    commands = data.draw(st.lists(reports(st.just(callback_number)), min_size=10, max_size=40))
    appended, _ = run_reports(number, commands, vip=False)

    serialized = b"".join(event.SerializeToString() for events in appended for event in events)
    for clear in (number, callback_number):
        for form in (clear, clear.lstrip("+"), clear[-8:]):
            assert form.encode() not in serialized


def test_a_contact_takes_a_bounded_number_of_ivr_selections() -> None:
    contact = in_ivr()
    for n in range(domain.MAX_IVR_SELECTIONS):
        contact = fold(contact, domain.decide(contact, domain.RecordIvrSelection("c-1", "main", str(n % 9))))

    with pytest.raises(FailedPrecondition, match="already made 64 IVR selections"):
        domain.decide(contact, domain.RecordIvrSelection("c-1", "main", "1"))
