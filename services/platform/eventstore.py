"""The event store: one context's aggregates, appended with an expected version, rebuilt by replay.

The store keeps every aggregate's current state and version in memory, rebuilt at start-up
from the latest partition snapshots plus the tail of the context's events topic. Appends go
through a ``Transaction``: all events (and, for reactions, the consumed offsets) of one unit of
work are written to the log atomically, and only then applied to the in-memory states. The log
itself is a port (``EventLog``): Kafka in production (``kafka_log.KafkaEventLog``), an
in-memory fake in unit tests; both pass ``tests/contract/test_event_store.py``.

One process writes a context's partitions; the log's writer id fences an older instance that
still believes it is the writer (``WriterFenced``). Writers in the same process serialise on
the store's lock, so a decide() always sees the state its append will extend.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from callcenter.common.v1 import snapshot_pb2
from google.protobuf.message import Message
from opentelemetry import metrics

from services.platform.envelope import (
    Cause,
    Envelope,
    EventRegistry,
    Headers,
    PoisonEvent,
    decode,
    encode,
    make_envelope,
)
from services.platform.errors import ConcurrencyError, WriterFenced
from services.platform.telemetry import inject_kafka_headers

_meter = metrics.get_meter(__name__)
_events_appended = _meter.create_counter("eventstore.events.appended", description="events committed")
_group_size = _meter.create_histogram(
    "eventstore.commit.units", description="units of work per log transaction"
)

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Deadline:
    """A moment at which an aggregate expects something to happen unless its state moves on first."""

    name: str
    due_at: datetime


@dataclass(frozen=True)
class AggregateKind(Generic[S]):
    """How the store builds one kind of aggregate from its events.

    ``evolve`` is the pure fold; ``deadlines`` lists the timers the state is waiting on;
    ``snapshot``/``restore`` encode the state for snapshots (without them, the kind is always
    rebuilt by full replay), ``state_version`` names that encoding. ``closed`` tells when an
    aggregate's life is over, so a store may forget it (``forget_closed_after``).

    A kind with a ``changelog_topic`` is a table rather than an event-sourced aggregate: a view
    kept from other contexts' events, changed by ``Transaction.put`` of a whole new state that is
    written to that compacted topic in the unit's transaction and read back at start-up (like a
    Kafka Streams state store). ``AggregateKind.table`` builds one.
    """

    name: str
    initial: Callable[[str], S]
    evolve: Callable[[S, Envelope], S]
    deadlines: Callable[[S], Iterable[Deadline]] = lambda _state: ()
    snapshot: Callable[[S], bytes] | None = None
    restore: Callable[[bytes], S] | None = None
    state_version: int = 1
    closed: Callable[[S], bool] = lambda _state: False
    changelog_topic: str | None = None

    @classmethod
    def table(
        cls,
        name: str,
        initial: Callable[[str], S],
        topic: str,
        encode: Callable[[S], bytes],
        decode: Callable[[bytes], S],
    ) -> AggregateKind[S]:
        return cls(
            name, initial, _changed_by_put_only, snapshot=encode, restore=decode, changelog_topic=topic
        )

    @property
    def is_table(self) -> bool:
        return self.changelog_topic is not None


def _changed_by_put_only(_state: Any, envelope: Envelope) -> Any:
    raise TypeError(f"a table changes by Transaction.put, not by events ({envelope.event_type})")


@dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    """An aggregate's state and version; version 0 means it has no events yet."""

    state: S
    version: int

    @property
    def exists(self) -> bool:
        return self.version > 0


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A record read from a topic, with where it was."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone, which deletes the key from a compacted topic
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Position:
    partition: int
    offset: int


@dataclass(frozen=True)
class ConsumedOffsets:
    """Offsets (next to read) that commit in the same transaction as a reaction's output."""

    offsets: Mapping[tuple[str, int], int]
    group_metadata: Any = None


