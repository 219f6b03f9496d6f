"""The store's writer: units of work queued behind a commit in flight share the next log transaction;
an aborted one is written again, a refused one fails alone, one in doubt is looked up, never doubled."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from services.platform.envelope import Cause
from services.platform.errors import WriterFenced
from services.platform.eventstore import (
    CommitFailed,
    CommitInDoubt,
    CommitRefused,
    ConsumedOffsets,
    EventStore,
    LogWriteFailed,
    OutgoingRecord,
    Position,
    RecordsRefused,
    RecordTooLarge,
)
from tests.support import tally
from tests.support.memory import InMemoryBroker, InMemoryEventLog

WAIT_S = 30


class GatedLog(InMemoryEventLog):
    """Holds one commit open (the first, unless told otherwise) until the test releases it; refuses
    records that contain ``refuse`` as the broker refuses a record too large."""

    def __init__(self, broker: InMemoryBroker) -> None:
        super().__init__(broker, "tally.events", "tally.snapshots", "tally-writer")
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []
        self.holding = True
        self.refuse: bytes | None = None

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        self.batches.append(len(records))
        if self.holding:
            self.holding = False
            self.entered.set()
            assert self.release.wait(WAIT_S)
        refused = {
            index: "too large for the test"
            for index, record in enumerate(records)
            if self.refuse and self.refuse in (record.value or b"")
        }
        if refused:
            raise RecordsRefused(refused)
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

    def append(
        self, store: EventStore, name: str, tally_id: str, expected: int, quantity: int, item: str = "x"
    ) -> None:
        def run() -> None:
            try:
                store.append(
                    "Tally",
                    tally_id,
                    expected,
                    [tally.ItemAdded(item=item, quantity=quantity)],
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


def test_an_aborted_commit_is_written_again_with_the_units_queued_behind_it() -> None:
    broker = InMemoryBroker()
    log = GatedLog(broker)
    log.holding = False
    store = _store(log)
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("committed"))
    log.holding = True
    broker.failures.append(LogWriteFailed("transaction aborted by the broker"))
    background = Background()
    background.append(store, "first-try-fails", "t-1", 1, 100)
    assert log.entered.wait(WAIT_S)
    background.append(store, "on-top", "t-1", 2, 1000)
    _wait_until(lambda: store.queued_units == 1)
    log.release.set()
    background.join()

    assert background.outcomes == {"first-try-fails": "ok", "on-top": "ok"}
    assert log.batches == [1, 1, 2], "the retry carries the unit queued meanwhile"
    assert store.load("Tally", "t-1").state.items == {"x": 1101}
    assert [r.offset for r in broker.records("tally.events")] == [0, 1, 2]
    assert store.health.serving


def test_a_refused_record_fails_its_unit_and_those_built_on_it_while_the_others_commit() -> None:
    broker = InMemoryBroker()
    log = GatedLog(broker)
    log.refuse = b"refuse-me"
    store = _store(log)
    background = Background()
    background.append(store, "holder", "t-0", 0, 1)
    assert log.entered.wait(WAIT_S)
    background.append(store, "refused", "t-1", 0, 1, item="refuse-me")
    background.append(store, "built-on-refused", "t-1", 1, 5)
    background.append(store, "beside", "t-2", 0, 7)
    _wait_until(lambda: store.queued_units == 3)
    log.release.set()
    background.join()

    assert background.outcomes["holder"] == "ok"
    assert background.outcomes["beside"] == "ok"
    assert isinstance(background.outcomes["refused"], CommitRefused), "refused again if retried"
    assert "too large for the test" in str(background.outcomes["refused"])
    built_on = background.outcomes["built-on-refused"]
    assert isinstance(built_on, CommitFailed) and not isinstance(built_on, CommitRefused), "may be retried"
    assert not store.load("Tally", "t-1").exists
    assert store.load("Tally", "t-2").state.items == {"x": 7}
    assert not store.has_seen("refused") and not store.has_seen("built-on-refused")
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=2)], Cause.request("retried"))
    assert store.load("Tally", "t-1").state.items == {"x": 2}


def test_a_record_larger_than_the_log_takes_is_refused_before_anything_is_queued() -> None:
    log = GatedLog(InMemoryBroker())
    log.holding = False
    store = EventStore(log, tally.registry(), [tally.kind()], max_record_bytes=200)
    store.start()

    with pytest.raises(RecordTooLarge, match="more than the 200 the log accepts"):
        store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x" * 500, quantity=1)], Cause.request("big"))

    assert store.queued_units == 0
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("small"))
    assert store.load("Tally", "t-1").state.items == {"x": 1}


class DoubtingLog(InMemoryEventLog):
    """Its first commit is in doubt: written (or not, as told), then reported as unknown."""

    def __init__(self, broker: InMemoryBroker, *, lands: bool) -> None:
        super().__init__(broker, "tally.events", "tally.snapshots", "tally-writer")
        self.lands = lands
        self.doubted = False
        self.resolutions = 0

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        if self.doubted:
            return super().commit(records, consumed)
        self.doubted = True
        positions = super().commit(records, consumed) if self.lands else None
        raise CommitInDoubt("the broker went away during the commit", positions)

    def resolve(self, doubt: CommitInDoubt) -> list[Position | None]:
        self.resolutions += 1
        if self.resolutions == 1:
            raise CommitInDoubt("cannot tell yet", doubt.token)
        if doubt.token is None:
            raise LogWriteFailed("it did not land")
        return doubt.token


@pytest.mark.parametrize("lands", [True, False])
def test_a_commit_in_doubt_is_looked_up_and_written_once(lands: bool) -> None:
    broker = InMemoryBroker()
    log = DoubtingLog(broker, lands=lands)
    store = EventStore(log, tally.registry(), [tally.kind()], retry_backoff_s=(0.001, 0.01))
    store.start()

    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=3)], Cause.request("in-doubt"))

    assert len(broker.records("tally.events")) == 1
    assert log.resolutions == 2
    assert store.load("Tally", "t-1").state.items == {"x": 3}


def test_close_fails_what_the_log_never_took_within_the_grace() -> None:
    broker = InMemoryBroker()
    log = GatedLog(broker)
    log.holding = False
    broker.failures.extend(LogWriteFailed("broker away") for _ in range(10_000))
    store = EventStore(log, tally.registry(), [tally.kind()], retry_backoff_s=(0.01, 0.01))
    store.start()
    background = Background()
    background.append(store, "never-written", "t-1", 0, 1)
    _wait_until(lambda: not store.health.serving)

    store.close(grace_s=0.2)
    background.join()

    assert isinstance(background.outcomes["never-written"], CommitFailed)
    assert broker.records("tally.events") == []


def test_a_fenced_writer_tells_its_process_and_refuses_what_follows() -> None:
    broker = InMemoryBroker()
    old_log, new_log = GatedLog(broker), GatedLog(broker)
    old_log.holding = new_log.holding = False
    old = _store(old_log)
    told: list[WriterFenced] = []
    old.on_fenced(told.append)
    _store(new_log)

    with pytest.raises(WriterFenced):
        old.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("zombie"))

    assert len(told) == 1
    assert not old.health.serving
    with pytest.raises(WriterFenced):
        old.append("Tally", "t-2", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("after"))


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
