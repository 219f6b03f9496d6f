"""Group commit: units of work queued behind a commit in flight share the next log transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from services.platform.envelope import Cause
from services.platform.eventstore import CommitFailed, ConsumedOffsets, EventStore, OutgoingRecord, Position
from tests.support import tally
from tests.support.memory import InMemoryBroker, InMemoryEventLog

WAIT_S = 30


class GatedLog(InMemoryEventLog):
    """Holds one commit open (the first, unless told otherwise) until the test releases it."""

    def __init__(self, broker: InMemoryBroker) -> None:
        super().__init__(broker, "tally.events", "tally.snapshots", "tally-writer")
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []
        self.holding = True

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        self.batches.append(len(records))
        if self.holding:
            self.holding = False
            self.entered.set()
            assert self.release.wait(WAIT_S)
        return super().commit(records, consumed)


def _wait_until(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(WAIT_S * 100):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


class Background:
    """Runs appends on threads and keeps what each one returned or raised."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.outcomes: dict[str, object] = {}

    def append(self, store: EventStore, name: str, tally_id: str, expected: int, quantity: int) -> None:
        def run() -> None:
            try:
                store.append(
                    "Tally",
                    tally_id,
                    expected,
                    [tally.ItemAdded(item="x", quantity=quantity)],
                    Cause.request(name),
                )
                self.outcomes[name] = "ok"
            except Exception as error:
                self.outcomes[name] = error

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT_S)


def _store(log: GatedLog) -> EventStore:
    store = EventStore(log, tally.registry(), [tally.kind()])
    store.start()
    return store


def test_units_queued_behind_a_commit_share_the_next_transaction_and_build_on_its_state() -> None:
    log = GatedLog(InMemoryBroker())
    store = _store(log)
    background = Background()
    background.append(store, "first", "t-1", 0, 1)
    assert log.entered.wait(WAIT_S)

    background.append(store, "on-top", "t-1", 1, 10)
    background.append(store, "other", "t-2", 0, 5)
    _wait_until(lambda: store.queued_units == 2)
    assert store.load("Tally", "t-1").version == 0, "reads outside a unit see committed state only"
    log.release.set()
    background.join()

    assert background.outcomes == {"first": "ok", "on-top": "ok", "other": "ok"}
    assert log.batches == [1, 2]
    assert store.load("Tally", "t-1").state.items == {"x": 11}
    assert store.load("Tally", "t-2").state.items == {"x": 5}


def test_a_failed_commit_fails_every_unit_that_built_on_it_and_keeps_the_committed_state() -> None:
    broker = InMemoryBroker()
    log = GatedLog(broker)
    log.holding = False
    store = _store(log)
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("committed"))
    log.holding = True
    broker.failures.append(RuntimeError("transaction aborted by the broker"))
    background = Background()
    background.append(store, "doomed", "t-1", 1, 100)
    assert log.entered.wait(WAIT_S)
    background.append(store, "on-top", "t-1", 2, 1000)
    _wait_until(lambda: store.queued_units == 1)
    log.release.set()
    background.join()

    assert isinstance(background.outcomes["doomed"], CommitFailed)
    assert isinstance(background.outcomes["on-top"], CommitFailed)
    assert "transaction aborted by the broker" in str(background.outcomes["doomed"])
    assert store.load("Tally", "t-1").version == 1
    assert not store.has_seen("doomed")
    store.append("Tally", "t-1", 1, [tally.ItemAdded(item="x", quantity=2)], Cause.request("retried"))
    assert store.load("Tally", "t-1").state.items == {"x": 3}
    assert len(broker.records("tally.events")) == 2


def test_a_request_in_flight_counts_as_seen() -> None:
    log = GatedLog(InMemoryBroker())
    store = _store(log)
    background = Background()
    background.append(store, "req-1", "t-1", 0, 1)
    assert log.entered.wait(WAIT_S)

    assert store.has_seen("req-1")
    log.release.set()
    background.join()
    assert store.has_seen("req-1")


def test_units_of_work_do_not_nest() -> None:
    log = GatedLog(InMemoryBroker())
    log.holding = False
    store = _store(log)

    with pytest.raises(RuntimeError, match="do not nest"), store.transaction():
        store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("inner"))
    assert not store.load("Tally", "t-1").exists
