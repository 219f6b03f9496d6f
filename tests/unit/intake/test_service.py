"""The intake service through its real gRPC API, over the in-memory broker, with reactions to routing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as ev
from callcenter.intake.v1 import service_pb2 as pb
from callcenter.intake.v1 import service_pb2_grpc
from callcenter.routing.v1 import events_pb2 as routing_ev
from google.protobuf.message import Message
from pydantic import SecretStr

from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import (
    EVENTS_TOPIC,
    KIND,
    SNAPSHOTS_TOPIC,
    IntakeService,
    RoutingBacklog,
    contact_id_for,
    contact_kind,
    registry,
)
from services.platform.consumer import ConsumerRunner
from services.platform.envelope import Cause, Envelope, decode, encode, make_envelope
from services.platform.eventstore import EventStore, OutgoingRecord
from services.platform.grpc_server import ServiceRegistration, create_server
from services.platform.privacy import pseudonymise
from services.platform.settings import IntakeSettings, PrivacySettings
from tests.support.identity import CallerChannel, server_security
from tests.support.memory import InMemoryBroker, InMemoryEventLog, InMemorySource

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
VOICE = types_pb2.Channel.CHANNEL_VOICE
STAGE = pb.ContactStage
END = ev.ContactEndReason
FALLBACK = routing_ev.FallbackOutcome
PRIVACY = PrivacySettings(hmac_key=SecretStr("test-key"))
NUMBER = "+44 20 7946 0958"
VIP_NUMBER = "+1 555 0100 999"
CLEAR_FORMS = (b"+442079460958", b"442079460958", b"79460958", b"7946 0958")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Intake:
    broker: InMemoryBroker
    clock: Clock
    store: EventStore
    runner: ConsumerRunner
    stub: service_pb2_grpc.IntakeServiceStub

    def publish_routing(self, payload: Message) -> None:
        """Write an event as routing would have, then let intake react to it."""
        envelope = make_envelope(
            payload,
            registry=registry(),
            aggregate_type="QueueEntry",
            aggregate_id=payload.contact_id,
            aggregate_version=1,
            occurred_at=self.clock.now,
            cause=Cause.request(f"routing-{len(self.broker.records('routing.events.v1'))}"),
        )
        key, value, headers = encode(envelope)
        self.broker.write(OutgoingRecord("routing.events.v1", key, value, headers))
        self.runner.run_once()

    def events(self) -> list[Envelope]:
        return [decode(r.value, r.headers, registry()) for r in self.broker.records(EVENTS_TOPIC)]

    def types(self, contact_id: str = "c-1") -> list[str]:
        return [e.event_type for e in self.events() if e.aggregate_id == contact_id]

    def start(self, contact_id: str = "c-1", request_id: str = "start-1", number: str = NUMBER) -> pb.Contact:
        request = pb.StartContactRequest(
            request_id=request_id,
            contact_id=contact_id,
            channel=VOICE,
            caller_number=number,
            dialed_number="100",
            gateway="pbx-1",
        )
        return self.stub.StartContact(request).contact

    def select(self, contact_id: str = "c-1", queue_id: str = "billing") -> pb.Contact:
        request = pb.RecordIvrSelectionRequest(
            request_id=f"ivr-{contact_id}",
            contact_id=contact_id,
            menu="main",
            selection="2",
            queue_id=queue_id,
        )
        return self.stub.RecordIvrSelection(request).contact

    def answer(
        self, contact_id: str = "c-1", agent_id: str = "a-1", request_id: str = "answer-1"
    ) -> pb.Contact:
        request = pb.ReportAnsweredRequest(request_id=request_id, contact_id=contact_id, agent_id=agent_id)
        return self.stub.ReportAnswered(request).contact

    def end(self, contact_id: str = "c-1", request_id: str = "end-1") -> pb.Contact:
        request = pb.EndContactRequest(
            request_id=request_id, contact_id=contact_id, reason=END.CONTACT_END_REASON_CALLER
        )
        return self.stub.EndContact(request).contact

    def contact(self, contact_id: str = "c-1") -> pb.Contact:
        return self.stub.GetContact(pb.GetContactRequest(contact_id=contact_id)).contact


def _store(broker: InMemoryBroker, clock: Clock) -> EventStore:
    return EventStore(
        InMemoryEventLog(broker, EVENTS_TOPIC, SNAPSHOTS_TOPIC, "intake-0"),
        registry(),
        [contact_kind()],
        clock=clock,
        forget_closed_after=timedelta(hours=1),
    )


@pytest.fixture
def intake() -> Iterator[Intake]:
    broker, clock = InMemoryBroker(), Clock()
    store = _store(broker, clock)
    vip = pseudonymise(VIP_NUMBER, PRIVACY).hash
    service = IntakeService(store, PRIVACY, IntakeSettings(vip_caller_hashes=frozenset({vip})), clock)
    store.start()
    runner = ConsumerRunner(
        "intake", InMemorySource(broker, "intake", ["routing.events.v1"]), store, registry(), service.react
    )
    server = create_server(
        "127.0.0.1:0",
        [
            ServiceRegistration(
                service_pb2_grpc.add_IntakeServiceServicer_to_server,
                IntakeServicer(service),
                "callcenter.intake.v1.IntakeService",
            )
        ],
        max_workers=4,
        **server_security(),
    )
    channel = CallerChannel(f"127.0.0.1:{server.port}")
    yield Intake(broker, clock, store, runner, service_pb2_grpc.IntakeServiceStub(channel))
    channel.close()
    server.stop(0)


def test_a_whole_call_as_telephony_reports_it(intake: Intake) -> None:
    started = intake.start()
    assert (started.stage, started.caller.masked, started.version) == (
        STAGE.CONTACT_STAGE_IVR,
        "*********0958",
        1,
    )
    assert started.started_at.ToDatetime(UTC) == T0

    queued = intake.select()
    assert (queued.stage, queued.queue_id, list(queued.ivr_path)) == (
        STAGE.CONTACT_STAGE_QUEUED,
        "billing",
        ["main:2"],
    )
    assert intake.answer().stage == STAGE.CONTACT_STAGE_TALKING
    held = intake.stub.ReportHold(pb.ReportHoldRequest(request_id="hold-1", contact_id="c-1")).contact
    assert held.stage == STAGE.CONTACT_STAGE_ON_HOLD
    resumed = intake.stub.ReportResume(
        pb.ReportResumeRequest(request_id="resume-1", contact_id="c-1")
    ).contact
    assert resumed.stage == STAGE.CONTACT_STAGE_TALKING
    intake.clock.now = T0 + timedelta(minutes=4)
    ended = intake.stub.EndContact(
        pb.EndContactRequest(request_id="end-1", contact_id="c-1", reason=END.CONTACT_END_REASON_AGENT)
    ).contact

    assert (ended.stage, ended.agent_id, ended.version) == (STAGE.CONTACT_STAGE_ENDED, "a-1", 7)
    assert ended.ended_at.ToDatetime(UTC) == T0 + timedelta(minutes=4)
    assert intake.types() == [
        "ContactStarted",
        "IvrSelectionRecorded",
        "RoutingRequested",
        "ContactAnswered",
        "ContactHeld",
        "ContactResumed",
        "ContactEnded",
    ]
    [end] = [e.payload for e in intake.events() if e.event_type == "ContactEnded"]
    assert (end.reason, end.agent_id) == (END.CONTACT_END_REASON_AGENT, "a-1")


def test_a_gateway_routes_a_contact_with_skills_and_a_boost(intake: Intake) -> None:
    intake.start()

    contact = intake.stub.RequestRouting(
        pb.RequestRoutingRequest(
            request_id="route-1",
            contact_id="c-1",
            queue_id="support",
            priority_boost=10,
            required_skills=[types_pb2.SkillLevel(skill="lang.fr", proficiency=3)],
        )
    ).contact

    assert (contact.stage, contact.queue_id) == (STAGE.CONTACT_STAGE_QUEUED, "support")
    [routed] = [e.payload for e in intake.events() if e.event_type == "RoutingRequested"]
    assert (routed.priority_boost, routed.reason, routed.channel) == (10, "gateway", VOICE)
    assert [(s.skill, s.proficiency) for s in routed.required_skills] == [("lang.fr", 3)]


def test_a_transfer_queues_the_contact_again_for_routing(intake: Intake) -> None:
    intake.start()
    intake.select()
    intake.answer()

    contact = intake.stub.ReportTransfer(
        pb.ReportTransferRequest(request_id="xfer-1", contact_id="c-1", to_agent_id="a-2", consulted=True)
    ).contact

    assert (contact.stage, contact.queue_id, contact.agent_id) == (STAGE.CONTACT_STAGE_QUEUED, "billing", "")
    transferred, routed = [e.payload for e in intake.events()][-2:]
    assert (transferred.from_agent_id, transferred.to_agent_id, transferred.consulted) == ("a-1", "a-2", True)
    assert (routed.queue_id, routed.target_agent_id, routed.reason) == ("billing", "a-2", "transfer")
    assert intake.answer(agent_id="a-2", request_id="answer-2").agent_id == "a-2"


def test_a_callback_waits_for_the_agents_call_out_to_be_answered(intake: Intake) -> None:
    intake.start()
    intake.select()
    request = pb.RequestCallbackRequest(
        request_id="cb-1", contact_id="c-1", callback_number="+44 7700 900123"
    )
    request.window_start.FromDatetime(T0 + timedelta(hours=1))
    request.window_end.FromDatetime(T0 + timedelta(hours=3))

    pending = intake.stub.RequestCallback(request).contact

    assert pending.stage == STAGE.CONTACT_STAGE_CALLBACK_PENDING
    [requested] = [e.payload for e in intake.events() if e.event_type == "CallbackRequested"]
    assert requested.callback_party == pseudonymise("+44 7700 900123", PRIVACY)
    assert requested.window_end.ToDatetime(UTC) == T0 + timedelta(hours=3)
    assert intake.answer(agent_id="a-5").stage == STAGE.CONTACT_STAGE_TALKING


def test_a_known_vip_caller_is_routed_as_one(intake: Intake) -> None:
    intake.start(number=VIP_NUMBER)
    intake.select()
    intake.start(contact_id="c-2", request_id="start-2")
    intake.select(contact_id="c-2")

    routed = {e.aggregate_id: e.payload.vip for e in intake.events() if e.event_type == "RoutingRequested"}

    assert routed == {"c-1": True, "c-2": False}


def test_a_refused_queue_join_with_nowhere_to_go_ends_the_contact(intake: Intake) -> None:
    intake.start()
    intake.select(queue_id="closed")

    intake.publish_routing(
        routing_ev.QueueJoinRefused(
            contact_id="c-1",
            queue_id="closed",
            reason="queue closed is closed",
            outcome=FALLBACK.FALLBACK_OUTCOME_DISCONNECT,
        )
    )

    assert intake.contact().stage == STAGE.CONTACT_STAGE_ENDED
    [ended] = [e for e in intake.events() if e.event_type == "ContactEnded"]
    assert (ended.payload.reason, ended.payload.detail) == (
        END.CONTACT_END_REASON_SYSTEM,
        "queue closed is closed",
    )
    assert ended.causation_id != "" and ended.correlation_id != ""


def test_a_refused_queue_join_that_overflows_leaves_the_contact_queued(intake: Intake) -> None:
    intake.start()
    intake.select()

    intake.publish_routing(
        routing_ev.QueueJoinRefused(
            contact_id="c-1",
            queue_id="billing",
            outcome=FALLBACK.FALLBACK_OUTCOME_OVERFLOW,
            overflow_queue_id="general",
        )
    )
    intake.publish_routing(
        routing_ev.QueueJoinRefused(
            contact_id="c-1", queue_id="billing", outcome=FALLBACK.FALLBACK_OUTCOME_OFFER_CALLBACK
        )
    )

    assert intake.contact().stage == STAGE.CONTACT_STAGE_QUEUED
    assert "ContactEnded" not in intake.types()


def test_routing_sending_the_contact_to_voicemail_ends_it(intake: Intake) -> None:
    intake.start()
    intake.select()

    intake.publish_routing(
        routing_ev.ContactDisconnected(
            contact_id="c-1",
            queue_id="billing",
            outcome=FALLBACK.FALLBACK_OUTCOME_VOICEMAIL,
            reason="max wait",
        )
    )

    [ended] = [e.payload for e in intake.events() if e.event_type == "ContactEnded"]
    assert (ended.reason, ended.detail) == (END.CONTACT_END_REASON_SYSTEM, "voicemail")


def test_routings_disconnect_after_the_caller_hung_up_changes_nothing(intake: Intake) -> None:
    intake.start()
    intake.select()
    intake.end()

    intake.publish_routing(
        routing_ev.ContactDisconnected(
            contact_id="c-1", queue_id="billing", reason="ended by telephony (caller)"
        )
    )
    intake.publish_routing(routing_ev.ContactDisconnected(contact_id="c-unknown", queue_id="billing"))

    assert intake.types().count("ContactEnded") == 1
    assert intake.types("c-unknown") == []
    assert (intake.runner.stats.handled, intake.runner.stats.dead_lettered) == (2, 0)


def test_the_same_request_twice_changes_nothing(intake: Intake) -> None:
    intake.start()
    intake.select()
    before = len(intake.events())

    first = intake.answer(request_id="answer-1")
    again = intake.answer(request_id="answer-1")
    intake.start()

    assert first == again
    assert len(intake.events()) == before + 1


def test_a_start_retried_without_a_contact_id_names_the_same_contact(intake: Intake) -> None:
    first = intake.start(contact_id="", request_id="pbx-call-77")
    again = intake.start(contact_id="", request_id="pbx-call-77")
    other = intake.start(contact_id="", request_id="pbx-call-78")

    assert first.contact_id == again.contact_id == contact_id_for("pbx-call-77")
    assert other.contact_id not in ("", first.contact_id)
    assert [e.event_type for e in intake.events()] == ["ContactStarted", "ContactStarted"]


def test_bad_reports_get_clear_status_codes(intake: Intake) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        intake.contact("nobody")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown.value.details() == "contact nobody is not known (never started, or ended long ago)"

    with pytest.raises(grpc.RpcError) as no_channel:
        intake.stub.StartContact(pb.StartContactRequest(request_id="s-0", contact_id="c-0"))
    assert no_channel.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert no_channel.value.details() == "channel: must not be in list [0] (enum.not_in); got 0"

    intake.start()
    with pytest.raises(grpc.RpcError) as twice:
        intake.start(request_id="start-again")
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert twice.value.details() == "contact c-1 is in the IVR; it was started before and cannot start again"

    with pytest.raises(grpc.RpcError) as early:
        intake.stub.ReportHold(pb.ReportHoldRequest(request_id="hold-1", contact_id="c-1"))
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert early.value.details() == "contact c-1 is in the IVR; it cannot be put on hold"

    with pytest.raises(grpc.RpcError) as no_request_id:
        intake.stub.ReportHold(pb.ReportHoldRequest(contact_id="c-1"))
    assert no_request_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert no_request_id.value.details().startswith("request_id: value is required (required)")

    intake.select()
    intake.clock.now = T0 + timedelta(minutes=3, seconds=12)
    intake.end()
    with pytest.raises(grpc.RpcError) as late:
        intake.answer(request_id="answer-late")
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert late.value.details() == (
        "contact c-1 is ended (by caller at 09:03:12); it cannot be answered by agent a-1"
    )


def test_no_record_on_the_contacts_topic_holds_the_callers_number(intake: Intake) -> None:
    intake.start()
    intake.select()
    intake.stub.RequestCallback(
        pb.RequestCallbackRequest(request_id="cb-1", contact_id="c-1", callback_number=NUMBER)
    )
    intake.answer()
    intake.end()
    intake.store.snapshot()

    assert len(intake.broker.records(EVENTS_TOPIC)) == 6
    records = intake.broker.records(EVENTS_TOPIC) + intake.broker.records(SNAPSHOTS_TOPIC)
    for record in records:
        assert not any(clear in (record.value or b"") for clear in CLEAR_FORMS)
        assert not any(clear in value for clear in CLEAR_FORMS for _, value in record.headers)


def test_contacts_come_back_from_a_snapshot_as_they_were(intake: Intake) -> None:
    intake.start()
    intake.select()
    intake.answer()
    intake.start(contact_id="c-2", request_id="start-2", number=VIP_NUMBER)
    intake.select(contact_id="c-2")
    intake.store.snapshot()

    restarted = _store(intake.broker, intake.clock)
    restarted.start()

    assert restarted.restored_aggregates == 2 and restarted.replayed_events == 0
    for contact_id in ("c-1", "c-2"):
        assert restarted.load(KIND, contact_id) == intake.store.load(KIND, contact_id)
    assert restarted.load(KIND, "c-2").state.vip


def test_an_ended_contact_is_forgotten_an_hour_later(intake: Intake) -> None:
    intake.start()
    intake.end()
    intake.start(contact_id="c-2", request_id="start-2")

    intake.clock.now = T0 + timedelta(hours=1, minutes=1)
    intake.start(contact_id="c-3", request_id="start-3")

    with pytest.raises(grpc.RpcError) as forgotten:
        intake.contact("c-1")
    assert forgotten.value.code() == grpc.StatusCode.NOT_FOUND
    assert intake.contact("c-2").stage == STAGE.CONTACT_STAGE_IVR


def test_while_routing_is_far_behind_new_contacts_are_refused_and_those_in_the_center_go_on(
    intake: Intake,
) -> None:
    intake.start("c-1")
    intake.select("c-1")
    intake.clock.now += timedelta(seconds=6)  # routing has not taken c-1 up for 6 s

    with pytest.raises(grpc.RpcError) as refused:
        intake.start("c-2", request_id="start-2")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "routing is 6.0 s behind" in refused.value.details()
    assert "c-2" not in {e.aggregate_id for e in intake.events()}
    intake.answer("c-1")  # a contact already in the center is served as before

    intake.publish_routing(routing_ev.ContactQueued(contact_id="c-1", queue_id="billing", visit=1))
    assert intake.start("c-2", request_id="start-2").contact_id == "c-2"


def test_a_retried_routing_request_after_routings_answer_leaves_nothing_waiting(intake: Intake) -> None:
    intake.start("c-1")
    intake.select("c-1")
    intake.publish_routing(routing_ev.ContactQueued(contact_id="c-1", queue_id="billing", visit=1))

    intake.select("c-1")  # the adapter retries (its first answer was lost): the first's result again
    intake.clock.now += timedelta(minutes=5)

    assert intake.start("c-2", request_id="start-2").contact_id == "c-2", "not refused as at capacity"


def test_routings_answer_read_before_its_request_is_recorded_leaves_nothing_waiting() -> None:
    clock = Clock()
    backlog = RoutingBacklog(clock)
    backlog.taken("c-1")  # intake's reactions read ContactQueued before the request's thread resumed
    backlog.requested("c-1")
    clock.now += timedelta(minutes=1)
    assert backlog.behind() == timedelta(0)

    backlog.requested("c-1")  # a transfer of the same contact later waits as any request
    clock.now += timedelta(seconds=6)
    assert backlog.behind() == timedelta(seconds=6)
    backlog.taken("c-1")
    assert backlog.behind() == timedelta(0)


# Caller numbers --------------------------------------------------------------------------------


def test_one_caller_in_every_form_telephony_writes_the_number_is_one_pseudonym(intake: Intake) -> None:
    forms = ("+86 139-1234-5678", "008613912345678", "13912345678", "sip:+8613912345678@gw;user=phone")
    for n, written in enumerate(forms):
        intake.start(contact_id=f"c-{n}", request_id=f"start-{n}", number=written)

    callers = {
        e.payload.caller.SerializeToString() for e in intake.events() if e.event_type == "ContactStarted"
    }
    assert callers == {pseudonymise("+8613912345678", PRIVACY).SerializeToString()}
    assert intake.contact("c-2").caller.masked == "**********5678"


@pytest.mark.parametrize(
    "withheld", ["", "anonymous", "Restricted", '"Anonymous" <sip:anonymous@anonymous.invalid>', "0000000000"]
)
def test_a_withheld_number_starts_a_contact_with_no_caller_reference(intake: Intake, withheld: str) -> None:
    started = intake.start(number=withheld)

    assert started.stage == STAGE.CONTACT_STAGE_IVR
    assert started.caller == types_pb2.PartyReference()
    [event] = intake.events()
    assert event.payload.caller == types_pb2.PartyReference()


@pytest.mark.parametrize("written", ["not-a-number", "+999 1234 5678", "139 1234 5678 ext 9", "1"])
def test_an_unreadable_caller_number_is_refused_naming_the_field_and_nothing_is_recorded(
    intake: Intake, written: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        intake.start(number=written)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("caller_number: not a phone number")
    assert written not in refused.value.details()
    assert intake.events() == []
    assert intake.start(number=NUMBER).stage == STAGE.CONTACT_STAGE_IVR, "the refusal is not remembered"


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("anonymous", "callback_number: a withheld number (anonymous, restricted, unavailable) cannot be"),
        ("sip:anonymous@anonymous.invalid", "callback_number: a withheld number"),
        ("jane@example.org", "callback_number: an e-mail address cannot be called"),
        ("call me", "callback_number: not a phone number"),
    ],
)
def test_a_callback_to_a_withheld_or_unreadable_number_is_refused_and_nothing_is_recorded(
    intake: Intake, number: str, says: str
) -> None:
    intake.start()
    intake.select()
    before = intake.types()

    with pytest.raises(grpc.RpcError) as refused:
        intake.stub.RequestCallback(
            pb.RequestCallbackRequest(request_id="cb-1", contact_id="c-1", callback_number=number)
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(says)
    assert intake.types() == before
    assert intake.contact().stage == STAGE.CONTACT_STAGE_QUEUED


def test_a_withheld_caller_cannot_be_called_back_on_their_own_number(intake: Intake) -> None:
    intake.start(number="anonymous")
    intake.select()

    with pytest.raises(grpc.RpcError) as refused:
        intake.stub.RequestCallback(pb.RequestCallbackRequest(request_id="cb-1", contact_id="c-1"))

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "anonymous caller; a callback needs the number to call" in refused.value.details()
    assert "CallbackRequested" not in intake.types()
    called_back = intake.stub.RequestCallback(
        pb.RequestCallbackRequest(request_id="cb-2", contact_id="c-1", callback_number="13912345678")
    ).contact
    assert called_back.stage == STAGE.CONTACT_STAGE_CALLBACK_PENDING
