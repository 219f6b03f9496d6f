"""Kafka adapters of the kernel's ports: the transactional event log and the read_committed source."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from callcenter.common.v1 import snapshot_pb2
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from services.platform.consumer import Source
from services.platform.errors import WriterFenced
from services.platform.eventstore import ConsumedOffsets, EventLog, LogRecord, OutgoingRecord, Position
from services.platform.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


class LogWriteFailed(Exception):
    """A transaction was aborted; nothing of it is visible. The caller may retry the unit of work."""


def producer_config(kafka: KafkaSettings, transactional_id: str) -> dict[str, Any]:
    return {
        **kafka.client_config(),
        "client.id": f"{kafka.client_id_prefix}-{transactional_id}",
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        # murmur2 places keys on the same partitions as Java clients and Kafka Streams would.
        "partitioner": "murmur2_random",
        "transaction.timeout.ms": kafka.transaction_timeout_ms,
        "linger.ms": 1,
        "message.max.bytes": MAX_SNAPSHOT_BYTES,
    }


def consumer_config(kafka: KafkaSettings, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **kafka.client_config(),
        "client.id": f"{kafka.client_id_prefix}-{group_id}",
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": MAX_SNAPSHOT_BYTES * 2,
        "max.partition.fetch.bytes": MAX_SNAPSHOT_BYTES,
        **extra,
    }


def _record(message: Message) -> LogRecord:
    return LogRecord(
        message.topic(),
        message.partition(),
        message.offset(),
        message.key(),
        message.value(),
        tuple(message.headers() or ()),
    )


def _read_to_end(consumer: Consumer, topic: str, start: Mapping[int, int]) -> Iterator[LogRecord]:
    """Yield committed records of every partition of ``topic`` from ``start`` until each is at its end."""
    metadata = consumer.list_topics(topic, timeout=10)
    topic_metadata = metadata.topics.get(topic)
    if topic_metadata is None or topic_metadata.error is not None:
        raise KafkaException(
            topic_metadata.error if topic_metadata else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, topic)
        )
    partitions = sorted(topic_metadata.partitions)
    consumer.assign([TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in partitions])
    remaining = set(partitions)
    while remaining:
        for message in consumer.consume(1000, timeout=0.1):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise KafkaException(error)
            yield _record(message)


class KafkaEventLog(EventLog):
    """A context's events topic, written by one transactional producer whose id fences older writers.

    Without topics (``topic`` and ``snapshot_topic`` None) it is the log of a context that keeps
    only tables (the KPI projections): nothing to replay, and ``topic`` names the writer.
    """

    def __init__(
        self, kafka: KafkaSettings, topic: str | None, snapshot_topic: str | None, writer_id: str
    ) -> None:
        self.topic = topic or f"{writer_id} (tables only)"
        self._events_topic = topic
        self._kafka = kafka
        self._snapshot_topic = snapshot_topic
        self._writer_id = writer_id
        self._producer: Producer | None = None

    def open(self) -> None:
        self._producer = Producer(producer_config(self._kafka, self._writer_id))
        self._producer.init_transactions(30)

    def read_snapshots(self) -> list[snapshot_pb2.PartitionSnapshot]:
        if self._snapshot_topic is None:
            return []
        latest: dict[bytes | None, bytes | None] = {}
        for record in self._read(self._snapshot_topic, {}):
            latest[record.key] = record.value
        snapshots = []
        for value in latest.values():
            if value:
                snapshot = snapshot_pb2.PartitionSnapshot()
                snapshot.ParseFromString(value)
                snapshots.append(snapshot)
        return snapshots

    def replay(self, start: Mapping[int, int]) -> Iterator[LogRecord]:
        if self._events_topic is None:
            return iter(())
        return self._read(self._events_topic, start)

    def read_table(self, topic: str) -> Iterator[LogRecord]:
        return self._read(topic, {})

    def _read(self, topic: str, start: Mapping[int, int]) -> Iterator[LogRecord]:
        consumer = Consumer(
            consumer_config(
                self._kafka,
                f"{self._writer_id}.replay",
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 10, "fetch.error.backoff.ms": 10},
            )
        )
        try:
            yield from _read_to_end(consumer, topic, start)
        finally:
            consumer.close()

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        producer = self._writer()
        positions: list[Position | None] = [None] * len(records)
        failures: list[KafkaError] = []

        def delivered(index: int, error: KafkaError | None, message: Any) -> None:
            if error is not None:
                failures.append(error)
            elif message.topic() == self.topic:
                positions[index] = Position(message.partition(), message.offset())

        try:
            producer.begin_transaction()
            for index, record in enumerate(records):
                producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=record.headers,
                    on_delivery=lambda e, m, i=index: delivered(i, e, m),
                )
            for group in consumed:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in group.offsets.items()], group.group_metadata
                )
            producer.flush()
            if failures:
                raise KafkaException(failures[0])
            producer.commit_transaction()
        except KafkaException as exception:
            self._fail(exception)
        return positions

    def write_snapshots(self, snapshots: Sequence[snapshot_pb2.PartitionSnapshot]) -> None:
        producer = self._writer()
        try:
            producer.begin_transaction()
            for snapshot in snapshots:
                producer.produce(
                    self._snapshot_topic,
                    snapshot.SerializeToString(),
                    f"{snapshot.topic}/{snapshot.partition}",
                )
            producer.commit_transaction()
        except KafkaException as exception:
            self._fail(exception)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None

    def _writer(self) -> Producer:
        if self._producer is None:
            raise RuntimeError(f"event log of {self.topic} is not open")
        return self._producer

    def _fail(self, exception: KafkaException) -> None:
        error: KafkaError = exception.args[0]
        if error.code() in _FENCED or error.fatal():
            self._producer = None
            raise WriterFenced(
                f"writer {self._writer_id!r} of {self.topic} was fenced by a newer instance: {error.str()}"
            ) from exception
        try:
            self._writer().abort_transaction()
        except KafkaException as abort_error:
            log.warning("abort of %s transaction failed: %s", self.topic, abort_error)
        raise LogWriteFailed(f"transaction on {self.topic} aborted: {error.str()}") from exception


class KafkaSource(Source):
    """A consumer-group member reading committed records; offsets commit in the writer's transaction."""

    def __init__(self, kafka: KafkaSettings, group_id: str, topics: Sequence[str]) -> None:
        self._consumer = Consumer(consumer_config(kafka, group_id))
        self._consumer.subscribe(list(topics))

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        # Wait for the first record only, then take what is already fetched without waiting: a batch
        # consume() can block its whole timeout for want of a full batch, a delay on every hop.
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        buffered = self._consumer.consume(max_records - 1, timeout=0) if max_records > 1 else []
        records = []
        for message in [first, *buffered]:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal() or not error.retriable():
                    raise KafkaException(error)
                log.warning("consumer error (will retry): %s", error.str())
                continue
            records.append(_record(message))
        return records

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        self._consumer.close()
