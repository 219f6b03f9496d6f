"""Event-sourced timers: deadlines live in aggregate state; the owning service fires them when due.

The scheduler listens to the event store: after every committed or replayed change it asks the
aggregate kind which deadlines the new state waits on, and replaces what it held for that
aggregate. So a restart brings the deadlines back with the state, and a state that moved on
(the offer was answered before it timed out) has simply stopped listing the deadline. When one
falls due, the service's pure ``on_deadline`` decides what events follow, appended like any
command's; a deadline that no longer matters decides nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from services.platform.envelope import Cause
from services.platform.errors import DomainError, Unavailable, WriterFenced
from services.platform.eventstore import AggregateKind, Deadline, EventStore

log = logging.getLogger(__name__)

OnDeadline = Callable[[Any, Deadline, datetime], Sequence[Message]]
Fire = Callable[[str, str, Deadline], None]


class DeadlineScheduler:
    """Holds the current deadlines of every aggregate and calls ``fire`` for each one due."""

    def __init__(
        self,
        fire: Fire,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_after: timedelta = timedelta(seconds=1),
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._current: dict[tuple[str, str], frozenset[Deadline]] = {}
        self._heap: list[tuple[datetime, int, str, str, Deadline]] = []
        self._sequence = itertools.count()

    def track(self, kind: AggregateKind[Any], aggregate_id: str, state: Any) -> None:
        """The store listener: the aggregate's deadlines are now exactly what its state lists."""
        deadlines = frozenset(kind.deadlines(state))
        key = (kind.name, aggregate_id)
        with self._lock:
            if self._current.get(key, frozenset()) == deadlines:
                return
            if deadlines:
                self._current[key] = deadlines
            else:
                self._current.pop(key, None)
            for deadline in deadlines:
                self._push(deadline.due_at, kind.name, aggregate_id, deadline)
            self._changed.notify()

    def pending(self) -> int:
        with self._lock:
            return sum(len(d) for d in self._current.values())

    def next_due(self) -> datetime | None:
        with self._lock:
            self._drop_stale()
            return self._heap[0][0] if self._heap else None

    def fire_due(self) -> int:
        """Fire every deadline due by the clock's now; returns how many were fired."""
        fired = 0
        while True:
            due = self._pop_due(self._clock())
            if due is None:
                return fired
            kind_name, aggregate_id, deadline = due
            try:
                self._fire(kind_name, aggregate_id, deadline)
            except WriterFenced:
                raise
            except DomainError as error:
                log.info(
                    "deadline %s of %s %s decided nothing: %s", deadline.name, kind_name, aggregate_id, error
                )
            except Unavailable as error:
                log.warning(
                    "deadline %s of %s %s not written yet: %s", deadline.name, kind_name, aggregate_id, error
                )
                self._retry(kind_name, aggregate_id, deadline)
            except Exception:
                log.exception("deadline %s of %s %s failed; retrying", deadline.name, kind_name, aggregate_id)
                self._retry(kind_name, aggregate_id, deadline)
            fired += 1

    def run(self, stop: threading.Event, max_wait_s: float = 1.0) -> None:
        """Fire deadlines as they fall due until ``stop`` is set."""
        while not stop.is_set():
            self.fire_due()
            with self._lock:
                self._drop_stale()
                wait = max_wait_s
                if self._heap:
                    wait = min(max_wait_s, max(0.0, (self._heap[0][0] - self._clock()).total_seconds()))
                if wait > 0:
                    self._changed.wait(wait)

    def _push(self, due_at: datetime, kind_name: str, aggregate_id: str, deadline: Deadline) -> None:
        heapq.heappush(self._heap, (due_at, next(self._sequence), kind_name, aggregate_id, deadline))

    def _is_current(self, kind_name: str, aggregate_id: str, deadline: Deadline) -> bool:
        return deadline in self._current.get((kind_name, aggregate_id), frozenset())

    def _drop_stale(self) -> None:
        while self._heap and not self._is_current(*self._heap[0][2:]):
            heapq.heappop(self._heap)

    def _pop_due(self, now: datetime) -> tuple[str, str, Deadline] | None:
        with self._lock:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return None
            _, _, kind_name, aggregate_id, deadline = heapq.heappop(self._heap)
            # Fired once: the state change it causes lists whatever deadlines come next.
            remaining = self._current[(kind_name, aggregate_id)] - {deadline}
            if remaining:
                self._current[(kind_name, aggregate_id)] = remaining
            else:
                del self._current[(kind_name, aggregate_id)]
            return kind_name, aggregate_id, deadline

    def _retry(self, kind_name: str, aggregate_id: str, deadline: Deadline) -> None:
        with self._lock:
            key = (kind_name, aggregate_id)
            self._current[key] = self._current.get(key, frozenset()) | {deadline}
            self._push(self._clock() + self._retry_after, kind_name, aggregate_id, deadline)


def deadline_firer(
    store: EventStore, handlers: Mapping[str, OnDeadline], clock: Callable[[], datetime]
) -> Fire:
    """A ``fire`` that runs the kind's pure on_deadline against the current state and appends its events."""

    def fire(kind_name: str, aggregate_id: str, deadline: Deadline) -> None:
        on_deadline = handlers[kind_name]
        cause = Cause.request(
            f"deadline/{kind_name}/{aggregate_id}/{deadline.name}/{deadline.due_at.isoformat()}"
        )
        with store.transaction() as tx:
            loaded = tx.load(kind_name, aggregate_id)
            events = on_deadline(loaded.state, deadline, clock())
            if events:
                tx.append(kind_name, aggregate_id, loaded.version, events, cause)

    return fire


def schedule_deadlines(
    store: EventStore, handlers: Mapping[str, OnDeadline], clock: Callable[[], datetime]
) -> DeadlineScheduler:
    """A scheduler wired to a store: tracks its aggregates' deadlines and fires them through it."""
    scheduler = DeadlineScheduler(deadline_firer(store, handlers, clock), clock=clock)
    store.add_listener(scheduler.track)
    return scheduler
