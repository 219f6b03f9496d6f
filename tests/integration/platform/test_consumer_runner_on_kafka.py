"""The consumer runner and timers on the real broker: exactly once across crashes, poison to dead letter."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from services.platform.consumer import ConsumerRunner
from services.platform.envelope import REASON_HEADER, Cause, Envelope, encode, make_envelope
from services.platform.errors import WriterFenced
from services.platform.eventstore import EventStore, Transaction
from services.platform.kafka import KafkaEventLog, KafkaSource, producer_config
from services.platform.settings import KafkaSettings
from services.platform.timers import schedule_deadlines
from tests.support import tally

pytestmark = pytest.mark.kafka


@dataclass
class Topics:
    kafka: KafkaSettings
    upstream: str
    events: str
    snapshots: str
    deadletter: str
    suffix: str
    # What a test opened, closed after it (a closed one is closed again harmlessly).
    opened: list = field(default_factory=list)

    def store(self, clock=lambda: datetime.now(UTC)) -> EventStore:
        log = KafkaEventLog(self.kafka, self.events, self.snapshots, f"tally-writer.{self.suffix}")
        store = EventStore(log, tally.registry(), [tally.kind()], clock=clock)
        self.opened.append(store)
        return store

    def runner(self, store: EventStore, handler, **options) -> ConsumerRunner:
        source = KafkaSource(self.kafka, f"tally-reactor.{self.suffix}", [self.upstream])
        self.opened.append(source)
        return ConsumerRunner(
            "tally-reactor",
            source,
            store,
            tally.registry(),
            handler,
            deadletter_topic=self.deadletter,
            **options,
        )

    def publish(self, *records: tuple[bytes, bytes]) -> None:
        producer = Producer({**self.kafka.client_config(), "enable.idempotence": True})
        for key, value in records:
            producer.produce(self.upstream, value, key)
        assert producer.flush(30) == 0

    def read(self, topic: str) -> list:
        return list(KafkaEventLog(self.kafka, topic, topic, f"reader.{self.suffix}").replay({}))


@pytest.fixture
def topics(kafka_broker) -> Iterator[Topics]:
    suffix = uuid.uuid4().hex[:8]
    names = {name: f"it.{name}.{suffix}" for name in ("upstream", "events", "snapshots", "deadletter")}
    admin = kafka_broker.admin()
    for future in admin.create_topics([NewTopic(name, 3, 1) for name in names.values()]).values():
        future.result(30)
    opened = Topics(kafka_broker.kafka, suffix=suffix, **names)
    yield opened
    for thing in reversed(opened.opened):
        with contextlib.suppress(Exception):
            thing.close()
    for future in admin.delete_topics(list(names.values())).values():
        future.result(30)


def _order_event(aggregate_id: str, quantity: int, version: int = 1) -> tuple[bytes, bytes]:
    envelope = make_envelope(
        tally.ItemAdded(item="sku", quantity=quantity),
        registry=tally.registry(),
        aggregate_type="Order",
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(f"req-{aggregate_id}-{version}"),
    )
    key, value, _ = encode(envelope)
    return key, value


def _copy_into_tally(envelope: Envelope, tx: Transaction) -> None:
    loaded = tx.load("Tally", envelope.aggregate_id)
    events = tally.add(loaded.state, envelope.payload.item, envelope.payload.quantity)
    tx.append("Tally", envelope.aggregate_id, loaded.version, events, Cause.event(envelope))


def _drain(runner: ConsumerRunner, expected: int) -> int:
    """Poll until the runner has seen at least ``expected`` records and return how many it saw; the
    bound on polls only ends a broken run."""
    seen, polls = 0, 0
    while seen < expected:
        seen += runner.run_once()
        polls += 1
        assert polls < 600, f"runner saw {seen} of {expected} records"
    return seen


def test_reactions_survive_a_crash_mid_stream_without_loss_or_doubling(topics: Topics) -> None:
    duplicate = _order_event("a", 100, version=9)
    topics.publish(
        *[_order_event(f"t{n % 3}", n, version=n // 3 + 1) for n in range(1, 31)], duplicate, duplicate
    )

    first_store = topics.store()
    first_store.start()
    first = topics.runner(first_store, _copy_into_tally, batch_size=7)
    # At least 7, but a poll may return fewer than a batch, and the next one more: count what it took.
    taken = _drain(first, 7)
    # The first instance stops here: its consumer leaves the group (a crashed one would be evicted at its
    # session timeout), its producer is left open as a zombie that the next writer fences.
    first.close()
    second_store = topics.store()
    second_store.start()
    second = topics.runner(second_store, _copy_into_tally, batch_size=7)
    _drain(second, 32 - taken)

    totals = {agg_id: state.items["sku"] for agg_id, state in second_store.states("Tally")}
    assert totals == {
        "t0": sum(n for n in range(1, 31) if n % 3 == 0),
        "t1": sum(n for n in range(1, 31) if n % 3 == 1),
        "t2": sum(n for n in range(1, 31) if n % 3 == 2),
        "a": 100,
    }
    assert len(topics.read(topics.events)) == 31


def test_poison_records_are_dead_lettered_with_their_bytes_and_reason(topics: Topics) -> None:
    topics.publish((b"k", b"\x07garbage"), _order_event("ok", 5))
    store = topics.store()
    store.start()
    runner = topics.runner(store, _copy_into_tally)

    _drain(runner, 2)

    assert store.load("Tally", "ok").state.items == {"sku": 5}
    [dead] = topics.read(topics.deadletter)
    assert (dead.key, dead.value) == (b"k", b"\x07garbage")
    assert dict(dead.headers)[REASON_HEADER].startswith(b"UndecodableEvent")


def test_a_failing_handler_leaves_no_trace_of_its_aborted_attempts(topics: Topics) -> None:
    attempts = {"n": 0}

    def fails_twice(envelope: Envelope, tx: Transaction) -> None:
        _copy_into_tally(envelope, tx)
        tx.publish(topics.deadletter, b"side", b"written inside the transaction")
        attempts["n"] += 1
        if attempts["n"] <= 2:
            raise ConnectionError("downstream hiccup")

    topics.publish(_order_event("a", 3))
    store = topics.store()
    store.start()
    runner = topics.runner(store, fails_twice, max_attempts=5, max_backoff_s=0.0)

    _drain(runner, 1)

    assert attempts["n"] == 3
    assert len(topics.read(topics.events)) == 1
    assert [r.value for r in topics.read(topics.deadletter)] == [b"written inside the transaction"]


def test_a_deadline_set_before_a_restart_fires_after_it(topics: Topics) -> None:
    due = datetime.now(UTC) + timedelta(seconds=5)
    store = topics.store()
    store.start()
    store.append(
        "Tally", "t-1", 0, [tally.ReminderSet(due_at_ms=int(due.timestamp() * 1000))], Cause.request("r")
    )
    store.close()

    later = due + timedelta(seconds=1)
    restarted = topics.store(clock=lambda: later)
    scheduler = schedule_deadlines(restarted, {"Tally": tally.on_deadline}, lambda: later)
    restarted.start()

    assert scheduler.fire_due() == 1
    assert restarted.load("Tally", "t-1").state.reminders_fired == 1
    assert [r.offset for r in topics.read(topics.events)] != []
    assert len(topics.read(topics.events)) == 2


def test_a_writer_that_died_inside_a_transaction_leaves_nothing_visible(topics: Topics) -> None:
    store = topics.store()
    store.start()
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("committed"))
    store.close()
    # A writer with the same id sends an event and dies before committing its transaction.
    doomed = make_envelope(
        tally.ItemAdded(item="x", quantity=1000),
        registry=tally.registry(),
        aggregate_type="Tally",
        aggregate_id="t-1",
        aggregate_version=2,
        occurred_at=datetime.now(UTC),
        cause=Cause.request("never-committed"),
    )
    key, value, headers = encode(doomed)
    crashed = Producer(producer_config(topics.kafka, f"tally-writer.{topics.suffix}"))
    crashed.init_transactions(30)
    crashed.begin_transaction()
    crashed.produce(topics.events, value, key, headers=headers)
    assert crashed.flush(30) == 0

    restarted = topics.store()
    restarted.start()

    assert restarted.load("Tally", "t-1").state.items == {"x": 1}
    assert not restarted.has_seen("never-committed")
    restarted.append("Tally", "t-1", 1, [tally.ItemAdded(item="x", quantity=2)], Cause.request("after"))
    assert [r.value for r in topics.read(topics.events)].count(value) == 0
    assert len(topics.read(topics.events)) == 2


def _poll_until(source: KafkaSource, want: int, polls: int = 300) -> list:
    seen: list = []
    for _ in range(polls):
        seen += source.poll(10, 0.2)
        if len(seen) >= want:
            return seen
    raise AssertionError(f"{len(seen)} of {want} records read")


def test_a_fenced_static_member_rejoins_and_reads_again_from_the_committed_offsets(topics: Topics) -> None:
    """The broker may fence a static member after a restart though no other process uses its id;
    the member is replaced and reads on. A second process that does use the id keeps fencing it:
    after a few rejoins in a short time, that is WriterFenced, which stops the service."""

    class Strict(KafkaSource):
        REJOINS = 1

    topics.publish(*[_order_event(f"s{n}", n) for n in range(3)])
    group = f"static.{topics.suffix}"
    first = Strict(topics.kafka, group, [topics.upstream], instance_id="member-1")
    topics.opened.append(first)
    assert len(_poll_until(first, 3)) == 3

    second = KafkaSource(topics.kafka, group, [topics.upstream], instance_id="member-1")
    topics.opened.append(second)
    assert len(_poll_until(second, 3)) == 3, "the same instance id joins: the first member is fenced"
    again = _poll_until(first, 3)
    assert sorted(r.key for r in again) == [b"s0", b"s1", b"s2"], "replaced, it reads on from the start"

    with pytest.raises(WriterFenced, match="fenced again and again"):
        for _ in range(300):  # the second rejoins too, fencing the first a second time
            second.poll(10, 0.1)
            first.poll(10, 0.1)
