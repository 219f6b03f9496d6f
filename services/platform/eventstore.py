"""The event store: one context's aggregates, appended with an expected version, rebuilt by replay.

The store keeps every aggregate's current state and version in memory, rebuilt at start-up
from the latest partition snapshots plus the tail of the context's events topic. Appends go
through a ``Transaction``: all events (and, for reactions, the consumed offsets) of one unit of
work are written to the log atomically, and only then applied to the in-memory states. The log
itself is a port (``EventLog``): Kafka in production (``kafka.KafkaEventLog``), an in-memory fake
in unit tests; both pass ``tests/contract/test_event_store.py``.

Requests from callers take one path, ``execute``: the request id is checked inside the unit of
work, so a retry racing its original waits for it and gets its answer, and the same id sent with a
different request is refused, naming the first.

One thread, the writer, makes every call to the log; no caller and no lock waits on Kafka. One
process writes a context's partitions; the log's writer id fences an older instance that still
believes it is the writer (``WriterFenced``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from callcenter.common.v1 import snapshot_pb2
from callcenter.platform.v1 import events_pb2 as platform_events
from callcenter.platform.v1.events_pb2 import QuarantineResolution
from google.protobuf.message import Message
from opentelemetry import metrics

from services.platform.envelope import (
    DEADLETTER_TOPIC,
    Actor,
    Cause,
    Envelope,
    EventRegistry,
    Headers,
    PoisonEvent,
    deadletter_headers,
    decode,
    encode,
    make_envelope,
)
from services.platform.errors import (
    ConcurrencyError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    Quarantined,
    RequestIdReused,
    Unavailable,
    WriterFenced,
)
from services.platform.health import Health
from services.platform.quarantine import KIND as QUARANTINE
from services.platform.quarantine import Quarantine, is_kernel_record, resolution_event
from services.platform.requests import Request
from services.platform.telemetry import inject_kafka_headers

log = logging.getLogger(__name__)

_meter = metrics.get_meter(__name__)
_events_appended = _meter.create_counter("eventstore.events.appended", description="events committed")
_group_size = _meter.create_histogram(
    "eventstore.commit.units", description="units of work per log transaction"
)
_retries = _meter.create_counter("eventstore.commit.retries", description="log transactions tried again")

S = TypeVar("S")
R = TypeVar("R")

# Kafka's default largest record (topic max.message.bytes, 1 MiB) less room for the batch's framing.
DEFAULT_MAX_RECORD_BYTES = 1_000_000


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
    written_at: datetime | None = None  # the record's timestamp: when its producer wrote it


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone, which deletes the key from a compacted topic
    headers: Headers = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.key or b"") + len(self.value or b"") + sum(len(k) + len(v) for k, v in self.headers)


@dataclass(frozen=True, slots=True)
class Position:
    partition: int
    offset: int


@dataclass(frozen=True)
class ConsumedOffsets:
    """Offsets (next to read) that commit in the same transaction as a reaction's output."""

    offsets: Mapping[tuple[str, int], int]
    group_metadata: Any = None


class LogWriteFailed(Exception):
    """A log transaction was aborted: nothing of it is visible, and the same records may be written again."""


class RecordsRefused(LogWriteFailed):
    """The log refused some records for what they are (too large, not allowed), whatever the retry.

    ``reasons`` maps the index of each refused record (in the records given to ``commit``) to why.
    """

    def __init__(self, reasons: Mapping[int, str]) -> None:
        super().__init__("; ".join(sorted(set(reasons.values()))))
        self.reasons = dict(reasons)


class CommitInDoubt(Exception):
    """A commit was sent but its outcome is unknown (the broker went away while committing).

    The records have not been given up: ``EventLog.resolve`` finds out whether they landed.
    """

    def __init__(self, message: str, token: Any) -> None:
        super().__init__(message)
        self.token = token


class EventLog(ABC):
    """The port: a context's events topic and snapshots topic, written transactionally by one writer.

    Every method returns or raises within the log's own timeouts; none blocks for good.
    """

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
        """Write all records and consumed offsets atomically; returns each record's position in the
        events topic (None for records of other topics).

        Raises WriterFenced when another writer took over; LogWriteFailed when nothing was written
        (RecordsRefused when some records can never be); CommitInDoubt when it cannot tell yet.
        """

    def resolve(self, doubt: CommitInDoubt) -> list[Position | None]:
        """Whether an in-doubt commit landed: its positions if it did; LogWriteFailed if it did not;
        CommitInDoubt again while it still cannot tell."""
        raise LogWriteFailed(f"{self.topic}: cannot resolve a commit in doubt: {doubt}")

    # Whether ``check`` can tell anything: the store's writer asks every second only if so.
    checks_reachability = False

    def check(self) -> str | None:
        """Why the log could not take a commit now (broker unreachable), or None when it could."""
        return None

    @abstractmethod
    def write_snapshots(self, snapshots: Sequence[snapshot_pb2.PartitionSnapshot]) -> None: ...

    @abstractmethod
    def read_table(self, topic: str) -> Iterator[LogRecord]:
        """Every committed record of a table's changelog topic, oldest first (a key's last one wins)."""

    @abstractmethod
    def close(self) -> None: ...


