"""The consumer runner: exactly-once handling, dedup by event id, dead letters, aborts, pauses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import get_current_span

from services.platform.consumer import ConsumerRunner, TransientError
from services.platform.envelope import REASON_HEADER, Cause, Envelope, encode, make_envelope
from services.platform.errors import FailedPrecondition
from services.platform.eventstore import EventStore, LogWriteFailed, OutgoingRecord, Transaction
from services.platform.telemetry import extract_kafka_context, inject_kafka_headers
from tests.support import tally
from tests.support.memory import InMemoryBroker, InMemoryEventLog, InMemorySource

UPSTREAM = "orders.events"
DEADLETTER = "deadletter.v1"


def _upstream_event(aggregate_id: str, quantity: int, version: int = 1) -> Envelope:
    return make_envelope(
        tally.ItemAdded(item="sku", quantity=quantity),
        registry=tally.registry(),
        aggregate_type="Order",
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occurred_at=datetime(2026, 11, 23, tzinfo=UTC),
        cause=Cause.request(f"req-{aggregate_id}-{version}"),
    )


def _publish(broker: InMemoryBroker, *envelopes: Envelope) -> None:
    for envelope in envelopes:
        key, value, headers = encode(envelope)
        broker.write(OutgoingRecord(UPSTREAM, key, value, headers))


def _copy_into_tally(envelope: Envelope, tx: Transaction) -> None:
    """The reaction under test: each upstream ItemAdded adds to the tally of the same id."""
    loaded = tx.load("Tally", envelope.aggregate_id)
    events = tally.add(loaded.state, envelope.payload.item, envelope.payload.quantity)
    tx.append("Tally", envelope.aggregate_id, loaded.version, events, Cause.event(envelope))


class Harness:
    def __init__(self, broker: InMemoryBroker | None = None, handler=_copy_into_tally, **options) -> None:
        self.broker = broker or InMemoryBroker()
        self.store = EventStore(
            InMemoryEventLog(self.broker, "tally.events", "tally.snapshots", "tally-writer"),
            tally.registry(),
            [tally.kind()],
        )
        self.store.start()
        self.runner = ConsumerRunner(
            "tally-reactor",
            InMemorySource(self.broker, "tally-reactor", [UPSTREAM]),
            self.store,
            tally.registry(),
            handler,
            deadletter_topic=DEADLETTER,
            **options,
        )

    def quantity(self, tally_id: str) -> int:
        return self.store.load("Tally", tally_id).state.items.get("sku", 0)

    def dead_letters(self) -> list:
        return self.broker.records(DEADLETTER)


def test_each_event_is_handled_once_and_offsets_commit_with_the_output() -> None:
    harness = Harness()
    _publish(
        harness.broker, _upstream_event("a", 2), _upstream_event("b", 3), _upstream_event("a", 5, version=2)
    )

    assert harness.runner.run_once() == 3
    assert harness.runner.run_once() == 0

    assert (harness.quantity("a"), harness.quantity("b")) == (7, 3)
    assert sum(harness.broker.group_offsets["tally-reactor"].values()) == 3


def test_the_batch_hook_runs_once_per_batch_in_its_transaction_after_its_events() -> None:
    seen: list[tuple[int, int]] = []

    def after_batch(tx: Transaction) -> None:
        seen.append((tx.load("Tally", "a").state.items.get("sku", 0), len(tx.envelopes)))

    harness = Harness(after_batch=after_batch)
    _publish(harness.broker, _upstream_event("a", 2), _upstream_event("a", 5, version=2))

    harness.runner.run_once()
    harness.runner.run_once()

    assert seen == [(7, 2)], "once, after both events, and not for an empty poll"


def test_a_redelivered_event_id_changes_nothing() -> None:
    harness = Harness()
    event = _upstream_event("a", 2)
    _publish(harness.broker, event, event)

    harness.runner.run_once()
    _publish(harness.broker, event)
    harness.runner.run_once()

    assert harness.quantity("a") == 2
    assert harness.runner.stats.duplicates == 2


def test_after_a_restart_the_group_resumes_where_its_transactions_committed() -> None:
    first = Harness()
    _publish(first.broker, _upstream_event("a", 1))
    first.runner.run_once()
    _publish(first.broker, _upstream_event("a", 10, version=2))

    second = Harness(first.broker)
    second.runner.run_once()

    assert second.quantity("a") == 11
    assert second.runner.stats.handled == 1


def test_undecodable_and_unknown_records_go_to_the_dead_letter_topic_and_the_runner_goes_on() -> None:
    harness = Harness()
    harness.broker.write(OutgoingRecord(UPSTREAM, b"x", b"\x00 not an envelope", [("traceparent", b"tp")]))
    unknown = _upstream_event("b", 1)
    key, value, headers = encode(unknown)
    harness.broker.write(OutgoingRecord(UPSTREAM, key, value.replace(b"ItemAdded", b"ItemAddex"), headers))
    _publish(harness.broker, _upstream_event("c", 4))

    harness.runner.run_once()

    assert harness.quantity("c") == 4
    first, second = harness.dead_letters()
    assert first.value == b"\x00 not an envelope"
    assert first.key == b"x"
    reasons = [dict(record.headers)[REASON_HEADER].decode() for record in (first, second)]
    assert reasons[0].startswith("UndecodableEvent: value is not an EventEnvelope")
    assert reasons[1] == "UnknownEventType: event type 'ItemAddex' v1 is not registered"
    assert dict(first.headers)["traceparent"] == b"tp"
    assert dict(first.headers)["deadletter.offset"] == b"0"


def test_a_failing_handler_aborts_the_batch_then_dead_letters_the_event_after_max_attempts() -> None:
    calls: list[str] = []

    def flaky(envelope: Envelope, tx: Transaction) -> None:
        calls.append(envelope.aggregate_id)
        _copy_into_tally(envelope, tx)
        if envelope.aggregate_id == "bad":
            raise KeyError("a bug in the handler")

    harness = Harness(handler=flaky, max_attempts=3)
    _publish(
        harness.broker, _upstream_event("good", 1), _upstream_event("bad", 1), _upstream_event("after", 1)
    )

    harness.runner.run_once()

    assert calls.count("bad") == 3
    assert (harness.quantity("good"), harness.quantity("bad"), harness.quantity("after")) == (1, 0, 1)
    [dead] = harness.dead_letters()
    assert dict(dead.headers)[REASON_HEADER] == b"KeyError: 'a bug in the handler'"
    tally_events = harness.broker.records("tally.events")
    assert len(tally_events) == 2, "the aborted attempts wrote nothing"


def test_a_domain_refusal_is_dead_lettered_at_once() -> None:
    def refuse(envelope: Envelope, tx: Transaction) -> None:
        raise FailedPrecondition(f"order {envelope.aggregate_id} is closed")

    harness = Harness(handler=refuse, max_attempts=5)
    _publish(harness.broker, _upstream_event("a", 1))

    harness.runner.run_once()

    [dead] = harness.dead_letters()
    assert dict(dead.headers)[REASON_HEADER] == b"FailedPrecondition: order a is closed"
    assert harness.runner.stats.retries == 1


def test_an_event_whose_output_the_log_refuses_is_dead_lettered_and_the_others_go_through() -> None:
    def copy_and_notify(envelope: Envelope, tx: Transaction) -> None:
        _copy_into_tally(envelope, tx)
        tx.publish(f"notices.{envelope.aggregate_id}", envelope.aggregate_id.encode(), b"notice")

    harness = Harness(handler=copy_and_notify, max_backoff_s=0.0)
    harness.broker.forbidden.add("notices.b")  # the reaction may not write there, whatever the retry
    _publish(harness.broker, _upstream_event("a", 1), _upstream_event("b", 2), _upstream_event("c", 3))

    while harness.runner.run_once():
        pass

    [dead] = harness.dead_letters()
    assert dead.key == b"b"
    assert b"notices.b refused a record" in dict(dead.headers)[REASON_HEADER]
    assert (harness.quantity("a"), harness.quantity("b"), harness.quantity("c")) == (1, 0, 3)
    assert [r.key for r in harness.broker.records("notices.a") + harness.broker.records("notices.c")] == [
        b"a",
        b"c",
    ]
    assert harness.runner.stats.dead_lettered == 1


def test_a_transient_outage_pauses_and_retries_without_dead_lettering() -> None:
    outage = {"left": 4}

    def needs_a_database(envelope: Envelope, tx: Transaction) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise TransientError("ClickHouse is unavailable")
        _copy_into_tally(envelope, tx)

    harness = Harness(handler=needs_a_database, max_attempts=2, max_backoff_s=0.0)
    _publish(harness.broker, _upstream_event("a", 6))

    polls = 0
    while harness.runner.run_once():  # each failure goes back to polling, and the record comes again
        polls += 1

    assert polls == 5
    assert harness.quantity("a") == 6
    assert harness.dead_letters() == []
    assert harness.runner.stats.retries == 4


def test_an_aborted_commit_is_retried_and_lands_once() -> None:
    harness = Harness(max_backoff_s=0.0)
    harness.broker.failures.append(LogWriteFailed("broker said: transaction aborted"))
    _publish(harness.broker, _upstream_event("a", 6))

    while harness.runner.run_once():
        pass

    assert harness.quantity("a") == 6
    assert len(harness.broker.records("tally.events")) == 1


@pytest.mark.parametrize("events_before_crash", [0, 1, 2, 3])
def test_a_crash_between_batches_neither_loses_nor_doubles(events_before_crash: int) -> None:
    broker = InMemoryBroker()
    events = [_upstream_event(f"t{n % 2}", n + 1, version=n // 2 + 1) for n in range(4)]
    _publish(broker, *events)
    first = Harness(broker, batch_size=1)
    for _ in range(events_before_crash):
        first.runner.run_once()

    second = Harness(broker, batch_size=1)
    while second.runner.run_once():
        pass

    assert (second.quantity("t0"), second.quantity("t1")) == (1 + 3, 2 + 4)


def test_a_reaction_continues_the_trace_of_the_event_it_reacts_to() -> None:
    tracer = TracerProvider().get_tracer("test")
    harness = Harness(tracer=tracer)
    with tracer.start_as_current_span("upstream StartContact") as upstream:
        event = _upstream_event("a", 2).with_headers(inject_kafka_headers())
    _publish(harness.broker, event)

    harness.runner.run_once()

    [reaction] = harness.broker.records("tally.events")
    reaction_context = get_current_span(extract_kafka_context(reaction.headers)).get_span_context()
    assert reaction_context.trace_id == upstream.get_span_context().trace_id
    assert reaction_context.span_id != upstream.get_span_context().span_id
