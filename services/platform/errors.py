"""Domain errors: what a decide() raises, each mapped to one gRPC status code at the edge."""

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


class WriterFenced(Exception):
    """Another instance took over this writer's transactional id; this instance must stop writing."""
