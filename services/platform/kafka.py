"""Kafka adapters of the kernel's ports: the transactional event log and the read_committed source.

Every call that waits on a broker has a timeout (``KafkaSettings.call_timeout_s``), so an outage
makes a call fail rather than hang. What a failure means follows librdkafka's error flags:
- an abortable error (or any failure before the commit is sent) aborts the transaction: nothing is
  visible, and the store writes the same records again (``LogWriteFailed``);
- a record the broker refuses for what it is (too large, not allowed) is reported by index
  (``RecordsRefused``), so its unit fails alone;
- a fatal error replaces the producer: the new one's ``init_transactions`` settles the old
  transaction, and a commit whose outcome was not learnt is then looked up in the log itself
  (``CommitInDoubt`` / ``resolve``);
- ``_FENCED`` means another instance took over the transactional id: ``WriterFenced``, and the
  process stops so that its supervisor can start it again.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from callcenter.common.v1 import snapshot_pb2
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from services.platform.consumer import Source
from services.platform.errors import WriterFenced
from services.platform.eventstore import (
    CommitInDoubt,
    ConsumedOffsets,
    EventLog,
    LogRecord,
    LogWriteFailed,
    OutgoingRecord,
    Position,
    RecordsRefused,
)
from services.platform.failpoints import Failpoint
from services.platform.logs import kafka_logger
from services.platform.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.FENCED_INSTANCE_ID}
# Refusals of one record for what it is: writing it again cannot help.
_RECORD_REFUSALS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.RECORD_LIST_TOO_LARGE,
}
# What the error callback hears when the broker cannot be reached at all.
_UNREACHABLE = {
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._AUTHENTICATION,
    KafkaError._SSL,
    KafkaError.SASL_AUTHENTICATION_FAILED,
}


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
        "logger": kafka_logger(transactional_id),
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
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(500, kafka.session_timeout_ms // 3),
        "logger": kafka_logger(group_id),
        **extra,
    }


def _record(message: Message) -> LogRecord:
    kind, ms = message.timestamp()
    return LogRecord(
        message.topic(),
        message.partition(),
        message.offset(),
        message.key(),
        message.value(),
        tuple(message.headers() or ()),
        datetime.fromtimestamp(ms / 1000, UTC) if kind != TIMESTAMP_NOT_AVAILABLE else None,
    )


def _read_to_end(
    consumer: Consumer, topic: str, start: Mapping[int, int], stall_s: float
) -> Iterator[LogRecord]:
    """Yield committed records of every partition of ``topic`` from ``start`` until each is at its end.

    Raises when the broker gives nothing (no record, no end of partition) for ``stall_s``.
    """
    metadata = consumer.list_topics(topic, timeout=stall_s)
    topic_metadata = metadata.topics.get(topic)
    if topic_metadata is None or topic_metadata.error is not None:
        raise KafkaException(
            topic_metadata.error if topic_metadata else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, topic)
        )
    partitions = sorted(topic_metadata.partitions)
    consumer.assign([TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in partitions])
    remaining = set(partitions)
    last_progress = time.monotonic()
    while remaining:
        messages = consumer.consume(1000, timeout=0.1)
        if messages:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, f"reading {topic} made no progress for {stall_s:g}s")
            )
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise KafkaException(error)
            yield _record(message)


@dataclass(frozen=True)
class _Doubt:
    """Where the first record of an in-doubt commit went, and every record's position."""

    first: tuple[str, int, int] | None
    positions: tuple[Position | None, ...]


