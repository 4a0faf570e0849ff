"""`logstream bench throughput`: TCP throughput of logstream against references measured
in the same run.

Sends pre-built python-logstash version 1 JSON lines (real log messages from
the corpus when present, else generated ones) over several TCP connections,
and reports events/s, MiB/s, CPU seconds and peak RSS of the receiving
process for:

- ``discard``: a receiver that reads and throws bytes away (the generator's
  and loopback's ceiling);
- ``orjson-loop``: a bare Python loop per connection reading 256 KiB at a
  time, splitting lines, parsing each with orjson, encoding it again and
  appending the chunk's lines to a file of its own: socket reads + orjson +
  file writes, the floor any Python design of tcp -> file pays;
- ``file``: ``logstream run`` with a tcp input and a file sink;
- ``mqtt-lz4``: ``logstream run`` with a tcp input and an mqtt sink
  (``encoding: lz4``, QoS 0, ``when_full: block``) to a local mosquitto;
- ``mqtt``: the same with one JSON message per event (not in the defaults);
- ``parse`` and ``parse+redact``: ``file`` with the ``parse`` filter (and the
  ``redact`` filter after it) in the pipeline, read against ``file`` of the
  same run: their CPU per event over ``file``'s is the filters' cost (not in
  the defaults: ``--targets file,parse,parse+redact``);
- ``parse-mqtt-lz4``: ``mqtt-lz4`` with the ``parse`` filter in the pipeline
  (not in the defaults);
- ``elasticsearch``: ``logstream run`` with a tcp input and an elasticsearch
  sink to a local noida-db;
- ``es-bulk``: the reference for ``elasticsearch``: the same documents,
  pre-encoded as NDJSON bulk bodies of 1000, posted with aiohttp over as many
  connections as the sink uses into a noida-db of its own (the server's and a
  client's floor).

This module holds the pieces (load, references, one ``logstream run``, process
tree accounting); :mod:`logstream.bench.scaling` runs them (workers 1..N,
``--runs`` rounds, medians) and writes the report. Figures are read as ratios
to the references: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
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
# Targets that are `mqtt-lz4` with filters in the pipeline.
MQTT_FILTER_TARGETS: dict[str, list[dict[str, object]]] = {
    "parse-mqtt-lz4": [{"type": "parse"}],
}
ALL_TARGETS = (
    *DEFAULT_TARGETS[:4],
    "mqtt",
    *FILTER_TARGETS,
    *MQTT_FILTER_TARGETS,
    *DEFAULT_TARGETS[4:],
)
REFERENCE_TARGETS = ("discard", "orjson-loop", "es-bulk")
ES_TARGETS = ("elasticsearch", "es-bulk")
# Which reference each target is read against.
REFERENCE_OF = {
    "file": "orjson-loop",
    "mqtt-lz4": "orjson-loop",
    "mqtt": "orjson-loop",
    "parse": "file",
    "parse+redact": "file",
    "parse-mqtt-lz4": "mqtt-lz4",
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
    workers: int = 1  # logstream targets run with pipeline.workers 1..workers
    runs: int = 3  # rounds over every configuration; medians are reported


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


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (children of every thread, read from /proc)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in children.read_text().split()]
            except OSError:  # the thread or process just ended
                continue
    return pids


def tree_cpu_secs(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant, plus those of the ended
    children they reaped (cutime, cstime): a restarted worker's time is not lost."""
    total = 0.0
    for each in tree_pids(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15]) / CLK_TCK
    return total


def tree_peak_rss_mib(pid: int) -> tuple[float, int]:
    """Sum of each process's peak RSS (VmHWM) over ``pid``'s tree (an upper bound of
    the tree's peak: the processes need not peak at once), and the process count."""
    pids = tree_pids(pid)
    total = 0.0
    for each in pids:
        with contextlib.suppress(OSError):
            total += peak_rss_mib(each)
    return total, len(pids)


