"""A caller's request as the write path sees it: its idempotency key, what was asked, and until when.

The request id makes a retry safe: the same id again gets the first answer. The fingerprint makes a
mistake visible: the same id sent with a different request is refused, naming the first, instead of
being answered with the first one's result as if it had been done.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from services.platform.envelope import Actor
from services.platform.identity import current_principal

# Waiting for a write longer than this is pointless for any caller; one without a deadline gets this.
DEFAULT_WAIT_S = 10.0
# Answer this much before the caller's deadline, so the answer reaches it in time.
_ANSWER_MARGIN_S = 0.05


@dataclass(frozen=True)
class Request:
    """``name`` says what was asked (``EndContact``); ``deadline`` is a ``time.monotonic()`` moment."""

    request_id: str
    fingerprint: str
    name: str
    deadline: float | None = None
    # The authenticated caller (the access interceptor's principal), recorded on the events it causes.
    actor: Actor | None = None

    @classmethod
    def of(cls, message: Message, context: Any = None, **replaced: str) -> Request:
        """A gRPC request message (with a ``request_id`` field) and its call's context (for the deadline).

        ``replaced`` gives fields to fingerprint by another value: a caller's number by its keyed
        HMAC, so that the digest, kept on events, cannot be turned back into the number.
        """
        rest = type(message)()
        rest.CopyFrom(message)
        rest.ClearField("request_id")
        for name, value in replaced.items():
            setattr(rest, name, value)
        digest = _digest(rest.DESCRIPTOR.full_name.encode(), rest.SerializeToString(deterministic=True))
        name = message.DESCRIPTOR.name.removesuffix("Request")
        return cls(message.request_id, digest, name, _deadline(context), caller())

    @classmethod
    def of_fields(
        cls,
        request_id: str,
        name: str,
        fields: dict[str, Any],
        context: Any = None,
        actor: Actor | None = None,
    ) -> Request:
        """A request that is not a protobuf message (an HTTP body), fingerprinted by its other fields."""
        body = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":")).encode()
        return cls(request_id, _digest(name.encode(), body), name, _deadline(context), actor or caller())

    def seconds_left(self) -> float:
        """How long the write path may wait for this request's outcome."""
        if self.deadline is None:
            return DEFAULT_WAIT_S
        return max(0.0, min(DEFAULT_WAIT_S, self.deadline - time.monotonic() - _ANSWER_MARGIN_S))


def caller() -> Actor | None:
    """The actor of the call being served on this thread, if it was authenticated."""
    principal = current_principal.get()
    return None if principal is None else Actor(principal.subject, tuple(sorted(principal.roles)))


def _digest(*parts: bytes) -> str:
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(len(part).to_bytes(8, "big"))
        hashed.update(part)
    return hashed.hexdigest()[:32]


def _deadline(context: Any) -> float | None:
    remaining = context.time_remaining() if context is not None else None
    return None if remaining is None else time.monotonic() + remaining
