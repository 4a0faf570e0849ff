"""Local servers end with logstream, and one run per state directory (issue 14, item 7).

A real `logstream run` with ``hosts: [local]`` starts noida-db; after SIGTERM
(and after ``kill -9`` of logstream) no noida-db process of its state directory
may be left. A second run on the same state directory says so in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from logstream.local.mosquitto import free_port
from logstream.statelock import StateDirBusy, state_lock
from tests.support.process import start_run

pytestmark = pytest.mark.integration


def processes_with(text: str) -> list[int]:
    """Live pids whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_gone(text: str, timeout_secs: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_secs
    while (left := processes_with(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Run:
    def __init__(self, tmp_path: Path, sinks: list[dict[str, object]]) -> None:
        self.state = tmp_path / "state"
        self.monitor = free_port()
        self.path = tmp_path / "logstream.yaml"
        self.path.write_text(
            yaml.safe_dump(
                {
                    "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
                    "sinks": sinks,
                    "monitor": {"listen": f"127.0.0.1:{self.monitor}"},
                    "state_dir": str(self.state),
                }
            )
        )
        self.cwd = tmp_path
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        self.proc = start_run(self.path, self.monitor, self.cwd, stderr=subprocess.DEVNULL)
        return self.proc


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc is not None and run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()
    for pid in processes_with(str(tmp_path / "state")):  # never leave a server behind
        os.kill(pid, signal.SIGKILL)


def local_es_run(tmp_path: Path, runs: list[Run]) -> Run:
    run = Run(tmp_path, [{"type": "elasticsearch", "hosts": ["local"]}])
    runs.append(run)
    run.start()
    return run


def test_sigterm_stops_the_noida_db_server_process_itself(tmp_path: Path, runs: list[Run]) -> None:
    run = local_es_run(tmp_path, runs)
    data_dir = str(run.state / "noida-db")
    servers = processes_with(data_dir)
    assert servers, "no noida-db process found for this run"
    assert run.proc is not None
    run.proc.send_signal(signal.SIGTERM)
    run.proc.communicate(timeout=60)
    assert wait_gone(data_dir, 1.0) == [], "noida-db outlived logstream"


def test_kill_9_of_logstream_still_ends_its_noida_db(tmp_path: Path, runs: list[Run]) -> None:
    run = local_es_run(tmp_path, runs)
    data_dir = str(run.state / "noida-db")
    assert processes_with(data_dir)
    assert run.proc is not None
    run.proc.kill()
    run.proc.communicate(timeout=30)
    assert wait_gone(data_dir) == [], "noida-db outlived a killed logstream"


def test_a_second_run_on_the_same_state_dir_prints_one_line(
    tmp_path: Path, runs: list[Run]
) -> None:
    first = Run(tmp_path, [{"type": "stdout"}])
    runs.append(first)
    first.start()
    assert first.proc is not None
    second = subprocess.run(
        [sys.executable, "-m", "logstream", "run", "-c", str(first.path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert lines == [
        f"logstream: another logstream run is using {first.state} (pid {first.proc.pid})"
    ], second.stderr
    assert first.proc.poll() is None  # the first run is not disturbed


def test_the_lock_is_released_however_the_holder_ends(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from logstream.statelock import state_lock\n"
            f"with state_lock(Path({str(state)!r})):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StateDirBusy) as caught, state_lock(state):
        pass
    assert caught.value.pid == holder.pid
    holder.kill()
    holder.wait()
    with state_lock(state) as path:  # kill -9 released it; the stale file is no obstacle
        assert path.read_text().strip() == str(os.getpid())
