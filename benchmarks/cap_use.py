"""How much of an MQTT byte cap `logstream run` uses under overload, with 1..N workers.

    .venv/bin/python benchmarks/cap_use.py --workers 2 --cap 100000 --secs 10

For each worker count: a fresh mosquitto, one `logstream run` (tcp input, lz4
mqtt sink with ``rate_limit.total_bytes_per_sec``), four TCP connections each
sending 1,250 events/s (about twice the cap after lz4; 60% DEBUG, 35% INFO, 4%
WARNING, 1% ERROR), and ``mosquitto_sub`` stamping each message as the broker
delivers it. Every 1-second window (50 ms apart) from 1.5 s after the offer
starts to 0.5 s before it ends is summed: min, mean and max as a share of the
cap (issue 15 asks for max <= 102% and min >= 95% with 2 workers), the share
of windows at 95% or more, and how many WARNING+ events arrived of those sent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from logstream.local.mosquitto import Mosquitto, free_port
from logstream.payload import decode, is_accounting
from logstream.sinks.mqtt import wire_size

LEVELS = ["DEBUG"] * 60 + ["INFO"] * 35 + ["WARNING"] * 4 + ["ERROR"]
TOPIC = "bench/capped"


def offer(port: int, connection: int, secs: float, per_sec: int) -> None:
    ticks = int(secs * 10)
    per_tick = per_sec // 10
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        for tick in range(ticks):
            chunk = []
            for i in range(per_tick):
                n = connection * 10_000_000 + tick * per_tick + i
                event = {
                    "level": LEVELS[(n * 37) % 100],
                    "host": f"web-{connection}",
                    "n": n,
                    "message": f"GET /api/items/{n} 200 {n % 900} ms user={n % 50}",
                }
                chunk.append(json.dumps(event).encode() + b"\n")
            sock.sendall(b"".join(chunk))
            time.sleep(max(0.0, started + (tick + 1) * 0.1 - time.monotonic()))


def important(connections: int, secs: float, per_sec: int) -> set[int]:
    per_tick = per_sec // 10
    wanted = set()
    for c in range(connections):
        for n in range(c * 10_000_000, c * 10_000_000 + int(secs * 10) * per_tick):
            if LEVELS[(n * 37) % 100] in ("WARNING", "ERROR"):
                wanted.add(n)
    return wanted


def windows(stamps: list[tuple[float, float]], start: float, end: float) -> list[float]:
    totals = []
    lo = start
    while lo + 1 <= end:
        totals.append(sum(amount for at, amount in stamps if lo <= at < lo + 1))
        lo += 0.05
    return totals


def one_run(
    workers: int, cap: int, secs: float, per_sec: int, work: Path, series: bool = False
) -> dict[str, Any]:
    broker = Mosquitto(
        work / f"mosquitto-{workers}",
        extra_config=["max_queued_messages 0", "max_queued_bytes 0"],
    ).start()
    tcp = free_port()
    config = {
        "state_dir": str(work / f"state-{workers}"),
        "pipeline": {"workers": workers},
        "monitor": {"enabled": False},
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{tcp}"}],
        "sinks": [
            {
                "type": "mqtt",
                "url": broker.url,
                "topic": TOPIC,
                "encoding": "lz4",
                "protocol": "3.1.1",
                "client_id": "capped-{worker}",
                "rate_limit": {"total_bytes_per_sec": cap, "accounting_interval_secs": 2},
            }
        ],
    }
    path = work / f"config-{workers}.yaml"
    path.write_text(yaml.safe_dump(config))
    receiver = subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", "311", "-t", TOPIC,
         "-F", "%U %l"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Read as it comes: a full pipe would stall mosquitto_sub and bunch its stamps.
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(receiver.stdout or ()), daemon=True)
    reader.start()
    payloads: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    sub.on_message = lambda client, userdata, message: payloads.append(message.payload)
    sub.connect(broker.host, broker.port)
    sub.subscribe(TOPIC, qos=1)
    sub.loop_start()
    log = (work / f"run-{workers}.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "logstream", "run", "-c", str(path)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", tcp), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or run.poll() is not None:
                    raise RuntimeError(f"logstream did not start: see {log.name}") from None
                time.sleep(0.2)
        time.sleep(1.0)  # every worker listening
        threads = [threading.Thread(target=offer, args=(tcp, c, secs, per_sec)) for c in range(4)]
        offered_from = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        offered_to = time.time()
        time.sleep(4)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        time.sleep(1)
        receiver.terminate()
        receiver.wait(10)
        reader.join(10)
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    stamps = []
    for line in received:
        stamp, length = line.split(" ")
        stamps.append((float(stamp), float(wire_size(len(TOPIC), int(length), 0, None))))
    totals = windows(stamps, offered_from + 1.5, offered_to - 0.5)
    if series:
        print(" ".join(f"{t / cap:.0%}" for t in totals[::5]), file=sys.stderr)
    delivered = {
        e["n"] for p in payloads for e in decode(p).events if not is_accounting(e) and "n" in e
    }
    wanted = important(4, secs, per_sec)
    return {
        "workers": workers,
        "min": min(totals) / cap,
        "min_at": 1.5 + totals.index(min(totals)) * 0.05,
        "over_95": sum(total >= 0.95 * cap for total in totals) / len(totals),
        "mean": statistics.fmean(totals) / cap,
        "max": max(totals) / cap,
        "warning_plus": f"{len(wanted & delivered)}/{len(wanted)}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="runs 1..N workers")
    parser.add_argument("--cap", type=int, default=100_000, help="bytes/s")
    parser.add_argument("--secs", type=float, default=10.0, help="offer this long")
    parser.add_argument("--rate", type=int, default=1250, help="events/s per connection")
    parser.add_argument("--keep", action="store_true", help="keep the logs and configs")
    parser.add_argument("--only", type=int, help="run this worker count only")
    parser.add_argument(
        "--series", action="store_true", help="print every fifth window's share (stderr)"
    )
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="cap-use-"))  # kept if a run fails
    print("| workers | min window (at s) | windows >= 95% | mean | max window | WARNING+ |")
    print("|---:|---:|---:|---:|---:|---:|")
    counts = [args.only] if args.only else range(1, args.workers + 1)
    for workers in counts:
        result = one_run(workers, args.cap, args.secs, args.rate, directory, args.series)
        print(
            f"| {workers} | {result['min']:.1%} ({result['min_at']:.1f}) | "
            f"{result['over_95']:.0%} | {result['mean']:.1%} | "
            f"{result['max']:.1%} | {result['warning_plus']} |",
            flush=True,
        )
    if args.keep:
        print(f"logs and configs: {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