class KafkaEventLog(EventLog):
    """A context's events topic, written by one transactional producer whose id fences older writers.

    Without topics (``topic`` and ``snapshot_topic`` None) it is the log of a context that keeps
    only tables (the KPI projections): nothing to replay, and ``topic`` names the writer.
    """

    checks_reachability = True

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str | None,
        snapshot_topic: str | None,
        writer_id: str,
        failpoint: Failpoint | None = None,
    ) -> None:
        self.topic = topic or f"{writer_id} (tables only)"
        self._failpoint = failpoint
        self._events_topic = topic
        self._kafka = kafka
        self._timeout = kafka.call_timeout_s
        self._snapshot_topic = snapshot_topic
        self._writer_id = writer_id
        self._producer: Producer | None = None
        self._initialising: Producer | None = None
        self._unreachable: str | None = None
        self._closed = False
        self._offsets_calls = _one_thread(writer_id)

    # The writer's producer ------------------------------------------------------------------------

    def open(self) -> None:
        deadline = time.monotonic() + self._kafka.open_timeout_s
        while True:
            try:
                self._ready()
                return
            except LogWriteFailed:
                if time.monotonic() >= deadline:
                    raise

    def _ready(self) -> Producer:
        """The initialised producer, making (or going on initialising) one within one call timeout."""
        if self._producer is not None:
            return self._producer
        if self._closed:
            raise LogWriteFailed(f"the event log of {self.topic} is closed")
        if self._initialising is None:
            self._initialising = Producer(
                {**producer_config(self._kafka, self._writer_id), "error_cb": self._on_error}
            )
        try:
            self._initialising.init_transactions(self._timeout)
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            if error.fatal() or not error.retriable():
                self._initialising = None
            raise LogWriteFailed(f"the writer {self._writer_id!r} is not ready: {error.str()}") from exception
        self._producer, self._initialising = self._initialising, None
        return self._producer

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in _UNREACHABLE:
            self._unreachable = error.str()

    def _reset(self) -> None:
        """Give up this producer; the next one's init_transactions settles whatever it left open."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    def check(self) -> str | None:
        try:
            producer = self._ready()
        except LogWriteFailed as error:
            return str(error)
        producer.poll(0)
        if self._unreachable is None:
            return None
        try:
            producer.list_topics(self._events_topic, timeout=min(1.0, self._timeout))
        except KafkaException:
            return f"no broker answers at {self._kafka.bootstrap_servers}: {self._unreachable}"
        self._unreachable = None
        return None

    # Writing ------------------------------------------------------------------------------------

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        producer = self._ready()
        placed: list[tuple[str, int, int] | None] = [None] * len(records)
        refused: dict[int, str] = {}
        failed: list[KafkaError] = []

        def delivered(index: int, error: KafkaError | None, message: Any) -> None:
            if error is None:
                placed[index] = (message.topic(), message.partition(), message.offset())
            elif error.code() in _RECORD_REFUSALS:
                refused[index] = f"{records[index].topic} refused a record: {error.str()}"
            else:
                failed.append(error)

        try:
            self._reach("before_append")
            producer.begin_transaction()
            for index, record in enumerate(records):
                self._produce(producer, record, index, delivered, refused)
            left = producer.flush(self._timeout)
            self._reach("before_offsets")
            for group in consumed:
                self._send_offsets(
                    producer, [TopicPartition(t, p, o) for (t, p), o in group.offsets.items()], group
                )
        except KafkaException as exception:
            self._abort(exception.args[0])
        if left or refused or failed:
            try:
                self._abort(
                    failed[0] if failed else None,
                    f"{left} record(s) not acknowledged within {self._timeout:g}s" if left else "",
                )
            except LogWriteFailed as aborted:
                # Nothing of the transaction is visible either way; the refused records are named, so
                # that their units fail alone and the others are written again.
                if refused:
                    raise RecordsRefused(refused) from aborted
                raise
        positions = tuple(
            Position(where[1], where[2]) if where is not None and where[0] == self._events_topic else None
            for where in placed
        )
        self._reach("before_commit")
        self._commit_transaction(producer, _Doubt(self._first(placed), positions))
        self._reach("after_commit")
        return list(positions)

    def _send_offsets(
        self, producer: Producer, offsets: list[TopicPartition], group: ConsumedOffsets
    ) -> None:
        """send_offsets_to_transaction, bounded here: librdkafka may block in it past its timeout
        while the group coordinator is away (librdkafka #5456, #5511). Past the bound the producer
        is given up where it waits; the next one's init_transactions fences it and aborts its
        transaction, so whatever that call does when it returns changes nothing."""
        bound = self._kafka.offsets_timeout_s
        call = self._offsets_calls.submit(
            producer.send_offsets_to_transaction, offsets, group.group_metadata, bound
        )
        try:
            call.result(bound + 0.5)
        except concurrent.futures.TimeoutError:
            log.warning("%s: sending offsets did not return within %gs; a new producer", self.topic, bound)
            self._producer = None
            self._offsets_calls.shutdown()
            self._offsets_calls = _one_thread(self._writer_id)
            raise LogWriteFailed(
                f"transaction on {self.topic} given up: sending its offsets did not return in time"
            ) from None

    def _reach(self, point: str) -> None:
        if self._failpoint is not None:
            self._failpoint.reach(point)

    def _produce(
        self,
        producer: Producer,
        record: OutgoingRecord,
        index: int,
        delivered: Any,
        refused: dict[int, str],
    ) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=record.headers,
                    on_delivery=lambda e, m, i=index: delivered(i, e, m),
                )
                return
            except BufferError:
                # The producer's queue is full: let it send, then try again within the call's timeout.
                if time.monotonic() >= deadline:
                    raise KafkaException(
                        KafkaError(KafkaError._QUEUE_FULL, "the producer's queue stayed full")
                    ) from None
                producer.poll(0.05)
            except KafkaException as exception:
                if exception.args[0].code() in _RECORD_REFUSALS:
                    refused[index] = f"{record.topic} refused a record: {exception.args[0].str()}"
                    return
                raise

    def _first(self, placed: Sequence[tuple[str, int, int] | None]) -> tuple[str, int, int] | None:
        """The record to look for when the commit's outcome is in doubt: one of the events topic first."""
        own = [where for where in placed if where is not None and where[0] == self._events_topic]
        others = [where for where in placed if where is not None]
        return (own or others or [None])[0]

    def _commit_transaction(self, producer: Producer, doubt: _Doubt) -> None:
        deadline = time.monotonic() + self._kafka.commit_timeout_s
        while True:
            try:
                producer.commit_transaction(self._timeout)
                return
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if error.code() in _FENCED:
                    self._fenced(error)
                if error.txn_requires_abort():
                    self._abort(error)
                if error.retriable() and not error.fatal() and time.monotonic() < deadline:
                    continue
                self._reset()
                raise CommitInDoubt(
                    f"the commit on {self.topic} did not finish: {error.str()}", doubt
                ) from exception

    def _abort(self, error: KafkaError | None, why: str = "") -> None:
        """Abort the open transaction (or give up the producer), then raise LogWriteFailed."""
        if error is not None and error.code() in _FENCED:
            self._fenced(error)
        reason = why or (error.str() if error is not None else "aborted")
        if error is not None and error.fatal():
            self._reset()
        elif self._producer is not None:
            try:
                self._producer.abort_transaction(self._timeout)
            except KafkaException as abort_error:
                if abort_error.args[0].code() in _FENCED:
                    self._fenced(abort_error.args[0])
                log.warning("abort on %s failed (%s); a new producer", self.topic, abort_error.args[0].str())
                self._reset()
        raise LogWriteFailed(f"transaction on {self.topic} aborted: {reason}")

    def _fenced(self, error: KafkaError) -> None:
        # Another instance took over the transactional id, or the broker moved the producer's epoch
        # on (it may, after a restart). Either way what others wrote since is not in this process's
        # state: it stops, and a fresh start replays it. A new producer here could write on a stale state.
        self._producer = None
        raise WriterFenced(f"writer {self._writer_id!r} of {self.topic} was fenced: {error.str()}")

    def resolve(self, doubt: CommitInDoubt) -> list[Position | None]:
        token: _Doubt = doubt.token
        if token.first is None:
            # Only offsets were in it: committing them again is harmless.
            raise LogWriteFailed(f"{self.topic}: an in-doubt commit of offsets only is written again")
        try:
            self._ready()  # its init_transactions has settled the old producer's transaction
        except LogWriteFailed as error:
            raise CommitInDoubt(str(error), token) from error
        topic, partition, offset = token.first
        consumer = Consumer(
            consumer_config(self._kafka, f"{self._writer_id}.resolve", **{"enable.partition.eof": True})
        )
        try:
            consumer.assign([TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + self._timeout
            while time.monotonic() < deadline:
                message = consumer.poll(0.1)
                if message is None:
                    continue
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    continue
                if error is None and message.offset() == offset:
                    log.info("%s: the commit in doubt landed (%s[%d]@%d)", self.topic, *token.first)
                    return list(token.positions)
                log.info("%s: the commit in doubt did not land; writing it again", self.topic)
                raise LogWriteFailed(f"{self.topic}: the commit in doubt was aborted")
        finally:
            consumer.close()
        raise CommitInDoubt(f"{self.topic}: could not read {topic}[{partition}]@{offset} back yet", token)

    def write_snapshots(self, snapshots: Sequence[snapshot_pb2.PartitionSnapshot]) -> None:
        producer = self._ready()
        try:
            producer.begin_transaction()
            for snapshot in snapshots:
                producer.produce(
                    self._snapshot_topic,
                    snapshot.SerializeToString(),
                    f"{snapshot.topic}/{snapshot.partition}",
                )
            left = producer.flush(self._timeout)
        except KafkaException as exception:
            self._abort(exception.args[0])
        if left:
            self._abort(None, f"{left} snapshot(s) not acknowledged within {self._timeout:g}s")
        try:
            producer.commit_transaction(self._timeout)
        except KafkaException as exception:
            # A snapshot is only a shortcut for the next start: whatever became of it, go on.
            self._reset()
            raise LogWriteFailed(f"snapshot of {self.topic} not committed: {exception}") from exception

    def close(self) -> None:
        self._closed = True
        self._offsets_calls.shutdown()
        if self._producer is not None:
            self._producer.flush(min(1.0, self._timeout))
            self._producer = None
        self._initialising = None

    # Reading ------------------------------------------------------------------------------------

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
            yield from _read_to_end(consumer, topic, start, self._kafka.open_timeout_s)
        finally:
            consumer.close()


class _Caller:
    """Runs calls one at a time on a daemon thread of its own, so that a caller can stop waiting for
    one (and a call that never returns cannot hold up the process's exit, as an executor's would)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None]
        self._calls = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            try:
                future.set_result(call())
            except BaseException as error:
                future.set_exception(error)

    def submit(self, call: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((lambda: call(*args), future))
        return future

    def shutdown(self) -> None:
        self._calls.put(None)


def _one_thread(writer_id: str) -> _Caller:
    return _Caller(f"{writer_id}-offsets")


def _member_lost(error: KafkaError) -> bool:
    """The consumer is of no more use: fenced, or failed fatally (librdkafka's _FATAL)."""
    return error.code() in _FENCED or error.code() == KafkaError._FATAL or error.fatal()


class KafkaSource(Source):
    """A consumer-group member reading committed records; offsets commit in the writer's transaction.

    ``instance_id`` makes it a static member: restarted with the same id, it takes its partitions
    back at once instead of waiting for the old session to expire.

    A member the broker fences, or whose consumer fails fatally, is replaced by a new one that joins
    at the committed offsets: after a broker restart the broker may fence a static member whose
    session it expired meanwhile, though no other process uses its id. Fenced again and again
    (``REJOINS`` times within ``REJOIN_WINDOW_S``), another process does use it: ``WriterFenced``.
    """

    REJOINS = 3
    REJOIN_WINDOW_S = 60.0

    def __init__(
        self, kafka: KafkaSettings, group_id: str, topics: Sequence[str], instance_id: str | None = None
    ) -> None:
        extra = {"group.instance.id": instance_id} if instance_id else {}
        self._config = consumer_config(kafka, group_id, **{"enable.partition.eof": True, **extra})
        self._topics = list(topics)
        self._consumer = self._join()
        self._name = group_id
        self._rejoined: deque[float] = deque(maxlen=self.REJOINS)
        self._newest: dict[tuple[str, int], datetime] = {}  # since the partition's last end
        self._at_end: set[tuple[str, int]] = set()

    def _join(self) -> Consumer:
        consumer = Consumer(self._config)
        consumer.subscribe(self._topics)
        return consumer

    def _rejoin(self, error: KafkaError) -> None:
        now = time.monotonic()
        if len(self._rejoined) == self.REJOINS and now - self._rejoined[0] < self.REJOIN_WINDOW_S:
            raise WriterFenced(f"consumer {self._name} is fenced again and again: {error.str()}")
        self._rejoined.append(now)
        log.warning("consumer %s: %s; a new member joins at the committed offsets", self._name, error.str())
        old, self._consumer = self._consumer, self._join()
        self._newest.clear()
        self._at_end.clear()
        # A failed consumer's close has nothing to commit; off this thread, it cannot hold it up.
        threading.Thread(target=old.close, name=f"{self._name}-close", daemon=True).start()

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        # Wait for the first record only, then take what is already fetched without waiting: a batch
        # consume() can block its whole timeout for want of a full batch, a delay on every hop.
        try:
            first = self._consumer.poll(timeout_s)
            if first is None:
                return []
            buffered = self._consumer.consume(max_records - 1, timeout=0) if max_records > 1 else []
        except KafkaException as exception:
            error = exception.args[0]
            if not _member_lost(error):
                raise
            self._rejoin(error)
            return []
        records = []
        for message in [first, *buffered]:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add((message.topic(), message.partition()))
                    continue
                if _member_lost(error):
                    self._rejoin(error)
                    return []  # nothing of this batch was handled: the new member reads it again
                if not error.retriable():
                    raise KafkaException(error)
                log.warning("consumer %s: %s (retrying)", self._name, error.str())
                continue
            record = _record(message)
            self._read(record)
            records.append(record)
        return records

    def _read(self, record: LogRecord) -> None:
        key = (record.topic, record.partition)
        self._at_end.discard(key)
        if record.written_at is not None:
            newest = self._newest.get(key)
            self._newest[key] = record.written_at if newest is None else max(newest, record.written_at)

    def read_horizon(self) -> datetime | None:
        owned = [(tp.topic, tp.partition) for tp in self._consumer.assignment()]
        if not owned:
            return None
        now, times = datetime.now(UTC), []
        for key in owned:
            if key not in self._at_end:
                newest = self._newest.get(key)
                if newest is None:
                    return None
                times.append(newest)
        return min([*times, now])

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def rewind(self, records: Sequence[LogRecord]) -> None:
        first: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for (topic, partition), offset in first.items():
            # Read again, so not read yet: nothing is known of the partition until it is.
            self._newest.pop((topic, partition), None)
            self._at_end.discard((topic, partition))
            if (topic, partition) not in owned:
                continue  # revoked meanwhile: its new owner starts from the committed offset
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as error:
                log.warning("consumer %s: cannot rewind %s[%d]: %s", self._name, topic, partition, error)

    def close(self) -> None:
        self._consumer.close()
