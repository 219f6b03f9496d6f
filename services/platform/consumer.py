"""The consumer runner: consume, handle, produce and commit offsets in one transaction.

A batch of records is handled inside one store transaction that also carries the batch's
consumed offsets, so its output and its progress commit together or not at all. A record that
cannot be decoded, names an unknown event type, whose handler keeps failing, or whose output the
log refuses for what it is (too large, a topic the reaction may not write) goes to the dead-letter
topic with its original bytes and the reason in headers; the runner goes on.
Infrastructure errors (``TransientError``) are different: the runner pauses and retries the
same batch, so an outage delays work but never drops it.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from services.platform.envelope import (
    DEADLETTER_TOPIC,
    Envelope,
    EventRegistry,
    PoisonEvent,
    deadletter_headers,
    decode,
)
from services.platform.errors import DomainError, WriterFenced
from services.platform.eventstore import (
    CommitRefused,
    ConsumedOffsets,
    EventStore,
    LogRecord,
    RecordTooLarge,
    Transaction,
)
from services.platform.telemetry import extract_kafka_context

log = logging.getLogger(__name__)


_FIRST_DELAY_S = 0.05

Handler = Callable[[Envelope, Transaction], None]
BatchHandler = Callable[[Transaction], None]


class TransientError(Exception):
    """Something the handler depends on is unavailable; retry later, never dead-letter."""


class BatchRefused(Exception):
    """A batch's output was refused for what it holds, whatever the retry: the batch is done again one
    record at a time, and a record whose own output is still refused is dead-lettered."""


class Source(ABC):
    """The port the runner reads from: a consumer-group member (Kafka) or a fake in unit tests."""

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]: ...

    @abstractmethod
    def group_metadata(self) -> Any:
        """What the transaction needs to fence a zombie member of the same group."""

    @abstractmethod
    def rewind(self, records: Sequence[LogRecord]) -> None:
        """Read these records again from the next poll on (of the partitions this member still owns)."""

    @abstractmethod
    def read_horizon(self) -> datetime | None:
        """A moment before which every record of this member's partitions has been read: now for a
        partition read to its end, else the newest record's time read from it (the earliest over
        the partitions); None while a partition has told neither, or the member owns none.

        Topics are read at their own pace, so an event read is no sign that the events of other
        topics from before it have been read: a reaction that forgets by time asks this."""

    @abstractmethod
    def close(self) -> None: ...


@dataclass
class RunnerStats:
    handled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0


class _HandlerFailed(Exception):
    def __init__(self, record: LogRecord, cause: Exception) -> None:
        super().__init__(str(cause))
        self.record = record
        self.cause = cause


def _position(record: LogRecord) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


class ConsumerRunner:
    """Runs one handler over a source, exactly once per event, with poison events dead-lettered."""

    def __init__(
        self,
        name: str,
        source: Source,
        store: EventStore,
        registry: EventRegistry,
        handler: Handler,
        *,
        deadletter_topic: str = DEADLETTER_TOPIC,
        max_attempts: int = 3,
        batch_size: int = 500,
        poll_timeout_s: float = 0.2,
        max_backoff_s: float = 5.0,
        dedup_by_store: bool = True,
        after_batch: BatchHandler | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """``after_batch`` runs in the batch's transaction once its events are handled (when any was),
        for work that depends on the whole batch rather than on each event (routing matches once).

        A batch that fails for an outage is tried again after a delay doubling up to ``max_backoff_s``:
        what it waits for is back at most that long before the runner notices."""
        self.name = name
        self.stats = RunnerStats()
        self._source = source
        self._store = store
        self._registry = registry
        self._handler = handler
        self._deadletter_topic = deadletter_topic
        self._max_attempts = max_attempts
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._max_backoff_s = max_backoff_s
        self._dedup_by_store = dedup_by_store
        self._after_batch = after_batch
        self._tracer = tracer or trace.get_tracer(__name__)
        meter = metrics.get_meter(__name__)
        self._handled = meter.create_counter("consumer.records.handled", description="events handled")
        self._duplicates = meter.create_counter(
            "consumer.records.duplicates", description="redelivered event ids"
        )
        self._dead = meter.create_counter("consumer.records.dead_lettered", description="poison records")
        self._attrs = {"consumer": name}
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._delay = _FIRST_DELAY_S
        self._poison: dict[tuple[str, int, int], str] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once(stop)
        self.close()

    def close(self) -> None:
        """Leave the consumer group; what was not committed is read again by the next member."""
        self._source.close()

    def read_horizon(self) -> datetime | None:
        """The source's ``read_horizon``: every event from before it has been read."""
        return self._source.read_horizon()

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Poll one batch and see it through (retrying as needed); returns how many records it held."""
        records = self._source.poll(self._batch_size, self._poll_timeout_s)
        if records:
            self._see_through(records, stop)
        return len(records)

    def _see_through(self, records: Sequence[LogRecord], stop: threading.Event | None) -> None:
        delay = 0.05
        while True:
            try:
                self._process(records)
                break
            except WriterFenced:
                raise
            except _HandlerFailed as failure:
                self._count_failure(failure)
            except (RecordTooLarge, BatchRefused, CommitRefused) as error:
                if len(records) > 1:
                    # Find the record whose output cannot be written: one unit of work each.
                    for record in records:
                        self._see_through([record], stop)
                    return
                self._poison[_position(records[0])] = f"{type(error).__name__}: {error}"
            except Exception as error:  # a transient error or an aborted transaction: the same batch again
                log.warning(
                    "%s: batch of %d read again after %s: %s",
                    self.name,
                    len(records),
                    type(error).__name__,
                    error,
                )
                # Back to polling before the next try: a member whose session lapsed (the broker was away)
                # rejoins its group only while it polls, and the next try needs the group's metadata of then.
                self.stats.retries += 1
                self._source.rewind(records)
                if stop is not None:
                    stop.wait(self._delay)
                self._delay = min(self._delay * 2, self._max_backoff_s)
                return
            self.stats.retries += 1
            if stop is not None and stop.wait(delay):
                return
            delay = min(delay * 2, self._max_backoff_s)
        self._delay = _FIRST_DELAY_S
        for record in records:
            self._attempts.pop(_position(record), None)
            self._poison.pop(_position(record), None)

    def _count_failure(self, failure: _HandlerFailed) -> None:
        position = _position(failure.record)
        attempts = self._attempts.get(position, 0) + 1
        self._attempts[position] = attempts
        deterministic = isinstance(failure.cause, DomainError)
        if deterministic or attempts >= self._max_attempts:
            self._poison[position] = f"{type(failure.cause).__name__}: {failure.cause}"
        log.warning(
            "%s: handler failed on %s[%d]@%d (attempt %d): %s",
            self.name,
            *position,
            attempts,
            failure.cause,
        )

    def _process(self, records: Sequence[LogRecord]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            offsets[key] = max(offsets.get(key, 0), record.offset + 1)
        consumed = ConsumedOffsets(offsets, self._source.group_metadata())
        handled, duplicates, dead = 0, 0, 0
        seen_in_batch: set[str] = set()
        with self._store.transaction(consumed) as tx:
            for record in records:
                reason = self._poison.get(_position(record))
                envelope = None
                if reason is None:
                    try:
                        envelope = decode(record.value, record.headers, self._registry)
                    except PoisonEvent as error:
                        reason = f"{type(error).__name__}: {error}"
                if envelope is None:
                    tx.publish(
                        self._deadletter_topic,
                        record.key,
                        record.value or b"",
                        deadletter_headers(record.headers, _position(record), reason or "", self.name),
                    )
                    dead += 1
                    continue
                if envelope.event_id in seen_in_batch or (
                    self._dedup_by_store and self._store.has_seen(envelope.event_id)
                ):
                    duplicates += 1
                    continue
                try:
                    with self._tracer.start_as_current_span(
                        f"{self.name} {envelope.event_type}",
                        context=extract_kafka_context(record.headers),
                        kind=SpanKind.CONSUMER,
                        attributes={
                            "messaging.destination.name": record.topic,
                            "event.id": envelope.event_id,
                        },
                    ):
                        self._handler(envelope, tx)
                except TransientError:
                    raise
                except Exception as error:
                    raise _HandlerFailed(record, error) from error
                seen_in_batch.add(envelope.event_id)
                handled += 1
            if handled and self._after_batch is not None:
                self._after_batch(tx)
        self.stats.handled += handled
        self.stats.duplicates += duplicates
        self.stats.dead_lettered += dead
        self._handled.add(handled, self._attrs)
        self._duplicates.add(duplicates, self._attrs)
        self._dead.add(dead, self._attrs)
        if dead:
            log.warning("%s: %d record(s) dead-lettered to %s", self.name, dead, self._deadletter_topic)
