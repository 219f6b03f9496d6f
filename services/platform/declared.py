"""Reading the platform's declarative files (deploy/kafka/topics.toml, acls.toml): each check names
the place in the file where a value is wrong, raising the file's own error type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def reject_unknown(entry: Mapping[str, Any], allowed: set[str], where: str, error: type[Exception]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise error(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}"
        )


def table(value: Any, where: str, error: type[Exception]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise error(f"{where}: expected a table, got {type(value).__name__}")
    return value
