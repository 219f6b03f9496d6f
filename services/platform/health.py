"""Whether a process can serve now, and why not: the one answer its health check and its callers get.

Each part of a process (the event store's writer, the replay, a projection's sink) holds a reason
while it cannot do its work and clears it when it can again; the process serves when no reason is
held. Listeners (the gRPC health service, the log) hear every change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Listener = Callable[[bool, str], None]


class Health:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._has_served = False

    @property
    def serving(self) -> bool:
        with self._lock:
            return not self._reasons

    def why(self) -> str:
        """What keeps the process from serving, or "" when it serves."""
        with self._lock:
            return "; ".join(self._reasons.values())

    def trouble(self, source: str, reason: str) -> None:
        """``source`` cannot do its work for ``reason`` (replacing what it said before)."""
        with self._lock:
            was_serving = not self._reasons
            changed = self._reasons.get(source) != reason
            self._reasons[source] = reason
        if changed:
            if was_serving and self._has_served:
                log.warning("%s stops serving: %s", self.name, reason)
            self._notify()

    def clear(self, source: str) -> None:
        with self._lock:
            if self._reasons.pop(source, None) is None:
                return
            serving = not self._reasons
            again, self._has_served = self._has_served, self._has_served or serving
        if serving and again:
            log.info("%s serves again", self.name)
        self._notify()

    def watch(self, listener: Listener) -> None:
        """Call ``listener(serving, why)`` now and after every change."""
        with self._lock:
            self._listeners.append(listener)
        listener(self.serving, self.why())

    def _notify(self) -> None:
        serving, why = self.serving, self.why()
        for listener in list(self._listeners):
            listener(serving, why)
