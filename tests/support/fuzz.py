"""Hypothesis strategies for any protobuf message, drawn from its descriptor: the requests a client
written from the contracts alone could send, well formed or not (huge and odd strings, numbers at
their limits, NaN, enum numbers nobody defined, timestamps out of range, too many items)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
_INTS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
HUGE = 1_100_000  # beyond the largest record the broker takes


def strings(known: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Mostly short text, some ids the system knows, now and then something very long."""
    options = [
        st.text(max_size=12),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=100, max_size=300),
        st.just("x" * HUGE),
        st.sampled_from(["", " ", "\x00", "🙂" * 40, "' OR 1=1 --", "+44 20 7946 0958"]),
    ]
    if known:
        options.append(st.sampled_from(list(known)))
    return st.one_of(*options)


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(min(max(low, -5), high), min(high, 120)), st.sampled_from([low, high]))


def _scalar(field: FieldDescriptor, known: Sequence[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return strings(known)
    if kind == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=40), st.just(b"\x00" * HUGE))
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        extremes = st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300])
        return st.one_of(st.floats(-1e6, 1e6, width=64 if kind == F.TYPE_DOUBLE else 32), extremes)
    if kind == F.TYPE_ENUM:
        defined = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(defined), st.integers(-3, max(defined) + 50), st.just(2**31 - 1))
    low, high = _INTS[kind]
    return _ints(low, high)


def messages(
    descriptor: Descriptor, message_class: type[Message], known: Sequence[str] = (), depth: int = 0
) -> st.SearchStrategy[Message]:
    """Any message of this type: each field set or left unset, of any value its type allows."""
    fields = list(descriptor.fields)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = message_class()
        for field in fields:
            if not draw(st.booleans(), label=f"{descriptor.name}.{field.name} set"):
                continue
            _fill(draw, message, field, known, depth)
        return message

    return build()


def _fill(
    draw: st.DrawFn, message: Message, field: FieldDescriptor, known: Sequence[str], depth: int
) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field, value_field = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        entries = draw(st.integers(0, 3))
        target = getattr(message, field.name)
        for _ in range(entries):
            key = draw(_scalar(key_field, known))
            if value_field.message_type is None:
                target[key] = draw(_scalar(value_field, known))
            elif depth < 2:
                target[key].CopyFrom(draw(_sub(value_field, known, depth)))
        return
    repeated = field.is_repeated
    count = draw(st.one_of(st.integers(0, 3), st.just(60))) if repeated else 1
    for _ in range(count):
        if field.message_type is not None:
            if depth >= 2:
                return
            value = draw(_sub(field, known, depth))
            if repeated:
                getattr(message, field.name).add().CopyFrom(value)
            else:
                getattr(message, field.name).CopyFrom(value)
        elif repeated:
            getattr(message, field.name).append(draw(_scalar(field, known)))
        else:
            setattr(message, field.name, draw(_scalar(field, known)))


def _sub(field: FieldDescriptor, known: Sequence[str], depth: int) -> st.SearchStrategy[Message]:
    from google.protobuf import message_factory

    message_class = message_factory.GetMessageClass(field.message_type)
    return messages(field.message_type, message_class, known, depth + 1)
