"""One contract for the event log port: the in-memory fake and the Kafka adapter must both pass it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import get_current_span

from services.platform.envelope import Cause, decode
from services.platform.errors import ConcurrencyError, WriterFenced
from services.platform.telemetry import extract_kafka_context
from tests.contract.conftest import LogFactory
from tests.support import tally


def test_appended_events_are_loaded_with_their_version(logs: LogFactory) -> None:
    store = logs.store()
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="apples", quantity=2)], Cause.request("r1"))
    store.append("Tally", "t-1", 1, [tally.ItemAdded(item="apples", quantity=3)], Cause.request("r2"))

    loaded = store.load("Tally", "t-1")

    assert loaded.version == 2
    assert loaded.state.items == {"apples": 5}
    assert not store.load("Tally", "t-unknown").exists


def test_stale_expected_version_is_refused_and_appends_nothing(logs: LogFactory) -> None:
    store = logs.store()
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="pears", quantity=1)], Cause.request("r1"))

    with pytest.raises(ConcurrencyError, match="at version 1, but the append expected version 0"):
        store.append("Tally", "t-1", 0, [tally.ItemAdded(item="pears", quantity=9)], Cause.request("r2"))

    assert store.load("Tally", "t-1").state.items == {"pears": 1}
    store.close()
    assert logs.store("tally-writer-2").load("Tally", "t-1").state.items == {"pears": 1}


def test_restart_rebuilds_every_aggregate_by_replay(logs: LogFactory) -> None:
    first = logs.store()
    for n in range(12):
        first.append("Tally", f"t-{n}", 0, [tally.ItemAdded(item="x", quantity=n)], Cause.request(f"r{n}"))
    first.append("Tally", "t-3", 1, [tally.TallyClosed()], Cause.request("close"))
    first.close()

    second = logs.store()

    assert second.replayed_events == 13
    assert {agg_id: state.items["x"] for agg_id, state in second.states("Tally")} == {
        f"t-{n}": n for n in range(12)
    }
    assert second.load("Tally", "t-3").state.closed
    assert second.load("Tally", "t-3").version == 2


def test_restart_from_snapshot_replays_only_the_tail(logs: LogFactory) -> None:
    first = logs.store()
    for n in range(6):
        first.append("Tally", f"t-{n}", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request(f"a{n}"))
    assert first.snapshot() >= 1
    first.append("Tally", "t-0", 1, [tally.ItemAdded(item="x", quantity=10)], Cause.request("tail"))
    first.close()

    second = logs.store()

    assert second.restored_aggregates == 6
    assert second.replayed_events == 1
    assert second.load("Tally", "t-0").state.items == {"x": 11}
    assert second.load("Tally", "t-0").version == 2


def test_snapshot_of_an_older_state_encoding_is_ignored_for_full_replay(logs: LogFactory) -> None:
    first = logs.store(state_version=1)
    first.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=4)], Cause.request("a"))
    first.snapshot()
    first.close()

    second = logs.store(state_version=2)

    assert second.restored_aggregates == 0
    assert second.replayed_events == 1
    assert second.load("Tally", "t-1").state.items == {"x": 4}


def test_a_new_writer_fences_the_old_one(logs: LogFactory) -> None:
    old = logs.store("tally-writer")
    old.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("before"))

    new = logs.store("tally-writer")

    with pytest.raises(WriterFenced):
        old.append("Tally", "t-1", 1, [tally.ItemAdded(item="x", quantity=100)], Cause.request("zombie"))
    with pytest.raises(WriterFenced):
        old.append("Tally", "t-2", 0, [tally.ItemAdded(item="y", quantity=1)], Cause.request("zombie-2"))
    new.append("Tally", "t-1", 1, [tally.ItemAdded(item="x", quantity=2)], Cause.request("after"))
    assert logs.store("tally-writer").load("Tally", "t-1").state.items == {"x": 3}


def test_a_failed_unit_of_work_writes_nothing_and_changes_no_state(logs: LogFactory) -> None:
    store = logs.store()

    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("a"))
        tx.append("Tally", "t-2", 0, [tally.ItemAdded(item="y", quantity=1)], Cause.request("a"))
        tx.publish(logs.side_topic, b"k", b"side effect")
        raise RuntimeError("handler failed half-way")

    assert not store.load("Tally", "t-1").exists
    assert logs.read_topic(logs.side_topic) == []
    store.close()
    assert logs.store().replayed_events == 0


def test_a_unit_of_work_sees_its_own_appends_and_commits_them_with_side_records(logs: LogFactory) -> None:
    store = logs.store()

    with store.transaction() as tx:
        tx.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("a"))
        assert tx.load("Tally", "t-1").version == 1
        tx.append("Tally", "t-1", 1, [tally.ItemAdded(item="x", quantity=1)], Cause.request("a"))
        tx.publish(logs.side_topic, b"k", b"side effect")

    assert store.load("Tally", "t-1").version == 2
    assert [record.value for record in logs.read_topic(logs.side_topic)] == [b"side effect"]


def test_events_carry_the_envelope_and_the_causes_survive_a_restart(logs: LogFactory) -> None:
    store = logs.store()
    [appended] = store.append(
        "Tally",
        "t-1",
        0,
        [tally.ItemAdded(item="x", quantity=1)],
        Cause.request("req-7", correlation_id="call-1"),
    )
    store.close()

    [record] = [r for r in logs.read_topic(store.topic)]
    envelope = decode(record.value, record.headers, tally.registry())
    assert record.key == b"t-1"
    assert (envelope.event_id, envelope.aggregate_version) == (appended.event_id, 1)
    assert (envelope.causation_id, envelope.correlation_id) == ("req-7", "call-1")
    assert envelope.payload == tally.ItemAdded(item="x", quantity=1)
    assert logs.store().has_seen("req-7")


def test_the_active_trace_travels_in_the_event_headers(logs: LogFactory) -> None:
    store = logs.store()
    tracer = TracerProvider().get_tracer("test")

    with tracer.start_as_current_span("StartContact") as span:
        store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("r"))

    [record] = logs.read_topic(store.topic)
    context = extract_kafka_context(record.headers)
    assert get_current_span(context).get_span_context().trace_id == span.get_span_context().trace_id


def test_a_table_row_is_put_with_the_unit_and_read_back_after_a_restart(logs: LogFactory) -> None:
    store = logs.store()
    with store.transaction() as tx:
        tx.put("Totals", "apples", 2)
        tx.append("Tally", "t-1", 0, [tally.ItemAdded(item="apples", quantity=2)], Cause.request("a"))
    with store.transaction() as tx:
        tx.put("Totals", "apples", tx.load("Totals", "apples").state + 5)
        assert tx.load("Totals", "apples").state == 7
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.put("Totals", "apples", 1000)
        raise RuntimeError("discarded")

    assert store.load("Totals", "apples").state == 7
    store.close()
    restarted = logs.store()
    assert restarted.load("Totals", "apples").state == 7
    assert not restarted.load("Totals", "pears").exists
    assert [agg_id for agg_id, _ in restarted.states("Tally")] == ["t-1"]


def test_a_deleted_table_row_is_gone_now_and_after_a_restart(logs: LogFactory) -> None:
    store = logs.store()
    with store.transaction() as tx:
        tx.put("Totals", "apples", 2)
        tx.put("Totals", "pears", 3)
    with store.transaction() as tx:
        tx.delete("Totals", "apples")
        assert not tx.load("Totals", "apples").exists
        tx.delete("Totals", "plums")  # never there: nothing to do

    assert not store.load("Totals", "apples").exists
    assert [key for key, _ in store.states("Totals")] == ["pears"]
    store.close()
    restarted = logs.store()
    assert not restarted.load("Totals", "apples").exists
    assert restarted.load("Totals", "pears").state == 3


def test_a_table_is_put_to_and_an_aggregate_appended_to_never_the_other_way(logs: LogFactory) -> None:
    store = logs.store()
    with pytest.raises(TypeError, match="Totals is a table"), store.transaction() as tx:
        tx.append("Totals", "apples", 0, [tally.ItemAdded(item="apples", quantity=1)], Cause.request("a"))
    with pytest.raises(TypeError, match="Tally is event-sourced"), store.transaction() as tx:
        tx.put("Tally", "t-1", tally.Tally("t-1"))
    with pytest.raises(TypeError, match="Tally is event-sourced"), store.transaction() as tx:
        tx.delete("Tally", "t-1")


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_closed_aggregates_are_forgotten_after_the_retention_and_their_id_can_live_again(
    logs: LogFactory,
) -> None:
    clock = _Clock()
    store = logs.store(forget_closed_after=timedelta(hours=1), clock=clock)
    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("a"))
    store.append("Tally", "t-1", 1, [tally.TallyClosed()], Cause.request("b"))
    store.append("Tally", "t-open", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("c"))

    clock.now += timedelta(minutes=59)
    store.append("Tally", "t-other", 0, [tally.ItemAdded(item="x", quantity=1)], Cause.request("d"))
    assert store.load("Tally", "t-1").state.closed, "still remembered within the retention"

    clock.now += timedelta(minutes=2)
    store.append("Tally", "t-other", 1, [tally.ItemAdded(item="x", quantity=1)], Cause.request("e"))
    assert not store.load("Tally", "t-1").exists
    assert store.forgotten_aggregates == 1
    assert store.load("Tally", "t-open").exists, "an open aggregate is never forgotten"

    store.append("Tally", "t-1", 0, [tally.ItemAdded(item="y", quantity=3)], Cause.request("f"))
    store.close()
    replayed = logs.store(clock=clock)
    assert replayed.load("Tally", "t-1").state.items == {"y": 3}, "the second life, not the first"
    assert replayed.load("Tally", "t-1").version == 1
