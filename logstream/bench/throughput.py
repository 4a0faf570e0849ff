"""`logstream bench throughput`: TCP throughput of logstream against references measured
in the same run.

Sends pre-built python-logstash version 1 JSON lines (real log messages from
the corpus when present, else generated ones) over several TCP connections,
and reports events/s, MiB/s, CPU seconds and peak RSS of the receiving
process for:

- ``discard``: a receiver that reads and throws bytes away (the generator's
  and loopback's ceiling);
- ``orjson-loop``: a bare Python loop reading 256 KiB at a time, splitting
  lines and parsing each with orjson (the floor any Python design pays);
- ``file``: ``logstream run`` with a tcp input and a file sink;
- ``mqtt-lz4``: ``logstream run`` with a tcp input and an mqtt sink
  (``encoding: lz4``, QoS 0, ``when_full: block``) to a local mosquitto;
- ``mqtt``: the same with one JSON message per event (not in the defaults);
- ``parse`` and ``parse+redact``: ``file`` with the ``parse`` filter (and the
  ``redact`` filter after it) in the pipeline, read against ``file`` of the
  same run: their CPU per event over ``file``'s is the filters' cost (not in
  the defaults: ``--targets file,parse,parse+redact``);
- ``elasticsearch``: ``logstream run`` with a tcp input and an elasticsearch
  sink to a local noida-db;
- ``es-bulk``: the reference for ``elasticsearch``: the same documents,
  pre-encoded as NDJSON bulk bodies of 1000, posted one at a time with
  aiohttp into the same noida-db (the server's and a client's floor).

Figures are read as ratios to the references: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from logstream.local.mosquitto import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_TARGETS = ("discard", "orjson-loop", "file", "mqtt-lz4", "elasticsearch", "es-bulk")
# Targets that are `file` with filters in the pipeline.
FILTER_TARGETS: dict[str, list[dict[str, object]]] = {
    "parse": [{"type": "parse"}],
    "parse+redact": [{"type": "parse"}, {"type": "redact"}],
}
ALL_TARGETS = (*DEFAULT_TARGETS[:4], "mqtt", *FILTER_TARGETS, *DEFAULT_TARGETS[4:])
ES_TARGETS = ("elasticsearch", "es-bulk")
# Which reference each target is read against.
REFERENCE_OF = {
    "file": "orjson-loop",
    "mqtt-lz4": "orjson-loop",
    "mqtt": "orjson-loop",
    "parse": "file",
    "parse+redact": "file",
    "orjson-loop": "discard",
    "elasticsearch": "es-bulk",
}
BULK_DOCS = 1000


@dataclass
class Options:
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    events: int = 500_000
    es_events: int = 100_000  # noida-db takes 10-20k docs/s here
    connections: int = 4
    corpus: Path | None = None
    out: Path = Path("bench-results")
    progress: bool = True


# --------------------------------------------------------------------------- load


def corpus_messages(corpus: Path | None, limit: int = 20_000) -> list[str]:
    """Message texts from the corpus's plain log files, or generated ones."""
    messages: list[str] = []
    if corpus is not None and corpus.is_dir():
        for path in sorted(corpus.glob("*.log")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    messages.append(line[:400])
                if len(messages) >= limit:
                    return messages
    if not messages:
        messages = [
            f"2026-11-24 10:00:{n % 60:02d}.{n % 1000:03d} {1000 + n % 50} INFO "
            f"nova.api.openstack.wsgi [req-{n:08x}] GET /v2/servers/{n} returned 200 "
            f"len: {n % 4096} time: 0.{n % 999:03d}"
            for n in range(limit)
        ]
    return messages


def build_lines(count: int, corpus: Path | None) -> list[bytes]:
    """``count`` JSON lines exactly as python-logstash's version 1 formatter writes them."""
    from logstash.formatter import LogstashFormatterVersion1

    formatter = LogstashFormatterVersion1(message_type="logstash", tags=["bench"], fqdn=False)
    levels = [logging.INFO] * 7 + [logging.DEBUG, logging.WARNING, logging.ERROR]
    messages = corpus_messages(corpus)
    lines = []
    for n in range(min(count, 20_000)):
        record = logging.LogRecord(
            "nova.api",
            levels[n % len(levels)],
            "/opt/stack/nova/api.py",
            42,
            messages[n % len(messages)],
            None,
            None,
            func="handle",
        )
        lines.append(formatter.format(record) + b"\n")
    # Each line made unique (a sequence number), as real events are: the
    # Elasticsearch sink's content-hash ids would fold exact repeats into one document.
    return [b'%s,"seq":%d}\n' % (lines[n % len(lines)][:-2], n) for n in range(count)]


def send(port: int, lines: list[bytes], connections: int) -> float:
    """Send ``lines`` split over ``connections`` sockets; return seconds taken."""
    chunks = [b"".join(lines[i::connections]) for i in range(connections)]
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    started = time.perf_counter()
    threads = [
        threading.Thread(target=sock.sendall, args=(chunk,))
        for sock, chunk in zip(sockets, chunks, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sock in sockets:
        sock.shutdown(socket.SHUT_WR)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- processes


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


REFERENCE_SERVER = r"""
import socket, sys, threading, orjson
mode, port, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port)); server.listen(64)
print("ready", flush=True)
count = 0; lock = threading.Lock(); done = threading.Event()
def handle(conn):
    global count
    tail = b""; seen = 0
    while True:
        data = conn.recv(262144)
        if not data: break
        if mode == "discard":
            seen += data.count(b"\n"); continue
        lines = (tail + data).split(b"\n"); tail = lines.pop()
        for line in lines:
            orjson.loads(line)
        seen += len(lines)
    with lock:
        count += seen
        if count >= expected: done.set()
while not done.is_set():
    server.settimeout(0.2)
    try: conn, _ = server.accept()
    except TimeoutError: continue
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
print(count, flush=True)
"""


@dataclass
class Result:
    target: str
    events: int
    mib: float
    secs: float
    cpu_secs: float
    peak_rss_mib: float
    delivered: int
    dropped: int
    note: str = ""

    @property
    def events_per_sec(self) -> float:
        return self.events / self.secs if self.secs else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "events_per_sec": self.events_per_sec,
            "mib_per_sec": self.mib / self.secs if self.secs else 0.0,
            "cpu_us_per_event": self.cpu_secs / self.events * 1e6 if self.events else 0.0,
        }


def _mib(lines: list[bytes]) -> float:
    return sum(len(line) for line in lines) / 2**20


def run_reference(mode: str, lines: list[bytes], connections: int) -> Result:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", REFERENCE_SERVER, mode, str(port), str(len(lines))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE
            raise RuntimeError("no stdout from the reference server")
        proc.stdout.readline()
        cpu_before = cpu_secs(proc.pid)
        started = time.perf_counter()
        send(port, lines, connections)
        received = int(proc.stdout.readline())
        secs = time.perf_counter() - started
        cpu = cpu_secs(proc.pid) - cpu_before
        rss = peak_rss_mib(proc.pid)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Result(mode, len(lines), _mib(lines), secs, cpu, rss, received, 0)


def metrics(url: str) -> dict[tuple[str, str], float]:
    """(metric name, unit) -> value, summed over other labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310 - our own monitor
        text = response.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels, value = rest.rsplit("} ", 1)
        unit = labels.split('unit="', 1)[1].split('"', 1)[0] if 'unit="' in labels else ""
        out[(name, unit)] = out.get((name, unit), 0.0) + float(value)
    return out


def run_logstream(
    target: str,
    sink: Mapping[str, object],
    lines: list[bytes],
    connections: int,
    workdir: Path,
    filters: list[dict[str, object]] | None = None,
) -> Result:
    """``logstream run`` in its own process (tcp input -> ``sink``), fed over TCP; done
    when the sink has delivered or dropped every event (read from /metrics)."""
    port, monitor = free_port(), free_port()
    config = {
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
        "filters": filters or [],
        "sinks": [{"id": "out", **sink}],
        "monitor": {"listen": f"127.0.0.1:{monitor}"},
        "state_dir": str(workdir / "state"),
    }
    path = workdir / f"{target}.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "--log-level", "WARNING", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{monitor}"
    delivered = dropped = 0.0
    try:
        for _ in range(400):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"logstream run exited with {proc.returncode}") from None
                time.sleep(0.05)
        cpu_before = cpu_secs(proc.pid)
        started = time.perf_counter()
        send(port, lines, connections)
        while True:
            values = metrics(url)
            delivered = values.get(("logstream_events_out_total", "out"), 0)
            # Every unit's counted drops: a filter's too (parse folds lines: "merged").
            dropped = sum(
                value
                for (name, _unit), value in values.items()
                if name == "logstream_events_dropped_total"
            )
            if delivered + dropped >= len(lines):
                break
            time.sleep(0.02)
        secs = time.perf_counter() - started
        cpu = cpu_secs(proc.pid) - cpu_before
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Result(target, len(lines), _mib(lines), secs, cpu, rss, int(delivered), int(dropped))


# --------------------------------------------------------------------------- Elasticsearch


def es_count(url: str, index: str) -> int:
    """Documents in ``index`` (after a refresh: noida-db counts only refreshed documents)."""
    request = urllib.request.Request(f"{url}/{index}/_refresh", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - our own noida-db
        pass
    with urllib.request.urlopen(f"{url}/{index}/_count", timeout=30) as response:  # noqa: S310
        return int(json.loads(response.read())["count"])


def run_bulk_reference(url: str, lines: list[bytes], index: str) -> Result:
    """The same documents posted as pre-encoded bulk bodies, one request at a time.

    CPU and RSS are this (client) process's: the bodies are built before timing.
    """
    action = b'{"create":{"_index":"' + index.encode() + b'"}}\n'
    bodies = [
        b"".join(action + line for line in lines[at : at + BULK_DOCS])
        for at in range(0, len(lines), BULK_DOCS)
    ]

    async def post_all() -> int:
        import aiohttp

        failed = 0
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                async with session.post(
                    f"{url}/_bulk",
                    data=body,
                    headers={"Content-Type": "application/x-ndjson"},
                ) as response:
                    answer = await response.json(content_type=None)
                    if response.status >= 300 or answer.get("errors"):
                        failed += (
                            sum(
                                1
                                for item in answer.get("items", [])
                                if next(iter(item.values())).get("status", 500) >= 300
                            )
                            or len(body.splitlines()) // 2
                        )
        return failed

    pid = os.getpid()
    cpu_before = cpu_secs(pid)
    started = time.perf_counter()
    failed = asyncio.run(post_all())
    secs = time.perf_counter() - started
    cpu = cpu_secs(pid) - cpu_before
    counted = es_count(url, index)
    return Result(
        "es-bulk",
        len(lines),
        _mib(lines),
        secs,
        cpu,
        peak_rss_mib(pid),
        len(lines) - failed,
        failed,
        note=f"client side; {counted:,} documents counted",
    )


# --------------------------------------------------------------------------- the command


def run(options: Options) -> dict[str, Any]:
    """Run every target and write results.json and results.md into ``options.out``."""
    from logstream.bench.report import progress_bar, write_json

    unknown = [t for t in options.targets if t not in ALL_TARGETS]
    if unknown:
        raise ValueError(f"unknown target {', '.join(unknown)}; known: {', '.join(ALL_TARGETS)}")
    corpus = options.corpus
    lines = build_lines(options.events, corpus)
    es_lines = lines[: options.es_events]
    options.out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    total = sum(len(es_lines) if t in ES_TARGETS else len(lines) for t in options.targets)
    with (
        tempfile.TemporaryDirectory(prefix="logstream-bench-") as tmp,
        progress_bar(total, "events", options.progress) as bar,
    ):
        workdir = Path(tmp)
        noida = None
        try:
            for target in options.targets:
                bar.set_postfix_str(target)
                count = len(es_lines) if target in ES_TARGETS else len(lines)
                if target in ("discard", "orjson-loop"):
                    result = run_reference(target, lines, options.connections)
                elif target == "file" or target in FILTER_TARGETS:
                    file_sink: dict[str, object] = {
                        "type": "file",
                        "path": str(workdir / f"{target}.ndjson"),
                    }
                    result = run_logstream(
                        target,
                        file_sink,
                        lines,
                        options.connections,
                        workdir,
                        FILTER_TARGETS.get(target),
                    )
                elif target in ("mqtt", "mqtt-lz4"):
                    from logstream.local.mosquitto import Mosquitto

                    with Mosquitto(workdir / f"mosquitto-{target}") as broker:
                        mqtt_sink: dict[str, object] = {
                            "type": "mqtt",
                            "url": broker.url,
                            "topic": "bench/{level}",
                            "when_full": "block",
                            "encoding": "lz4" if target == "mqtt-lz4" else "json",
                        }
                        result = run_logstream(
                            target, mqtt_sink, lines, options.connections, workdir
                        )
                else:
                    if noida is None:
                        from logstream.local.noida import Noida

                        noida = Noida(workdir / "noida-db")
                        noida.start()
                    if target == "elasticsearch":
                        sink: dict[str, object] = {
                            "type": "elasticsearch",
                            "hosts": [noida.url],
                            "index": "bench-logstream",
                        }
                        result = run_logstream(target, sink, es_lines, options.connections, workdir)
                        counted = es_count(noida.url, "bench-logstream")
                        result.note = f"{counted:,} documents counted"
                    else:
                        result = run_bulk_reference(noida.url, es_lines, "bench-bulk")
                bar.update(count)
                results.append(result)
        finally:
            if noida is not None:
                noida.stop()
    summary = {
        "command": "logstream bench throughput",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": f"corpus {corpus}" if corpus is not None else "generated messages",
        "events": options.events,
        "es_events": len(es_lines),
        "connections": options.connections,
        "bytes_per_event": _mib(lines) * 2**20 / len(lines) if lines else 0.0,
        "cpus": os.cpu_count(),
        "results": [_with_ratio(r, results) for r in results],
    }
    write_json(options.out / "results.json", summary)
    (options.out / "results.md").write_text(markdown(summary), encoding="utf-8")
    return summary


def _with_ratio(result: Result, results: list[Result]) -> dict[str, Any]:
    data = result.as_dict()
    reference = REFERENCE_OF.get(result.target)
    ref = next((r for r in results if r.target == reference), None)
    data["reference"] = reference if ref is not None else None
    data["ratio_to_reference"] = (
        result.events_per_sec / ref.events_per_sec if ref is not None and ref.secs else None
    )
    # CPU per event over the reference's (the filter targets' cost over `file`).
    data["cpu_ratio_to_reference"] = (
        (result.cpu_secs / result.events) / (ref.cpu_secs / ref.events)
        if ref is not None and ref.cpu_secs and ref.events and result.events
        else None
    )
    return data


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# logstream bench throughput",
        "",
        f"{summary['events']:,} python-logstash v1 lines ({summary['es_events']:,} for the "
        f"Elasticsearch rows), {summary['bytes_per_event']:.0f} B/line, messages from "
        f"{summary['source']}, {summary['connections']} TCP connections, {summary['cpus']} CPUs. "
        f"CPU seconds and peak RSS are the receiving process's. {summary['when']}.",
        "",
        "| target | events/s | MiB/s | CPU s | CPU µs/event | peak RSS MiB | delivered | dropped "
        "| vs reference | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in summary["results"]:
        ratio = (
            f"{r['ratio_to_reference']:.2f} of {r['reference']}"
            if r["ratio_to_reference"] is not None
            else "-"
        )
        if r.get("cpu_ratio_to_reference") is not None:
            ratio += f", CPU/event {r['cpu_ratio_to_reference']:.2f}x"
        lines.append(
            f"| {r['target']} | {r['events_per_sec']:,.0f} | {r['mib_per_sec']:.1f} "
            f"| {r['cpu_secs']:.2f} | {r['cpu_us_per_event']:.2f} | {r['peak_rss_mib']:.0f} "
            f"| {r['delivered']:,} | {r['dropped']:,} | {ratio} | {r['note']} |"
        )
    lines.append("")
    return "\n".join(lines)