class CorruptLog(Exception):
    """The context's own events topic holds a record the context cannot apply; the writer cannot start."""


class CommitFailed(Unavailable):
    """A unit of work was not written; nothing of it is visible, and it may be retried."""


class CommitRefused(CommitFailed):
    """A unit of work was not written because the log refused one of its own records for what it is
    (too large, a topic its writer may not write): the same unit would be refused again."""


class RecordTooLarge(InvalidArgument):
    """A unit of work would write a record larger than the log accepts; nothing of it was written."""


StateListener = Callable[[AggregateKind[Any], str, Any], None]
Decide = Callable[[Loaded[Any]], Sequence[Message]]
Follow = Callable[["Transaction", Cause], None]
_Key = tuple[str, str]


@dataclass
class _Unit:
    """A unit of work waiting for its group's commit."""

    tx: Transaction
    records: list[OutgoingRecord]
    consumed: ConsumedOffsets | None
    request: Request | None = None
    result_key: _Key | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None

    @property
    def result(self) -> Loaded[Any] | None:
        return self.tx.pending.get(self.result_key) if self.result_key is not None else None

    @property
    def causes(self) -> set[str]:
        return {envelope.causation_id for envelope in self.tx.envelopes}


@dataclass(frozen=True, slots=True)
class _Answered:
    """A request id that caused events here: what it asked (its digest) and where."""

    fingerprint: str
    what: str


