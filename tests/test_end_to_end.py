"""`logstream run` as users run it: a real process, real clients, real servers.

python-logstash handlers (both schema versions, TCP and UDP) send to the
pipeline; events must show up in Elasticsearch (noida-db), on MQTT topics
(mosquitto) and in the file sink. With the MQTT side broken in the ways that
hurt the system logstream replaces, Elasticsearch and the file still get
everything and the MQTT drops are counted.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import logstash
import orjson
import pytest
import yaml

from logstream.local.mosquitto import free_port
from tests.support.elasticsearch import es_count, es_docs

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


class Running:
    """A `logstream run` process and ways to look at it."""

    def __init__(self, proc: subprocess.Popen[str], monitor: str, tcp: int, udp: int) -> None:
        self.proc = proc
        self.monitor = monitor
        self.tcp_port = tcp
        self.udp_port = udp

    def metrics(self) -> dict[tuple[str, str, str], float]:
        """(metric, unit, reason) -> value, from /metrics."""
        text = urllib.request.urlopen(f"{self.monitor}/metrics", timeout=5).read().decode()  # noqa: S310
        values: dict[tuple[str, str, str], float] = {}
        for match in re.finditer(r"^(\w+)\{([^}]*)\} (\S+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            key = (match.group(1), labels.get("unit", ""), labels.get("reason", ""))
            values[key] = float(match.group(3))
        return values

    def wait_for(self, metric: str, unit: str, at_least: float, timeout: float = 20) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = sum(v for (m, u, _), v in self.metrics().items() if m == metric and u == unit)
            if value >= at_least:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{metric}{{unit={unit}}} = {value}, wanted >= {at_least}")

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


@pytest.fixture
def run_logstream(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(sinks: list[dict[str, Any]], **extra: Any) -> Running:
        tcp, udp, monitor = free_port(), free_port(), free_port()
        config = {
            "inputs": [
                {"type": "tcp", "listen": f"127.0.0.1:{tcp}"},
                {"type": "udp", "listen": f"127.0.0.1:{udp}"},
            ],
            "sinks": sinks,
            "monitor": {"listen": f"127.0.0.1:{monitor}"},
            "state_dir": str(tmp_path / "state"),
            **extra,
        }
        path = tmp_path / "logstream.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "logstream", "run", "-c", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        running = Running(proc, f"http://127.0.0.1:{monitor}", tcp, udp)
        started.append(running)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"logstream exited: {proc.communicate()[1]}")
            try:
                urllib.request.urlopen(f"{running.monitor}/health", timeout=1)  # noqa: S310
                return running
            except OSError:
                time.sleep(0.1)
        raise AssertionError("logstream did not come up")

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.communicate()


def python_logstash_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"e2e-{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def send_with_every_python_logstash_handler(running: Running, count: int) -> list[str]:
    """``count`` events through each of TCP v0, TCP v1, UDP v0, UDP v1; their messages."""
    sent = []
    for transport in ("TCP", "UDP"):
        for version in (0, 1):
            cls = logstash.TCPLogstashHandler if transport == "TCP" else logstash.UDPLogstashHandler
            port = running.tcp_port if transport == "TCP" else running.udp_port
            handler = cls("127.0.0.1", port, version=version)
            logger = python_logstash_logger(handler)
            for n in range(count):
                message = f"{transport} v{version} event {n}"
                logger.warning(message, extra={"request_id": f"req-{n}"})
                sent.append(message)
                if transport == "UDP" and n % 50 == 49:
                    time.sleep(0.01)  # let the UDP socket breathe; loss there is not ours
            handler.close()
    return sent


def test_python_logstash_events_reach_elasticsearch_mqtt_and_file(
    run_logstream: Callable[..., Running],
    elasticsearch_url: str,
    es_index_prefix: str,
    mosquitto: Any,
    mqtt_subscriber: Callable[..., Any],
    mqtt_topic_root: str,
    tmp_path: Path,
) -> None:
    subscriber = mqtt_subscriber(mosquitto.url, f"{mqtt_topic_root}/#")
    out = tmp_path / "events.ndjson"
    running = run_logstream(
        [
            {
                "type": "elasticsearch",
                "hosts": [elasticsearch_url],
                "index": f"{es_index_prefix}-%{{+YYYY.MM.dd}}",
            },
            {
                "type": "mqtt",
                "url": mosquitto.url,
                "topic": f"{mqtt_topic_root}/{{host}}/{{level}}",
                "qos": 1,
            },
            {"type": "file", "path": str(out)},
        ]
    )
    sent = send_with_every_python_logstash_handler(running, 100)
    running.wait_for("logstream_events_out_total", "elasticsearch", len(sent))
    messages = subscriber.wait_for(len(sent), timeout_secs=20)
    code, _, err = running.stop()
    assert code == 0, err

    docs = es_docs(elasticsearch_url, f"{es_index_prefix}*", size=1000)
    assert sorted(doc["message"] for doc in docs) == sorted(sent)
    assert es_count(elasticsearch_url, f"{es_index_prefix}*") == len(sent)
    for doc in docs:  # both schema versions normalised to the flat form
        assert doc["level"] == "WARNING"
        assert doc["request_id"].startswith("req-")
        assert doc["host"]
        assert "@fields" not in doc and "@message" not in doc
    assert sorted(m.json()["message"] for m in messages) == sorted(sent)
    assert {m.topic.rsplit("/", 1)[1] for m in messages} == {"WARNING"}
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(line["message"] for line in lines) == sorted(sent)


@pytest.mark.parametrize("failure", ["broker_stopped", "black_hole", "stalled_broker"])
def test_a_broken_mqtt_side_never_holds_back_elasticsearch_or_the_file(
    failure: str,
    run_logstream: Callable[..., Running],
    elasticsearch_url: str,
    es_index_prefix: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    if failure == "broker_stopped":
        broker = request.getfixturevalue("local_mosquitto")
        url = broker.url
        broker.stop()
    else:
        url = request.getfixturevalue(failure).url
    out = tmp_path / "events.ndjson"
    running = run_logstream(
        [
            {
                "type": "elasticsearch",
                "hosts": [elasticsearch_url],
                "index": f"{es_index_prefix}-x",
            },
            {
                "type": "mqtt",
                "url": url,
                "topic": "logs/{host}",
                "connect_wait_secs": 0.5,
                "max_outstanding_messages": 100,
                "buffer_max_events": 500,
            },
            {"type": "file", "path": str(out)},
        ]
    )
    sender = logstash.TCPLogstashHandler("127.0.0.1", running.tcp_port, version=1)
    logger = python_logstash_logger(sender)
    total = 3000
    payload = "x" * 400  # enough bytes to fill a stalled broker's socket buffers
    for n in range(total):
        logger.info("event %d %s", n, payload)
    sender.close()
    running.wait_for("logstream_events_out_total", "elasticsearch", total, timeout=60)
    running.wait_for("logstream_events_out_total", "file", total)
    values = running.metrics()
    mqtt_out = values.get(("logstream_events_out_total", "mqtt", ""), 0)
    mqtt_dropped = sum(
        v
        for (m, u, _), v in values.items()
        if m == "logstream_events_dropped_total" and u == "mqtt"
    )
    assert mqtt_dropped > 0
    code, _, err = running.stop()
    assert es_count(elasticsearch_url, f"{es_index_prefix}*") == total
    assert len(out.read_bytes().splitlines()) == total
    assert mqtt_out < total
    assert code in (0, 1), err  # 1: MQTT events still pending at shutdown were reported


def test_sinks_named_local_get_servers_that_logstream_starts_itself(
    run_logstream: Callable[..., Running],
    mqtt_subscriber: Callable[..., Any],
    tmp_path: Path,
) -> None:
    if os.environ.get("LOGSTREAM_TEST_ES_URL") or os.environ.get("LOGSTREAM_TEST_MQTT_URL"):
        pytest.skip("external servers requested; this test starts local ones on purpose")
    running = run_logstream(
        [
            {"type": "elasticsearch", "hosts": ["local"]},
            {"type": "mqtt", "url": "local", "topic": "logs/{host}/{level}", "qos": 1},
        ]
    )
    banner = ""
    deadline = time.monotonic() + 10
    assert running.proc.stdout is not None
    while "Stop with" not in banner and time.monotonic() < deadline:
        banner += running.proc.stdout.readline()
    es_url = re.search(r"Elasticsearch\s+(http://\S+) \(local noida-db\)", banner)
    mqtt_url = re.search(r"MQTT\s+(mqtt://\S+) \(local mosquitto\)", banner)
    assert es_url and mqtt_url, banner
    subscriber = mqtt_subscriber(mqtt_url.group(1), "logs/#")
    handler = logstash.TCPLogstashHandler("127.0.0.1", running.tcp_port, version=1)
    logger = python_logstash_logger(handler)
    for n in range(20):
        logger.error("local event %d", n)
    handler.close()
    running.wait_for("logstream_events_out_total", "elasticsearch", 20)
    assert len(subscriber.wait_for(20, timeout_secs=10)) == 20
    assert es_count(es_url.group(1), "logstash-*") == 20
    code, _, err = running.stop()
    assert code == 0, err
    # The local servers are stopped with logstream.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(es_url.group(1), timeout=2)  # noqa: S310


def test_sigterm_flushes_every_buffered_event_before_exiting(
    run_logstream: Callable[..., Running], tmp_path: Path
) -> None:
    out = tmp_path / "events.ndjson"
    running = run_logstream(
        [
            {
                "type": "file",
                "path": str(out),
                "batch_max_delay_secs": 30,
                "batch_max_events": 100000,
            },
        ]
    )
    handler = logstash.TCPLogstashHandler("127.0.0.1", running.tcp_port, version=1)
    logger = python_logstash_logger(handler)
    for n in range(500):
        logger.info("held %d", n)
    handler.close()
    running.wait_for("logstream_events_in_total", "file", 500)
    assert not out.exists() or out.stat().st_size == 0  # still waiting for its 30 s batch
    code, _, err = running.stop()
    assert code == 0, err
    assert len(out.read_bytes().splitlines()) == 500
    assert "every event flushed" in err
