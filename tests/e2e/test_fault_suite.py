"""The fault suite's fast scenarios (``load-tests/chaos.py --fast``), as CI runs them: each against a
system of its own (broker, ClickHouse stand-in and services as processes), with no fact lost,
doubled or misrecorded. ``make chaos`` runs them all; this runs the fast ones and shows the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.platform.settings import PROJECT_ROOT

SUITE_TIMEOUT_S = 40 * 60


@pytest.mark.timeout(SUITE_TIMEOUT_S + 60)
def test_the_fast_fault_scenarios_lose_double_and_misrecord_nothing(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "load-tests" / "chaos.py"), "--fast", "--root", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_S,
        check=False,
    )
    table = finished.stdout[finished.stdout.find("fault suite") :]
    print(finished.stdout)
    assert finished.returncode == 0, f"{table}\n{finished.stderr[-4000:]}"
