"""NATS fixtures: a JetStream nats-server per test, or a 3-node JetStream cluster.

Each server runs on free 127.0.0.1 ports with its store in the test's tmp
dir. The cluster's nodes route to each other on loopback; R3 streams work.
tests/conftest.py imports them for every test module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logstream.local.nats import NatsServer, NatsServerError, find_nats_server, free_port

__all__ = ["nats_cluster", "nats_server", "start_cluster"]


def _require_nats_server() -> None:
    try:
        find_nats_server()
    except NatsServerError as error:
        pytest.skip(str(error))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One JetStream nats-server for this test."""
    _require_nats_server()
    with NatsServer(tmp_path / "nats") as server:
        yield server


def start_cluster(directory: Path, size: int = 3) -> list[NatsServer]:
    """``size`` JetStream nodes routed to each other; returns once all are healthy."""
    ports = [free_port() for _ in range(size)]
    servers = [
        NatsServer(
            directory / f"n{index}",
            name=f"n{index}",
            cluster_port=port,
            routes=[other for other in ports if other != port],
        )
        for index, port in enumerate(ports)
    ]
    try:
        for server in servers:
            server.start(wait_ready=False)
        deadline = time.monotonic() + 30
        for server in servers:
            server.wait_ready(jetstream=False)
        while not all(server.healthy() for server in servers):
            if time.monotonic() > deadline:
                raise NatsServerError(
                    "the cluster did not become healthy: "
                    + "\n".join(server.log_tail(5) for server in servers)
                )
            time.sleep(0.1)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """A 3-node JetStream cluster for this test."""
    _require_nats_server()
    servers = start_cluster(tmp_path / "cluster")
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()
