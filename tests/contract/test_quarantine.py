"""A record of its own topic that a store cannot apply quarantines its aggregate and nothing else, on the
in-memory log and on Kafka alike: the store starts, serves every other aggregate, dead-letters a
copy, records an audit event once, and an operator's skip brings the aggregate back for good."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.platform.envelope import (
    DEADLETTER_TOPIC,
    REASON_HEADER,
    Cause,
    encode,
    make_envelope,
)
from services.platform.errors import FailedPrecondition, Quarantined
from services.platform.eventstore import EventStore
from tests.contract.conftest import LogFactory
from tests.support import tally
from tests.support.requests import request


def _add(store: EventStore, tally_id: str, quantity: int, request_id: str) -> None:
    version = store.load("Tally", tally_id).version
    store.append(
        "Tally", tally_id, version, [tally.ItemAdded(item="x", quantity=quantity)], Cause.request(request_id)
    )


def _write_raw(store: EventStore, key: bytes, value: bytes, headers=()) -> None:
    """A record in the store's own topic, as a bug or an older or newer writer might have left it."""
    with store.transaction() as tx:
        tx.publish(store.topic, key, value, list(headers))


def _raw_event(tally_id: str, version: int, quantity: int, schema_version: int = 1):
    envelope = make_envelope(
        tally.ItemAdded(item="x", quantity=quantity),
        registry=tally.registry(),
        aggregate_type="Tally",
        aggregate_id=tally_id,
        aggregate_version=version,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(f"raw-{tally_id}-{version}"),
    )
    if schema_version != 1:
        from dataclasses import replace

        envelope = replace(envelope, schema_version=schema_version)
    return encode(envelope)


def _poisoned(logs: LogFactory) -> None:
    """t-1: one event, an unreadable record, then one more event; t-2: two events around it."""
    store = logs.store()
    _add(store, "t-1", 1, "a")
    _add(store, "t-2", 10, "b")
    _write_raw(store, b"t-1", b"\x08not an envelope at all")
    key, value, headers = _raw_event("t-1", 2, 100)
    _write_raw(store, key, value, headers)
    _add(store, "t-2", 20, "c")
    store.close()


def test_an_unreadable_record_quarantines_its_aggregate_and_the_store_serves_the_rest(
    logs: LogFactory,
) -> None:
    _poisoned(logs)

    store = logs.store()

    assert store.load("Tally", "t-2").state.items == {"x": 30}
    _add(store, "t-2", 1, "d")
    with pytest.raises(Quarantined, match=r"Tally t-1 is quarantined: its history holds .*UndecodableEvent"):
        _add(store, "t-1", 1, "e")
    [found] = store.quarantined()
    assert (found.aggregate_id, found.resolved, found.held_back) == ("t-1", False, 1)
    assert "UndecodableEvent" in found.reason
    mine = [
        r
        for r in logs.read_topic(DEADLETTER_TOPIC)
        if dict(r.headers)["deadletter.topic"] == store.topic.encode()
    ]
    assert [r.value for r in mine] == [b"\x08not an envelope at all"]
    assert dict(mine[0].headers)[REASON_HEADER].startswith(b"UndecodableEvent")


def test_listeners_follow_the_contexts_kinds_and_one_that_fails_stops_no_write(logs: LogFactory) -> None:
    """The quarantine's audit events are the kernel's: a listener (an index of the context's own
    aggregates) never sees them, and a listener's bug is logged while the facts go on being written."""
    _poisoned(logs)
    seen: list[tuple[str, str]] = []

    def index(kind, aggregate_id, state) -> None:
        seen.append((kind.name, aggregate_id))
        if aggregate_id == "t-3":
            raise AttributeError("an index's bug")

    store = logs.store(listeners=(index,))
    _add(store, "t-3", 1, "fails-its-listener")
    _add(store, "t-2", 1, "after-it")
    [found] = store.quarantined()
    store.skip_quarantined(request("skip-1", "Skip"), (found.topic, found.partition, found.offset), "ana")

    assert {kind for kind, _ in seen} == {"Tally"}
    assert seen[-2:] == [("Tally", "t-2"), ("Tally", "t-1")]
    assert store.load("Tally", "t-3").state.items == {"x": 1}
    assert store.load("Tally", "t-2").state.items == {"x": 31}


def test_a_skip_brings_the_aggregate_back_with_its_held_events_and_holds_after_a_restart(
    logs: LogFactory,
) -> None:
    _poisoned(logs)
    store = logs.store()
    [found] = store.quarantined()
    position = (found.topic, found.partition, found.offset)

    skipped = store.skip_quarantined(request("skip-1", "Skip"), position, "ana", "a test record")

    assert (skipped.resolved, skipped.resolution, skipped.resolved_by) == (True, "skipped", "ana")
    assert store.load("Tally", "t-1").state.items == {"x": 101}, "the event held back is applied"
    _add(store, "t-1", 1, "after-skip")
    with pytest.raises(FailedPrecondition, match="already resolved"):
        store.skip_quarantined(request("skip-2", "Skip"), position, "bob")
    store.close()

    again = logs.store()
    assert again.load("Tally", "t-1").state.items == {"x": 102}
    [still] = again.quarantined()
    assert (still.resolved, still.resolution) == (True, "skipped")
    audit = [
        r
        for r in logs.read_topic(again.topic)
        if dict(r.headers).get("event_type") in (b"RecordQuarantined", b"QuarantineResolved")
    ]
    assert [dict(r.headers)["event_type"] for r in audit] == [b"RecordQuarantined", b"QuarantineResolved"]


def test_an_event_of_an_unknown_version_is_quarantined_until_a_version_that_reads_it_starts(
    logs: LogFactory,
) -> None:
    store = logs.store()
    _add(store, "t-1", 1, "a")
    key, value, headers = _raw_event("t-1", 2, 5, schema_version=2)
    _write_raw(
        store, key, value, [(k, v) for k, v in headers if k != "schema_version"] + [("schema_version", b"2")]
    )
    store.close()

    older = logs.store()
    [found] = older.quarantined()
    assert "UnknownEventType" in found.reason and not found.resolved
    older.close()

    newer_registry = tally.registry()
    newer_registry.register(tally.ItemAdded, schema_version=2)
    newer_registry.add_upcaster("ItemAdded", 1, lambda payload: payload)
    newer = logs.store(registry=newer_registry)

    assert newer.load("Tally", "t-1").state.items == {"x": 6}
    [readable] = newer.quarantined()
    assert (readable.resolved, readable.resolution) == (True, "readable")
    _add(newer, "t-1", 1, "b")
