"""`logstream top --once` against a real running pipeline: the counts it prints are right."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from logstream.top import frame, parse
from tests.support.running import RunningLogstream, logstream_process

__all__ = ["logstream_process"]  # the fixture, imported for this module

pytestmark = pytest.mark.integration
PASSWORD = "top-Pa55-word"  # noqa: S105 - a test credential


def top(
    running: RunningLogstream, *args: str, password: str | None = PASSWORD
) -> tuple[int, str, str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("LOGSTREAM_MONITOR_PASSWORD", None)
    if password is not None:
        env["LOGSTREAM_MONITOR_PASSWORD"] = password
    done = subprocess.run(
        [sys.executable, "-m", "logstream", "top", "--url", running.monitor, *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def row(text: str, unit: str) -> list[str]:
    """The cells of ``unit``'s row in a rich table (split on its column bars)."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line)]
        cells = [cell for cell in cells if cell != ""]
        if cells and cells[0] == unit:
            return cells
    raise AssertionError(f"no row for {unit} in:\n{text}")


def wait_out(running: RunningLogstream, unit: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        units = parse(running.get("/metrics", "ops", PASSWORD).decode(), 0).units
        if unit in units and units[unit].events_out >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{unit} did not deliver {count} events")


def test_top_once_prints_the_counts(
    logstream_process: Callable[..., RunningLogstream], tmp_path: Path
) -> None:
    running = logstream_process({
        "filters": [{"type": "drop", "if": 'level == "DEBUG"'}],
        "sinks": [
            {"type": "file", "path": str(tmp_path / "events.ndjson")},
            {"type": "mqtt", "url": "local", "topic": "logs/{level}", "encoding": "lz4",
             "rate_limit": {"topic_bytes_per_sec": 50000, "total_bytes_per_sec": 200000}},
        ],
        "monitor": {"username": "ops", "password": PASSWORD},
    })  # fmt: skip
    events: list[dict[str, Any]] = [
        {"message": f"event {n}", "level": "DEBUG" if n % 5 == 0 else "INFO"} for n in range(50)
    ]
    running.send(events)
    wait_out(running, "file", 40)
    wait_out(running, "mqtt", 40)

    code, out, err = top(running, "--once", "--interval", "0.5", "--user", "ops")
    assert code == 0, err
    assert PASSWORD not in out + err
    tcp = row(out, "tcp")
    assert tcp[1:6] == ["input", "0.0", "0.0", "50", "0"]  # nothing new in the last 0.5 s
    drop = row(out, "drop")
    assert drop[1] == "filter" and drop[4:6] == ["50", "40"]
    assert "filtered 10" in drop[6]
    file_sink = row(out, "file")
    assert file_sink[1] == "sink" and file_sink[4:6] == ["40", "40"]
    mqtt = row(out, "mqtt")
    assert mqtt[4:6] == ["40", "40"]
    assert "each topic 48.8 KiB/s; total 195.3 KiB/s" in mqtt[-1]

    # Rates: the difference of two real scrapes over the time between them (the times
    # given, so the check does not depend on how fast this machine runs).
    before = running.get("/metrics", "ops", PASSWORD).decode()
    running.send([{"message": f"more {n}", "level": "INFO"} for n in range(100)])
    wait_out(running, "file", 140)
    after = running.get("/metrics", "ops", PASSWORD).decode()
    console = Console(file=io.StringIO(), width=200)
    console.print(frame(parse(after, 12.0), parse(before, 10.0), "test"))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert row(out, "tcp")[2:6] == ["50.0", "0.0", "150", "0"]
    assert row(out, "file")[2:6] == ["50.0", "50.0", "140", "140"]
    assert "rates over the last 2.0 s" in out


def test_top_says_what_is_wrong(logstream_process: Callable[..., RunningLogstream]) -> None:
    running = logstream_process({"sinks": [{"type": "stdout"}],
                                 "monitor": {"username": "ops", "password": PASSWORD}})  # fmt: skip
    code, _, err = top(running, "--once", password=None)
    assert code == 1 and "wants credentials (401)" in err and "LOGSTREAM_MONITOR_PASSWORD" in err
    code, _, err = top(running, "--once", "--user", "ops", password="wrong")  # noqa: S106
    assert code == 1 and "wrong user or password" in err
    assert "wrong" not in err.replace("wrong user", "")
    refused = subprocess.run(
        [sys.executable, "-m", "logstream", "top", "--once", "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "cannot read http://127.0.0.1:9/metrics" in refused.stderr
