"""`pipeline.workers: N`: N worker processes behind one listening address.

Each test runs `logstream run` as a user would and talks to it over real
sockets: events sent once arrive once, /metrics shows the sums, a killed worker
comes back, and files are read once whatever the number of workers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logstream.config import ConfigError, parse_config
from logstream.local.mosquitto import free_port
from tests.support.running import LogstreamProcess

pytestmark = pytest.mark.integration


def base_config(tmp_path: Path, workers: int | str, **extra: Any) -> dict[str, Any]:
    port = free_port()
    return {
        "state_dir": str(tmp_path / "state"),
        "pipeline": {"workers": workers},
        "monitor": {"listen": f"127.0.0.1:{free_port()}"},
        "inputs": [
            {"type": "tcp", "listen": f"127.0.0.1:{port}"},
            {"type": "udp", "listen": f"127.0.0.1:{port}"},
            {"type": "http", "listen": f"127.0.0.1:{free_port()}"},
        ],
        "sinks": [{"type": "file", "path": str(tmp_path / "out" / "events-{worker}.ndjson")}],
        **extra,
    }


def tcp_port(config: dict[str, Any]) -> int:
    return int(config["inputs"][0]["listen"].rsplit(":", 1)[1])


def send_tcp(port: int, connections: int, per_connection: int, tag: str) -> list[str]:
    sent = []
    for c in range(connections):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            lines = [f"{tag}-c{c}-n{n}" for n in range(per_connection)]
            sock.sendall(b"".join(json.dumps({"message": m}).encode() + b"\n" for m in lines))
            sent += lines
    return sent


def delivered(tmp_path: Path, pattern: str = "out/events-*.ndjson") -> Counter[str]:
    found: Counter[str] = Counter()
    for path in tmp_path.glob(pattern):
        for line in path.read_text().splitlines():
            found[json.loads(line)["message"]] += 1
    return found


def test_two_workers_share_each_port_and_deliver_every_event_once(
    tmp_path: Path, logstream_run: Callable[..., LogstreamProcess]
) -> None:
    config = base_config(tmp_path, 2)
    running = logstream_run(config)
    health = running.health()
    assert health["status"] == "ok"
    assert [w["worker"] for w in health["workers"]] == [0, 1]
    assert all(w["up"] and w["pid"] for w in health["workers"])
    port = tcp_port(config)
    sent = send_tcp(port, connections=16, per_connection=500, tag="tcp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for n in range(300):
            message = f"udp-{n}"
            udp.sendto(json.dumps({"message": message}).encode(), ("127.0.0.1", port))
            sent.append(message)
            if n % 50 == 49:
                time.sleep(0.01)
    http = config["inputs"][2]["listen"]
    for n in range(20):
        body = json.dumps({"message": f"http-{n}"}).encode()
        request = urllib.request.Request(f"http://{http}/", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            assert answer.status == 200
        sent.append(f"http-{n}")
    total = len(sent)
    running.wait_value("logstream_events_out_total", total, unit="file")
    assert running.value("logstream_events_in_total", unit="tcp") == 8000
    assert running.value("logstream_events_in_total", unit="http") == 20
    per_worker = [running.value("logstream_worker_events_in_total", worker=str(w)) for w in (0, 1)]
    assert sum(per_worker) == total
    code, out, log = running.stop()
    assert code == 0, log[-2000:]
    found = delivered(tmp_path)
    assert set(found) == set(sent)
    assert max(found.values()) == 1, "an event was written twice"
    # The kernel spread 16 connections over both workers (each file has some).
    sizes = [len(p.read_text().splitlines()) for p in sorted((tmp_path / "out").glob("*.ndjson"))]
    assert len(sizes) == 2 and min(sizes) > 0, sizes
    assert "2 worker processes" in out
    assert "events-{worker}.ndjson" in out  # the banner shows the path as configured
    assert "final counters (every worker)" in log
    assert "shutdown complete" in log


def test_a_killed_worker_is_restarted_and_counters_never_go_backwards(
    tmp_path: Path, logstream_run: Callable[..., LogstreamProcess]
) -> None:
    config = base_config(tmp_path, 2)
    running = logstream_run(config)
    port = tcp_port(config)
    first = send_tcp(port, connections=8, per_connection=250, tag="before")
    running.wait_value("logstream_events_out_total", len(first), unit="file")
    before = running.value("logstream_events_in_total", unit="tcp")
    victim = running.health()["workers"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    restarted_in = None
    while time.monotonic() - killed_at < 10:
        # Scraped while the worker is down and again once it is back: never lower.
        assert running.value("logstream_events_in_total", unit="tcp") >= before
        worker = running.health()["workers"][1]
        if worker["up"] and worker["pid"] != victim:
            restarted_in = time.monotonic() - killed_at
            break
        time.sleep(0.05)
    assert restarted_in is not None, "worker 1 did not come back"
    assert restarted_in < 3.0  # restart within 2 s, plus the start of a Python process
    assert running.value("logstream_worker_restarts_total", worker="1") == 1
    assert running.value("logstream_worker_restarts_total", worker="0") == 0
    assert running.health()["workers"][1]["last_exit"] == "killed by SIGKILL"
    second = send_tcp(port, connections=8, per_connection=250, tag="after")
    running.wait_value("logstream_events_out_total", len(first) + len(second), unit="file")
    assert running.value("logstream_events_in_total", unit="tcp") >= before + len(second)
    code, _, log = running.stop()
    assert code == 0, log[-2000:]
    assert "killed by SIGKILL" in log
    found = delivered(tmp_path)
    assert set(found) == set(first) | set(second)
    assert max(found.values()) == 1


def write_lines(directory: Path, files: int, lines: int, tag: str) -> list[str]:
    written = []
    for f in range(files):
        with open(directory / f"app-{f}.log", "a") as out:
            for n in range(lines):
                line = f"{tag} file {f} line {n}"
                out.write(line + "\n")
                written.append(line)
    return written


def test_the_file_input_reads_each_line_once_whatever_the_number_of_workers(
    tmp_path: Path, logstream_run: Callable[..., LogstreamProcess]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    written: list[str] = []
    for run, workers in enumerate((2, 3, 1, 2)):
        written += write_lines(logs, files=9, lines=50, tag=f"run{run}")
        config = {
            "state_dir": str(tmp_path / "state"),
            "pipeline": {"workers": workers},
            "monitor": {"listen": f"127.0.0.1:{free_port()}"},
            "inputs": [
                {
                    "type": "file",
                    "paths": [str(logs / "*.log")],
                    "start_position": "beginning",
                    "discover_interval_secs": 0.2,
                }
            ],
            "sinks": [
                {"type": "file", "path": str(tmp_path / f"run{run}" / "out-{worker}.ndjson")}
            ],
        }
        running = logstream_run(config, name=f"run{run}")
        new = 9 * 50
        running.wait_value("logstream_events_out_total", new, unit="file_sink")
        time.sleep(0.5)  # nothing more should come: a line read twice would show here
        code, _, log = running.stop()
        assert code == 0, log[-2000:]
        found = delivered(tmp_path, f"run{run}/*.ndjson")
        assert max(found.values()) == 1
        assert set(found) == {line for line in written if line.startswith(f"run{run} ")}, run
    everything = Counter[str]()
    for run in range(4):
        everything += delivered(tmp_path, f"run{run}/*.ndjson")
    assert set(everything) == set(written) and max(everything.values()) == 1


@pytest.mark.parametrize(
    ("workers", "extra", "message"),
    [
        (0, {}, "pipeline.workers"),
        ("many", {}, "pipeline.workers"),
        (2, {"port": 0}, "port 0"),
        (2, {"path": "one-file.ndjson"}, "{worker}"),
    ],
)
def test_a_bad_workers_setting_fails_before_any_worker_starts(
    tmp_path: Path, workers: Any, extra: dict[str, Any], message: str
) -> None:
    config = base_config(tmp_path, workers)
    if "port" in extra:
        config["inputs"][0]["listen"] = "127.0.0.1:0"
    if "path" in extra:
        config["sinks"][0]["path"] = extra["path"]
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_config(config)
    process = LogstreamProcess(config, tmp_path)
    process.proc.wait(timeout=60)
    code, _, log = process.stop()
    assert code == 2
    assert "invalid configuration" in log and message in log
    assert not (tmp_path / "state" / "workers").exists()
