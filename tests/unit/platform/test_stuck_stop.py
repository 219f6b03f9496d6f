"""A stop that outlasts its grace period ends the process anyway, saying where every thread was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.platform.process import EXIT_STUCK

ROOT = Path(__file__).resolve().parents[3]
STUCK = """
import logging, threading
from services.platform.process import _end_hard_after
logging.basicConfig()
_end_hard_after(0.2, logging.getLogger("services.test"))
threading.Event().wait()  # a close that never returns
"""


def test_a_stop_stuck_past_its_bound_ends_the_process_with_every_threads_stack() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")])}
    done = subprocess.run(
        [sys.executable, "-c", STUCK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == EXIT_STUCK, done.stderr
    assert "the stop took more than 0 s; ending the process" in done.stderr
    assert 'File "<string>", line 6 in <module>' in done.stderr, "the stuck main thread's stack"
