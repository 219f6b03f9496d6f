"""In-memory fakes of the kernel's Kafka ports, for tests/unit only.

They keep the semantics the contract tests pin down: records land on partitions by key, a
transaction is all or nothing, a newer writer with the same id fences the older one, and a
consumer group resumes from the offsets committed inside transactions.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from callcenter.common.v1 import snapshot_pb2

from services.platform.consumer import Source
from services.platform.errors import WriterFenced
from services.platform.eventstore import (
    ConsumedOffsets,
    EventLog,
    LogRecord,
    OutgoingRecord,
    Position,
    RecordsRefused,
)
from services.platform.process import Adapters, wall_clock


@dataclass
class InMemoryBroker:
    partitions: int = 3
    clock: Callable[[], datetime] = wall_clock  # stamps each record written, and is the readers' now
    topics: dict[str, list[list[LogRecord]]] = field(default_factory=dict)
    writer_epochs: dict[str, int] = field(default_factory=dict)
    group_offsets: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    failures: list[Exception] = field(default_factory=list)
    # Topics no writer may write, as a broker's ACLs refuse them: a record to one is refused for what it is.
    forbidden: set[str] = field(default_factory=set)

    def log(self, topic: str) -> list[list[LogRecord]]:
        return self.topics.setdefault(topic, [[] for _ in range(self.partitions)])

    def write(self, record: OutgoingRecord) -> Position:
        partitions = self.log(record.topic)
        partition = zlib.crc32(record.key or b"") % len(partitions)
        offset = len(partitions[partition])
        partitions[partition].append(
            LogRecord(
                record.topic, partition, offset, record.key, record.value, tuple(record.headers), self.clock()
            )
        )
        return Position(partition, offset)

    def records(self, topic: str) -> list[LogRecord]:
        return [record for partition in self.log(topic) for record in partition]


class InMemoryEventLog(EventLog):
    def __init__(
        self, broker: InMemoryBroker, topic: str | None, snapshot_topic: str | None, writer_id: str
    ) -> None:
        self.topic = topic or f"{writer_id} (tables only)"
        self._broker = broker
        self._snapshot_topic = snapshot_topic
        self._writer_id = writer_id
        self._epoch = -1

    def open(self) -> None:
        self._epoch = self._broker.writer_epochs.get(self._writer_id, 0) + 1
        self._broker.writer_epochs[self._writer_id] = self._epoch

    def read_snapshots(self) -> list[snapshot_pb2.PartitionSnapshot]:
        latest: dict[bytes | None, bytes | None] = {}
        for record in self._broker.records(self._snapshot_topic or f"{self.topic}.snapshots"):
            latest[record.key] = record.value
        return [snapshot_pb2.PartitionSnapshot.FromString(value) for value in latest.values() if value]

    def replay(self, start: Mapping[int, int]) -> Iterator[LogRecord]:
        for partition, records in enumerate(self._broker.log(self.topic)):
            yield from records[start.get(partition, 0) :]

    def read_table(self, topic: str) -> Iterator[LogRecord]:
        yield from self._broker.records(topic)

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        self._check_epoch()
        if self._broker.failures:
            raise self._broker.failures.pop(0)
        refused = {
            index: f"{record.topic} refused a record: Topic authorization failed"
            for index, record in enumerate(records)
            if record.topic in self._broker.forbidden
        }
        if refused:
            raise RecordsRefused(refused)
        positions = [self._broker.write(record) for record in records]
        for group in consumed:
            self._broker.group_offsets.setdefault(group.group_metadata, {}).update(group.offsets)
        return [p if r.topic == self.topic else None for p, r in zip(positions, records, strict=True)]

    def write_snapshots(self, snapshots: Sequence[snapshot_pb2.PartitionSnapshot]) -> None:
        self._check_epoch()
        for snapshot in snapshots:
            key = f"{snapshot.topic}/{snapshot.partition}".encode()
            topic = self._snapshot_topic or f"{self.topic}.snapshots"
            self._broker.write(OutgoingRecord(topic, key, snapshot.SerializeToString()))

    def close(self) -> None:
        pass

    def _check_epoch(self) -> None:
        if self._broker.writer_epochs.get(self._writer_id) != self._epoch:
            raise WriterFenced(f"writer {self._writer_id!r} of {self.topic} was fenced by a newer instance")


class InMemorySource(Source):
    """A consumer-group member that starts at the group's committed offsets."""

    def __init__(self, broker: InMemoryBroker, group_id: str, topics: Sequence[str]) -> None:
        self._broker = broker
        self._group_id = group_id
        self._topics = list(topics)
        committed = broker.group_offsets.get(group_id, {})
        self._position = {
            (topic, p): committed.get((topic, p), 0)
            for topic in self._topics
            for p in range(broker.partitions)
        }

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        batch: list[LogRecord] = []
        for (topic, partition), offset in self._position.items():
            records = self._broker.log(topic)[partition][offset : offset + max_records - len(batch)]
            batch.extend(records)
            self._position[(topic, partition)] = offset + len(records)
        return batch

    def group_metadata(self) -> Any:
        return self._group_id

    def rewind(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            key = (record.topic, record.partition)
            self._position[key] = min(self._position[key], record.offset)

    def read_horizon(self) -> datetime | None:
        now, times = self._broker.clock(), []
        for (topic, partition), offset in self._position.items():
            log = self._broker.log(topic)[partition]
            if offset < len(log):
                newest = log[offset - 1].written_at if offset else None
                if newest is None:
                    return None
                times.append(newest)
        return min([*times, now]) if self._position else None

    def close(self) -> None:
        pass


class InterleavedSource(InMemorySource):
    """A consumer-group member that reads one record per poll, from the partition ``choose`` picks among
    those with records unread: each partition in order, the partitions and topics in any order (as a
    lagging or hurried consumer would meet them)."""

    def __init__(
        self,
        broker: InMemoryBroker,
        group_id: str,
        topics: Sequence[str],
        choose: Callable[[list[tuple[str, int]]], tuple[str, int]],
    ) -> None:
        super().__init__(broker, group_id, topics)
        self._choose = choose

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        ready = [
            key for key, offset in self._position.items() if offset < len(self._broker.log(key[0])[key[1]])
        ]
        if not ready:
            return []
        topic, partition = self._choose(sorted(ready))
        offset = self._position[(topic, partition)]
        self._position[(topic, partition)] = offset + 1
        return [self._broker.log(topic)[partition][offset]]


def memory_adapters(
    broker: InMemoryBroker,
    clock: Callable[[], datetime] = wall_clock,
    choose: Callable[[list[tuple[str, int]]], tuple[str, int]] | None = None,
) -> Adapters:
    """The adapters a context's bootstrap gets in tests/unit: this broker's logs and consumer groups
    (with ``choose``, consumers that read in the order it picks: ``InterleavedSource``)."""

    def source(group: str, topics: Sequence[str], _instance: str) -> Source:
        if choose is None:
            return InMemorySource(broker, group, topics)
        return InterleavedSource(broker, group, topics, choose)

    return Adapters(
        log=lambda topic, snapshots, writer: InMemoryEventLog(broker, topic, snapshots, writer),
        source=source,
        clock=clock,
    )
