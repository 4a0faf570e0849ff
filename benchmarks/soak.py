"""Soak: the main job at a steady rate for a long time; memory, descriptors, balance.

    nice -n 10 .venv/bin/python benchmarks/soak.py                 # 10 minutes, 3000 events/s
    nice -n 10 .venv/bin/python benchmarks/soak.py --minutes 60 --rate 3200 --out soak-1h

Runs ``logstream run`` in its own process with the main job of
``config/local.yaml``: TCP and UDP inputs (python-logstash v1 JSON) plus a
``file`` input tailing a log file this script appends to, a spooled
Elasticsearch sink on a noida-db started here, an MQTT sink (lz4, the same
bandwidth caps and sampling) on a mosquitto started here, and the NDJSON file
sink. Every event carries a unique sequence number (``seq``, or ``seq=N`` in a
file line) and its send time.

Every ``--sample-secs`` (10) it reads the process's RSS and open descriptors
(``/proc``), its counters (``/metrics``) and the MQTT latency (send time to the
subscriber). At the end it reports:

- **RSS and FD growth**: least-squares slope over the second half of the run
  (after warm-up), in MB/h and FDs/h (goal: RSS <= 5 MB/h); the latency slope
  (p50, ms per hour) the same way.
- **balance per sink**: file sink and MQTT: every sequence at most once, and
  every one sent either there or accounted for (UDP receive-buffer drops counted
  by the udp input; for MQTT, the accounting records' sampled and rate-limited
  counts and the sink's counted drops). Elasticsearch: the delivered-but-missing
  audit (``_mget`` of every document id, :mod:`logstream.sinks.elasticsearch_audit`)
  over the file sink's events, missing ones as ``seq`` ranges. When the server
  was too slow for the spool to drain within ``--settle-minutes``, the spool
  left on disk (sent after the next start) is read after logstream stops: a
  missing event whose document is in it is ``spooled``, not lost; balanced
  means none is ``lost``.

``results.json`` (every sample and figure) goes to ``--out``; exit 1 when a
balance does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, this directory comes first on sys.path, and its nats.py would
# hide the nats package logstream imports.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from logstream.bulk import action_target  # noqa: E402
from logstream.config import load_config  # noqa: E402
from logstream.local.mosquitto import Mosquitto, free_port  # noqa: E402
from logstream.local.noida import Noida  # noqa: E402
from logstream.ops import pick_elasticsearch_sink  # noqa: E402
from logstream.payload import decode, is_accounting  # noqa: E402
from logstream.sinks.elasticsearch import ElasticsearchSink  # noqa: E402
from logstream.sinks.elasticsearch_audit import (  # noqa: E402
    audit,
    describe_ranges,
    ranges,
    targets,
)
from logstream.spool import Spool, SpoolSettings  # noqa: E402
from logstream.units import BuildContext  # noqa: E402

LEVELS = [("DEBUG", 20), ("INFO", 65), ("WARNING", 10), ("ERROR", 5)]  # share in %
SEQ_IN_TEXT = re.compile(rb"seq=(\d+)")
SOURCES = ("tcp", "udp", "file")


class Seen:
    """How many times each sequence number arrived (one byte each)."""

    def __init__(self) -> None:
        self.counts = bytearray()

    def add(self, seq: int) -> None:
        if seq >= len(self.counts):
            self.counts.extend(bytes(max(seq + 1 - len(self.counts), 1 << 16)))
        if self.counts[seq] < 255:
            self.counts[seq] += 1

    def get(self, seq: int) -> int:
        return self.counts[seq] if seq < len(self.counts) else 0


def seq_of(event: dict[str, Any]) -> int | None:
    value = event.get("seq")
    if isinstance(value, int):
        return value
    message = event.get("message")
    if isinstance(message, str):
        found = SEQ_IN_TEXT.search(message.encode())
        if found:
            return int(found.group(1))
    return None


# --------------------------------------------------------------------------- servers, config


def write_config(work: Path, es_url: str, mqtt_url: str) -> tuple[Path, dict[str, int]]:
    ports = {"tcp": free_port(), "monitor": free_port()}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        ports["udp"] = probe.getsockname()[1]
    config = {
        "inputs": [
            {"type": "tcp", "listen": f"127.0.0.1:{ports['tcp']}"},
            {"type": "udp", "listen": f"127.0.0.1:{ports['udp']}"},
            {
                "type": "file",
                "paths": [str(work / "app.log")],
                "start_position": "beginning",
            },
        ],
        "filters": [],
        "sinks": [
            {
                "id": "es",
                "type": "elasticsearch",
                "hosts": [es_url],
                "index": "soak-%{+YYYY.MM.dd}",
                "template": {"name": "logstream"},
                "spool": {"enabled": True},
            },
            {
                "id": "mqtt",
                "type": "mqtt",
                "url": mqtt_url,
                "topic": "logs/{host}/{level}",
                "encoding": "lz4",
                "qos": 1,
                "rate_limit": {"topic_bytes_per_sec": 50000, "total_bytes_per_sec": 200000},
            },
            {"id": "out", "type": "file", "path": str(work / "events.ndjson")},
        ],
        "monitor": {"listen": f"127.0.0.1:{ports['monitor']}"},
        "state_dir": str(work / "state"),
    }
    path = work / "soak.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path, ports


def read_metrics(url: str) -> dict[str, float]:
    """Every sample of /metrics, keyed by its full name with labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310 - ours
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


