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
