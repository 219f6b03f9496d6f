"""The publisher: each domain event mapped to its public events, free text only on the inbox."""

from __future__ import annotations

from callcenter.tickets.v1 import events_pb2 as ev

from services.platform.envelope import Cause, make_envelope
from services.tickets import domain as d
from services.tickets.publisher import PUBLIC_TOPIC, publications
from tests.unit.tickets.conftest import REGISTRY, T0, Desk, at


def published(payloads) -> list[tuple[str, str]]:
    out = []
    for n, payload in enumerate(payloads):
        envelope = make_envelope(
            payload,
            registry=REGISTRY,
            aggregate_type="Ticket",
            aggregate_id="t-1",
            aggregate_version=n + 1,
            occurred_at=T0,
            cause=Cause.request(f"r-{n}"),
        )
        out += [(topic, message) for topic, message in publications(envelope)]
    return out


def test_a_dispatch_goes_public_without_free_text_and_to_the_inbox_with_it(rules) -> None:
    desk = Desk(rules)
    desk.create()
    events = desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1", "d-2")))
    out = published(events)
    topics = [topic for topic, _ in out]
    assert topics == [
        PUBLIC_TOPIC,
        "dept.environment.inbox.v1",
        PUBLIC_TOPIC,
        "dept.urban_management.inbox.v1",
    ]
    public = [m for topic, m in out if topic == PUBLIC_TOPIC]
    assert all(not m.work_dispatched.summary and not m.work_dispatched.instructions for m in public)
    inbox = [m for topic, m in out if topic != PUBLIC_TOPIC]
    assert all(m.work_dispatched.summary == "Noise at night" for m in inbox)
    assert len({m.event_id for _, m in out}) == len(out)


def test_internal_events_never_leave(rules) -> None:
    desk = Desk(rules)
    created = desk.create()
    noted = desk.do(d.AddNote("t-1", at(1), "a-1", note_id="n", text="caller lives at No. 5", internal=False))
    assert published([*created, *noted]) == []


def test_the_same_domain_event_always_maps_to_the_same_ids(rules) -> None:
    desk = Desk(rules)
    desk.create()
    [dispatched, *_] = desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1", "d-2")))
    assert isinstance(dispatched, ev.TicketDispatched)
    envelope = make_envelope(
        dispatched,
        registry=REGISTRY,
        aggregate_type="Ticket",
        aggregate_id="t-1",
        aggregate_version=4,
        occurred_at=T0,
        cause=Cause.request("r"),
    )
    first = [m.event_id for _, m in publications(envelope)]
    again = [m.event_id for _, m in publications(envelope)]
    assert first == again and len(set(first)) == 2
