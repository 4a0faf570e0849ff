"""`pipeline.workers: N`: N worker processes behind one listening address.

Each test runs `logstream run` as a user would and talks to it over real
sockets: events sent once arrive once, /metrics shows the sums, a killed worker
comes back, and files are read once whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from logstream.config import ConfigError, parse_config
from logstream.local.mosquitto import free_port
from logstream.payload import decode, is_accounting
from tests.support.elasticsearch import es_count, es_docs
from tests.support.mqtt import Subscriber, arrival_stamps, draining
from tests.support.workers_run import LogstreamProcess
from tests.test_budget import windows

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
        (2, {"monitor_port": 0}, "monitor.listen: every worker serves"),
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
    if "monitor_port" in extra:
        config["monitor"] = {"listen": "127.0.0.1:0"}
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_config(config)
    process = LogstreamProcess(config, tmp_path)
    process.proc.wait(timeout=60)
    code, _, log = process.stop()
    assert code == 2
    assert "invalid configuration" in log and message in log
    assert not (tmp_path / "state" / "workers").exists()


# --------------------------------------------------------------------------- faults and outputs


def test_a_worker_killed_mid_stream_loses_no_beats_event_it_acknowledged(
    tmp_path: Path,
    logstream_run: Callable[..., LogstreamProcess],
    elasticsearch_url: str,
    es_index_prefix: str,
) -> None:
    """Six Filebeat-like clients (windows re-sent until ACKed, as Filebeat does) into two
    workers with a spooled Elasticsearch sink; one worker is SIGKILLed mid-stream.
    Every acknowledged event ends up in Elasticsearch exactly once (ids from the source
    position fold re-sent windows)."""
    from pylogbeat import ConnectionException, PyLogBeatClient

    index = f"{es_index_prefix}workers-beats"
    port = free_port()
    config = {
        "state_dir": str(tmp_path / "state"),
        "pipeline": {"workers": 2},
        "monitor": {"listen": f"127.0.0.1:{free_port()}"},
        "inputs": [{"type": "beats", "listen": f"127.0.0.1:{port}"}],
        "sinks": [
            {
                "type": "elasticsearch",
                "hosts": [elasticsearch_url],
                "index": index,
                "retry_initial_secs": 0.05,
                "spool": {"enabled": True},
            }
        ],
    }
    running = logstream_run(config)
    clients, windows, size = 6, 8, 200  # 9,600: one _search page
    acked: list[set[int]] = [set() for _ in range(clients)]
    resent = [0] * clients

    def beat(client: int, n: int) -> dict[str, Any]:
        return {
            "@timestamp": "2026-12-05T10:00:00.000Z",
            "log": {"file": {"path": f"/var/log/app-{client}.log"}, "offset": n * 20},
            "host": {"name": "web-1"},
            "message": f"client {client} line {n}",
            "seq": client * 100_000 + n,
        }

    def ship(client: int) -> None:
        window = 0
        connection: Any = None
        while window < windows:
            batch = [beat(client, window * size + i) for i in range(size)]
            try:
                if connection is None:
                    connection = PyLogBeatClient("127.0.0.1", port, timeout=10)
                    connection.connect()
                connection.send(batch)  # returns once the window is ACKed
            except (OSError, ConnectionException, ValueError):
                resent[client] += 1
                with contextlib.suppress(Exception):
                    connection.close()
                connection = None
                time.sleep(0.05)
                continue
            acked[client].update(event["seq"] for event in batch)
            window += 1
            time.sleep(0.02)
        connection.close()

    threads = [threading.Thread(target=ship, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.6)
    os.kill(running.health()["workers"][1]["pid"], signal.SIGKILL)
    for thread in threads:
        thread.join(120)
    total = clients * windows * size
    assert sum(len(a) for a in acked) == total
    # Counted by the server, not by /metrics: a SIGKILLed worker's last second of
    # counts dies with it (the counters only never go backwards).
    deadline = time.monotonic() + 60
    while es_count(elasticsearch_url, index) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    # /metrics shows what the supervisor last wrote (each second at most 1 s old).
    assert running.wait_value("logstream_worker_restarts_total", 1, timeout=10, worker="1") == 1
    code, _, log = running.stop()
    assert code == 0, log[-3000:]
    indexed = sorted(doc["seq"] for doc in es_docs(elasticsearch_url, index, size=10_000))
    assert indexed == sorted(seq for a in acked for seq in a)


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto_sub is not installed")
@pytest.mark.parametrize("budget", ["host", "redis"])
def test_two_workers_keep_the_host_wide_mqtt_cap_as_the_broker_delivers_it(
    tmp_path: Path,
    logstream_run: Callable[..., LogstreamProcess],
    mosquitto: Any,
    mqtt_topic_root: str,
    budget: str,
    request: pytest.FixtureRequest,
) -> None:
    """Two workers each offered more than the host's MQTT byte cap: the bytes the broker
    delivers in every 1-second window stay within cap + 2% and the cap is used, and
    every WARNING+ event arrives. The cap's budget is the host's file, or a budget in
    Redis (``rate_limit.shared``) that the workers draw from like separate instances."""
    cap = 100_000
    topic = f"{mqtt_topic_root}/capped"
    config = base_config(tmp_path, 2)
    config["inputs"] = config["inputs"][:1]
    config["sinks"] = [
        {
            "type": "mqtt",
            "url": mosquitto.url,
            "topic": topic,
            "encoding": "lz4",
            "protocol": "3.1.1",
            "client_id": "capped-{worker}",
            "rate_limit": {"total_bytes_per_sec": cap, "accounting_interval_secs": 2},
        }
    ]
    if budget == "redis":
        redis_server = request.getfixturevalue("redis_server")
        config["sinks"][0]["rate_limit"]["shared"] = {
            "redis": redis_server.url,
            "key": f"workers-{mqtt_topic_root}",
        }
    host, port = urlsplit(mosquitto.url).hostname, urlsplit(mosquitto.url).port
    receiver = subprocess.Popen(
        [
            *("mosquitto_sub", "-h", str(host), "-p", str(port), "-V", "311", "-t", topic),
            *("-F", "%U %l", "-W", "60"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    collect = draining(receiver)
    subscriber = Subscriber(mosquitto.url, topic, protocol="3.1.1")
    running = logstream_run(config)
    levels = ["DEBUG"] * 60 + ["INFO"] * 35 + ["WARNING"] * 4 + ["ERROR"]
    important: set[int] = set()

    def offer(connection: int) -> None:
        # 1,250 events/s per connection for 7 s: about twice the cap after lz4, while
        # the WARNING+ events alone (5%, in small poorly compressed payloads) fit in it.
        with socket.create_connection(("127.0.0.1", tcp_port(config))) as sock:
            started = time.monotonic()
            for tick in range(70):
                chunk = []
                for i in range(125):
                    n = connection * 1_000_000 + tick * 125 + i
                    level = levels[(n * 37) % 100]
                    chunk.append(
                        json.dumps(
                            {"level": level, "host": f"web-{connection}", "n": n,
                             "message": f"GET /api/items/{n} 200 {n % 900} ms user={n % 50}"}
                        ).encode() + b"\n"
                    )  # fmt: skip
                sock.sendall(b"".join(chunk))
                time.sleep(max(0.0, started + (tick + 1) * 0.1 - time.monotonic()))

    for c in range(4):
        for tick in range(70):
            for i in range(125):
                n = c * 1_000_000 + tick * 125 + i
                if levels[(n * 37) % 100] in ("WARNING", "ERROR"):
                    important.add(n)
    threads = [threading.Thread(target=offer, args=(c,)) for c in range(4)]
    offered_from = time.time()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        offered_to = time.time()
        running.wait_value("logstream_events_in_total", 4 * 70 * 125, unit="tcp")
        time.sleep(3)  # the last accounting records
        code, _, log = running.stop()
        assert code == 0, log[-3000:]
    finally:
        stdout = collect()
        subscriber.close()
    arrivals = arrival_stamps(stdout, topic)
    # Windows while both workers are overloaded: from 1 s after the offer starts.
    totals = windows(arrivals, offered_from + 1.5, offered_to - 0.5)
    assert len(totals) >= 60
    mean = sum(totals) / len(totals)
    print(f"broker-delivered bytes per 1-s window: min {min(totals):.0f} mean {mean:.0f} "
          f"max {max(totals):.0f}")  # fmt: skip
    assert max(totals) <= cap * 1.02, max(totals)
    events = [e for m in subscriber.messages for e in decode(m.payload).events]
    delivered_n = {e["n"] for e in events if not is_accounting(e)}
    assert important <= delivered_n, f"{len(important - delivered_n)} WARNING+ events lost"
    # How much of the cap is used (benchmarks/cap_use.py measures it over a longer run):
    # the samplers keep a short standing queue, so the host's bucket is drained whole
    # once they settle; the first windows are their settling.
    assert mean >= cap * 0.9, mean


def test_sighup_reloads_every_worker_and_keeps_their_sockets(
    tmp_path: Path, logstream_run: Callable[..., LogstreamProcess]
) -> None:
    config = base_config(tmp_path, 2)
    running = logstream_run(config)
    port = tcp_port(config)
    first = send_tcp(port, connections=8, per_connection=100, tag="before")
    running.wait_value("logstream_events_out_total", len(first), unit="file")
    pids = [w["pid"] for w in running.health()["workers"]]
    config["filters"] = [{"type": "mutate", "add_tags": ["reloaded"]}]
    running.path.write_text(yaml.safe_dump(config))
    running.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while running.log.read_text().count("reload applied") < 2:
        assert time.monotonic() < deadline, running.log.read_text()[-2000:]
        time.sleep(0.1)
    second = send_tcp(port, connections=8, per_connection=100, tag="after")
    running.wait_value("logstream_events_out_total", len(first) + len(second), unit="file")
    assert [w["pid"] for w in running.health()["workers"]] == pids  # reloaded, not restarted
    # A broken config: refused by every worker, which keeps running the last good one.
    running.path.write_text("inputs: [")
    running.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert "reload refused" in running.log.read_text()
    assert running.health()["status"] == "ok"
    # A worker started after the reload (here after a crash) runs the reloaded config,
    # not the one the run started with nor the broken file.
    os.kill(pids[1], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        worker = running.health()["workers"][1]
        if worker["up"] and worker["pid"] != pids[1]:
            break
        assert time.monotonic() < deadline, "worker 1 did not come back"
        time.sleep(0.1)
    third = send_tcp(port, connections=8, per_connection=100, tag="restarted")
    running.wait_value(
        "logstream_events_out_total", len(first) + len(second) + len(third), unit="file"
    )
    code, _, log = running.stop()
    assert code == 0, log[-2000:]
    tags: dict[str, list[str]] = {}
    for path in (tmp_path / "out").glob("*.ndjson"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            tags[event["message"]] = event.get("tags", [])
    assert set(tags) == set(first) | set(second) | set(third)
    assert all("reloaded" not in tags[m] for m in first)
    assert all("reloaded" in tags[m] for m in second + third)


def test_workers_auto_is_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    config = parse_config(base_config(tmp_path, "auto"), worker=None)
    assert config.pipeline.worker_count() == len(os.sched_getaffinity(0))


def test_two_workers_publish_every_event_once_to_mqtt(
    tmp_path: Path,
    logstream_run: Callable[..., LogstreamProcess],
    mosquitto: Any,
    mqtt_topic_root: str,
) -> None:
    topic = f"{mqtt_topic_root}/all"
    config = base_config(tmp_path, 2)
    config["inputs"] = config["inputs"][:1]
    config["sinks"] = [
        {"type": "mqtt", "url": mosquitto.url, "topic": topic, "encoding": "lz4", "qos": 1,
         "client_id": "every-{worker}"}
    ]  # fmt: skip
    subscriber = Subscriber(mosquitto.url, topic)  # subscribes with QoS 1
    try:
        running = logstream_run(config)
        sent = send_tcp(tcp_port(config), connections=12, per_connection=250, tag="mqtt")
        running.wait_value("logstream_events_out_total", len(sent), unit="mqtt")
        code, _, log = running.stop()
        assert code == 0, log[-2000:]
        subscriber.wait_quiet()
    finally:
        subscriber.close()
    received = Counter(e["message"] for m in subscriber.messages for e in decode(m.payload).events)
    assert set(received) == set(sent)
    assert max(received.values()) == 1


def test_check_says_how_many_workers_will_share_the_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from logstream.cli import main

    path = tmp_path / "workers.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path, 3)))
    assert main(["check", "-c", str(path)]) == 0
    assert "3 worker processes share each input's address" in capsys.readouterr().out


def test_an_explicit_disk_queue_path_needs_worker_and_gets_it(tmp_path: Path) -> None:
    config = base_config(tmp_path, 2)
    config["pipeline"]["queue"] = {"type": "disk", "path": str(tmp_path / "queue")}
    with pytest.raises(ConfigError, match=r"pipeline.queue.path.*\{worker\}"):
        parse_config(config)
    config["pipeline"]["queue"]["path"] = str(tmp_path / "queue-{worker}")
    assert parse_config(config, worker=1).pipeline.queue.path == tmp_path / "queue-1"
