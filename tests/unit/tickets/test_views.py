"""What the gRPC messages show: the center sees the whole ticket; a department sees only its part."""

from __future__ import annotations

from callcenter.tickets.v1 import events_pb2 as ev

from services.tickets import domain as d
from services.tickets.grpc_api import ticket_message
from tests.unit.tickets.conftest import T0, Desk

FIRST = ev.SLA_CLOCK_FIRST_RESPONSE


def _dispatched_complaint(rules) -> Desk:
    desk = Desk(rules)
    desk.create(customer_hash="h" * 64, customer_masked="138****0000")
    desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1", "d-2")))
    return desk


def test_the_center_sees_the_customer_every_dispatch_and_every_clock(rules) -> None:
    desk = _dispatched_complaint(rules)

    message = ticket_message(desk.ticket, desk.version)

    assert (message.customer.hash, message.customer.masked) == ("h" * 64, "138****0000")
    assert [x.department for x in message.dispatches] == ["environment", "urban_management"]
    assert sorted(message.open_dispatch_ids) == ["d-1", "d-2"]
    assert {c.dispatch_id for c in message.clocks} == {"", "d-1", "d-2"}
    assert message.first_response_due.seconds and message.resolution_due.seconds


def test_a_department_sees_its_own_dispatch_and_clocks_and_nothing_of_the_customer(rules) -> None:
    desk = _dispatched_complaint(rules)

    message = ticket_message(desk.ticket, desk.version, for_department="urban_management")

    assert not message.HasField("customer")
    assert [(x.dispatch_id, x.department) for x in message.dispatches] == [("d-2", "urban_management")]
    assert list(message.open_dispatch_ids) == ["d-2"]
    assert {c.dispatch_id for c in message.clocks} == {"d-2"}
    assert not message.HasField("first_response_due") and not message.HasField("resolution_due")
    assert (message.ticket_id, message.summary, message.version) == ("t-1", "Noise at night", desk.version)