# --------------------------------------------------------------------------- load


class Load(threading.Thread):
    """Sends ``rate`` events/s in 100 ms ticks, spread over TCP, UDP and the file."""

    def __init__(self, rate: int, ports: dict[str, int], log_path: Path) -> None:
        super().__init__(daemon=True, name="soak-load")
        self.rate = rate
        self.stop_event = threading.Event()
        self.sent = {source: 0 for source in SOURCES}
        self.source_of = bytearray()  # seq -> index in SOURCES
        self.tcp = socket.create_connection(("127.0.0.1", ports["tcp"]))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_addr = ("127.0.0.1", ports["udp"])
        self.log = log_path.open("ab", buffering=0)
        self.next_seq = 0
        self.behind_secs = 0.0

    def event(self, seq: int, source: str, now: float) -> dict[str, Any]:
        bucket = seq % 100
        level = "INFO"
        for name, share in LEVELS:
            if bucket < share:
                level = name
                break
            bucket -= share
        return {
            "@timestamp": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "@version": "1",
            "message": f"soak {source} seq={seq} request handled in {seq % 997} ms",
            "host": "soak-host",
            "level": level,
            "logger_name": "soak",
            "type": "logstash",
            "seq": seq,
            "src": source,
            "sent": now,
        }

    def run(self) -> None:
        tick = 0.1
        per_tick = self.rate * tick
        owed = 0.0
        began = time.monotonic()
        ticks = 0
        while not self.stop_event.is_set():
            owed += per_tick
            count = int(owed)
            owed -= count
            now = time.time()
            tcp_lines: list[bytes] = []
            file_lines: list[bytes] = []
            for _ in range(count):
                seq = self.next_seq
                self.next_seq += 1
                source = SOURCES[seq % 4 % 3]  # tcp 50 %, udp 25 %, file 25 %
                self.source_of.append(SOURCES.index(source))
                self.sent[source] += 1
                event = self.event(seq, source, now)
                if source == "tcp":
                    tcp_lines.append(orjson.dumps(event) + b"\n")
                elif source == "udp":
                    self.udp.sendto(orjson.dumps(event), self.udp_addr)
                else:
                    stamp = event["@timestamp"]
                    file_lines.append(f"{stamp} {event['level']} {event['message']}\n".encode())
            if tcp_lines:
                self.tcp.sendall(b"".join(tcp_lines))
            if file_lines:
                self.log.write(b"".join(file_lines))
            ticks += 1
            delay = began + ticks * tick - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                self.behind_secs = max(self.behind_secs, -delay)

    def finish(self) -> None:
        self.stop_event.set()
        self.join()
        self.tcp.close()
        self.udp.close()
        self.log.close()


