"""The NATS JetStream tier: shipper and indexer throughput, next to the file sink.

Each target is ``logstream run`` in its own process, fed python-logstash
version 1 JSON lines over TCP (the lines of ``logstream bench throughput``),
against a fresh single-node JetStream nats-server started here (file storage,
R1):

- ``file``: tcp input -> file sink (the reference, same run);
- ``shipper``: tcp input -> nats sink (lz4 envelopes; every batch waits for its
  PubAcks, which is what makes events safe);
- ``indexer``: nats input (durable pull consumer) -> file sink, draining the
  stream the shipper filled, timed from the moment it answers /health.

::

    .venv/bin/python benchmarks/nats.py                      # 300k events, ~1 min
    .venv/bin/python benchmarks/nats.py --events 100000 --connections 2

Read the ratios to ``file``: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from logstream.bench.throughput import (
    Result,
    _mib,
    build_lines,
    cpu_secs,
    metrics,
    peak_rss_mib,
    send,
)
from logstream.local.nats import NatsServer, free_port


def run_process(
    target: str,
    config: dict[str, Any],
    workdir: Path,
    expected: int,
    lines: list[bytes] | None,
    connections: int,
) -> Result:
    """``logstream run`` with ``config`` (its sink has id ``out``); fed ``lines`` over its
    tcp input when given; done when ``out`` delivered or dropped ``expected`` events."""
    monitor = free_port()
    config = {**config, "monitor": {"listen": f"127.0.0.1:{monitor}"}}
    config["state_dir"] = str(workdir / f"state-{target}")
    path = workdir / f"{target}.json"
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
        if lines is not None:
            port = int(config["inputs"][0]["listen"].rsplit(":", 1)[1])
            send(port, lines, connections)
        while True:
            values = metrics(url)
            delivered = values.get(("logstream_events_out_total", "out"), 0)
            dropped = values.get(("logstream_events_dropped_total", "out"), 0)
            if delivered + dropped >= expected:
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
    mib = _mib(lines) if lines is not None else 0.0
    return Result(target, expected, mib, secs, cpu, rss, int(delivered), int(dropped))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--filter-batch", type=int, default=4096)
    args = parser.parse_args()
    lines = build_lines(args.events, None)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="logstream-bench-nats-") as tmp:
        workdir = Path(tmp)
        pipeline = {"filter_batch_max_events": args.filter_batch}

        def tcp(sink: dict[str, Any]) -> dict[str, Any]:
            listen = f"127.0.0.1:{free_port()}"
            return {
                "inputs": [{"type": "tcp", "listen": listen}],
                "sinks": [{"id": "out", **sink}],
                "pipeline": pipeline,
            }

        file_sink = {"type": "file", "path": str(workdir / "file.ndjson")}
        results.append(
            run_process("file", tcp(file_sink), workdir, len(lines), lines, args.connections)
        )
        with NatsServer(workdir / "nats") as server:
            nats_sink = {"type": "nats", "servers": [server.url], "stream": "BENCH"}
            nats_sink["subject"] = "bench.{host}"
            results.append(
                run_process("shipper", tcp(nats_sink), workdir, len(lines), lines, args.connections)
            )
            indexer = {
                "inputs": [
                    {"type": "nats", "servers": [server.url], "stream": "BENCH", "batch": 200}
                ],
                "sinks": [{"id": "out", "type": "file", "path": str(workdir / "indexed.ndjson")}],
                "pipeline": pipeline,
            }
            results.append(run_process("indexer", indexer, workdir, len(lines), None, 1))
    reference = results[0].events_per_sec
    print(f"{args.events} events, {args.connections} connections, R1 file-storage stream")
    print(
        f"{'target':<10} {'events/s':>10} {'x file':>7} {'CPU us/event':>13} {'peak RSS MiB':>13}"
    )
    for result in results:
        row = result.as_dict()
        print(
            f"{result.target:<10} {result.events_per_sec:>10,.0f} "
            f"{result.events_per_sec / reference:>7.2f} {row['cpu_us_per_event']:>13.1f} "
            f"{result.peak_rss_mib:>13.0f}"
        )


if __name__ == "__main__":
    main()
