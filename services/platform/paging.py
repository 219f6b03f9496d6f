"""Pages of a list rpc's answer: at most ``page_size`` rows after the row a ``page_token`` names.

The token is the last key of the page before, opaque to callers (base64). A row removed since is
skipped over, not an error: a page starts after the token's key or, when the key is gone, at the end.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import TypeVar

from services.platform.errors import InvalidArgument

DEFAULT_PAGE = 100
T = TypeVar("T")


def page_of(
    rows: Sequence[T], page_size: int, token: str, key: Callable[[T], str]
) -> tuple[Sequence[T], str]:
    """One page of ``rows`` (sorted as they will be paged) and the token of the next, "" at the end."""
    size = page_size or DEFAULT_PAGE
    start = 0
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument("page_token is not one this service gave") from None
        keys = [key(row) for row in rows]
        start = keys.index(after) + 1 if after in keys else len(rows)
    page = rows[start : start + size]
    more = start + size < len(rows)
    return page, base64.urlsafe_b64encode(key(page[-1]).encode()).decode() if more and page else ""
