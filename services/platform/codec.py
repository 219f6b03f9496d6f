"""Snapshot encoding of aggregate states: a frozen dataclass to JSON bytes and back, led by its type hints.

Handles what aggregate states are made of: str, int, float, bool, enums, datetime, date, timedelta,
optionals, tuples (fixed and variadic), frozensets, dicts, nested dataclasses and protobuf messages.
A state's encoding changes when its fields do; bump ``AggregateKind.state_version`` then, and older
snapshots are skipped for a full replay.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")


def dataclass_codec(cls: type[T]) -> tuple[Callable[[T], bytes], Callable[[bytes], T]]:
    """The (encode, decode) pair of a dataclass state, for ``AggregateKind(snapshot=..., restore=...)``."""

    def encode(state: T) -> bytes:
        return json.dumps(_to_json(state, cls), separators=(",", ":")).encode()

    def decode(data: bytes) -> T:
        return _from_json(json.loads(data), cls)

    return encode, decode


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _to_json(value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _to_json(value, next(arg for arg in args if arg is not type(None)))
    if dataclasses.is_dataclass(hint):
        return {
            f.name: _to_json(getattr(value, f.name), _hints(hint)[f.name]) for f in dataclasses.fields(hint)
        }
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return [_to_json(item, args[0]) for item in value]
        return [_to_json(item, arg) for item, arg in zip(value, args, strict=True)]
    if origin is frozenset:
        return sorted(_to_json(item, args[0]) for item in value)
    if origin is dict:
        return [[_to_json(k, args[0]), _to_json(v, args[1])] for k, v in value.items()]
    if isinstance(hint, type) and issubclass(hint, Message):
        return base64.b64encode(value.SerializeToString()).decode()
    if hint is datetime or hint is date:
        return value.isoformat()
    if hint is timedelta:
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _from_json(raw: Any, hint: Any) -> Any:
    if raw is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _from_json(raw, next(arg for arg in args if arg is not type(None)))
    if dataclasses.is_dataclass(hint):
        hints = _hints(hint)
        return hint(
            **{
                f.name: _from_json(raw[f.name], hints[f.name])
                for f in dataclasses.fields(hint)
                if f.name in raw
            }
        )
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(item, args[0]) for item in raw)
        return tuple(_from_json(item, arg) for item, arg in zip(raw, args, strict=True))
    if origin is frozenset:
        return frozenset(_from_json(item, args[0]) for item in raw)
    if origin is dict:
        return {_from_json(k, args[0]): _from_json(v, args[1]) for k, v in raw}
    if isinstance(hint, type) and issubclass(hint, Message):
        return hint.FromString(base64.b64decode(raw))
    if hint is datetime:
        return datetime.fromisoformat(raw)
    if hint is date:
        return date.fromisoformat(raw)
    if hint is timedelta:
        return timedelta(seconds=raw)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(raw)
    return raw
