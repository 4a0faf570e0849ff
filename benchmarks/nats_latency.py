"""End-to-end latency through the scaling-out path at half of the measured maximum load:
an event written to a shipper's TCP input -> JetStream -> an indexer -> an MQTT subscriber.

Two ``logstream run`` processes and servers started here, on free ports:

- shipper: tcp input -> ``nats`` sink (stream BENCHLAT, R1 file storage, lz4
  envelopes, ``filter_batch_max_events: 4096`` as in config/shipper.yaml);
- indexer: ``nats`` input (durable consumer, batch 200) -> ``mqtt`` sink (lz4,
  defaults: a payload waits up to ``payload_max_delay_secs`` 0.2 s for more);
- a JetStream nats-server and a mosquitto; a paho subscriber (QoS 0, MQTT 5).

1. **maximum load**: ``--max-events`` python-logstash lines sent over one TCP
   connection as fast as possible; the max is that many events over the time
   until the subscriber had them all.
2. **latency** at ``--load`` (0.5) of that rate for ``--secs``: every event
   carries its send time (same host clock); its latency is its arrival at the
   subscriber minus that time.

::

    .venv/bin/python benchmarks/nats_latency.py                 # ~1 min
    .venv/bin/python benchmarks/nats_latency.py --secs 20

Prints p50, p90, p99 and max, and what was lost. The machine is shared and
noisy: run it more than once.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from latency import Receiver, line, percentiles  # benchmarks/latency.py

from logstream.local.mosquitto import Mosquitto, free_port
from logstream.local.nats import NatsServer


def start(workdir: Path, name: str, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    """``logstream run`` with ``config`` (a monitor on a free port); once healthy."""
    monitor = free_port()
    config = {"state_dir": str(workdir / name), "monitor": {"listen": f"127.0.0.1:{monitor}"},
              **config}  # fmt: skip
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "--log-level", "WARNING", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/health", timeout=1):
                return proc, monitor
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: logstream run exited with {proc.returncode}") from None
            time.sleep(0.05)
    raise RuntimeError(f"{name}: not healthy within 30 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-events", type=int, default=100_000)
    parser.add_argument("--load", type=float, default=0.5, help="part of the max rate")
    parser.add_argument("--secs", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logstream-bench-nats-latency-") as tmp:
        workdir = Path(tmp)
        with NatsServer(workdir / "nats") as server, Mosquitto(workdir / "mosquitto") as broker:
            run(args, workdir, server.url, broker.url)


def run(args: argparse.Namespace, workdir: Path, nats_url: str, mqtt_url: str) -> None:
    port = free_port()
    stream = {"servers": [nats_url], "stream": "BENCHLAT"}
    shipper, _ = start(
        workdir,
        "shipper",
        {
            "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
            "sinks": [{"type": "nats", "subject": "lat.{host}", "encoding": "lz4", **stream}],
            "pipeline": {"filter_batch_max_events": 4096},
        },
    )
    receiver = Receiver(mqtt_url, "bench/#")
    indexer = None
    try:
        indexer, _ = start(
            workdir,
            "indexer",
            {
                "inputs": [{"type": "nats", "consumer": "bench", "batch": 200, **stream}],
                "sinks": [
                    {"type": "mqtt", "url": mqtt_url, "topic": "bench/{host}", "encoding": "lz4"}
                ],
            },
        )
        with socket.create_connection(("127.0.0.1", port)) as sock:
            # 1. the maximum rate: every event at the subscriber
            first = time.time_ns()
            sock.sendall(b"".join(line(n, "max") for n in range(args.max_events)))
            deadline = time.monotonic() + 300
            while len(receiver.arrivals) < args.max_events and time.monotonic() < deadline:
                time.sleep(0.05)
            max_rate = len(receiver.arrivals) / ((time.time_ns() - first) / 1e9)
            receiver.arrivals.clear()
            # 2. latency at a part of it, paced in 10 ms steps
            rate = max_rate * args.load
            total = int(rate * args.secs)
            begin = time.monotonic()
            n = 0
            while n < total:
                due = min(total, int((time.monotonic() - begin) * rate) + 1)
                if due > n:
                    sock.sendall(b"".join(line(i, "load") for i in range(n, due)))
                    n = due
                time.sleep(0.01)
            deadline = time.monotonic() + 30
            while len(receiver.arrivals) < total and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        for proc in (shipper, indexer):
            if proc is not None:
                stop(proc)
        receiver.close()
    ms = [
        (at - event["sent_ns"]) / 1e6 for at, event in receiver.arrivals if event["phase"] == "load"
    ]
    print(f"max load (tcp -> shipper -> JetStream -> indexer -> MQTT subscriber): "
          f"{max_rate:,.0f} events/s")  # fmt: skip
    print(f"latency at {args.load:.0%} of it ({rate:,.0f} events/s, {args.secs:g} s):")
    print(f"  shipper tcp input -> MQTT subscriber: {percentiles(ms)}")
    print(f"  lost: {total - len(ms)}")


if __name__ == "__main__":
    main()