# --------------------------------------------------------------------------- MQTT side


class Watcher:
    """Subscribes to ``logs/#`` (QoS 1): sequences seen, accounting sums, latency."""

    def __init__(self, url: str) -> None:
        self.seen = Seen()
        self.suppressed = {"sampled": 0, "rate_limited": 0}
        self.records = 0
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.received = 0
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-watcher")
        self.client.on_connect = lambda c, *_: c.subscribe("logs/#", qos=1)
        self.client.on_message = self.on_message
        self.client.connect(host, int(port))
        self.client.loop_start()

    def on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        now = time.time()
        decoded = decode(message.payload)
        with self.lock:
            for event in decoded.events:
                if is_accounting(event):
                    self.records += 1
                    for kind in self.suppressed:
                        counts = event.get("logstream", {}).get(kind, {})
                        self.suppressed[kind] += sum(counts.values())
                    continue
                seq = seq_of(event)
                if seq is None:
                    continue
                self.received += 1
                self.seen.add(seq)
                sent = event.get("sent")
                if isinstance(sent, float):
                    self.latencies.append(now - sent)

    def take_latencies(self) -> list[float]:
        with self.lock:
            out, self.latencies = self.latencies, []
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --------------------------------------------------------------------------- measuring


def proc_sample(pid: int) -> tuple[float, int]:
    """(RSS in MB, open descriptors) of ``pid``."""
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) in value per hour."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if len(set(xs)) < 2:
        return None
    return statistics.linear_regression(xs, ys).slope * 3600


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def wait_http(url: str, secs: float) -> None:
    deadline = time.monotonic() + secs
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310 - ours
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --------------------------------------------------------------------------- balance


