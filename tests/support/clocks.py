"""A service's clock under a test's control, for integration tests on the real broker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class SteppedClock:
    """The service's now: ``base`` plus the real time since the test began, plus what the test skipped."""

    def __init__(self, base: datetime) -> None:
        self._base = base
        self._lock = threading.Lock()
        self._started = datetime.now(UTC)
        self._skipped = timedelta(0)

    def __call__(self) -> datetime:
        with self._lock:
            return self._base + (datetime.now(UTC) - self._started) + self._skipped

    def skip_to(self, moment: datetime) -> None:
        with self._lock:
            now = self._base + (datetime.now(UTC) - self._started) + self._skipped
            self._skipped += max(timedelta(0), moment - now)