REFERENCE_SERVER = r"""
import os, socket, sys, threading, orjson
mode, port, expected, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port)); server.listen(64)
print("ready", flush=True)
count = 0; lock = threading.Lock(); done = threading.Event()
def handle(conn, number):
    global count
    tail = b""; seen = 0
    loads, dumps, newline = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    fd = None
    if mode != "discard":
        path = os.path.join(out, f"reference-{number}.ndjson")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    while True:
        data = conn.recv(262144)
        if not data: break
        if mode == "discard":
            seen += data.count(b"\n"); continue
        lines = (tail + data).split(b"\n"); tail = lines.pop()
        buf = bytearray(); put = buf.extend  # (a list of small bytes: allocator churn)
        for line in lines: put(dumps(loads(line), option=newline))
        os.write(fd, buf)
        seen += len(lines)
    if fd is not None:
        os.close(fd)
    with lock:
        count += seen
        if count >= expected: done.set()
accepted = 0
while not done.is_set():
    server.settimeout(0.2)
    try: conn, _ = server.accept()
    except TimeoutError: continue
    accepted += 1
    threading.Thread(target=handle, args=(conn, accepted), daemon=True).start()
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
    workers: int = 0  # logstream's pipeline.workers; 0: a reference, not logstream
    supervisor_rss_mib: float | None = None  # the supervisor's own peak (workers > 1)
    processes: int = 1  # in the measured tree
    split: list[int] = field(default_factory=list)  # events in per worker (workers > 1)

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


def run_reference(mode: str, lines: list[bytes], connections: int, out: Path) -> Result:
    """A reference receiver (``discard`` or ``orjson-loop``, which writes its files
    under ``out``)."""
    port = free_port()
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", REFERENCE_SERVER, mode, str(port), str(len(lines)), str(out)],
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


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310 - our own monitor
        return str(response.read().decode())


def metrics(url: str) -> dict[tuple[str, str], float]:
    """(metric name, unit) -> value, summed over other labels."""
    text = metrics_text(url)
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
    *,
    workers: int = 1,
    last_output: Callable[[], float | None] | None = None,
) -> Result:
    """``logstream run`` in its own process (tcp input -> ``sink``, ``pipeline.workers``
    ``workers``), fed over TCP; done when the sink has delivered or dropped every
    event (read from /metrics).

    With workers, /metrics lags up to a second (each worker reports its counters
    once a second), so the end of the run is ``last_output()`` when given: the
    wall-clock time (``time.time()``) the last output landed (a file's mtime, the
    last message at a subscriber). CPU and peak RSS cover the whole process tree.
    """
    port, monitor = free_port(), free_port()
    config = {
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
        "filters": filters or [],
        "sinks": [{"id": "out", **sink}],
        "monitor": {"listen": f"127.0.0.1:{monitor}"},
        "pipeline": {"workers": workers},
        "state_dir": str(workdir / f"state-{target}-{workers}"),
    }
    path = workdir / f"{target}-{workers}.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "--log-level", "WARNING", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{monitor}"
    delivered = dropped = 0.0
    try:
        for _ in range(1200):  # the monitor answers once every worker is ready
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"logstream run exited with {proc.returncode}") from None
                time.sleep(0.05)
        cpu_before = tree_cpu_secs(proc.pid)
        started_wall = time.time()
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
        landed = last_output() if last_output is not None else None
        if landed is not None and started_wall < landed:
            secs = min(secs, landed - started_wall)
        cpu = tree_cpu_secs(proc.pid) - cpu_before
        rss, processes = tree_peak_rss_mib(proc.pid)
        own_rss = peak_rss_mib(proc.pid) if processes > 1 else None
        split = worker_split(metrics_text(url)) if workers > 1 else []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Result(
        target,
        len(lines),
        _mib(lines),
        secs,
        cpu,
        rss,
        int(delivered),
        int(dropped),
        workers=workers,
        supervisor_rss_mib=own_rss,
        processes=processes,
        split=split,
    )


def worker_split(text: str) -> list[int]:
    """Events each worker took in (``logstream_worker_events_in_total{worker=...}``)."""
    split: dict[int, int] = {}
    for line in text.splitlines():
        if line.startswith("logstream_worker_events_in_total{") and 'worker="' in line:
            worker = int(line.split('worker="', 1)[1].split('"', 1)[0])
            split[worker] = split.get(worker, 0) + int(float(line.rsplit(" ", 1)[1]))
    return [split[worker] for worker in sorted(split)]


# --------------------------------------------------------------------------- Elasticsearch


def es_count(url: str, index: str) -> int:
    """Documents in ``index`` (after a refresh: noida-db counts only refreshed documents)."""
    request = urllib.request.Request(f"{url}/{index}/_refresh", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - our own noida-db
        pass
    with urllib.request.urlopen(f"{url}/{index}/_count", timeout=30) as response:  # noqa: S310
        return int(json.loads(response.read())["count"])


def run_bulk_reference(url: str, lines: list[bytes], index: str, connections: int = 1) -> Result:
    """The same documents posted as pre-encoded bulk bodies, ``connections`` requests
    at a time (each over its own connection, taking the next body when done).

    CPU and RSS are this (client) process's: the bodies are built before timing.
    """
    action = b'{"create":{"_index":"' + index.encode() + b'"}}\n'
    bodies = [
        b"".join(action + line for line in lines[at : at + BULK_DOCS])
        for at in range(0, len(lines), BULK_DOCS)
    ]

    async def post_all() -> int:
        import aiohttp

        queue = iter(bodies)
        failed = 0

        async def poster(session: aiohttp.ClientSession) -> None:
            nonlocal failed
            for body in queue:
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

        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(poster(session) for _ in range(connections)))
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
        note=f"client side, {connections} connections; {counted:,} documents counted",
    )