class _Bounded(Generic[S]):
    """An insertion-ordered map that keeps only its newest ``capacity`` entries."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[str, S] = OrderedDict()
        self._capacity = capacity

    def put(self, key: str, value: S) -> None:
        if not key:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, key: str) -> S | None:
        return self._items.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._items


@dataclass
class _Cached:
    state: Any
    version: int
    partition: int | None = None


class EventStore:
    """One context's aggregates in memory, written through an EventLog by the store's writer thread.

    Group commit: a unit of work decides under the store's lock against the newest state, including
    units whose commit is still under way (their speculative state), hands its records to the writer,
    and waits (a request no longer than its deadline). The writer writes everything queued in one log
    transaction. An aborted transaction is written again, with whatever queued meanwhile, until it
    lands; units refused for what they are fail alone, with the units that built on them; committed
    state never holds an unwritten event. While the log cannot be written, ``health`` says why and
    requests are refused at once (Unavailable) instead of queueing.

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
        remembered_results: int = 10_000,
        forget_closed_after: timedelta | None = None,
        health: Health | None = None,
        max_queued_units: int = 10_000,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        retry_backoff_s: tuple[float, float] = (0.05, 2.0),
        check_every_s: float = 1.0,
        stalled_after_s: float = 30.0,
        actor: Actor | None = None,
    ) -> None:
        self._log = log
        # Who the events this store writes on its own behalf (reactions, timers) are by.
        self.actor = actor or Actor(log.topic, ("service",))
        self._registry = registry
        self._kinds = {kind.name: kind for kind in kinds}
        self._kinds[QUARANTINE] = AggregateKind(QUARANTINE, lambda _id: None, lambda state, _envelope: state)
        if not registry.knows("RecordQuarantined"):
            registry.register_module(platform_events)
        self._quarantine = Quarantine()
        self._clock = clock
        self._snapshot_every = snapshot_every
        self.health = health or Health(log.topic)
        self._max_queued_units = max_queued_units
        self._max_record_bytes = max_record_bytes
        self._retry_backoff_s = retry_backoff_s
        self._check_every_s = check_every_s
        self._stalled_after_s = stalled_after_s
        self._in_call_since: float | None = None  # when the writer's current call to the log began
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._in_unit = threading.local()
        self._cache: dict[_Key, _Cached] = {}
        self._speculative: dict[_Key, Loaded[Any]] = {}
        self._queue: list[_Unit] = []
        self._writing: list[_Unit] = []
        self._requests: dict[str, _Unit] = {}
        self._inflight_causes: dict[str, int] = {}
        self._next_offset: dict[int, int] = {}
        self._since_snapshot = 0
        self._snapshot_wanted: list[threading.Event] = []
        self._seen: _Bounded[_Answered] = _Bounded(remembered_causes)
        self._results: _Bounded[Loaded[Any]] = _Bounded(remembered_results)
        self._listeners: list[StateListener] = []
        self._newest_listeners: list[StateListener] = []
        self._forget_closed_after = forget_closed_after
        self._closed: OrderedDict[_Key, datetime] = OrderedDict()
        self._fenced: WriterFenced | None = None
        self._fenced_listeners: list[Callable[[WriterFenced], None]] = []
        self._stopped_listeners: list[Callable[[Exception], None]] = []
        self._writer: threading.Thread | None = None
        self._closing = False
        self._close_by = 0.0
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

    # Life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Become the writer, rebuild every aggregate from snapshots and the tail of the topic, then
        start the writer thread. A record of the topic that cannot be applied is quarantined
        (``services.platform.quarantine``), never a reason not to start."""
        self.health.trouble("store", f"replaying {self.topic}")
        with self._lock:
            self._log.open()
            self._restore_tables()
            start = self._restore_snapshots()
            # Resolutions first: a record skipped before is passed over when the replay meets it.
            for record in self._log.replay(start):
                if is_kernel_record(record):
                    with suppress(PoisonEvent):
                        self._quarantine.learn(decode(record.value, record.headers, self._registry))
            for record in self._log.replay(start):
                self._replay(record)
            # Replay meets the partitions one after another; forgetting goes oldest first.
            self._closed = OrderedDict(sorted(self._closed.items(), key=lambda item: item[1]))
            self._forget_closed()
        self._writer = threading.Thread(target=self._run_writer, name=f"{self.topic}-writer", daemon=True)
        self._writer.start()
        threading.Thread(target=self._watch_writer, name=f"{self.topic}-watchdog", daemon=True).start()
        self._record_quarantine()
        self.health.clear("store")

    def _replay(self, record: LogRecord) -> None:
        self._next_offset[record.partition] = record.offset + 1
        if self._quarantine.skipped(record):
            return
        key = (record.key or b"").decode(errors="replace")
        try:
            envelope = decode(record.value, record.headers, self._registry)
        except PoisonEvent as error:
            self._quarantine.poison(record, f"{type(error).__name__}: {error}")
            return
        if envelope.aggregate_type == QUARANTINE:
            self._apply(envelope, record.partition)
            self._remember(envelope)
            return
        self._quarantine.readable_again(record)
        if self._quarantine.holds(key):
            self._quarantine.hold(key, record, envelope)  # after a record it cannot apply: held back
            return
        try:
            self._apply(envelope, record.partition)
        except Exception as error:
            self._quarantine.poison(record, f"{type(error).__name__}: {error}", envelope)
            return
        self._remember(envelope)
        self.replayed_events += 1

    def _record_quarantine(self) -> None:
        """Write what the replay found: for each record newly quarantined, a dead-letter copy and the
        audit event; for each that reads again, its resolution; then free what nothing holds back."""
        for found in self._quarantine.unrecorded():
            assert found.record is not None
            record = found.record
            log.error("%s: quarantined %s, and %s with it", self.topic, found.describe(), found.aggregate_id)
            with self.transaction() as tx:
                headers = deadletter_headers(record.headers, found.position, found.reason, self.topic)
                tx.publish(DEADLETTER_TOPIC, record.key, record.value or b"", headers)
                self._audit(tx, found.aggregate_id, found.audit_event(), found.position)
        for found in self._quarantine.newly_readable():
            if found.recorded:
                resolved = resolution_event(found, found.resolution, "service", "readable by this version")
                with self.transaction() as tx:
                    self._audit(tx, found.aggregate_id, resolved, found.position)
            self._release_held(found.aggregate_id)

    def _audit(
        self, tx: Transaction, aggregate_id: str, event: Message, position: tuple[str, int, int]
    ) -> None:
        loaded = tx.load(QUARANTINE, aggregate_id)
        cause = Cause.request(f"quarantine/{'/'.join(map(str, position))}/{type(event).__name__}")
        tx.append(QUARANTINE, aggregate_id, loaded.version, [event], cause)

    def _release_held(self, aggregate_id: str) -> None:
        """Apply the events an aggregate held back, once none of its records is unresolved."""
        with self._lock:
            for record, envelope in self._quarantine.release(aggregate_id):
                if envelope is not None and not self._quarantine.skipped(record):
                    self._apply(envelope, record.partition)
                    self._remember(envelope)

    def quarantined(self) -> list[Any]:
        """Every record of the topic this store quarantined, resolved or not (OperationsService)."""
        with self._lock:
            return self._quarantine.listing()

    def skip_quarantined(
        self, request: Request, position: tuple[str, int, int], resolved_by: str, note: str = ""
    ) -> Any:
        """Pass over a quarantined record: recorded as QuarantineResolved; its aggregate goes on."""
        with self._lock:
            found = self._quarantine.records.get(position)
        if found is None:
            raise NotFound(f"{'/'.join(map(str, position))} is not a quarantined record of {self.topic}")
        if found.resolved and self._seen.get(request.request_id) is None:
            raise FailedPrecondition(f"{found.describe()} is already resolved ({found.resolved_by})")
        event = resolution_event(found, QuarantineResolution.QUARANTINE_RESOLUTION_SKIP, resolved_by, note)
        self.execute(
            request, QUARANTINE, found.aggregate_id, lambda _loaded: [] if found.resolved else [event]
        )
        self._release_held(found.aggregate_id)
        with self._lock:
            return next(r for r in self._quarantine.listing() if (r.topic, r.partition, r.offset) == position)

    def close(self, grace_s: float = 5.0) -> None:
        """Write what is queued (for up to ``grace_s``), fail what is left, then close the log."""
        with self._lock:
            self._closing = True
            self._close_by = time.monotonic() + grace_s
            self._wake.notify_all()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            # A call to the log under way ends within the log's own timeout; past the grace, leave it.
            writer.join(grace_s)
            if writer.is_alive():
                log.warning("%s: the writer is still in a call to the log; leaving it", self.topic)
                return
        self._log.close()

    def on_fenced(self, listener: Callable[[WriterFenced], None]) -> None:
        """Called once when another instance takes over this store's writer id."""
        self._fenced_listeners.append(listener)

    def on_writer_stopped(self, listener: Callable[[Exception], None]) -> None:
        """Called once if the writer stops by an unexpected error (a bug): nothing more is written."""
        self._stopped_listeners.append(listener)

    def add_listener(self, listener: StateListener, *, newest: bool = False) -> None:
        """Called with (kind, aggregate id, new state) after every committed or replayed change.

        With ``newest``, called instead whenever the newest state changes: as soon as a unit of work
        appends (while it still holds the store's lock, so the listener sees every unit's decisions
        in order), and again with the state before when the unit is discarded or fails.
        An index the next decision relies on (who is free, who waits) must follow the newest state.
        """
        (self._newest_listeners if newest else self._listeners).append(listener)

    # Reading ------------------------------------------------------------------------------------

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
            return cause_id in self._seen or cause_id in self._inflight_causes

    # Writing ------------------------------------------------------------------------------------

    def execute(
        self,
        request: Request,
        kind_name: str,
        aggregate_id: str,
        decide: Decide,
        *,
        follow: Follow | None = None,
    ) -> Loaded[Any]:
        """The one write path of a caller's request: once per request id, against the newest state.

        ``decide`` gets the aggregate and returns its new events (or raises a domain error);
        ``follow`` may add more to the same unit of work (a router matching at once). Returns the
        aggregate as this request left it. The same request id again returns that answer, waiting
        for the first if it is still being written; the same id with a different request is refused.
        """
        if not request.request_id:
            raise InvalidArgument("request_id is required: the caller's idempotency key, the same on retries")
        kind = self.kind(kind_name)
        with self._unit_scope(), self._lock:
            earlier = self._earlier(request)
            if isinstance(earlier, _Unit):
                unit = earlier
            elif earlier is _ANSWERED:
                return self._committed(kind, aggregate_id)
            elif earlier is not None:
                return earlier
            else:
                self._admit()
                tx = Transaction(self)
                cause = Cause.request(
                    request.request_id, fingerprint=request.fingerprint, actor=request.actor
                )
                with self._reverting(tx):
                    loaded = tx.load(kind_name, aggregate_id)
                    events = decide(loaded)
                    if events:
                        tx.append(kind_name, aggregate_id, loaded.version, events, cause)
                    if follow is not None:
                        follow(tx, cause)
                    pending = self._enqueue(tx, None, request, (kind.name, aggregate_id))
                if pending is None:
                    return tx.load(kind_name, aggregate_id)
                unit = pending
        self._await(unit, request.seconds_left())
        result = unit.result
        return result if result is not None else self.load(kind_name, aggregate_id)

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
        """A unit of work of the service itself (a reaction, a timer); when the block ends it is
        written (with its group) before this returns.

        Discarded if the block raises. Raises CommitFailed or WriterFenced if it cannot be written.
        """
        with self._unit_scope():
            with self._lock:
                self._refuse_if_fenced()
                tx = Transaction(self)
                with self._reverting(tx):
                    yield tx
                    unit = self._enqueue(tx, consumed)
            if unit is not None:
                self._await(unit, None)

    def snapshot(self) -> int:
        """Write a snapshot of every partition this store has seen (by the writer); returns how many."""
        done = threading.Event()
        with self._lock:
            self._snapshot_wanted.append(done)
            self._wake.notify_all()
        done.wait()
        return self._snapshots_written

    @contextmanager
    def _unit_scope(self) -> Iterator[None]:
        if getattr(self._in_unit, "active", False):
            raise RuntimeError("units of work do not nest: use the transaction you were given")
        self._in_unit.active = True
        try:
            yield
        finally:
            self._in_unit.active = False

    @contextmanager
    def _reverting(self, tx: Transaction) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._revert_newest(tx.pending)
            raise

    def _earlier(self, request: Request) -> _Unit | Loaded[Any] | object | None:
        """The unit still writing this request id, or the answer it got (``_ANSWERED`` when that is no
        longer remembered: the aggregate as it is now answers), or None for a new request."""
        unit = self._requests.get(request.request_id)
        answered = self._seen.get(request.request_id)
        if unit is None and answered is None:
            return None
        first = (
            _Answered(unit.request.fingerprint, _what(unit.request, unit.result_key))
            if unit is not None and unit.request is not None
            else answered
        )
        if first is not None and first.fingerprint and first.fingerprint != request.fingerprint:
            raise RequestIdReused(
                f"request_id {request.request_id!r} was already used for {first.what}; "
                f"a different request needs a new request_id"
            )
        if unit is not None:
            return unit
        result = self._results.get(request.request_id)
        return result if result is not None else _ANSWERED

    def _admit(self) -> None:
        self._refuse_if_fenced()
        if self._closing:
            raise Unavailable(f"{self.topic}: the service is stopping; retry with the same request_id")
        if not self.health.serving:
            raise Unavailable(f"{self.health.name} cannot write now: {self.health.why()}")
        if len(self._queue) >= self._max_queued_units:
            raise Overloaded(
                f"{self.topic}: {len(self._queue)} writes are waiting for the log; try again shortly"
            )

    def _refuse_if_fenced(self) -> None:
        if self._fenced is not None:
            raise WriterFenced(str(self._fenced))

    def _await(self, unit: _Unit, timeout_s: float | None) -> None:
        if not unit.done.wait(timeout_s):
            raise Unavailable(
                f"{self.topic}: the write is not confirmed within the deadline (the log is slow or away); "
                f"retry with the same request_id to learn its outcome"
            )
        if unit.error is not None:
            raise unit.error

    def _enqueue(
        self,
        tx: Transaction,
        consumed: ConsumedOffsets | None,
        request: Request | None = None,
        result_key: _Key | None = None,
    ) -> _Unit | None:
        """Queue a finished unit for the writer; its state becomes the speculative newest."""
        if not tx.envelopes and not tx.published and consumed is None:
            return None
        records = []
        for envelope in tx.envelopes:
            key, value, headers = encode(envelope)
            records.append(OutgoingRecord(self.topic, key, value, headers))
        records.extend(tx.published)
        for record in records:
            if record.size > self._max_record_bytes:
                raise RecordTooLarge(
                    f"the request would write a record of {record.size:,} bytes to {record.topic}, more than "
                    f"the {self._max_record_bytes:,} the log accepts; nothing was written"
                )
        self._speculative.update(tx.pending)
        unit = _Unit(tx, records, consumed, request, result_key)
        for cause in unit.causes:
            self._inflight_causes[cause] = self._inflight_causes.get(cause, 0) + 1
        if request is not None:
            self._requests[request.request_id] = unit
        self._queue.append(unit)
        self._wake.notify_all()
        return unit

    # The writer ---------------------------------------------------------------------------------

    def _run_writer(self) -> None:
        """The writer thread: a bug in it stops this store (and, through its listeners, the process,
        so that its supervisor starts it again) instead of leaving callers waiting for their deadline."""
        try:
            self._write_loop()
        except Exception as error:
            log.exception("%s: the writer stopped by an error", self.topic)
            self.health.trouble("writer", f"stopped by an error: {type(error).__name__}")
            self._fail_all(
                Unavailable(
                    f"{self.topic}: the writer stopped by an error and the service restarts; "
                    "retry with the same request_id to learn the outcome"
                )
            )
            for listener in self._stopped_listeners:
                listener(error)

    def _watch_writer(self) -> None:
        """Health tells the truth about a writer stuck in one call to the log past every bound the
        log promises (a library bug): NOT_SERVING, and the writer's stack in the log, once."""
        reported: float | None = None
        while self._writer is not None and self._writer.is_alive():
            since = self._in_call_since
            if since is not None and time.monotonic() - since > self._stalled_after_s:
                if reported != since:
                    reported = since
                    self.health.trouble("stalled", f"{self.topic}: the writer is stuck in a call to the log")
                    frame = sys._current_frames().get(self._writer.ident or 0)
                    stack = "".join(traceback.format_stack(frame)) if frame is not None else "?"
                    log.error("%s: the writer is stuck in a call to the log, in:\n%s", self.topic, stack)
            elif reported is not None:
                reported = None
                self.health.clear("stalled")
            time.sleep(min(1.0, self._stalled_after_s / 4))

    def _write_loop(self) -> None:
        checking = self._log.checks_reachability
        next_check = time.monotonic()
        while True:
            with self._lock:
                while not self._queue and not self._snapshot_wanted and not self._closing:
                    wait = next_check - time.monotonic() if checking else None
                    if wait is not None and wait <= 0:
                        break
                    self._wake.wait(wait)
                if self._closing and not self._queue:
                    for done in self._snapshot_wanted:
                        done.set()
                    break
                units, self._queue = self._queue, []
                self._writing = units
                wanted, self._snapshot_wanted = self._snapshot_wanted, []
            if units:
                self._write(units)
            if wanted or self._snapshot_due():
                self._write_snapshots(wanted)
            if checking and time.monotonic() >= next_check:
                self._check_log()
                next_check = time.monotonic() + self._check_every_s
        self._fail_all(CommitFailed(f"{self.topic}: the service stopped before this was written"))

    def _write(self, units: list[_Unit]) -> None:
        delay = self._retry_backoff_s[0]
        while units:
            records = [record for unit in units for record in unit.records]
            consumed = [unit.consumed for unit in units if unit.consumed is not None]
            try:
                positions = self._commit(records, consumed)
            except RecordsRefused as refused:
                units = self._drop_refused(units, refused)
                continue
            except WriterFenced as fenced:
                self._fence(fenced)
                return
            except Exception as error:
                self.health.trouble("writer", f"cannot write to {self.topic}: {error}")
                _retries.add(1, {"topic": self.topic})
                log.warning("%s: write of %d unit(s) failed, retrying: %s", self.topic, len(units), error)
                # A reaction's offsets name its consumer group's generation, which may be gone by the
                # next try: the reaction is done again, with the group's metadata of then.
                units = self._drop(units, _reactions_again(f"{error}; it is done again"))
                if not self._pause(delay):
                    self._fail_all(CommitFailed(f"{self.topic}: stopped before this could be written"))
                    return
                delay = min(delay * 2, self._retry_backoff_s[1])
                with self._lock:
                    # Units queued meanwhile may build on these: they go in the same transaction.
                    units, self._queue = units + self._queue, []
                    self._writing = units
                continue
            self._land(units, positions)
            self.health.clear("writer")
            return

    def _commit(
        self, records: list[OutgoingRecord], consumed: list[ConsumedOffsets]
    ) -> list[Position | None]:
        try:
            return self._in_call(self._log.commit, records, consumed)
        except CommitInDoubt as doubt:
            delay = self._retry_backoff_s[0]
            while True:
                self.health.trouble("writer", f"{self.topic}: a commit's outcome is not known yet: {doubt}")
                try:
                    return self._in_call(self._log.resolve, doubt)
                except CommitInDoubt as still:
                    doubt = still
                    log.warning("%s: still resolving a commit in doubt: %s", self.topic, still)
                if not self._pause(delay):
                    raise
                delay = min(delay * 2, self._retry_backoff_s[1])

    def _in_call(self, call: Callable[..., R], *args: Any) -> R:
        self._in_call_since = time.monotonic()
        try:
            return call(*args)
        finally:
            self._in_call_since = None

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False once the store is closing and its grace has run out."""
        until = time.monotonic() + seconds
        with self._lock:
            while True:
                now = time.monotonic()
                if self._closing and now >= self._close_by:
                    return False
                if now >= until:
                    return True
                self._wake.wait(min(until, self._close_by if self._closing else until) - now)

    def _check_log(self) -> None:
        trouble = self._in_call(self._log.check)
        if trouble is None:
            if not self._writing:
                self.health.clear("writer")
        else:
            self.health.trouble("writer", f"cannot write to {self.topic}: {trouble}")

    def _land(self, units: list[_Unit], positions: Sequence[Position | None]) -> None:
        with self._lock:
            index = 0
            for unit in units:
                self._land_unit(unit, positions[index : index + len(unit.records)])
                index += len(unit.records)
            self._writing = []
            self._speculative = {}
            for unit in self._queue:
                self._speculative.update(unit.tx.pending)
            self.commits += 1
            appended = sum(len(unit.tx.envelopes) for unit in units)
            self._since_snapshot += appended
            _events_appended.add(appended, {"topic": self.topic})
            _group_size.record(len(units), {"topic": self.topic})
            self._forget_closed()
        for unit in units:
            unit.done.set()

    def _land_unit(self, unit: _Unit, positions: Sequence[Position | None]) -> None:
        """Make a written unit's state the committed state (the caller holds the store lock)."""
        tx = unit.tx
        partitions: dict[_Key, int] = {}
        for envelope, position in zip(tx.envelopes, positions, strict=False):
            self._remember(envelope)
            if envelope.aggregate_type == QUARANTINE:
                self._quarantine.learn(envelope)
            if position is not None:
                partitions[(envelope.aggregate_type, envelope.aggregate_id)] = position.partition
                self._next_offset[position.partition] = max(
                    self._next_offset.get(position.partition, 0), position.offset + 1
                )
        self._release(unit)
        if unit.request is not None:
            what = _what(unit.request, unit.result_key)
            self._seen.put(unit.request.request_id, _Answered(unit.request.fingerprint, what))
            if unit.result is not None:
                self._results.put(unit.request.request_id, unit.result)
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

    def _release(self, unit: _Unit) -> None:
        """The unit is no longer in flight: its request id and causes are answered or free again."""
        if unit.request is not None and self._requests.get(unit.request.request_id) is unit:
            del self._requests[unit.request.request_id]
        for cause in unit.causes:
            left = self._inflight_causes.get(cause, 0) - 1
            if left > 0:
                self._inflight_causes[cause] = left
            else:
                self._inflight_causes.pop(cause, None)

    def _remember(self, envelope: Envelope) -> None:
        what = (
            f"the request that recorded {envelope.event_type} "
            f"on {envelope.aggregate_type} {envelope.aggregate_id}"
        )
        if self._seen.get(envelope.causation_id) is None:
            self._seen.put(envelope.causation_id, _Answered(envelope.request_fingerprint, what))

    def _drop_refused(self, units: list[_Unit], refused: RecordsRefused) -> list[_Unit]:
        """Fail the units whose records the log refused, and those that built on them; keep the rest."""
        reasons: dict[int, list[str]] = {}
        index = 0
        for position, unit in enumerate(units):
            span = range(index, index + len(unit.records))
            index += len(unit.records)
            found = [refused.reasons[i] for i in span if i in refused.reasons]
            if found:
                reasons[position] = found
        return self._drop(
            units,
            lambda position, _unit: "; ".join(reasons[position]) if position in reasons else None,
            CommitRefused,
        )

    def _drop(
        self,
        units: list[_Unit],
        why: Callable[[int, _Unit], str | None],
        failure: type[CommitFailed] = CommitFailed,
    ) -> list[_Unit]:
        """Fail the units ``why`` gives a reason for (with ``failure``), and those that built on them
        (with CommitFailed: without what they built on, they may be written); keep the rest."""
        failed: list[_Unit] = []
        tainted: set[_Key] = set()
        kept: list[_Unit] = []
        for position, unit in enumerate(units):
            reason = why(position, unit)
            error: type[CommitFailed] = failure
            if reason is None and tainted.intersection(unit.tx.pending):
                reason, error = "it built on a write that failed", CommitFailed
            if reason is None:
                kept.append(unit)
                continue
            failed.append(unit)
            tainted.update(unit.tx.pending)
            unit.error = error(f"{self.topic}: not written: {reason}")
        with self._lock:
            self._writing = kept
            self._rebuild_speculative(failed)
        for unit in failed:
            unit.done.set()
        return kept

    def _fence(self, fenced: WriterFenced) -> None:
        with self._lock:
            self._fenced = fenced
        self.health.trouble("writer", f"fenced: {fenced}")
        self._fail_all(WriterFenced(str(fenced)))
        for listener in self._fenced_listeners:
            listener(fenced)

    def _fail_all(self, error: Exception) -> None:
        """Fail every unit in flight or queued (the store stops writing)."""
        with self._lock:
            failed = self._writing + self._queue
            self._writing, self._queue = [], []
            self._rebuild_speculative(failed)
        for unit in failed:
            unit.error = error
            unit.done.set()

    def _rebuild_speculative(self, failed: list[_Unit]) -> None:
        """The newest state again, without the failed units (the caller holds the store lock)."""
        for unit in failed:
            self._release(unit)
        self._speculative = {}
        for unit in self._writing + self._queue:
            self._speculative.update(unit.tx.pending)
        self._revert_newest({key for unit in failed for key in unit.tx.pending})

    # Snapshots ----------------------------------------------------------------------------------

    _snapshots_written = 0

    def _snapshot_due(self) -> bool:
        return bool(self._snapshot_every) and self._since_snapshot >= self._snapshot_every

    def _write_snapshots(self, wanted: list[threading.Event]) -> None:
        try:
            snapshots = self._take_snapshots()
            self._in_call(self._log.write_snapshots, snapshots)
            self._snapshots_written = len(snapshots)
        except Exception as error:  # a snapshot only shortens the next start: try again later
            self._snapshots_written = 0
            log.warning("%s: snapshot not written: %s", self.topic, error)
        finally:
            for done in wanted:
                done.set()

    def _take_snapshots(self) -> list[snapshot_pb2.PartitionSnapshot]:
        with self._lock:
            # A partition whose records an aggregate holds back keeps its older snapshot, so the next
            # start meets them again.
            held = self._quarantine.partitions_held()
            by_partition: dict[int, list[snapshot_pb2.AggregateSnapshot]] = {
                p: [] for p in self._next_offset if p not in held
            }
            for (kind_name, aggregate_id), cached in self._cache.items():
                kind = self._kinds[kind_name]
                if (
                    kind.snapshot is None
                    or kind.is_table
                    or cached.partition is None
                    or cached.partition in held
                ):
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
        return snapshots

    # Rebuilding ---------------------------------------------------------------------------------

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

    # Listeners and forgetting -------------------------------------------------------------------

    def _notify(
        self, kind: AggregateKind[Any], aggregate_id: str, *, newest_too: bool = False, state: Any = None
    ) -> None:
        if kind.name == QUARANTINE:
            return  # the kernel's own bookkeeping: listeners follow the context's kinds only
        if state is None:
            state = self._cache[(kind.name, aggregate_id)].state
        _call_each(self._listeners, kind, aggregate_id, state)
        if newest_too:
            self._notify_newest(kind, aggregate_id, state)

    def _notify_newest(self, kind: AggregateKind[Any], aggregate_id: str, state: Any) -> None:
        if kind.name != QUARANTINE:
            _call_each(self._newest_listeners, kind, aggregate_id, state)

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


