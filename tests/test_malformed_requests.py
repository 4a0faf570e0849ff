"""Malformed HTTP requests are counted and logged once per interval (issue 14, item 9).

Garbage sent over raw sockets to a real `logstream run`'s http input and to its
monitor: every one is answered 400 and counted
(``logstream_requests_refused_total{status="400"}`` and
``logstream_protocol_errors_total{reason="malformed_request"}``), the log gets
one line per unit per interval (not a traceback per request), and good
requests keep working in between.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from logstream.local.mosquitto import free_port
from logstream.requestlog import ThrottledLog
from tests.support.process import start_run

pytestmark = pytest.mark.integration

GARBAGE = [
    b"GARBAGE\r\n\r\n",  # not a request line
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello on a plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",  # no Host
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
    b"POST / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
]


def send_raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def metric(text: str, name: str, unit: str, **labels: str) -> float:
    total = 0.0
    for match in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if found.get("unit") == unit and all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_garbage_is_counted_and_logged_once_per_interval(tmp_path: Path) -> None:
    http, monitor = free_port(), free_port()
    out = tmp_path / "events.ndjson"
    path = tmp_path / "logstream.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inputs": [{"type": "http", "listen": f"127.0.0.1:{http}"}],
                "sinks": [{"type": "file", "path": str(out), "batch_max_delay_secs": 0}],
                "monitor": {"listen": f"127.0.0.1:{monitor}"},
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    proc = start_run(path, monitor, tmp_path)
    try:
        rounds = 30
        started = time.monotonic()
        for n in range(rounds):
            for payload in GARBAGE:
                for port in (http, monitor):
                    assert send_raw(port, payload).startswith(b"HTTP/1.0 400 "), payload
            good = urllib.request.Request(
                f"http://127.0.0.1:{http}/",
                data=json.dumps({"message": f"good {n}"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert urllib.request.urlopen(good, timeout=10).status == 200  # noqa: S310
        sent_in = time.monotonic() - started
        text = urllib.request.urlopen(f"http://127.0.0.1:{monitor}/metrics", timeout=5).read()
        metrics = text.decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    bad = rounds * len(GARBAGE)
    for unit in ("http", "monitor"):
        assert metric(metrics, "logstream_requests_refused_total", unit, status="400") == bad
        assert (
            metric(metrics, "logstream_protocol_errors_total", unit, reason="malformed_request")
            == bad
        )
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "malformed HTTP request" in line]
    http_lines = [line for line in lines if "http input http:" in line]
    monitor_lines = [line for line in lines if "monitor:" in line]
    # One line when the first came, then (the run took less than the 10 s interval,
    # or a few intervals on a slow machine) one per interval, and one at stop.
    allowed = 2 + int(sent_in // 10)
    assert 1 <= len(http_lines) <= allowed, lines
    assert 1 <= len(monitor_lines) <= allowed, lines
    told = sum(
        int(m.group(1)) if (m := re.search(r"\((\d+) such since", line)) else 1
        for line in http_lines
    )
    assert told == bad  # every malformed request is in some line's count
    assert len(out.read_bytes().splitlines()) == rounds  # the good ones all arrived


def test_throttled_log_writes_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    throttled = ThrottledLog(logging.getLogger("test.throttle"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert throttled.note("bad 1")
        for n in range(2, 50):
            now[0] += 0.1
            assert not throttled.note(f"bad {n}")
        now[0] = 110.1
        assert throttled.note("bad 50")
        throttled.note("bad 51")
        throttled.flush()
        throttled.flush()  # nothing untold: no line
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "bad 1",
        "bad 50 (49 such since the last line)",
        "bad 51",
    ]
    assert throttled.lines == 3
