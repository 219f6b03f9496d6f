"""Requests as a test makes them: an id, and a fingerprint from what the test says it asked."""

from __future__ import annotations

from typing import Any

from services.platform.requests import Request


def request(request_id: str, name: str = "Test", **fields: Any) -> Request:
    return Request.of_fields(request_id, name, fields)
