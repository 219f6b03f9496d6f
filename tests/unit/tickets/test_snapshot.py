"""A ticket's snapshot gives back the same ticket: clocks, dispatches and their intervals included."""

from __future__ import annotations

from services.tickets import domain as d
from services.tickets.handlers import ticket_kind
from tests.unit.tickets.conftest import T0, Desk, at


def test_a_ticket_in_the_middle_of_its_life_survives_its_snapshot(rules) -> None:
    desk = Desk(rules)
    desk.create()
    desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1", "d-2")))
    desk.do(d.ReturnDispatch("t-1", at(1), "clerk", "environment", dispatch_id="d-1", reason="not ours"))
    desk.do(d.ReviewReturn("t-1", at(2), "sup", dispatch_id="d-1", accept=False))
    desk.do(d.RequestApproval("t-1", at(3), "a-1", approval_id="ap-1", kind="compensation"))
    kind = ticket_kind()

    restored = kind.restore(kind.snapshot(desk.ticket))

    assert restored == desk.ticket
    assert restored.dispatches["d-1"].inside and restored.clocks
