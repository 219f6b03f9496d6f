"""The contracts' constraints, checked before any servicer runs: a request that breaks a rule of
``proto/`` (buf protovalidate annotations: lengths, ranges, patterns, defined enum values, required
fields) is refused with INVALID_ARGUMENT naming each field, the rule and a short prefix of the value,
so no request can make an event that the broker refuses or a reader cannot understand.

Rules that need state (the overflow queue must exist, the agent must be ready) stay in ``decide``.
"""

from __future__ import annotations

from typing import Any

import protovalidate
from google.protobuf.message import Message

from services.platform.errors import InvalidArgument

_validator = protovalidate.Validator()
# At most this many violations are named, and this much of a value is echoed back.
_NAMED = 5
_PREFIX = 16
# Values of these fields are personal data: their length is told, never their characters.
_PERSONAL = ("number", "address", "email", "phone")


def check(message: Message) -> None:
    """Raise InvalidArgument naming every rule of the message's contract it breaks (the first few)."""
    violations = _validator.collect_violations(message)
    if violations:
        described = [describe(violation) for violation in violations[:_NAMED]]
        more = len(violations) - len(described)
        raise InvalidArgument("; ".join(described) + (f"; and {more} more" if more > 0 else ""))
    malformed = list(_malformed_times(message, ""))
    if malformed:
        raise InvalidArgument("; ".join(malformed[:_NAMED]))


# What protobuf itself can represent (google/protobuf/timestamp.proto and duration.proto): a value
# outside it parses, but cannot become a datetime or timedelta, so it is refused here by name.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 to 9999-12-31T23:59:59Z
_DURATION_SECONDS = 315_576_000_000
_NANOS = 999_999_999


def _malformed_times(message: Message, prefix: str) -> Any:
    """``due_at: not a valid Timestamp (nanos ...)`` for every Timestamp or Duration no datetime can hold."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        if field.message_type.GetOptions().map_entry:
            values = value.values() if field.message_type.fields_by_name["value"].message_type else []
        for index, item in enumerate(values):
            where = f"{path}[{index}]" if field.is_repeated else path
            name = item.DESCRIPTOR.full_name
            if name == "google.protobuf.Timestamp":
                low, high = _TIMESTAMP_SECONDS
                if not (low <= item.seconds <= high and 0 <= item.nanos <= _NANOS):
                    yield f"{where}: not a valid Timestamp (seconds {item.seconds}, nanos {item.nanos})"
            elif name == "google.protobuf.Duration":
                same_sign = item.seconds == 0 or item.nanos == 0 or (item.seconds > 0) == (item.nanos > 0)
                if not (abs(item.seconds) <= _DURATION_SECONDS and abs(item.nanos) <= _NANOS and same_sign):
                    yield f"{where}: not a valid Duration (seconds {item.seconds}, nanos {item.nanos})"
            else:
                yield from _malformed_times(item, f"{where}.")


def describe(violation: Any) -> str:
    """``skills[2].proficiency: must be ... (int32.lte); got 9``."""
    proto = violation.proto
    path = _path(proto.field.elements) or "request"
    got = _preview(path, violation.field_value)
    return f"{path}: {proto.message} ({proto.rule_id}){got}"


def _path(elements: Any) -> str:
    parts = []
    for element in elements:
        part = element.field_name
        if element.subscript is not None:
            part += f"[{element.subscript.value!r}]"
        parts.append(part)
    return ".".join(parts)


def _preview(path: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, bytes | str):
        if any(word in path.lower() for word in _PERSONAL):
            return f"; got {len(value):,} characters"
        if len(value) <= _PREFIX:
            return f"; got {value!r}"
        return f"; got {value[:_PREFIX]!r}... ({len(value):,} characters)"
    if isinstance(value, int | float):
        return f"; got {value}"
    return ""