_ANSWERED = object()


def _call_each(
    listeners: list[StateListener], kind: AggregateKind[Any], aggregate_id: str, state: Any
) -> None:
    """A listener keeps an index beside the log: one that fails is a bug to see in the log, not a
    reason to stop writing facts (each listener is called again with the aggregate's next change)."""
    for listener in listeners:
        try:
            listener(kind, aggregate_id, state)
        except Exception:
            log.exception("a listener (%r) failed on %s %s", listener, kind.name, aggregate_id)


def _reactions_again(reason: str) -> Callable[[int, _Unit], str | None]:
    """Fails the units that carry consumed offsets, so their reactions are done again."""
    return lambda _position, unit: reason if unit.consumed is not None else None


def _what(request: Request, key: _Key | None) -> str:
    return f"{request.name} on {key[0]} {key[1]}" if key is not None else request.name


class Transaction:
    """One unit of work against a store: loads see this transaction's own pending appends."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.pending: dict[_Key, Loaded[Any]] = {}
        self.envelopes: list[Envelope] = []
        self.published: list[OutgoingRecord] = []

    def load(self, kind_name: str, aggregate_id: str) -> Loaded[Any]:
        pending = self.pending.get((kind_name, aggregate_id))
        if pending is not None:
            return pending
        kind = self._store.kind(kind_name)
        blocking = self._store._quarantine.blocking(aggregate_id) if kind_name != QUARANTINE else None
        if blocking is not None:
            raise Quarantined(
                f"{kind_name} {aggregate_id} is quarantined: its history holds {blocking.describe()}, which "
                f"this service cannot apply; an operator resolves it (python -m services.platform.quarantine)"
            )
        return self._store._newest(kind, aggregate_id)

    def decide(self, kind_name: str, aggregate_id: str, decide: Decide, cause: Cause) -> list[Envelope]:
        """Load an aggregate, decide against it and append what was decided: a reaction's one step."""
        loaded = self.load(kind_name, aggregate_id)
        events = decide(loaded)
        if not events:
            return []
        return self.append(kind_name, aggregate_id, loaded.version, events, cause)

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
                actor=self._store.actor,
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
