"""A consumer-group member's read horizon, on the in-memory fake and on Kafka alike: nothing is known
before a partition is read, a partition read part way tells the newest record read from it, and one
read to its end tells now."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from services.platform.consumer import Source
from services.platform.eventstore import LogRecord, OutgoingRecord
from services.platform.kafka import KafkaSource
from tests.support.memory import InMemoryBroker, InMemorySource

RECORDS = 5


@dataclass
class Topic:
    """One single-partition topic with ``RECORDS`` records written, and how to join its readers."""

    join: Callable[[], Source]


def _memory() -> Topic:
    broker = InMemoryBroker(partitions=1)
    for n in range(RECORDS):
        broker.write(OutgoingRecord("horizon", f"k{n}".encode(), b"v"))
    return Topic(join=lambda: InMemorySource(broker, f"group-{uuid.uuid4().hex[:8]}", ["horizon"]))


def _kafka(kafka_broker, topic_factory) -> Topic:
    name = topic_factory(partitions=1)
    producer = Producer(kafka_broker.client_config())
    for n in range(RECORDS):
        producer.produce(name, key=f"k{n}".encode(), value=b"v")
    assert producer.flush(30) == 0
    return Topic(join=lambda: KafkaSource(kafka_broker.kafka, f"group-{uuid.uuid4().hex[:8]}", [name]))


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def topic(request: pytest.FixtureRequest) -> Topic:
    if request.param == "memory":
        return _memory()
    return _kafka(request.getfixturevalue("kafka_broker"), request.getfixturevalue("topic_factory"))


@pytest.fixture
def join(topic: Topic) -> Iterator[Callable[[], Source]]:
    joined: list[Source] = []

    def make() -> Source:
        joined.append(topic.join())
        return joined[-1]

    yield make
    for source in joined:
        source.close()


def _first(source: Source, tries: int = 300) -> list[LogRecord]:
    """The first records the member is given (it joins its group on its first polls)."""
    for _ in range(tries):
        records = source.poll(1, 0.1)
        if records:
            return records
    raise AssertionError("the member was given no record")


def test_a_member_tells_no_horizon_before_it_has_read_its_partitions(join) -> None:
    assert join().read_horizon() is None


def test_a_partition_read_part_way_tells_the_time_of_the_newest_record_read_from_it(join) -> None:
    source = join()

    [record] = _first(source)

    assert record.written_at is not None
    assert source.read_horizon() == record.written_at


def test_a_partition_read_to_its_end_tells_now(join) -> None:
    source = join()
    read = _first(source)
    while len(read) < RECORDS:
        read += source.poll(RECORDS, 0.5)
    before_the_end = datetime.now(UTC)

    horizon = source.read_horizon()
    for _ in range(300):  # Kafka tells the end in a poll of its own, once its fetch has met the end
        if horizon is not None and horizon >= before_the_end:
            break
        source.poll(RECORDS, 0.1)
        horizon = source.read_horizon()

    assert horizon is not None and horizon >= before_the_end
    assert all(record.written_at is not None and record.written_at <= horizon for record in read)