class EventLog(ABC):
    """The port: a context's events topic and snapshots topic, written transactionally by one writer."""

    topic: str

    @abstractmethod
    def open(self) -> None:
        """Become the writer: fence any older writer with the same writer id, abort its open transaction."""

    @abstractmethod
    def read_snapshots(self) -> list[snapshot_pb2.PartitionSnapshot]:
        """The latest snapshot of each partition that has one."""

    @abstractmethod
    def replay(self, start: Mapping[int, int]) -> Iterator[LogRecord]:
        """Committed records of the events topic from ``start`` (offset per partition, else 0) to the end."""

    @abstractmethod
    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        """Write all records and consumed offsets atomically; returns each record's position.

        Raises WriterFenced when another writer took over; any other error leaves nothing written.
        """

    @abstractmethod
    def write_snapshots(self, snapshots: Sequence[snapshot_pb2.PartitionSnapshot]) -> None: ...

    @abstractmethod
    def read_table(self, topic: str) -> Iterator[LogRecord]:
        """Every committed record of a table's changelog topic, oldest first (a key's last one wins)."""

    @abstractmethod
    def close(self) -> None: ...


class CorruptLog(Exception):
    """The context's own events topic holds a record the context cannot apply; the writer cannot start."""


class CommitFailed(Exception):
    """A group of units of work was not written; nothing of it is visible, and the unit may be retried."""


StateListener = Callable[[AggregateKind[Any], str, Any], None]
_Key = tuple[str, str]


@dataclass
class _Unit:
    """A unit of work waiting for its group's commit."""

    tx: Transaction
    records: list[OutgoingRecord]
    consumed: ConsumedOffsets | None
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class _SeenIds:
    """A bounded, insertion-ordered set: the most recent ids that caused events here."""

    def __init__(self, capacity: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, event_id: str) -> None:
        if not event_id:
            return
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids


@dataclass
class _Cached:
    state: Any
    version: int
    partition: int | None = None


