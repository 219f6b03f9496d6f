"""The ACD with the agents service beside it, in memory: contacts routed, offered, answered, missed,
rejected, abandoned, escalated, overflowed and called back, through the real reactions and timers."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as ev
from callcenter.routing.v1 import service_pb2 as pb
from callcenter.routing.v1 import service_pb2_grpc

from services.agents import domain as agents_domain
from services.platform.envelope import Cause, encode, make_envelope
from services.platform.errors import FailedPrecondition
from services.platform.eventstore import EventStore, OutgoingRecord
from services.platform.grpc_server import ServiceRegistration, create_server
from services.routing import handlers as routing
from services.routing.domain import Status
from services.routing.grpc_api import RoutingServicer
from tests.support.center import Center, build_center
from tests.support.identity import CallerChannel, server_security
from tests.support.memory import InMemoryEventLog

S = agents_domain.State
VOICE = types_pb2.Channel.CHANNEL_VOICE
CONTACTS = "contacts.events.v1"


def billing(**fields) -> ev.QueueConfig:
    steps = fields.pop("steps", [])
    config = ev.QueueConfig(
        queue_id=fields.pop("queue_id", "billing"),
        required_skills=[types_pb2.SkillLevel(skill=fields.pop("skill", "billing"), proficiency=4)],
        priority=fields.pop("priority", 10),
        **fields,
    )
    for after, extra in steps:
        step = config.escalation_steps.add(**extra)
        step.after.FromSeconds(after)
    return config


@pytest.fixture
def center() -> Center:
    center = build_center()
    center.upsert_queue(billing(ring_timeout={"seconds": 20}, reject_delay={"seconds": 30}))
    return center


def call(center: Center, contact_id: str, queue_id: str = "billing", **fields) -> None:
    """Intake hands a contact to routing (what its RecordIvrSelection does)."""
    request = intake_ev.RoutingRequested(contact_id=contact_id, queue_id=queue_id, channel=VOICE, **fields)
    center.publish(CONTACTS, "Contact", contact_id, request)


def hang_up(center: Center, contact_id: str, agent_id: str = "") -> None:
    ended = intake_ev.ContactEnded(
        contact_id=contact_id, reason=intake_ev.ContactEndReason.CONTACT_END_REASON_CALLER, agent_id=agent_id
    )
    center.publish(CONTACTS, "Contact", contact_id, ended)


def routing_events(center: Center, *types: str) -> list:
    return center.payloads(routing.EVENTS_TOPIC, *types)


def test_a_contact_queued_with_an_agent_ready_is_offered_in_the_same_commit_and_connects(
    center: Center,
) -> None:
    center.login("a-1")

    call(center, "c-1")

    _, offered = routing_events(center, "ContactQueued", "ContactOffered")
    assert (offered.contact_id, offered.agent_id) == ("c-1", "a-1")
    [queued_env, offered_env] = [
        e for e in center.events(routing.EVENTS_TOPIC) if e.event_type in ("ContactQueued", "ContactOffered")
    ]
    assert offered_env.causation_id == queued_env.causation_id, "one reaction decided both"
    assert center.agent("a-1").state == S.AGENT_STATE_RESERVED

    center.accept("a-1")

    assert center.entry("c-1").status == Status.CONNECTED
    [connected] = routing_events(center, "ContactConnected")
    assert (connected.agent_id, connected.offer_id) == ("a-1", offered.offer_id)


def test_a_contact_waits_until_an_agent_becomes_ready(center: Center) -> None:
    center.login("a-1")
    center.agent_does(
        agents_domain.SetNotReady("a-1", agents_domain.Reason.NOT_READY_REASON_BREAK, center.clock.now)
    )
    call(center, "c-1")
    assert routing_events(center, "ContactOffered") == []

    center.advance(30)
    center.agent_does(agents_domain.SetReady("a-1", center.clock.now))

    [offered] = routing_events(center, "ContactOffered")
    assert offered.waited.seconds == 30


def test_a_missed_offer_makes_the_agent_not_ready_and_the_contact_goes_to_the_next_agent(
    center: Center,
) -> None:
    center.login("a-1")
    center.advance(5)
    center.login("a-2")
    call(center, "c-1")
    assert center.agent("a-1").state == S.AGENT_STATE_RESERVED, "the longest idle first"

    center.advance(20)

    assert (center.agent("a-1").state, center.agent("a-1").reason) == (
        S.AGENT_STATE_NOT_READY,
        agents_domain.Reason.NOT_READY_REASON_MISSED_OFFER,
    )
    [timed_out] = routing_events(center, "OfferTimedOut")
    assert (timed_out.agent_id, timed_out.agent_reason) == ("a-1", "missed_offer")
    assert center.agent("a-2").state == S.AGENT_STATE_RESERVED


def test_a_rejecting_agent_is_skipped_for_the_reject_delay(center: Center) -> None:
    center.login("a-1")
    call(center, "c-1")

    center.reject("a-1")

    assert center.agent("a-1").state == S.AGENT_STATE_READY
    assert center.entry("c-1").status == Status.WAITING, "not offered to the same agent at once"
    center.advance(30)
    assert center.entry("c-1").status == Status.OFFERED
    assert len(routing_events(center, "ContactOffered")) == 2


def test_abandon_while_queued_and_while_ringing(center: Center) -> None:
    call(center, "c-1")
    center.advance(12)
    hang_up(center, "c-1")
    [abandoned] = routing_events(center, "ContactAbandoned")
    assert (abandoned.stage, abandoned.waited.seconds, abandoned.short_abandon) == (
        ev.AbandonStage.ABANDON_STAGE_QUEUED,
        12,
        False,
    )

    center.login("a-1")
    call(center, "c-2")
    hang_up(center, "c-2")

    stages = {a.contact_id: a.stage for a in routing_events(center, "ContactAbandoned")}
    assert stages == {
        "c-1": ev.AbandonStage.ABANDON_STAGE_QUEUED,
        "c-2": ev.AbandonStage.ABANDON_STAGE_RINGING,
    }
    assert [w.contact_id for w in routing_events(center, "OfferWithdrawn")] == ["c-2"]
    assert center.agent("a-1").state == S.AGENT_STATE_READY
    assert center.entry("c-2").offer is None


def test_two_queues_wanting_the_same_agent_get_them_one_after_the_other(center: Center) -> None:
    center.upsert_queue(billing(queue_id="vip", priority=50))
    call(center, "c-normal")
    call(center, "c-vip", queue_id="vip")

    center.login("a-1")

    [first] = routing_events(center, "ContactOffered")
    assert first.contact_id == "c-vip", "the higher priority first"
    center.accept("a-1")
    hang_up(center, "c-vip", "a-1")
    center.agent_does(agents_domain.CompleteWrapUp("a-1", "c-vip", "done", center.clock.now))
    assert [o.contact_id for o in routing_events(center, "ContactOffered")] == ["c-vip", "c-normal"]


def test_an_agent_going_not_ready_while_offered_sends_the_contact_back(center: Center) -> None:
    center.login("a-1")
    call(center, "c-1")

    center.agent_does(
        agents_domain.SetNotReady("a-1", agents_domain.Reason.NOT_READY_REASON_LUNCH, center.clock.now)
    )

    assert center.entry("c-1").status == Status.WAITING
    center.login("a-2")
    assert center.entry("c-1").offer.agent_id == "a-2"


def test_the_proficiency_relaxes_at_the_escalation_step(center: Center) -> None:
    center.upsert_queue(billing(queue_id="relaxed", steps=[(30, {"min_proficiency": 2})]))
    center.login("novice", {"billing": 2})
    call(center, "c-1", queue_id="relaxed")
    assert center.entry("c-1").status == Status.WAITING

    center.advance(30)

    [step] = routing_events(center, "EscalationStepReached")
    assert step.step == 1
    [offered] = routing_events(center, "ContactOffered")
    assert (offered.agent_id, offered.escalation_step) == ("novice", 1)


def test_a_queue_may_overflow_only_into_a_queue_that_exists(center: Center) -> None:
    overflowing = billing(
        queue_id="main", fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW, fallback_queue_id="backup"
    )

    with pytest.raises(FailedPrecondition, match="fallback_queue_id 'backup' names no existing queue"):
        center.upsert_queue(overflowing)
    assert not center.routing_store.load(routing.QUEUE, "main").exists

    center.upsert_queue(billing(queue_id="backup"))
    center.upsert_queue(overflowing)
    assert center.routing_store.load(routing.QUEUE, "main").exists


def test_a_contact_overflows_to_the_backup_queue_at_its_maximum_wait(center: Center) -> None:
    center.upsert_queue(billing(queue_id="backup", skill="general"))
    center.upsert_queue(
        billing(
            queue_id="main",
            max_wait={"seconds": 60},
            fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW,
            fallback_queue_id="backup",
        )
    )
    center.login("generalist", {"general": 4})
    call(center, "c-1", queue_id="main")

    center.advance(60)

    [overflowed] = routing_events(center, "ContactOverflowed")
    assert (overflowed.to_queue_id, overflowed.reason) == (
        "backup",
        ev.OverflowReason.OVERFLOW_REASON_MAX_WAIT,
    )
    assert center.entry("c-1").offer.agent_id == "generalist"


def test_a_callback_keeps_its_place_and_is_offered_when_reached(center: Center) -> None:
    call(center, "c-1")
    center.advance(10)
    call(center, "c-2")
    center.publish(
        CONTACTS, "Contact", "c-1", intake_ev.CallbackRequested(contact_id="c-1", queue_id="billing")
    )
    ended = intake_ev.ContactEnded(
        contact_id="c-1", reason=intake_ev.ContactEndReason.CONTACT_END_REASON_CALLBACK_ACCEPTED
    )
    center.publish(CONTACTS, "Contact", "c-1", ended)

    center.login("a-1")

    [offered] = routing_events(center, "ContactOffered")
    assert (offered.contact_id, offered.is_callback) == ("c-1", True)
    assert routing_events(center, "ContactAbandoned") == []
    center.accept("a-1")
    [connected] = routing_events(center, "ContactConnected")
    assert connected.is_callback


def test_when_the_last_agent_leaves_a_leave_when_empty_queue_its_callers_get_the_fallback(
    center: Center,
) -> None:
    center.upsert_queue(
        billing(
            queue_id="night",
            empty_queue_rule=ev.EmptyQueueRule.EMPTY_QUEUE_RULE_LEAVE_WHEN_EMPTY,
            fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_VOICEMAIL,
        )
    )
    center.login("a-1")
    center.agent_does(
        agents_domain.SetNotReady("a-1", agents_domain.Reason.NOT_READY_REASON_BREAK, center.clock.now)
    )
    call(center, "c-1", queue_id="night")

    center.agent_does(agents_domain.Logout("a-1", center.clock.now))

    [disconnected] = routing_events(center, "ContactDisconnected")
    assert disconnected.outcome == ev.FallbackOutcome.FALLBACK_OUTCOME_VOICEMAIL
    assert center.entry("c-1").outcome == "voicemail"


def test_a_transfer_to_a_named_agent_is_offered_to_them_only_then_to_the_queue(center: Center) -> None:
    center.login("a-1")
    center.advance(1)
    center.login("a-2")
    call(center, "c-1", target_agent_id="a-2", reason="transfer")
    assert center.entry("c-1").offer.agent_id == "a-2", "not the longest idle a-1"

    center.reject("a-2")

    assert center.entry("c-1").offer.agent_id == "a-1"


def test_the_same_event_twice_changes_nothing(center: Center) -> None:
    call(center, "c-1")
    [record] = [r for r in center.broker.records(CONTACTS)]
    before = len(center.broker.records(routing.EVENTS_TOPIC))

    center.broker.write(OutgoingRecord(CONTACTS, record.key, record.value, list(record.headers)))
    center.settle()

    assert len(center.broker.records(routing.EVENTS_TOPIC)) == before


def test_routing_rebuilt_after_a_restart_goes_on_where_it_stopped(center: Center) -> None:
    center.login("a-1")
    call(center, "c-1")
    call(center, "c-2")
    center.routing_store.close()

    restarted = build_center(center.clock, center.broker)

    assert restarted.entry("c-1").status == Status.OFFERED
    assert restarted.entry("c-2").status == Status.WAITING
    assert restarted.routing.board.seat("a-1").state == S.AGENT_STATE_RESERVED
    restarted.accept("a-1")
    hang_up(restarted, "c-1", "a-1")
    restarted.agent_does(agents_domain.CompleteWrapUp("a-1", "c-1", "done", restarted.clock.now))
    assert restarted.entry("c-2").offer.agent_id == "a-1"
    assert len(restarted.payloads(routing.EVENTS_TOPIC, "ContactOffered")) == 2, "nothing offered twice"


# The gRPC API -------------------------------------------------------------------------------------


@pytest.fixture
def stub(center: Center) -> Iterator[service_pb2_grpc.RoutingServiceStub]:
    server = create_server(
        "127.0.0.1:0",
        [
            ServiceRegistration(
                service_pb2_grpc.add_RoutingServiceServicer_to_server,
                RoutingServicer(center.routing),
                "callcenter.routing.v1.RoutingService",
            )
        ],
        max_workers=4,
        **server_security(),
    )
    channel = CallerChannel(f"127.0.0.1:{server.port}")
    yield service_pb2_grpc.RoutingServiceStub(channel)
    channel.close()
    server.stop(0)


def test_a_queue_is_created_read_and_changed_with_its_version(stub) -> None:
    created = stub.UpsertQueue(pb.UpsertQueueRequest(request_id="r1", config=billing(queue_id="sales")))
    assert (created.version, created.config.ring_timeout.seconds) == (1, 20)

    changed = billing(queue_id="sales", max_queue_length=50)
    stub.UpsertQueue(pb.UpsertQueueRequest(request_id="r2", config=changed, expected_version=1))
    with pytest.raises(grpc.RpcError) as stale:
        stub.UpsertQueue(pb.UpsertQueueRequest(request_id="r3", config=changed, expected_version=1))

    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "queue sales is at version 2" in stale.value.details()
    assert stub.GetQueue(pb.GetQueueRequest(queue_id="sales")).config.max_queue_length == 50
    assert {q.queue_id for q in stub.ListQueues(pb.ListQueuesRequest()).queues} == {"billing", "sales"}


def test_bad_queue_requests_get_clear_status_codes(stub) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetQueueStatus(pb.GetQueueStatusRequest(queue_id="nowhere"))
    assert (unknown.value.code(), unknown.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "queue nowhere does not exist",
    )

    with pytest.raises(grpc.RpcError) as malformed:
        stub.UpsertQueue(
            pb.UpsertQueueRequest(
                request_id="r", config=billing(priority=0, queue_id="x", max_wait={"seconds": -1})
            )
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert malformed.value.details().startswith("config.max_wait: must be greater than or equal to 0s")


def test_queue_status_and_wait_estimate_for_the_announcement(center: Center, stub) -> None:
    center.login("a-1")
    for n in range(3):
        call(center, f"c-{n}")
        center.accept("a-1")
        center.advance(20)
        hang_up(center, f"c-{n}", "a-1")
        center.agent_does(agents_domain.CompleteWrapUp("a-1", f"c-{n}", "done", center.clock.now))
        center.agent_does(
            agents_domain.SetNotReady("a-1", agents_domain.Reason.NOT_READY_REASON_BREAK, center.clock.now)
        )
        center.advance(10)
        center.agent_does(agents_domain.SetReady("a-1", center.clock.now))
    center.agent_does(
        agents_domain.SetNotReady("a-1", agents_domain.Reason.NOT_READY_REASON_BREAK, center.clock.now)
    )
    call(center, "w-1")
    center.advance(15)
    call(center, "w-2")

    status = stub.GetQueueStatus(pb.GetQueueStatusRequest(queue_id="billing")).status
    assert (status.waiting, status.ringing, status.longest_wait.seconds) == (2, 0, 15)
    assert (status.agents_logged_in, status.agents_ready) == (1, 0)

    estimate = stub.EstimateWait(pb.EstimateWaitRequest(queue_id="billing", contact_id="w-2"))
    assert estimate.position == 2
    assert estimate.estimated_wait.seconds == 2 * 30, "answers 30 s apart, second in line"
    assert "last 50 answers" in estimate.method


def test_the_seat_table_is_rebuilt_from_its_changelog(center: Center) -> None:
    center.login("a-1", {"billing": 5})
    restarted = EventStore(
        InMemoryEventLog(center.broker, routing.EVENTS_TOPIC, routing.SNAPSHOTS_TOPIC, "routing-0"),
        routing.registry(),
        routing.kinds(),
    )
    restarted.start()
    assert restarted.load(routing.SEAT, "a-1").state == center.routing_store.load(routing.SEAT, "a-1").state


# Found in review: each of these once left a contact waiting or an agent stuck ---------------------


def test_each_rejecting_agents_skip_ending_wakes_the_router(center: Center) -> None:
    center.login("a-1")
    center.advance(1)
    center.login("a-2")
    call(center, "c-1")
    center.reject("a-1")  # a-1 skipped until t=31; a-2 rings
    center.agent_does(
        agents_domain.SetNotReady("a-1", agents_domain.Reason.NOT_READY_REASON_BREAK, center.clock.now)
    )
    center.advance(10)
    center.reject("a-2")  # a-2 skipped until t=41

    center.advance(25)  # a-1's skip ends while a-1 is on break: nobody to offer
    assert center.entry("c-1").status == Status.WAITING
    center.advance(10)  # a-2's skip ends: a-2 is ready

    assert center.entry("c-1").offer.agent_id == "a-2"


def test_a_transfer_to_a_named_agent_reaches_them_without_the_queues_skills(center: Center) -> None:
    center.login("a-1")
    center.login("expert", {"second_line": 5})

    call(center, "c-1", target_agent_id="expert", reason="transfer")

    assert center.entry("c-1").offer.agent_id == "expert"


def test_a_transfer_to_a_named_agent_who_does_not_come_goes_to_the_queue(center: Center) -> None:
    center.login("a-1")
    center.login("away")
    center.agent_does(
        agents_domain.SetNotReady("away", agents_domain.Reason.NOT_READY_REASON_MEETING, center.clock.now)
    )
    call(center, "c-1", target_agent_id="away", reason="transfer")
    assert center.entry("c-1").status == Status.WAITING, "waiting for the named agent"

    center.advance(30)

    assert center.entry("c-1").offer.agent_id == "a-1"


def test_a_transfer_to_a_named_agent_who_logs_out_goes_to_the_queue_at_once(center: Center) -> None:
    center.login("a-1")
    center.login("leaving")
    center.agent_does(
        agents_domain.SetNotReady("leaving", agents_domain.Reason.NOT_READY_REASON_BREAK, center.clock.now)
    )
    center.agent_does(
        agents_domain.SetNotReady("a-1", agents_domain.Reason.NOT_READY_REASON_BREAK, center.clock.now)
    )
    call(center, "c-1", target_agent_id="leaving", reason="transfer")

    center.agent_does(agents_domain.Logout("leaving", center.clock.now))
    center.agent_does(agents_domain.SetReady("a-1", center.clock.now))

    assert center.entry("c-1").offer.agent_id == "a-1"


def test_a_contact_that_ended_while_it_rang_is_not_offered_again_whichever_news_arrives_first(
    center: Center,
) -> None:
    center.login("a-2")
    center.advance(1)
    center.login("a-1")
    call(center, "c-1")
    assert center.entry("c-1").offer.agent_id == "a-2"
    # The caller hangs up; the agents service sees it first and withdraws the offer, and routing reads
    # that withdrawal before intake's end of the contact (two topics: either order is possible).
    ended = intake_ev.ContactEnded(
        contact_id="c-1", reason=intake_ev.ContactEndReason.CONTACT_END_REASON_CALLER
    )
    center.broker.write(_record(center, CONTACTS, "c-1", ended))
    routing_runner, agents_runner = center.runners
    agents_runner.run_once()
    routing_source = routing_runner._source
    routing_source._position = dict(
        sorted(routing_source._position.items(), key=lambda item: item[0][0] != "agents.events.v1")
    )
    routing_runner._batch_size = 1
    routing_runner.run_once()
    routing_runner._batch_size = 500
    center.settle()

    assert [o.agent_id for o in routing_events(center, "ContactOffered")] == ["a-2"]
    [abandoned] = routing_events(center, "ContactAbandoned")
    assert abandoned.stage == ev.AbandonStage.ABANDON_STAGE_RINGING
    assert center.agent("a-1").state == S.AGENT_STATE_READY


def _record(center: Center, topic: str, key: str, payload) -> OutgoingRecord:
    envelope = make_envelope(
        payload,
        registry=routing.registry(),
        aggregate_type="Contact",
        aggregate_id=key,
        aggregate_version=99,
        occurred_at=center.clock.now,
        cause=Cause.request(f"raw-{key}"),
    )
    record_key, value, headers = encode(envelope)
    return OutgoingRecord(topic, record_key, value, headers)


def test_a_contact_refused_then_called_back_keeps_the_time_it_called(center: Center) -> None:
    center.upsert_queue(
        billing(
            queue_id="small",
            max_queue_length=1,
            fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_OFFER_CALLBACK,
            callback_priority_boost=0,
        )
    )
    call(center, "early", queue_id="small")
    center.advance(60)
    called_at = center.clock.now
    call(center, "refused", queue_id="small")
    center.advance(5)
    center.publish(CONTACTS, "Contact", "refused", intake_ev.CallbackRequested(contact_id="refused"))

    center.login("a-1")

    assert center.entry("refused").queued_at == called_at
    assert center.entry("early").offer.agent_id == "a-1", "the caller who waited longer goes first"


def test_a_stricter_empty_queue_rule_sends_waiting_callers_to_the_fallback(center: Center) -> None:
    call(center, "c-1")

    center.upsert_queue(
        billing(
            ring_timeout={"seconds": 20},
            reject_delay={"seconds": 30},
            empty_queue_rule=ev.EmptyQueueRule.EMPTY_QUEUE_RULE_LEAVE_WHEN_EMPTY,
            fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_VOICEMAIL,
        )
    )

    assert center.entry("c-1").outcome == "voicemail"
