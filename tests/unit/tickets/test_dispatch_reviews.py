"""A department's return or extension request reviewed through the approvals service, as the dispatch
catalogue's ``reviews`` says: the request for the review, the center's own review refused meanwhile,
and the approval's outcome reviewing the dispatch."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from callcenter.tickets.v1 import events_pb2 as ev

from services.platform.errors import FailedPrecondition
from services.tickets import domain as d
from services.tickets.policies import Rules
from tests.unit.tickets.conftest import T0, Desk, at, names

DS = d.DispatchStatus


@pytest.fixture
def through_approvals(rules: Rules) -> Rules:
    catalogue = dataclasses.replace(
        rules.catalogue, reviewed_by_approvals=frozenset({"dispatch_return", "dispatch_extension"})
    )
    return dataclasses.replace(rules, catalogue=catalogue)


def dispatched(rules: Rules) -> Desk:
    desk = Desk(rules)
    desk.create(now=T0, type=ev.TICKET_TYPE_COMPLAINT, category="environment.noise")
    desk.do(d.DispatchTicket("t-1", T0, "a-1", dispatch_ids=("d-1", "d-2", "d-3")))
    return desk


def dept(command_type, now=T0, **fields):
    return command_type("t-1", now, "clerk-7", "environment", dispatch_id="d-1", **fields)


def conclude(approval_id: str, outcome: str, now=None, reason: str = "") -> d.ConcludeApproval:
    return d.ConcludeApproval(
        "t-1", now or at(3), "approvals", approval_id=approval_id, outcome=outcome, reason=reason
    )


def test_by_default_the_center_reviews_and_no_approval_is_asked(rules: Rules) -> None:
    desk = dispatched(rules)
    returned = desk.do(dept(d.ReturnDispatch, now=at(1), reason="not ours"))
    assert "DispatchReviewRequested" not in names(returned)
    reviewed = desk.do(d.ReviewReturn("t-1", at(2), "sup-1", dispatch_id="d-1", accept=False))
    assert names(reviewed)[0] == "DispatchReturnRefused"


def test_a_return_asks_for_an_approval_and_its_grant_accepts_the_return(through_approvals: Rules) -> None:
    desk = dispatched(through_approvals)
    returned = desk.do(dept(d.ReturnDispatch, now=at(1), reason="construction noise is not ours"))
    assert names(returned) == [
        "DispatchReturned",
        "SlaClockFulfilled",
        "SlaClockPaused",
        "DispatchReviewRequested",
    ]
    review = returned[-1]
    assert (review.kind, review.department, review.reason, review.requested_by) == (
        "dispatch_return",
        "environment",
        "construction noise is not ours",
        "clerk-7",
    )
    assert review.ticket_type == ev.TICKET_TYPE_COMPLAINT and not review.HasField("extension")
    assert desk.ticket.dispatches["d-1"].review_approval_id == review.approval_id

    with pytest.raises(FailedPrecondition, match=f"under review by approval {review.approval_id}"):
        desk.do(d.ReviewReturn("t-1", at(2), "sup-1", dispatch_id="d-1", accept=True))

    accepted = desk.do(conclude(review.approval_id, "granted"))
    assert names(accepted) == ["DispatchReturnAccepted", "SlaClockCancelled"]
    assert accepted[0].reviewed_by == "approvals" and review.approval_id in accepted[0].note
    dispatch = desk.ticket.dispatches["d-1"]
    assert dispatch.status == DS.DISPATCH_STATUS_WITHDRAWN and not dispatch.review_approval_id


def test_a_rejected_return_goes_back_to_the_department_with_the_reason(through_approvals: Rules) -> None:
    desk = dispatched(through_approvals)
    [*_, review] = desk.do(dept(d.ReturnDispatch, now=at(1), reason="not ours"))
    refused = desk.do(conclude(review.approval_id, "rejected", reason="noise at night is the bureau's"))
    assert names(refused) == ["DispatchReturnRefused", "SlaClockResumed"]
    assert refused[0].note == "noise at night is the bureau's"
    back = desk.ticket.dispatches["d-1"]
    assert back.status == DS.DISPATCH_STATUS_DISPATCHED and back.with_department

    # Returned again: a second review, under an approval of its own.
    [*_, again] = desk.do(dept(d.ReturnDispatch, now=at(4), reason="still not ours"))
    assert again.approval_id != review.approval_id
    # The first approval's late outcome decides nothing now.
    with pytest.raises(FailedPrecondition):
        desk.do(conclude(review.approval_id, "granted", now=at(5)))


def test_an_extension_asks_for_an_approval_with_the_time_asked(through_approvals: Rules) -> None:
    desk = dispatched(through_approvals)
    due = desk.ticket.dispatches["d-1"].due_at
    wanted = due + timedelta(days=4)
    asked = desk.do(
        dept(d.RequestExtension, now=at(1), requested_due_at=wanted, reason="waiting for a permit")
    )
    assert names(asked) == ["DispatchExtensionRequested", "DispatchReviewRequested"]
    review = asked[1]
    assert review.kind == "dispatch_extension" and review.extension.ToTimedelta() == timedelta(days=4)

    with pytest.raises(FailedPrecondition, match="under review by approval"):
        desk.do(d.ReviewExtension("t-1", at(2), "sup-1", dispatch_id="d-1", grant=True))

    granted = desk.do(conclude(review.approval_id, "granted"))
    assert names(granted) == ["DispatchExtensionGranted", "SlaClockExtended"]
    assert desk.ticket.dispatches["d-1"].due_at == wanted


def test_an_expired_extension_approval_keeps_the_due_time(through_approvals: Rules) -> None:
    desk = dispatched(through_approvals)
    due = desk.ticket.dispatches["d-1"].due_at
    [_, review] = desk.do(
        dept(d.RequestExtension, now=at(1), requested_due_at=due + timedelta(days=1), reason="x")
    )
    kept = desk.do(conclude(review.approval_id, "expired"))
    assert names(kept) == ["DispatchExtensionRefused"]
    assert "expired" in kept[0].note
    dispatch = desk.ticket.dispatches["d-1"]
    assert dispatch.due_at == due and dispatch.requested_due_at is None and not dispatch.review_approval_id


def test_the_ticket_approval_is_not_confused_with_a_dispatch_review(through_approvals: Rules) -> None:
    desk = dispatched(through_approvals)
    [*_, review] = desk.do(dept(d.ReturnDispatch, now=at(1), reason="not ours"))
    with pytest.raises(FailedPrecondition, match="waits for approval none"):
        desk.do(conclude("some-other-approval", "granted"))
    assert desk.ticket.dispatches["d-1"].review_approval_id == review.approval_id
