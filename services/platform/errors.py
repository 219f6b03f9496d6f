"""Errors a request can end in, each mapped to one gRPC status code at the edge.

Domain errors are what a decide() raises about the request itself. ``Unavailable`` and
``Overloaded`` are about the service at that moment: the same request may succeed when retried
with the same request id.
"""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused; the message names what was wrong and the current state."""


class InvalidArgument(DomainError):
    """The command itself is malformed (missing field, value out of range)."""


class NotFound(DomainError):
    """The command names an aggregate that does not exist."""


class FailedPrecondition(DomainError):
    """The command is well formed but illegal in the aggregate's current state."""


class PermissionDenied(DomainError):
    """The caller's role may not issue this command for this aggregate."""


class ConcurrencyError(FailedPrecondition):
    """An append named an expected version that is no longer the aggregate's version."""

    def __init__(self, aggregate_id: str, expected_version: int, actual_version: int) -> None:
        super().__init__(
            f"aggregate {aggregate_id!r} is at version {actual_version}, "
            f"but the append expected version {expected_version}"
        )
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class RequestIdReused(FailedPrecondition):
    """A request id already answered one request was sent with a different request."""


class Quarantined(FailedPrecondition):
    """The aggregate's history holds a record this service cannot apply; an operator must resolve it."""


class Unavailable(Exception):
    """The service cannot do this now (starting, stopping, Kafka away); retry with the same request id."""


class Overloaded(Exception):
    """The service is at capacity and refused the request at once; retry later, with backoff."""


class WriterFenced(Unavailable):
    """Another instance took over this writer's transactional id; this instance must stop writing."""


class Unauthenticated(Exception):
    """The caller presented no valid token: none, expired, not ours, or malformed."""
