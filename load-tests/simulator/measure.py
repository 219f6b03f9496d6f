"""What a load test measures apart from the system: CPU of processes, and percentiles of delays."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], share: float) -> float:
    """The value below which ``share`` of the values fall (nearest rank); NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class CpuShares:
    """Each named process's CPU over a stretch of wall time, as a share of one core."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._started = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in self._pids.items()}

    def shares(self) -> dict[str, float]:
        """Since this was made."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self._pids.items()}
        return {name: max(0.0, seconds) / elapsed for name, seconds in used.items()}


def describe(shares: Mapping[str, float]) -> str:
    return " ".join(f"{name} {share:.0%}" for name, share in shares.items()) or "-"
