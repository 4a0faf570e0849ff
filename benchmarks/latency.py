"""End-to-end latency: an event written to TCP -> received by an MQTT subscriber, and
-> visible in Elasticsearch, at half of the measured maximum load.

One ``logstream run`` (tcp input -> ``mqtt`` sink (lz4, defaults: payloads
wait up to ``payload_max_delay_secs`` 0.2 s for more events) and
``elasticsearch`` sink (noida-db, defaults)), a fresh mosquitto and noida-db
started here:

1. **maximum load**: ``--max-events`` python-logstash lines sent over one TCP
   connection as fast as possible; the max is that many events over the time
   until the MQTT subscriber had them all and Elasticsearch counted them all.
2. **latency** at ``--load`` (0.5) of that rate for ``--secs``: every event
   carries its send time (``time.time_ns()``, same host clock); the MQTT
   latency of an event is its arrival at a paho subscriber (QoS 0, MQTT 5)
   minus that time. Elasticsearch latency: ``_count`` is polled every
   ``--poll-ms`` after a ``_refresh``; an event is visible at the first poll
   whose count covers it (one connection, so events are indexed about in send
   order); the figures include up to one poll interval and the refresh.

::

    .venv/bin/python benchmarks/latency.py                    # ~1 min
    .venv/bin/python benchmarks/latency.py --secs 20 --load 0.5

Prints p50, p90, p99 and max of each, and the settings. The machine is shared
and noisy: run it more than once.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from logstream.local.mosquitto import Mosquitto, free_port
from logstream.local.noida import Noida
from logstream.payload import decode

INDEX = "latency"


class Receiver:
    """A paho subscriber recording (arrival ns, event) for every event."""

    def __init__(self, url: str, topic: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.arrivals: list[tuple[int, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=0)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._message
        self.client.connect(host, int(port))
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("the subscriber did not subscribe")

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        for event in decode(bytes(message.payload)).events:
            self.arrivals.append((now, event))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def line(n: int, phase: str) -> bytes:
    return (
        orjson.dumps(
            {
                "@version": "1",
                "@timestamp": "2026-11-24T10:00:00.000Z",
                "host": "web-1",
                "level": "INFO",
                "logger_name": "app.requests",
                "message": f"GET /api/items/{n} 200 {n % 900} ms",
                "n": n,
                "phase": phase,
                "sent_ns": time.time_ns(),
            }
        )
        + b"\n"
    )


def es(url: str, path: str, method: str = "GET") -> Any:
    """A JSON answer; ``{"count": 0}`` while the index does not exist yet."""
    request = urllib.request.Request(f"{url}{path}", method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return {"count": 0}
        raise


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"p50 {at(0.5):7.1f} ms  p90 {at(0.9):7.1f} ms  p99 {at(0.99):7.1f} ms  "
        f"max {ordered[-1]:7.1f} ms  ({len(ordered)} events)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-events", type=int, default=100_000)
    parser.add_argument("--load", type=float, default=0.5, help="part of the max rate")
    parser.add_argument("--secs", type=float, default=10.0)
    parser.add_argument("--poll-ms", type=float, default=100.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logstream-bench-latency-") as tmp:
        workdir = Path(tmp)
        with Mosquitto(workdir / "mosquitto") as broker:
            noida = Noida(workdir / "noida")
            noida.start()
            try:
                run(args, workdir, broker.url, noida.url)
            finally:
                noida.stop()


def run(args: argparse.Namespace, workdir: Path, mqtt_url: str, es_url: str) -> None:
    port, monitor = free_port(), free_port()
    config = {
        "state_dir": str(workdir / "state"),
        "monitor": {"listen": f"127.0.0.1:{monitor}"},
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
        "sinks": [
            {"type": "mqtt", "url": mqtt_url, "topic": "bench/{host}", "encoding": "lz4"},
            {"type": "elasticsearch", "hosts": [es_url], "index": INDEX},
        ],
    }
    path = workdir / "latency.json"
    path.write_text(json.dumps(config))
    receiver = Receiver(mqtt_url, "bench/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "--log-level", "WARNING", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/health", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"logstream run exited with {proc.returncode}") from None
                time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            # 1. the maximum rate: every event at the subscriber and counted in ES
            lines = [line(n, "max") for n in range(args.max_events)]
            first = time.time_ns()
            sock.sendall(b"".join(lines))
            deadline = time.monotonic() + 300
            base = 0
            while time.monotonic() < deadline:
                es(es_url, f"/{INDEX}/_refresh", "POST")
                base = es(es_url, f"/{INDEX}/_count")["count"]
                if base >= args.max_events and len(receiver.arrivals) >= args.max_events:
                    break
                time.sleep(0.1)
            max_rate = args.max_events / ((time.time_ns() - first) / 1e9)
            receiver.arrivals.clear()
            # 2. latency at a part of it, paced in 10 ms steps
            rate = max_rate * args.load
            total = int(rate * args.secs)
            sent_at: list[int] = []
            polls: list[tuple[int, int]] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    es(es_url, f"/{INDEX}/_refresh", "POST")
                    polls.append((time.time_ns(), es(es_url, f"/{INDEX}/_count")["count"] - base))
                    time.sleep(args.poll_ms / 1000)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            start = time.monotonic()
            n = 0
            while n < total:
                due = min(total, int((time.monotonic() - start) * rate) + 1)
                if due > n:
                    chunk = []
                    for i in range(n, due):
                        sent_at.append(time.time_ns())
                        chunk.append(line(i, "load"))
                    sock.sendall(b"".join(chunk))
                    n = due
                time.sleep(0.01)
            deadline = time.monotonic() + 30
            while (not polls or polls[-1][1] < total) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            poller.join(5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        receiver.close()
    mqtt_ms = [
        (at - event["sent_ns"]) / 1e6 for at, event in receiver.arrivals if event["phase"] == "load"
    ]
    es_ms = []
    for index, sent in enumerate(sent_at):
        seen = next((at for at, count in polls if count > index), None)
        if seen is not None:
            es_ms.append((seen - sent) / 1e6)
    print(f"max load (tcp -> MQTT subscriber and ES count): {max_rate:,.0f} events/s")
    print(f"latency at {args.load:.0%} of it ({rate:,.0f} events/s, {args.secs:g} s):")
    print(f"  tcp -> MQTT subscriber:       {percentiles(mqtt_ms)}")
    print(f"  tcp -> visible in ES (count): {percentiles(es_ms)}  (poll {args.poll_ms:g} ms)")
    print(f"  lost on MQTT: {total - len(mqtt_ms)}, not seen in ES: {total - len(es_ms)}")


if __name__ == "__main__":
    main()
