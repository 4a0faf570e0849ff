"""A `logstream run` process for tests: started, and waited for until /health answers."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


def start_run(
    config: Path,
    monitor_port: int,
    cwd: Path,
    *,
    stderr: int = subprocess.PIPE,
    log: Callable[[], str] | None = None,
    timeout_secs: float = 60.0,
) -> subprocess.Popen[str]:
    """``python -m logstream run -c config``, returned once its monitor answers.
    Raises AssertionError with its stderr (or ``log()``) when it exits first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        cwd=cwd,
    )
    wait_healthy(proc, monitor_port, log, timeout_secs)
    return proc


def wait_healthy(
    proc: subprocess.Popen[str],
    monitor_port: int,
    log: Callable[[], str] | None = None,
    timeout_secs: float = 60.0,
) -> None:
    deadline = time.monotonic() + timeout_secs
    while True:
        if proc.poll() is not None:
            said = log() if log is not None else proc.communicate()[1]
            raise AssertionError(f"logstream exited ({proc.returncode}): {said}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/health", timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("logstream did not come up") from None
            time.sleep(0.1)
