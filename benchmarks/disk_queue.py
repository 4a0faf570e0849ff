"""What the persisted ingest queue costs: tcp -> file with a memory vs a disk queue.

Each variant is a real ``logstream run`` fed the same python-logstash lines over
TCP (the ``logstream bench throughput`` load generator); it is done when the
file sink has written every event (read from /metrics). Variants run
interleaved, ``--rounds`` times, and each is reported as the median, with its
ratio to the memory queue measured in the same run (absolute figures move with
whatever else the machine does; the ratios are the result)::

    .venv/bin/python benchmarks/disk_queue.py                      # 200k events, 3 rounds
    .venv/bin/python benchmarks/disk_queue.py --events 50000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from logstream.bench.throughput import build_lines, cpu_secs, metrics, send
from logstream.local.mosquitto import free_port

VARIANTS: dict[str, dict[str, Any]] = {
    "memory": {"type": "memory"},
    "disk (fsync interval)": {"type": "disk"},
    "disk (fsync always)": {"type": "disk", "fsync": "always"},
}


def run_once(queue: dict[str, Any], lines: list[bytes], workdir: Path) -> tuple[float, float]:
    """(seconds, CPU seconds) for ``lines`` through tcp -> file with ``queue``."""
    port, monitor = free_port(), free_port()
    out = workdir / "out.ndjson"
    out.unlink(missing_ok=True)
    config = {
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
        "sinks": [{"id": "out", "type": "file", "path": str(out)}],
        "pipeline": {"queue": queue},
        "monitor": {"listen": f"127.0.0.1:{monitor}"},
        "state_dir": str(workdir / "state"),
    }
    path = workdir / "queue-bench.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "--log-level", "WARNING", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{monitor}"
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
        send(port, lines, 4)
        while True:
            values = metrics(url)
            done = values.get(("logstream_events_out_total", "out"), 0) + values.get(
                ("logstream_events_dropped_total", "out"), 0
            )
            if done >= len(lines):
                break
            time.sleep(0.02)
        secs = time.perf_counter() - started
        cpu = cpu_secs(proc.pid) - cpu_before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return secs, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = build_lines(args.events, None)
    secs: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpus: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
        for _ in range(args.rounds):
            for name, queue in VARIANTS.items():
                workdir = Path(tmp) / name.split()[0]
                workdir.mkdir(exist_ok=True)
                took, cpu = run_once(queue, lines, workdir)
                secs[name].append(took)
                cpus[name].append(cpu)
    base_rate = args.events / statistics.median(secs["memory"])
    base_cpu = statistics.median(cpus["memory"]) / args.events
    print(f"tcp -> file, {args.events} events, median of {args.rounds} interleaved rounds\n")
    print("| queue | events/s | vs memory | CPU µs/event | CPU vs memory |")
    print("|---|---:|---:|---:|---:|")
    for name in VARIANTS:
        rate = args.events / statistics.median(secs[name])
        cpu = statistics.median(cpus[name]) / args.events
        print(
            f"| {name} | {rate:,.0f} | {rate / base_rate:.2f}x | {cpu * 1e6:.1f} | "
            f"{cpu / base_cpu:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
