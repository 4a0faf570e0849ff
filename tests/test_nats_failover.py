"""Failover with real processes: a 3-node JetStream cluster, a shipper and two
indexers (`logstream run`), Elasticsearch (noida-db). The stream leader and one
indexer are SIGKILLed mid-stream; every event must be in Elasticsearch exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import yaml

from logstream.local.nats import NatsServer, free_port
from tests.support.elasticsearch import es_count

pytestmark = pytest.mark.timeout(180)


class Process:
    """A `logstream run` subprocess with its config and log in ``directory``."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = directory / "logstream.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "logstream", "run", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return f"--- {self.directory.name}\n" + "\n".join(text.splitlines()[-lines:])


def wait_for(condition: Any, timeout_secs: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout_secs} s")


def stream_leader(urls: list[str]) -> str | None:
    async def ask() -> str | None:
        client = await nats.connect(urls)
        try:
            info = await client.jetstream().stream_info("LOGS")
            return info.cluster.leader if info.cluster is not None else None
        except Exception:
            return None
        finally:
            await client.close()

    return asyncio.run(ask())


def test_a_killed_node_and_a_killed_indexer_lose_and_duplicate_nothing(
    nats_cluster: list[NatsServer],
    elasticsearch_url: str,
    es_index_prefix: str,
    tmp_path: Path,
) -> None:
    urls = [server.url for server in nats_cluster]
    port = free_port()
    shipper = Process(
        tmp_path / "shipper",
        {
            "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
            "sinks": [
                {
                    "type": "nats",
                    "servers": urls,
                    "subject": "logs.{host}",
                    "stream": "LOGS",
                    "replicas": 3,
                    "max_message_events": 200,
                    "ack_timeout_secs": 1.0,
                    "retry_initial_secs": 0.1,
                    "retry_max_secs": 1.0,
                }
            ],
            "monitor": {"enabled": False},
            "state_dir": str(tmp_path / "shipper" / "state"),
        },
    )

    def indexer(number: int) -> Process:
        return Process(
            tmp_path / f"indexer{number}",
            {
                "inputs": [
                    {
                        "type": "nats",
                        "servers": urls,
                        "stream": "LOGS",
                        "consumer": "indexers",
                        "batch": 20,
                        "ack_wait_secs": 3.0,
                        "fetch_timeout_secs": 2.0,
                        "heartbeat_secs": 0.5,
                    }
                ],
                "sinks": [
                    {
                        "type": "elasticsearch",
                        "hosts": [elasticsearch_url],
                        "index": f"{es_index_prefix}logs",
                        "spool": {"enabled": True, "fsync": "never"},
                        "batch_max_delay_secs": 0.05,
                        "retry_initial_secs": 0.2,
                        "retry_max_secs": 1.0,
                    }
                ],
                "monitor": {"enabled": False},
                "state_dir": str(tmp_path / f"indexer{number}" / "state"),
            },
        )

    indexers = [indexer(0), indexer(1)]
    processes = [shipper, *indexers]
    total = 30_000
    try:
        shipper.start()
        for process in indexers:
            process.start()
        wait_for(lambda: stream_leader(urls) is not None, 30, "the R3 stream")

        def send(start: int, count: int, conn: socket.socket) -> None:
            body = b"".join(
                orjson.dumps({"seq": n, "message": f"event {n}", "host": f"h{n % 3}"}) + b"\n"
                for n in range(start, start + count)
            )
            conn.sendall(body)

        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            for chunk in range(30):
                send(chunk * 1000, 1000, conn)
                time.sleep(0.1)
                if chunk == 9:
                    wait_for(
                        lambda: es_count(elasticsearch_url, f"{es_index_prefix}*") > 0,
                        30,
                        "the first events in Elasticsearch",
                        every=0.5,
                    )
                    leader = stream_leader(urls)
                    victim = next(s for s in nats_cluster if s.name == leader)
                    victim.kill()
                    indexers[0].kill()
        # The killed indexer comes back (its spool holds what it had taken).
        indexers[0] = indexer(0)
        processes.append(indexers[0])
        indexers[0].start()
        wait_for(
            lambda: es_count(elasticsearch_url, f"{es_index_prefix}*") >= total,
            120,
            "every event in Elasticsearch",
            every=1.0,
        )
        time.sleep(2.0)  # anything redelivered late would show up now
        assert es_count(elasticsearch_url, f"{es_index_prefix}*") == total
        survivors = [server.url for server in nats_cluster if server.running]
        assert len(survivors) == 2
        assert stream_leader(survivors) not in (None, victim.name)
        assert shipper.stop() == 0
    except BaseException:
        for process in processes:
            if process.proc is not None:
                print(process.log())
        raise
    finally:
        for process in processes:
            process.stop()
    assert os.path.exists(shipper.log_path)