class EventStore:
    """One context's aggregates in memory, written through an EventLog.

    Group commit: a unit of work decides under the store's lock against the newest state, including
    units whose commit is still under way (their speculative state), hands its records to the commit
    queue, and waits. Whichever waiting caller takes the commit lock writes everything queued in one
    log transaction. If that fails, every queued unit fails with it (each may have built on the
    failed ones) and the speculative state is dropped; committed state never holds an unwritten event.

    Closed aggregates (``AggregateKind.closed``) are forgotten ``forget_closed_after`` they closed,
    so a context with one aggregate per contact keeps its memory bounded; loading a forgotten id
    gives a new aggregate, and on replay a version 1 always begins a new life of its id.
    """

    def __init__(
        self,
        log: EventLog,
        registry: EventRegistry,
        kinds: Sequence[AggregateKind[Any]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        snapshot_every: int = 0,
        remembered_causes: int = 200_000,
        forget_closed_after: timedelta | None = None,
    ) -> None:
        self._log = log
        self._registry = registry
        self._kinds = {kind.name: kind for kind in kinds}
        self._clock = clock
        self._snapshot_every = snapshot_every
        self._lock = threading.RLock()
        self._commit_lock = threading.Lock()
        self._in_unit = threading.local()
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._speculative: dict[tuple[str, str], Loaded[Any]] = {}
        self._speculative_causes: set[str] = set()
        self._queue: list[_Unit] = []
        self._next_offset: dict[int, int] = {}
        self._since_snapshot = 0
        self._seen = _SeenIds(remembered_causes)
        self._listeners: list[StateListener] = []
        self._newest_listeners: list[StateListener] = []
        self._forget_closed_after = forget_closed_after
        self._closed: OrderedDict[_Key, datetime] = OrderedDict()
        self._fenced: WriterFenced | None = None
        self.replayed_events = 0
        self.restored_aggregates = 0
        self.forgotten_aggregates = 0
        self.commits = 0

    @property
    def topic(self) -> str:
        return self._log.topic

    @property
    def registry(self) -> EventRegistry:
        return self._registry

    def kind(self, name: str) -> AggregateKind[Any]:
        try:
            return self._kinds[name]
        except KeyError:
            raise KeyError(f"aggregate kind {name!r} is not registered with the {self.topic} store") from None

    def start(self) -> None:
        """Become the writer, then rebuild every aggregate from snapshots and the tail of the topic."""
        with self._commit_lock, self._lock:
            self._log.open()
            self._restore_tables()
            start = self._restore_snapshots()
            for record in self._log.replay(start):
                try:
                    envelope = decode(record.value, record.headers, self._registry)
                except PoisonEvent as error:
                    raise CorruptLog(
                        f"{record.topic}[{record.partition}]@{record.offset} cannot be applied: {error}"
                    ) from error
                self._apply(envelope, record.partition)
                self._next_offset[record.partition] = record.offset + 1
                self._seen.add(envelope.causation_id)
                self.replayed_events += 1
            # Replay meets the partitions one after another; forgetting goes oldest first.
            self._closed = OrderedDict(sorted(self._closed.items(), key=lambda item: item[1]))
            self._forget_closed()

    def close(self) -> None:
        with self._commit_lock:
            self._log.close()

    def add_listener(self, listener: StateListener, *, newest: bool = False) -> None:
        """Called with (kind, aggregate id, new state) after every committed or replayed change.

        With ``newest``, called instead whenever the newest state changes: as soon as a unit of work
        appends (while it still holds the store's lock, so the listener sees every unit's decisions
        in order), and again with the state before when the unit is discarded or its commit fails.
        An index the next decision relies on (who is free, who waits) must follow the newest state.
        """
        (self._newest_listeners if newest else self._listeners).append(listener)

    def states(self, kind_name: str) -> Iterator[tuple[str, Any]]:
        """Every committed aggregate of a kind, as (id, state); a copy, safe to iterate while writing."""
        with self._lock:
            items = [(agg_id, c.state) for (k, agg_id), c in self._cache.items() if k == kind_name]
        return iter(items)

    @property
    def queued_units(self) -> int:
        """Units of work waiting for the next group commit."""
        with self._lock:
            return len(self._queue)

    def load(self, kind_name: str, aggregate_id: str) -> Loaded[Any]:
        """The committed state of an aggregate (never one whose events are still being written)."""
        with self._lock:
            return self._committed(self.kind(kind_name), aggregate_id)

    def has_seen(self, cause_id: str) -> bool:
        """Whether a request or event with this id already caused events here (idempotency)."""
        with self._lock:
            return cause_id in self._seen or cause_id in self._speculative_causes

    def append(
        self,
        kind_name: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[Message],
        cause: Cause,
        occurred_at: datetime | None = None,
    ) -> list[Envelope]:
        with self.transaction() as tx:
            return tx.append(kind_name, aggregate_id, expected_version, events, cause, occurred_at)

    @contextmanager
    def transaction(self, consumed: ConsumedOffsets | None = None) -> Iterator[Transaction]:
        """A unit of work; when the block ends it is written (with its group) before this returns.

        Discarded if the block raises. Raises CommitFailed or WriterFenced if the write fails.
        """
        if getattr(self._in_unit, "active", False):
            raise RuntimeError("units of work do not nest: use the transaction you were given")
        self._in_unit.active = True
        try:
            with self._lock:
                if self._fenced is not None:
                    raise WriterFenced(str(self._fenced))
                tx = Transaction(self)
                try:
                    yield tx
                except BaseException:
                    self._revert_newest(tx.pending)
                    raise
                unit = self._enqueue(tx, consumed)
        finally:
            self._in_unit.active = False
        if unit is not None:
            self._await(unit)

    def snapshot(self) -> int:
        """Write a snapshot of every partition this store has seen; returns how many."""
        with self._commit_lock:
            return self._snapshot()

    def _snapshot(self) -> int:
        with self._lock:
            by_partition: dict[int, list[snapshot_pb2.AggregateSnapshot]] = {p: [] for p in self._next_offset}
            for (kind_name, aggregate_id), cached in self._cache.items():
                kind = self._kinds[kind_name]
                if kind.snapshot is None or kind.is_table or cached.partition is None:
                    continue
                by_partition.setdefault(cached.partition, []).append(
                    snapshot_pb2.AggregateSnapshot(
                        aggregate_type=kind_name,
                        aggregate_id=aggregate_id,
                        aggregate_version=cached.version,
                        state_schema_version=kind.state_version,
                        state=kind.snapshot(cached.state),
                    )
                )
            snapshots = []
            for partition, aggregates in sorted(by_partition.items()):
                snap = snapshot_pb2.PartitionSnapshot(
                    topic=self.topic,
                    partition=partition,
                    next_offset=self._next_offset.get(partition, 0),
                    aggregates=aggregates,
                )
                snap.taken_at.FromDatetime(self._clock())
                snapshots.append(snap)
            self._since_snapshot = 0
        self._log.write_snapshots(snapshots)
        return len(snapshots)

    def _restore_snapshots(self) -> dict[int, int]:
        start: dict[int, int] = {}
        for snap in self._log.read_snapshots():
            if snap.topic != self.topic or not self._snapshot_usable(snap):
                continue
            for aggregate in snap.aggregates:
                kind = self._kinds[aggregate.aggregate_type]
                assert kind.restore is not None
                key = (kind.name, aggregate.aggregate_id)
                self._cache[key] = _Cached(
                    kind.restore(aggregate.state), aggregate.aggregate_version, snap.partition
                )
                self._track_closed(kind, key, snap.taken_at.ToDatetime(tzinfo=UTC))
                self._notify(kind, aggregate.aggregate_id, newest_too=True)
                self.restored_aggregates += 1
            start[snap.partition] = snap.next_offset
            self._next_offset[snap.partition] = snap.next_offset
        return start

    def _restore_tables(self) -> None:
        for kind in self._kinds.values():
            if not kind.is_table:
                continue
            assert kind.changelog_topic is not None and kind.restore is not None
            latest: dict[str, tuple[bytes | None, int]] = {}
            for record in self._log.read_table(kind.changelog_topic):
                if record.key is not None:
                    key = record.key.decode()
                    latest[key] = (record.value, latest.get(key, (None, 0))[1] + 1)
            for key, (value, puts) in latest.items():
                if value:
                    self._cache[(kind.name, key)] = _Cached(kind.restore(value), puts)
                    self._notify(kind, key, newest_too=True)

    def _snapshot_usable(self, snap: snapshot_pb2.PartitionSnapshot) -> bool:
        """A partition snapshot is used whole or not at all: every aggregate's encoding must be current."""
        for aggregate in snap.aggregates:
            kind = self._kinds.get(aggregate.aggregate_type)
            if kind is None or kind.restore is None or kind.state_version != aggregate.state_schema_version:
                return False
        return True

    def _committed(self, kind: AggregateKind[Any], aggregate_id: str) -> Loaded[Any]:
        cached = self._cache.get((kind.name, aggregate_id))
        if cached is None:
            return Loaded(kind.initial(aggregate_id), 0)
        return Loaded(cached.state, cached.version)

    def _newest(self, kind: AggregateKind[Any], aggregate_id: str) -> Loaded[Any]:
        speculative = self._speculative.get((kind.name, aggregate_id))
        return speculative if speculative is not None else self._committed(kind, aggregate_id)

    def _apply(self, envelope: Envelope, partition: int | None) -> None:
        kind = self._kinds.get(envelope.aggregate_type)
        if kind is None:
            raise CorruptLog(f"{self.topic} holds aggregate type {envelope.aggregate_type!r}, unknown here")
        key = (kind.name, envelope.aggregate_id)
        cached = self._cache.get(key)
        if cached is None or (envelope.aggregate_version == 1 and cached.version >= 1):
            # A version 1 begins an aggregate: the id was forgotten when closed and then used again.
            cached = _Cached(kind.initial(envelope.aggregate_id), 0, partition)
            self._cache[key] = cached
        if envelope.aggregate_version <= cached.version:
            return  # already in the snapshot this replay started from
        cached.state = kind.evolve(cached.state, envelope)
        cached.version = envelope.aggregate_version
        cached.partition = partition
        self._track_closed(kind, key, envelope.occurred_at)
        self._notify(kind, envelope.aggregate_id, newest_too=True)

    def _notify(
        self, kind: AggregateKind[Any], aggregate_id: str, *, newest_too: bool = False, state: Any = None
    ) -> None:
        if state is None:
            state = self._cache[(kind.name, aggregate_id)].state
        for listener in self._listeners:
            listener(kind, aggregate_id, state)
        if newest_too:
            self._notify_newest(kind, aggregate_id, state)

    def _notify_newest(self, kind: AggregateKind[Any], aggregate_id: str, state: Any) -> None:
        for listener in self._newest_listeners:
            listener(kind, aggregate_id, state)

    def _revert_newest(self, keys: Iterable[_Key]) -> None:
        """Tell newest-listeners the newest state again, after the units that changed it failed."""
        for kind_name, aggregate_id in list(keys):
            kind = self._kinds[kind_name]
            self._notify_newest(kind, aggregate_id, self._newest(kind, aggregate_id).state)

    def _track_closed(self, kind: AggregateKind[Any], key: _Key, at: datetime) -> None:
        if self._forget_closed_after is None:
            return
        if kind.closed(self._cache[key].state):
            self._closed[key] = at
            self._closed.move_to_end(key)
        else:
            self._closed.pop(key, None)

    def _forget_closed(self) -> None:
        """Drop aggregates closed longer than the retention (the caller holds the store lock)."""
        if self._forget_closed_after is None:
            return
        limit = self._clock() - self._forget_closed_after
        while self._closed:
            key, closed_at = next(iter(self._closed.items()))
            if closed_at > limit:
                return
            del self._closed[key]
            if key not in self._speculative:
                del self._cache[key]
                self.forgotten_aggregates += 1

    def _enqueue(self, tx: Transaction, consumed: ConsumedOffsets | None) -> _Unit | None:
        """Queue a finished unit for the next group commit; its state becomes the speculative newest."""
        if not tx.envelopes and not tx.published and consumed is None:
            return None
        records = []
        for envelope in tx.envelopes:
            key, value, headers = encode(envelope)
            records.append(OutgoingRecord(self.topic, key, value, headers))
        records.extend(tx.published)
        self._speculative.update(tx.pending)
        self._speculative_causes.update(envelope.causation_id for envelope in tx.envelopes)
        unit = _Unit(tx, records, consumed)
        self._queue.append(unit)
        return unit

    def _await(self, unit: _Unit) -> None:
        while not unit.done.is_set():
            with self._commit_lock:
                if not unit.done.is_set():
                    self._commit_queued()
        if unit.error is not None:
            raise unit.error

    def _commit_queued(self) -> None:
        """Write every queued unit in one log transaction (the caller holds the commit lock)."""
        with self._lock:
            units, self._queue = self._queue, []
        if not units:
            return
        records = [record for unit in units for record in unit.records]
        consumed = [unit.consumed for unit in units if unit.consumed is not None]
        try:
            positions = self._log.commit(records, consumed)
        except Exception as error:
            self._fail(units, error)
            return
        with self._lock:
            index = 0
            for unit in units:
                self._land(unit.tx, positions[index : index + len(unit.records)])
                index += len(unit.records)
            self._speculative = {
                key: loaded
                for key, loaded in self._speculative.items()
                if loaded.version > (self._cache[key].version if key in self._cache else 0)
            }
            self._speculative_causes -= {
                envelope.causation_id for unit in units for envelope in unit.tx.envelopes
            }
            self.commits += 1
            appended = sum(len(unit.tx.envelopes) for unit in units)
            self._since_snapshot += appended
            _events_appended.add(appended, {"topic": self.topic})
            _group_size.record(len(units), {"topic": self.topic})
            snapshot_due = self._snapshot_every and self._since_snapshot >= self._snapshot_every
            self._forget_closed()
        for unit in units:
            unit.done.set()
        if snapshot_due:
            self._snapshot()

    def _land(self, tx: Transaction, positions: Sequence[Position | None]) -> None:
        """Make a written unit's state the committed state (the caller holds the store lock)."""
        partitions: dict[tuple[str, str], int] = {}
        for envelope, position in zip(tx.envelopes, positions, strict=False):
            self._seen.add(envelope.causation_id)
            if position is not None:
                partitions[(envelope.aggregate_type, envelope.aggregate_id)] = position.partition
                self._next_offset[position.partition] = max(
                    self._next_offset.get(position.partition, 0), position.offset + 1
                )
        for key, loaded in tx.pending.items():
            if not loaded.exists:  # a deleted table row
                self._cache.pop(key, None)
                self._notify(self._kinds[key[0]], key[1], state=loaded.state)
                continue
            cached = self._cache.setdefault(key, _Cached(loaded.state, loaded.version))
            cached.state, cached.version = loaded.state, loaded.version
            cached.partition = partitions.get(key, cached.partition)
            kind = self._kinds[key[0]]
            self._track_closed(kind, key, self._clock())
            self._notify(kind, key[1])

    def _fail(self, units: list[_Unit], error: Exception) -> None:
        """Fail the written group and everything queued behind it, which may have built on it."""
        with self._lock:
            failed = units + self._queue
            self._queue = []
            reverted = list(self._speculative)
            self._speculative.clear()
            self._speculative_causes.clear()
            self._revert_newest(reverted)
            if isinstance(error, WriterFenced):
                self._fenced = error
        for unit in failed:
            if isinstance(error, WriterFenced):
                unit.error = WriterFenced(str(error))
            else:
                unit.error = CommitFailed(f"{self.topic}: {type(error).__name__}: {error}")
            unit.error.__cause__ = error
            unit.done.set()


class Transaction:
    """One unit of work against a store: loads see this transaction's own pending appends."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.pending: dict[tuple[str, str], Loaded[Any]] = {}
        self.envelopes: list[Envelope] = []
        self.published: list[OutgoingRecord] = []

    def load(self, kind_name: str, aggregate_id: str) -> Loaded[Any]:
        pending = self.pending.get((kind_name, aggregate_id))
        if pending is not None:
            return pending
        return self._store._newest(self._store.kind(kind_name), aggregate_id)

    def append(
        self,
        kind_name: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[Message],
        cause: Cause,
        occurred_at: datetime | None = None,
    ) -> list[Envelope]:
        """Append events to one aggregate; refused when ``expected_version`` is not its version."""
        kind = self._store.kind(kind_name)
        if kind.is_table:
            raise TypeError(f"{kind_name} is a table: put its new state instead of appending events")
        current = self.load(kind_name, aggregate_id)
        if expected_version != current.version:
            raise ConcurrencyError(aggregate_id, expected_version, current.version)
        when = occurred_at or self._store._clock()
        state, version, appended = current.state, current.version, []
        for payload in events:
            version += 1
            envelope = make_envelope(
                payload,
                registry=self._store.registry,
                aggregate_type=kind.name,
                aggregate_id=aggregate_id,
                aggregate_version=version,
                occurred_at=when,
                cause=cause,
            )
            # The trace of the span deciding this event travels with it, so a reaction continues it.
            envelope = envelope.with_headers(inject_kafka_headers())
            state = kind.evolve(state, envelope)
            appended.append(envelope)
        self.pending[(kind_name, aggregate_id)] = Loaded(state, version)
        self.envelopes.extend(appended)
        self._store._notify_newest(kind, aggregate_id, state)
        return appended

    def put(self, kind_name: str, key: str, state: Any) -> None:
        """Replace a table row; the new state goes to the table's changelog with this unit's records."""
        kind = self._store.kind(kind_name)
        if not kind.is_table:
            raise TypeError(f"{kind_name} is event-sourced: append events instead of putting a state")
        assert kind.changelog_topic is not None and kind.snapshot is not None
        current = self.load(kind_name, key)
        self.pending[(kind_name, key)] = Loaded(state, current.version + 1)
        self.published.append(OutgoingRecord(kind.changelog_topic, key.encode(), kind.snapshot(state)))
        self._store._notify_newest(kind, key, state)

    def delete(self, kind_name: str, key: str) -> None:
        """Drop a table row: a tombstone goes to the changelog, and the key is forgotten once written."""
        kind = self._store.kind(kind_name)
        if not kind.is_table:
            raise TypeError(f"{kind_name} is event-sourced: its events are kept, not deleted")
        assert kind.changelog_topic is not None
        if not self.load(kind_name, key).exists:
            return
        state = kind.initial(key)
        self.pending[(kind_name, key)] = Loaded(state, 0)
        self.published.append(OutgoingRecord(kind.changelog_topic, key.encode(), None))
        self._store._notify_newest(kind, key, state)

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        """Also write a record to another topic (public events, an inbox, the dead-letter topic)."""
        self.published.append(OutgoingRecord(topic, key, value, list(headers or [])))
