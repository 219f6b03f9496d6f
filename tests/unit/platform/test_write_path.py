"""The kernel's one write path for requests: once per request id, checked inside the unit of work.

A retry racing its original waits for it and gets its answer; the same id with a different request
is refused, naming the first, even after a restart; a write the log does not confirm in time is
UNAVAILABLE, and its retry learns the outcome; a store that cannot write refuses at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from services.platform.errors import InvalidArgument, Overloaded, RequestIdReused, Unavailable
from services.platform.eventstore import ConsumedOffsets, EventStore, Loaded, OutgoingRecord, Position
from services.platform.requests import Request
from tests.support import tally
from tests.support.memory import InMemoryBroker, InMemoryEventLog
from tests.support.requests import request

WAIT_S = 30


class HeldLog(InMemoryEventLog):
    """Holds each commit until released while ``holding``; reports ``trouble`` from ``check``."""

    checks_reachability = True

    def __init__(self, broker: InMemoryBroker) -> None:
        super().__init__(broker, "tally.events", "tally.snapshots", "tally-writer")
        self.holding = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.trouble: str | None = None

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        if self.holding:
            self.entered.set()
            assert self.release.wait(WAIT_S)
        return super().commit(records, consumed)

    def check(self) -> str | None:
        return self.trouble


def _store(broker: InMemoryBroker, log: HeldLog | None = None, **options) -> EventStore:
    store = EventStore(
        log or HeldLog(broker), tally.registry(), [tally.kind()], check_every_s=0.01, **options
    )
    store.start()
    return store


def _add(item: str, quantity: int):
    return lambda loaded: tally.add(loaded.state, item, quantity)


def _adds(store: EventStore, req: Request, quantity: int = 1) -> Loaded:
    return store.execute(req, "Tally", "t-1", _add("apples", quantity))


def test_the_same_request_again_gets_the_first_answer_and_writes_nothing_more() -> None:
    broker = InMemoryBroker()
    store = _store(broker)
    first = _adds(store, request("r-1", "Add", quantity=2), 2)
    _adds(store, request("r-2", "Add", quantity=5), 5)

    again = _adds(store, request("r-1", "Add", quantity=2), 2)

    assert again == first
    assert again.state.items == {"apples": 2}
    assert len(broker.records("tally.events")) == 2


def test_a_retry_racing_its_original_waits_for_it_and_gets_its_answer() -> None:
    broker = InMemoryBroker()
    log = HeldLog(broker)
    store = _store(broker, log)
    log.holding = True
    answers: dict[str, object] = {}

    def send(name: str) -> None:
        try:
            answers[name] = _adds(store, request("r-1", "Add", quantity=3), 3)
        except Exception as error:
            answers[name] = error

    original = threading.Thread(target=send, args=("original",))
    original.start()
    assert log.entered.wait(WAIT_S)
    retry = threading.Thread(target=send, args=("retry",))
    retry.start()
    retry.join(0.2)
    assert retry.is_alive(), "the retry waits for the original's commit"
    log.release.set()
    original.join(WAIT_S)
    retry.join(WAIT_S)

    assert answers["original"] == answers["retry"]
    assert answers["retry"].state.items == {"apples": 3}
    assert len(broker.records("tally.events")) == 1


def test_a_request_id_reused_for_another_request_is_refused_naming_the_first() -> None:
    broker = InMemoryBroker()
    store = _store(broker)
    _adds(store, request("r-1", "Add", quantity=2), 2)

    with pytest.raises(RequestIdReused, match=r"'r-1' was already used for Add on Tally t-1"):
        store.execute(request("r-1", "Close"), "Tally", "t-1", lambda _loaded: [tally.TallyClosed()])

    assert not store.load("Tally", "t-1").state.closed
    assert len(broker.records("tally.events")) == 1


def test_a_reused_request_id_is_refused_after_a_restart_too() -> None:
    broker = InMemoryBroker()
    _adds(_store(broker), request("r-1", "Add", quantity=2), 2)
    restarted = _store(broker)

    with pytest.raises(RequestIdReused, match="ItemAdded on Tally t-1"):
        _adds(restarted, request("r-1", "Add", quantity=9), 9)
    assert _adds(restarted, request("r-1", "Add", quantity=2), 2).state.items == {"apples": 2}
    assert len(broker.records("tally.events")) == 1


def test_a_refused_request_changes_nothing_and_leaves_its_id_free() -> None:
    broker = InMemoryBroker()
    store = _store(broker)
    store.execute(request("close"), "Tally", "t-1", lambda _loaded: [tally.TallyClosed()])

    with pytest.raises(Exception, match="is closed"):
        _adds(store, request("r-1", "Add"))

    assert store.load("Tally", "t-1").version == 1
    assert not store.has_seen("r-1")


def test_a_request_without_an_id_is_refused() -> None:
    store = _store(InMemoryBroker())

    with pytest.raises(InvalidArgument, match="request_id is required"):
        _adds(store, request(""))


def test_a_write_not_confirmed_by_its_deadline_is_unavailable_and_its_retry_learns_the_outcome() -> None:
    broker = InMemoryBroker()
    log = HeldLog(broker)
    store = _store(broker, log)
    log.holding = True
    hurried = Request("r-1", request("r-1", "Add").fingerprint, "Add", deadline=time.monotonic() + 0.2)

    with pytest.raises(Unavailable, match="retry with the same request_id"):
        _adds(store, hurried, 4)
    log.holding = False
    log.release.set()

    assert _adds(store, request("r-1", "Add"), 4).state.items == {"apples": 4}
    assert len(broker.records("tally.events")) == 1


def test_while_the_log_cannot_be_written_requests_are_refused_at_once() -> None:
    broker = InMemoryBroker()
    log = HeldLog(broker)
    store = _store(broker, log)
    log.trouble = "no broker answers"
    _wait_until(lambda: not store.health.serving)

    with pytest.raises(Unavailable, match="no broker answers"):
        _adds(store, request("r-1"))
    assert store.queued_units == 0

    log.trouble = None
    _wait_until(lambda: store.health.serving)
    assert _adds(store, request("r-1")).state.items == {"apples": 1}


def test_beyond_the_queue_limit_a_request_is_refused_as_overloaded() -> None:
    broker = InMemoryBroker()
    log = HeldLog(broker)
    store = _store(broker, log, max_queued_units=1)
    log.holding = True
    first = threading.Thread(target=_adds, args=(store, request("r-1")))
    first.start()
    assert log.entered.wait(WAIT_S)
    queued = threading.Thread(target=lambda: store.execute(request("r-2"), "Tally", "t-2", _add("x", 1)))
    queued.start()
    _wait_until(lambda: store.queued_units == 1)

    with pytest.raises(Overloaded, match="waiting for the log"):
        store.execute(request("r-3"), "Tally", "t-3", _add("x", 1))
    log.holding = False
    log.release.set()
    first.join(WAIT_S)
    queued.join(WAIT_S)
    assert not store.load("Tally", "t-3").exists


def _wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class BuggyLog(HeldLog):
    """A commit that breaks the log's contract once ``broken`` (a bug in the kernel or a library):
    the records are written, the positions it answers are not a list."""

    broken = False

    def commit(
        self, records: Sequence[OutgoingRecord], consumed: Sequence[ConsumedOffsets]
    ) -> list[Position | None]:
        positions = super().commit(records, consumed)
        return None if self.broken else positions  # type: ignore[return-value]


def test_a_writer_stopped_by_a_bug_refuses_what_waits_and_tells_its_process() -> None:
    log = BuggyLog(InMemoryBroker())
    store = _store(InMemoryBroker(), log)
    stopped: list[Exception] = []
    store.on_writer_stopped(stopped.append)
    _adds(store, request("r-1", "Add"))
    log.broken = True

    with pytest.raises(Unavailable, match=r"the writer stopped by an error.*same request_id"):
        _adds(store, request("r-2", "Add"))

    assert [type(error) for error in stopped] == [TypeError]
    assert not store.health.serving
    with pytest.raises(Unavailable, match="cannot write now: stopped by an error"):
        _adds(store, request("r-3", "Add"))


def test_a_writer_stuck_in_a_call_to_the_log_is_reported_not_serving_until_it_returns() -> None:
    broker = InMemoryBroker()
    log = HeldLog(broker)
    store = _store(broker, log, stalled_after_s=0.2)
    log.holding = True
    writing = threading.Thread(target=lambda: _adds(store, request("r-1", "Add")), daemon=True)
    writing.start()
    assert log.entered.wait(WAIT_S)

    deadline = time.monotonic() + WAIT_S
    while store.health.serving and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "stuck in a call to the log" in store.health.why()

    log.release.set()
    writing.join(WAIT_S)
    while not store.health.serving and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.health.serving
    assert store.load("Tally", "t-1").state.items == {"apples": 1}
