"""Strict YAML configuration files: parsed with ruamel.yaml into plain Python, validated by pydantic,
every refusal naming the file and the line.

Models given to ``validate`` and ``load`` refuse unknown keys by declaring
``model_config = ConfigDict(extra="forbid")``, so a misspelt key is reported at its line instead of
being ignored. Checks that span several entries (duplicates, ranges) call ``Document.error`` with
the location of the entry at fault.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarbool import ScalarBoolean

M = TypeVar("M", bound=BaseModel)
Location = tuple[str | int, ...]


class ConfigError(ValueError):
    """A configuration file is unreadable or wrong: ``str(error)`` is ``path:line: reason``."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.line, self.reason)


@dataclass(frozen=True)
class Document:
    """A parsed YAML file: ``data`` in plain Python types, with the line of every key and list item."""

    path: Path
    data: Any
    lines: Mapping[Location, int] = field(default_factory=dict, repr=False, compare=False)

    def line(self, *loc: str | int) -> int | None:
        """The 1-based line of the key or item at ``loc``, else of the nearest enclosing one."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def error(self, loc: Sequence[str | int], reason: str) -> ConfigError:
        return ConfigError(self.path, self.line(*loc), reason)


def read(path: Path) -> Document:
    """Parse one YAML file; a missing file, a syntax error or a duplicate key is a ``ConfigError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, None, f"cannot read the file: {error}") from error
    try:
        tree = YAML(typ="rt", pure=True).load(text)
    except YAMLError as error:
        raise _syntax_error(path, error) from error
    lines: dict[Location, int] = {}
    if isinstance(tree, CommentedMap | CommentedSeq):
        lines[()] = tree.lc.line + 1
    return Document(path, _plain(tree, (), lines, path, set()), lines)


def validate(document: Document, model: type[M]) -> M:
    """``model.model_validate(document.data)``; the first validation error becomes a ``ConfigError``
    naming its location (``rules[2].amount: ...``) at that location's line."""
    try:
        return model.model_validate(document.data)
    except ValidationError as invalid:
        first = invalid.errors(include_url=False)[0]
        loc = _data_location(document.data, first["loc"])
        reason = _reason(first)
        if loc:
            reason = f"{dotted_path(loc)}: {reason}"
        raise document.error(loc, reason) from None


def load(path: Path, model: type[M]) -> M:
    return validate(read(path), model)


def dotted_path(loc: Sequence[str | int]) -> str:
    """``("rules", 2, "amount")`` as ``rules[2].amount``, the way refusals name a place in a file."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _syntax_error(path: Path, error: YAMLError) -> ConfigError:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    if context and "duplicate key" not in problem:
        problem = f"{problem} ({context})"
    return ConfigError(path, mark.line + 1 if mark is not None else None, f"not valid YAML: {problem}")


def _plain(value: Any, loc: Location, lines: dict[Location, int], path: Path, open_nodes: set[int]) -> Any:
    """ruamel's round-trip types as plain Python, recording each key's and item's line on the way."""
    if isinstance(value, CommentedMap | CommentedSeq):
        if id(value) in open_nodes:
            raise ConfigError(path, lines.get(loc), "an alias refers to a node that contains it")
        open_nodes.add(id(value))
        if isinstance(value, CommentedMap):
            plain: Any = {}
            for original_key, item in value.items():
                key = _scalar(original_key, loc, lines, path)
                if original_key in value.lc.data:
                    lines[(*loc, key)] = value.lc.key(original_key)[0] + 1
                plain[key] = _plain(item, (*loc, key), lines, path, open_nodes)
        else:
            plain = []
            for index, item in enumerate(value):
                if index in value.lc.data:
                    lines[(*loc, index)] = value.lc.item(index)[0] + 1
                plain.append(_plain(item, (*loc, index), lines, path, open_nodes))
        open_nodes.discard(id(value))
        return plain
    return _scalar(value, loc, lines, path)


def _scalar(value: Any, loc: Location, lines: dict[Location, int], path: Path) -> Any:
    if value is None or type(value) in (bool, int, float, str, dt.date):
        return value
    if isinstance(value, bool | ScalarBoolean):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.datetime):
        return dt.datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            tzinfo=value.tzinfo,
        )
    if isinstance(value, dt.date):
        return dt.date(value.year, value.month, value.day)
    where = f"{dotted_path(loc)}: " if loc else ""
    line = next((lines[loc[:end]] for end in range(len(loc), -1, -1) if loc[:end] in lines), None)
    raise ConfigError(path, line, f"{where}unsupported YAML value {value!r} (tags and complex keys are not)")


def _data_location(data: Any, loc: Sequence[str | int]) -> Location:
    """A pydantic error location cut down to the keys and indexes of the file.

    pydantic inserts the names of union members and validators into locations; those are skipped. A
    missing key is kept as the last part, since naming it is the point of the error.
    """
    kept: list[str | int] = []
    node = data
    for position, part in enumerate(loc):
        if _contains(node, part):
            kept.append(part)
            node = node[part]
        elif isinstance(node, dict) and position == len(loc) - 1:
            kept.append(part)
    return tuple(kept)


def _contains(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _reason(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("value_error", "assertion_error") and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    value = error.get("input")
    if value is None or isinstance(value, bool | int | float | str | dt.date):
        return f"{error['msg']}, got {value!r}"
    return f"{error['msg']}, got {type(value).__name__}"
