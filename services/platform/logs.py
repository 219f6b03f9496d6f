"""Logs an operator can use: one line per notable event, readable locally and JSON in cluster mode.

Every line carries the request id and the trace id of the work it belongs to (empty outside one),
so a caller's complaint, a trace and the log meet. The same line over and over (a broker away, a
poison record retried) is written once per window, then counted: "(37 similar lines suppressed)".
librdkafka's own logs come through the same handler, at WARNING and above.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime

from opentelemetry import trace

request_id: ContextVar[str] = ContextVar("request_id", default="")

REPEAT_WINDOW_S = 10.0
_DIGITS = re.compile(r"\d+")


class _Context(logging.Filter):
    """Adds ``request_id`` and ``trace_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        return True


class RepeatFilter(logging.Filter):
    """Lets a line through once per window; repeats (numbers aside) are counted, and the next line let
    through says how many were held back."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock=time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, _DIGITS.sub("#", record.getMessage())[:120])
        now = self._clock()
        with self._lock:
            since, held = self._last.get(key, (float("-inf"), 0))
            if now - since < self._window_s:
                self._last[key] = (since, held + 1)
                return False
            self._last[key] = (now, 0)
            if len(self._last) > 10_000:
                self._last = {k: v for k, v in self._last.items() if now - v[0] < self._window_s}
        if held:
            record.msg = f"{record.getMessage()} ({held} similar lines suppressed)"
            record.args = ()
        return True


class ReadableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        ids = " ".join(
            f"{name}={value}"
            for name, value in (("req", record.request_id), ("trace", record.trace_id[:16]))
            if value
        )
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if ids:
            line += f"  [{ids}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": record.request_id,
            "trace_id": record.trace_id,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(service: str, *, as_json: bool, level: int = logging.INFO) -> None:
    """The process's one log handler (stdout), called once by a service's main."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_Context())
    handler.addFilter(RepeatFilter())
    handler.setFormatter(JsonFormatter(service) if as_json else ReadableFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("librdkafka").setLevel(logging.WARNING)


def kafka_logger(client: str) -> logging.Logger:
    """The logger a librdkafka client writes to (its ``logger`` setting), below ``librdkafka``."""
    return logging.getLogger(f"librdkafka.{client}")
