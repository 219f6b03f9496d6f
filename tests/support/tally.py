"""A tiny aggregate used to test the kernel: a tally of items, with an optional reminder deadline.

Its event types are built at import time from a descriptor, so the kernel's tests depend on no
context's contracts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from services.platform.envelope import Envelope, EventRegistry
from services.platform.errors import FailedPrecondition
from services.platform.eventstore import AggregateKind, Deadline

_file = descriptor_pb2.FileDescriptorProto(
    name="tests/tally.proto", package="tests.tally.v1", syntax="proto3"
)
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_INT64 = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
for _name, _fields in {
    "ItemAdded": [("item", _STRING), ("quantity", _INT64)],
    "ReminderSet": [("due_at_ms", _INT64)],
    "ReminderFired": [],
    "TallyClosed": [],
}.items():
    _message = _file.message_type.add(name=_name)
    for _number, (_field, _type) in enumerate(_fields, start=1):
        _message.field.add(name=_field, number=_number, type=_type, label=1)
_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file)
ItemAdded = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tests.tally.v1.ItemAdded"))
ReminderSet = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tests.tally.v1.ReminderSet"))
ReminderFired = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tests.tally.v1.ReminderFired"))
TallyClosed = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tests.tally.v1.TallyClosed"))


def registry() -> EventRegistry:
    events = EventRegistry()
    for message_class in (ItemAdded, ReminderSet, ReminderFired, TallyClosed):
        events.register(message_class)
    return events


@dataclass(frozen=True)
class Tally:
    tally_id: str
    items: dict[str, int] = field(default_factory=dict)
    reminder_at: datetime | None = None
    reminders_fired: int = 0
    closed: bool = False


def evolve(state: Tally, envelope: Envelope) -> Tally:
    event = envelope.payload
    match envelope.event_type:
        case "ItemAdded":
            items = dict(state.items)
            items[event.item] = items.get(event.item, 0) + event.quantity
            return replace(state, items=items)
        case "ReminderSet":
            return replace(state, reminder_at=datetime.fromtimestamp(event.due_at_ms / 1000, UTC))
        case "ReminderFired":
            return replace(state, reminder_at=None, reminders_fired=state.reminders_fired + 1)
        case "TallyClosed":
            return replace(state, closed=True, reminder_at=None)
    return state


def add(state: Tally, item: str, quantity: int) -> list:
    if state.closed:
        raise FailedPrecondition(f"tally {state.tally_id} is closed")
    return [ItemAdded(item=item, quantity=quantity)]


def deadlines(state: Tally) -> list[Deadline]:
    return [Deadline("reminder", state.reminder_at)] if state.reminder_at else []


def on_deadline(state: Tally, deadline: Deadline, now: datetime) -> list:
    if deadline.name == "reminder" and state.reminder_at is not None and state.reminder_at <= now:
        return [ReminderFired()]
    return []


def _snapshot(state: Tally) -> bytes:
    return json.dumps(
        {
            "id": state.tally_id,
            "items": state.items,
            "reminder_at": state.reminder_at.isoformat() if state.reminder_at else None,
            "fired": state.reminders_fired,
            "closed": state.closed,
        }
    ).encode()


def _restore(data: bytes) -> Tally:
    raw = json.loads(data)
    return Tally(
        raw["id"],
        raw["items"],
        datetime.fromisoformat(raw["reminder_at"]) if raw["reminder_at"] else None,
        raw["fired"],
        raw["closed"],
    )


def kind(state_version: int = 1) -> AggregateKind[Tally]:
    return AggregateKind(
        name="Tally",
        initial=Tally,
        evolve=evolve,
        deadlines=deadlines,
        snapshot=_snapshot,
        restore=_restore,
        state_version=state_version,
        closed=lambda state: state.closed,
    )


def totals_table(topic: str) -> AggregateKind[int]:
    """A table of running totals per item, kept beside the tallies (a view, not an aggregate)."""
    return AggregateKind.table("Totals", lambda _key: 0, topic, lambda total: str(total).encode(), int)
