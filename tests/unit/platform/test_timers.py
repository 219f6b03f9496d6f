"""Event-sourced timers: deadlines come from state, fire once when due, and survive a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.platform.envelope import Cause
from services.platform.eventstore import EventStore
from services.platform.timers import schedule_deadlines
from tests.support import tally
from tests.support.memory import InMemoryBroker, InMemoryEventLog

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _service(broker: InMemoryBroker, clock: Clock, on_deadline=tally.on_deadline):
    store = EventStore(
        InMemoryEventLog(broker, "tally.events", "tally.snapshots", "tally-writer"),
        tally.registry(),
        [tally.kind()],
        clock=clock,
    )
    scheduler = schedule_deadlines(store, {"Tally": on_deadline}, clock)
    store.start()
    return store, scheduler


def _set_reminder(store: EventStore, tally_id: str, due: datetime) -> None:
    loaded = store.load("Tally", tally_id)
    event = tally.ReminderSet(due_at_ms=int(due.timestamp() * 1000))
    store.append("Tally", tally_id, loaded.version, [event], Cause.request(f"remind-{tally_id}-{due}"))


def test_a_deadline_fires_once_when_due_and_not_before() -> None:
    clock = Clock()
    store, scheduler = _service(InMemoryBroker(), clock)
    _set_reminder(store, "t-1", T0 + timedelta(seconds=30))

    clock.now = T0 + timedelta(seconds=29)
    assert scheduler.fire_due() == 0
    clock.now = T0 + timedelta(seconds=30)
    assert scheduler.fire_due() == 1
    assert scheduler.fire_due() == 0

    assert store.load("Tally", "t-1").state.reminders_fired == 1
    assert scheduler.pending() == 0


def test_a_state_that_moved_on_cancels_its_deadline() -> None:
    clock = Clock()
    store, scheduler = _service(InMemoryBroker(), clock)
    _set_reminder(store, "t-1", T0 + timedelta(seconds=30))
    store.append("Tally", "t-1", 1, [tally.TallyClosed()], Cause.request("close"))

    clock.now = T0 + timedelta(hours=1)

    assert scheduler.fire_due() == 0
    assert store.load("Tally", "t-1").state.reminders_fired == 0


def test_a_rescheduled_deadline_fires_at_its_new_time_only() -> None:
    clock = Clock()
    store, scheduler = _service(InMemoryBroker(), clock)
    _set_reminder(store, "t-1", T0 + timedelta(seconds=30))
    _set_reminder(store, "t-1", T0 + timedelta(seconds=90))

    clock.now = T0 + timedelta(seconds=60)
    assert scheduler.fire_due() == 0
    assert scheduler.next_due() == T0 + timedelta(seconds=90)
    clock.now = T0 + timedelta(seconds=90)
    assert scheduler.fire_due() == 1


def test_deadlines_come_back_after_a_restart_and_fire_in_due_order() -> None:
    broker, clock = InMemoryBroker(), Clock()
    store, _ = _service(broker, clock)
    _set_reminder(store, "late", T0 + timedelta(seconds=50))
    _set_reminder(store, "early", T0 + timedelta(seconds=10))
    store.close()

    restarted, scheduler = _service(broker, clock)
    fired: list[str] = []
    restarted.add_listener(lambda kind, aggregate_id, state: fired.append(aggregate_id))
    clock.now = T0 + timedelta(minutes=5)

    assert scheduler.pending() == 2
    assert scheduler.fire_due() == 2
    assert fired == ["early", "late"]
    assert restarted.load("Tally", "late").state.reminders_fired == 1


def test_a_failed_firing_is_retried_later() -> None:
    clock = Clock()
    failures = [RuntimeError("a bug in the first firing")]

    def on_deadline(state, deadline, now):
        if failures:
            raise failures.pop()
        return tally.on_deadline(state, deadline, now)

    store, scheduler = _service(InMemoryBroker(), clock, on_deadline)
    _set_reminder(store, "t-1", T0 + timedelta(seconds=5))

    clock.now = T0 + timedelta(seconds=5)
    assert scheduler.fire_due() == 1
    assert store.load("Tally", "t-1").state.reminders_fired == 0
    clock.now = T0 + timedelta(seconds=6)
    assert scheduler.fire_due() == 1

    assert store.load("Tally", "t-1").state.reminders_fired == 1
