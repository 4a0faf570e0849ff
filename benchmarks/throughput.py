"""TCP throughput of logstream against references measured in the same run.

Sends pre-built python-logstash version 1 JSON lines (real log messages from
../shared/corpus when present, else generated ones) over several TCP
connections, and reports events/s, MiB/s, CPU seconds and peak RSS of the
receiving process for:

- ``discard``: a receiver that reads and throws bytes away (the generator's
  and loopback's ceiling);
- ``orjson-loop``: a bare Python loop reading 256 KiB at a time, splitting
  lines and parsing each with orjson (the floor any Python design pays);
- ``file``: ``logstream run`` with a tcp input and a file sink (JSON parsed
  and re-serialised);
- ``mqtt``: ``logstream run`` with a tcp input and an mqtt sink (one JSON
  message per event, QoS 0) to a local mosquitto the benchmark starts;
- ``mqtt-lz4``: the same with ``encoding: lz4`` (batched NDJSON in LZ4 frames).

Figures are read as ratios to the references: the machine is shared and noisy.

    .venv/bin/python benchmarks/throughput.py --events 500000 --connections 4
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- load


def corpus_messages(limit: int = 20_000) -> list[str]:
    """Message texts from the corpus's plain log files, or generated ones."""
    messages: list[str] = []
    if CORPUS.is_dir():
        for path in sorted(CORPUS.glob("*.log")):
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


def build_lines(count: int) -> list[bytes]:
    """``count`` JSON lines exactly as python-logstash's version 1 formatter writes them."""
    from logstash.formatter import LogstashFormatterVersion1

    formatter = LogstashFormatterVersion1(message_type="logstash", tags=["bench"], fqdn=False)
    levels = [logging.INFO] * 7 + [logging.DEBUG, logging.WARNING, logging.ERROR]
    messages = corpus_messages()
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
    return [lines[n % len(lines)] for n in range(count)]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    secs: float
    cpu_secs: float
    peak_rss_mib: float
    delivered: int
    dropped: int

    @property
    def events_per_sec(self) -> float:
        return self.events / self.secs


def run_reference(mode: str, lines: list[bytes], connections: int) -> Result:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", REFERENCE_SERVER, mode, str(port), str(len(lines))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    cpu_before = cpu_secs(proc.pid)
    started = time.perf_counter()
    send(port, lines, connections)
    received = int(proc.stdout.readline())
    secs = time.perf_counter() - started
    cpu = cpu_secs(proc.pid) - cpu_before
    rss = peak_rss_mib(proc.pid)
    proc.wait(timeout=10)
    return Result(mode, len(lines), secs, cpu, rss, received, 0)


def metrics(url: str) -> dict[tuple[str, str], float]:
    """(metric name, unit) -> value, summed over other labels."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()  # noqa: S310
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
    target: str, sink: dict[str, object], lines: list[bytes], connections: int, workdir: Path
) -> Result:
    port, monitor = free_port(), free_port()
    config = {
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
        "sinks": [{"id": "out", **sink}],
        "monitor": {"listen": f"127.0.0.1:{monitor}"},
        "state_dir": str(workdir / "state"),
    }
    path = workdir / f"{target}.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "logstream"),
            "--log-level",
            "WARNING",
            "run",
            "-c",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{monitor}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.05)
        cpu_before = cpu_secs(proc.pid)
        started = time.perf_counter()
        send(port, lines, connections)
        while True:
            values = metrics(url)
            delivered = values.get(("logstream_events_out_total", "out"), 0)
            dropped = values.get(("logstream_events_dropped_total", "out"), 0)
            if delivered + dropped >= len(lines):
                break
            time.sleep(0.02)
        secs = time.perf_counter() - started
        cpu = cpu_secs(proc.pid) - cpu_before
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return Result(target, len(lines), secs, cpu, rss, int(delivered), int(dropped))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--targets",
        default="discard,orjson-loop,file,mqtt,mqtt-lz4",
        help="comma-separated: discard, orjson-loop, file, mqtt, mqtt-lz4",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    lines = build_lines(args.events)
    mib = sum(len(line) for line in lines) / 2**20
    print(
        f"{args.events} events, {mib:.1f} MiB, {mib * 2**20 / args.events:.0f} B/event, "
        f"{args.connections} connections, corpus: {CORPUS.is_dir()}"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="logstream-bench-") as tmp:
        workdir = Path(tmp)
        for target in args.targets.split(","):
            if target in ("discard", "orjson-loop"):
                result = run_reference(target, lines, args.connections)
            elif target == "file":
                sink = {"type": "file", "path": str(workdir / "out.ndjson")}
                result = run_logstream(target, sink, lines, args.connections, workdir)
            elif target in ("mqtt", "mqtt-lz4"):
                from logstream.local.mosquitto import Mosquitto

                with Mosquitto(workdir / "mosquitto") as broker:
                    sink = {
                        "type": "mqtt",
                        "url": broker.url,
                        "topic": "bench/{level}",
                        "when_full": "block",
                    }
                    if target == "mqtt-lz4":
                        sink["encoding"] = "lz4"
                    result = run_logstream(target, sink, lines, args.connections, workdir)
            else:
                parser.error(f"unknown target {target!r}")
            results.append(result)
            print(f"  {target:12} {result.events_per_sec:>10,.0f} events/s", flush=True)

    base = {r.target: r for r in results}
    ref = base.get("orjson-loop") or results[0]
    print()
    print(
        "| target | events/s | MiB/s | CPU s | CPU µs/event | peak RSS MiB | delivered | dropped "
        f"| vs {ref.target} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.target} | {r.events_per_sec:,.0f} | {mib / r.secs:.1f} | {r.cpu_secs:.2f} "
            f"| {r.cpu_secs / r.events * 1e6:.2f} | {r.peak_rss_mib:.0f} | {r.delivered:,} "
            f"| {r.dropped:,} | {r.events_per_sec / ref.events_per_sec:.2f} |"
        )
    if args.json:
        args.json.write_text(
            orjson.dumps(
                [r.__dict__ | {"events_per_sec": r.events_per_sec} for r in results],
                option=orjson.OPT_INDENT_2,
            ).decode()
        )


if __name__ == "__main__":
    main()
