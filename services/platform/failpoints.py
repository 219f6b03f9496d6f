"""Crash points for the fault suite: a process told to die at one point of its Nth write does so, by
SIGKILL, as a power cut or the OOM killer would end it. Inert unless ``CC_FAILPOINT`` names one
(``load-tests/chaos.py`` sets it): ``before_append@3``, ``before_offsets@5``, ``after_commit@2``.

- ``before_append``: the unit of work is decided; nothing of it is written yet;
- ``before_offsets``: its records are in the open transaction, its consumed offsets are not;
- ``before_commit``: records and offsets are in the transaction, which is not committed;
- ``after_commit``: the transaction is committed, and nobody has heard so yet.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field

POINTS = ("before_append", "before_offsets", "before_commit", "after_commit")

log = logging.getLogger(__name__)


@dataclass
class Failpoint:
    point: str
    at: int
    _reached: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Failpoint | None:
        if not text:
            return None
        point, _, at = text.partition("@")
        if point not in POINTS or not at.isdigit() or int(at) < 1:
            raise ValueError(f"CC_FAILPOINT {text!r} must be <point>@<n>, a point of {', '.join(POINTS)}")
        return cls(point, int(at))

    def reach(self, point: str) -> None:
        if point != self.point:
            return
        with self._lock:
            self._reached += 1
            if self._reached != self.at:
                return
        log.warning("failpoint %s@%d reached: killing this process", self.point, self.at)
        os.kill(os.getpid(), signal.SIGKILL)
