"""Newest-state listeners: an index that decisions rely on sees every unit's appends at once, and
sees them taken back when the unit is discarded or its commit fails."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from services.platform.envelope import Cause
from services.platform.eventstore import AggregateKind, CommitFailed, EventStore, LogWriteFailed
from tests.support import tally
from tests.support.memory import InMemoryBroker, InMemoryEventLog


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, int]]] = []

    def __call__(self, kind: AggregateKind[Any], aggregate_id: str, state: tally.Tally) -> None:
        self.seen.append((aggregate_id, dict(state.items)))


def _store(broker: InMemoryBroker) -> tuple[EventStore, Recorder, Recorder]:
    store = EventStore(
        InMemoryEventLog(broker, "tally.events", "tally.snapshots", "tally-writer"),
        tally.registry(),
        [tally.kind()],
    )
    newest, committed = Recorder(), Recorder()
    store.add_listener(newest, newest=True)
    store.add_listener(committed)
    store.start()
    return store, newest, committed


def _add(quantity: int) -> list:
    return [tally.ItemAdded(item="x", quantity=quantity)]


def test_a_newest_listener_sees_an_append_before_its_commit() -> None:
    store, newest, committed = _store(InMemoryBroker())

    with store.transaction() as tx:
        tx.append("Tally", "t-1", 0, _add(1), Cause.request("a"))
        assert newest.seen == [("t-1", {"x": 1})]
        assert committed.seen == []
        tx.append("Tally", "t-1", 1, _add(2), Cause.request("a"))

    assert newest.seen == [("t-1", {"x": 1}), ("t-1", {"x": 3})]
    assert committed.seen == [("t-1", {"x": 3})]


def test_a_discarded_unit_is_taken_back_from_the_newest_listener() -> None:
    store, newest, _ = _store(InMemoryBroker())
    store.append("Tally", "t-1", 0, _add(1), Cause.request("a"))

    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append("Tally", "t-1", 1, _add(5), Cause.request("b"))
        tx.append("Tally", "t-2", 0, _add(7), Cause.request("b"))
        raise RuntimeError("the handler failed")

    last = {aggregate_id: items for aggregate_id, items in newest.seen}
    assert last == {"t-1": {"x": 1}, "t-2": {}}


def test_a_unit_the_log_never_takes_is_taken_back_from_the_newest_listener() -> None:
    broker = InMemoryBroker()
    store, newest, committed = _store(broker)
    store.append("Tally", "t-1", 0, _add(1), Cause.request("a"))
    broker.failures.extend(LogWriteFailed("broker unavailable") for _ in range(10_000))
    failed: list[Exception] = []

    def append() -> None:
        try:
            store.append("Tally", "t-1", 1, _add(5), Cause.request("b"))
        except CommitFailed as error:
            failed.append(error)

    appending = threading.Thread(target=append)
    appending.start()
    while store.health.serving:
        threading.Event().wait(0.01)
    store.close(grace_s=0.1)
    appending.join(10)

    assert len(failed) == 1
    assert newest.seen[-2:] == [("t-1", {"x": 6}), ("t-1", {"x": 1})]
    assert committed.seen == [("t-1", {"x": 1})]


def test_a_restart_tells_newest_listeners_the_replayed_state() -> None:
    broker = InMemoryBroker()
    store, _, _ = _store(broker)
    store.append("Tally", "t-1", 0, _add(4), Cause.request("a"))
    store.close()

    _, newest, committed = _store(broker)

    assert newest.seen == committed.seen == [("t-1", {"x": 4})]
