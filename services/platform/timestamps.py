"""Between Python's aware datetimes and timedeltas and protobuf's Timestamp and Duration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def dt(stamp: Timestamp) -> datetime:
    """The moment, in UTC."""
    return stamp.ToDatetime(tzinfo=UTC)


def pb_duration(length: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(length)
    return duration