def balance_file(
    path: Path, load: Load, udp_dropped: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = Seen()
    events: list[dict[str, Any]] = []
    with path.open("rb") as lines:
        for line in lines:
            event = orjson.loads(line)
            seq = seq_of(event)
            if seq is not None:
                seen.add(seq)
                events.append(event)
    missing = [s for s in range(load.next_seq) if seen.get(s) == 0]
    missing_udp = sum(1 for s in missing if load.source_of[s] == 1)
    duplicates = sum(1 for s in range(load.next_seq) if seen.get(s) > 1)
    result = {
        "events": len(events),
        "missing": len(missing),
        "missing_udp": missing_udp,
        "missing_other": len(missing) - missing_udp,
        "missing_ranges": describe_ranges(ranges(missing)),
        "duplicates": duplicates,
        "udp_receive_buffer_drops_counted": udp_dropped,
        # Every sequence once, and the only ones missing are UDP datagrams the
        # kernel dropped, which the udp input counted (exactly).
        "balanced": duplicates == 0 and len(missing) == missing_udp == udp_dropped,
    }
    return result, events


def balance_mqtt(
    watcher: Watcher, file_seqs: int, sink_in: float, sink_dropped: float, sink_sampled: float
) -> dict[str, Any]:
    with watcher.lock:
        counts = watcher.seen.counts
        distinct = sum(1 for c in counts if c)
        duplicates = sum(1 for c in counts if c > 1)
        suppressed = dict(watcher.suppressed)
    accounted = distinct + suppressed["sampled"] + suppressed["rate_limited"] + sink_dropped
    return {
        "events_in_to_sink": int(sink_in),
        "received_distinct": distinct,
        "duplicates": duplicates,
        "accounting_records": watcher.records,
        "sampled_per_records": suppressed["sampled"],
        "rate_limited_per_records": suppressed["rate_limited"],
        "sink_drops_other": int(sink_dropped),
        "sink_counted_sampled": int(sink_sampled),
        "balanced": duplicates == 0
        and accounted == sink_in == file_seqs
        and suppressed["sampled"] + suppressed["rate_limited"] == sink_sampled,
    }


async def spooled_targets(directory: Path) -> set[tuple[str, str]]:
    """(index, id) of every bulk item in the sink's spool, as a stopped logstream left it."""
    spool = Spool.open(directory, SpoolSettings(fsync="never"))
    found: set[tuple[str, str]] = set()
    try:
        while (batch := await spool.read(10000, timeout_secs=0)) is not None:
            for item in batch.entries:
                index, doc_id, _ = action_target(item.split(b"\n", 1)[0])
                if doc_id is not None:
                    found.add((index, doc_id))
    finally:
        await spool.close()  # nothing acked: the spool on disk is left as it was
    return found


async def audit_es(config_path: Path, events: list[dict[str, Any]]) -> dict[str, Any]:
    config = load_config(config_path)
    sink = pick_elasticsearch_sink(config, "es")  # built to send directly: no spool
    wanted = targets(sink, events)
    # Where the run's sink kept its spool: that sink as the config builds it (not started).
    unit = next(u for u in config.sinks if config.unit_names()[id(u)] == "es")
    configured = unit.build("es", BuildContext(state_dir=config.state_dir))
    assert isinstance(configured, ElasticsearchSink) and configured.spool_path is not None
    in_spool = await spooled_targets(configured.spool_path)
    await sink.start()
    try:
        report = await audit(sink, wanted, chunk=5000)
    finally:
        await sink.close()
    lost = [i for i in report.missing if wanted[i] not in in_spool]
    seqs = [seq_of(events[i]) or -1 for i in lost]
    return {
        "checked": report.checked,
        "found": report.found,
        "missing": len(report.missing),
        "spooled": len(report.missing) - len(lost),
        "lost": len(lost),
        "lost_seq_ranges": describe_ranges(ranges(seqs)),
        "unreadable": dict(report.errors),
        "events_sharing_an_id": len(report.shared_ids),
        "balanced": not lost and not report.errors and not report.shared_ids,
    }


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=args.workdir))
    noida = Noida(work / "noida")
    noida.start()
    broker = Mosquitto(work / "mosquitto").start()
    config_path, ports = write_config(work, noida.url, broker.url)
    (work / "app.log").touch()
    monitor = f"http://127.0.0.1:{ports['monitor']}"
    log = (work / "logstream.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logstream",
            "--log-level",
            "WARNING",
            "run",
            "-c",
            str(config_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    samples: list[dict[str, Any]] = []
    watcher: Watcher | None = None
    load: Load | None = None
    try:
        wait_http(monitor, 60)
        watcher = Watcher(broker.url)
        time.sleep(0.5)
        load = Load(args.rate, ports, work / "app.log")
        began = time.monotonic()
        load.start()
        end = began + args.minutes * 60
        next_sample = began
        while True:
            now = time.monotonic()
            if now >= next_sample:
                rss, fds = proc_sample(proc.pid)
                counters = read_metrics(monitor)
                latencies = watcher.take_latencies()
                samples.append(
                    {
                        "t": round(now - began, 1),
                        "rss_mb": round(rss, 2),
                        "fds": fds,
                        "sent": load.next_seq,
                        "in": metric(counters, "logstream_events_in_total"),
                        "es_out": metric(counters, "logstream_events_out_total", unit="es"),
                        "es_spool_events": metric(counters, "logstream_spool_events", unit="es"),
                        "mqtt_latency_p50_ms": _ms(percentile(latencies, 0.5)),
                        "mqtt_latency_p99_ms": _ms(percentile(latencies, 0.99)),
                    }
                )
                if args.progress:
                    print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                next_sample += args.sample_secs
            if now >= end or proc.poll() is not None:
                break
            time.sleep(min(1.0, max(0.0, min(end, next_sample) - time.monotonic())))
        load.finish()
        settle_secs = settle(monitor, load, args.settle_minutes * 60)
        counters = read_metrics(monitor)
    finally:
        if load is not None and load.is_alive():
            load.finish()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if watcher is not None:
            time.sleep(1)
            watcher.close()
        broker.stop()
    try:
        udp_dropped = int(
            metric(counters, "logstream_events_dropped_total", reason="receive_buffer")
        )
        file_result, events = balance_file(work / "events.ndjson", load, udp_dropped)
        dropped = "logstream_events_dropped_total"
        mqtt_suppressed = metric(counters, dropped, unit="mqtt", reason="sampled") + metric(
            counters, dropped, unit="mqtt", reason="rate_limited"
        )
        mqtt_dropped = metric(counters, dropped, unit="mqtt") - mqtt_suppressed
        mqtt_in = metric(counters, "logstream_events_in_total", unit="mqtt")
        mqtt_result = balance_mqtt(
            watcher, file_result["events"], mqtt_in, mqtt_dropped, mqtt_suppressed
        )
        es_result = asyncio.run(audit_es(config_path, events))
        es_result["delivered_counted"] = int(
            metric(counters, "logstream_events_out_total", unit="es")
        )
        es_result["dropped_counted"] = int(
            metric(counters, "logstream_events_dropped_total", unit="es")
        )
    finally:
        noida.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    second_half = [s for s in samples if s["t"] >= args.minutes * 30]
    result = {
        "command": " ".join(sys.argv),
        "minutes": args.minutes,
        "rate": args.rate,
        "sent": load.sent,
        "load_behind_secs_max": round(load.behind_secs, 3),
        "drain_after_load_secs": round(settle_secs, 1),
        "es_spool_events_left": int(metric(counters, "logstream_spool_events", unit="es")),
        "rss_mb_first_last": [samples[0]["rss_mb"], samples[-1]["rss_mb"]],
        "rss_growth_mb_per_h_second_half": _round(
            slope_per_hour([(s["t"], s["rss_mb"]) for s in second_half])
        ),
        "fds_first_last": [samples[0]["fds"], samples[-1]["fds"]],
        "fd_growth_per_h_second_half": _round(
            slope_per_hour([(s["t"], s["fds"]) for s in second_half])
        ),
        "mqtt_latency_p50_slope_ms_per_h_second_half": _round(
            slope_per_hour(
                [
                    (s["t"], s["mqtt_latency_p50_ms"])
                    for s in second_half
                    if s["mqtt_latency_p50_ms"]
                ]
            )
        ),
        "file": file_result,
        "mqtt": mqtt_result,
        "elasticsearch": es_result,
        "samples": samples,
        "workdir": str(work),
    }
    return result


def settle(monitor: str, load: Load, secs: float) -> float:
    """Wait until every sink has had every event the inputs took and the spool is empty
    (the backlog a slow server left); how long that took."""
    began = time.monotonic()
    deadline = began + secs
    while time.monotonic() < deadline:
        counters = read_metrics(monitor)
        spool = metric(counters, "logstream_spool_events", unit="es")
        out = metric(counters, "logstream_events_in_total", unit="out")
        dropped = metric(counters, "logstream_events_dropped_total", reason="receive_buffer")
        if spool == 0 and out + dropped >= load.next_seq:
            time.sleep(3)  # the MQTT sink's last payloads and accounting records
            break
        time.sleep(1)
    return time.monotonic() - began


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=3000, help="events/s over all inputs")
    parser.add_argument("--sample-secs", type=float, default=10.0)
    parser.add_argument(
        "--settle-minutes", type=float, default=30.0, help="at most this long to drain the spool"
    )
    parser.add_argument("--out", type=Path, default=None, help="directory for results.json")
    parser.add_argument("--workdir", type=Path, default=None, help="where servers keep data")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data and logs")
    parser.add_argument("--progress", action="store_true", help="print each sample on stderr")
    args = parser.parse_args()
    result = run(args)
    out = args.out or Path("bench-results") / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    print(f"results: {out / 'results.json'}")
    ok = all(result[k]["balanced"] for k in ("file", "mqtt", "elasticsearch"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
