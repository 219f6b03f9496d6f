"""Waiting for an asynchronous outcome in integration and end-to-end tests, without timed assertions:
the bound on the number of tries only ends a broken run, it is never what a test asserts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    read: Callable[[], T],
    holds: Callable[[T], bool],
    what: str,
    *,
    tries: int = 600,
    interval: float = 0.05,
    not_yet: Callable[[Exception], bool] = lambda error: False,
) -> T:
    """Read until the condition holds and return what was read. A read that raises an exception for
    which `not_yet` is true counts as not yet there (a NOT_FOUND before the event has been applied);
    any other exception ends the wait."""
    pause = threading.Event()
    value: T | None = None
    for _ in range(tries):
        try:
            value = read()
        except Exception as error:
            if not not_yet(error):
                raise
        else:
            if holds(value):
                return value
        pause.wait(interval)
    raise AssertionError(f"never reached: {what}; last seen {value}")
