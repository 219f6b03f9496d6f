"""A Timestamp or Duration that parses but no datetime can hold is refused by name, never INTERNAL."""

from __future__ import annotations

import pytest
from callcenter.kpi.v1 import service_pb2 as kpi_pb
from callcenter.tickets.v1 import service_pb2 as tickets_pb

from services.platform.errors import InvalidArgument
from services.platform.validation import check


def test_a_timestamp_with_nanos_out_of_range_is_refused_naming_the_field() -> None:
    request = kpi_pb.QueryKpisRequest(scope=1)
    request.to.seconds, request.to.nanos = 1_700_000_000, 2_147_483_647
    with pytest.raises(
        InvalidArgument, match=r"^to: not a valid Timestamp \(seconds 1700000000, nanos 2147483647\)"
    ):
        check(request)


def test_a_nested_timestamp_is_refused_with_its_path() -> None:
    request = tickets_pb.ReviewExtensionRequest(request_id="r", ticket_id="t", dispatch_id="d", grant=True)
    request.due_at.nanos = -1
    with pytest.raises(InvalidArgument, match="due_at: not a valid Timestamp"):
        check(request)


def test_valid_times_pass() -> None:
    request = kpi_pb.QueryKpisRequest(scope=1)
    request.to.seconds, request.to.nanos = 1_700_000_000, 999_999_999
    check(request)
