"""A real `logstream run` process on free ports, its banner and its monitor.

``logstream_process(config)`` writes the config (inputs and monitor on free
ports unless given, state in the test's tmp_path), starts ``logstream run``,
waits for its banner and returns a :class:`RunningLogstream`; every process is
stopped after the test.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from logstream.local.mosquitto import free_port

__all__ = ["logstream_process"]


class RunningLogstream:
    def __init__(
        self, proc: subprocess.Popen[str], config: dict[str, Any], tcp: int, path: Path
    ) -> None:
        self.proc = proc
        self.path = path  # the config file
        self.config = config
        self.tcp_port = tcp
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def monitor(self) -> str:
        return f"http://{self.config['monitor']['listen']}"

    def banner(self, timeout_secs: float = 60.0) -> str:
        """The startup banner, once printed."""
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            text = "".join(self.stdout)
            if "Stop with Ctrl-C" in text:
                return text
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"logstream exited {self.proc.returncode}:\n"
                                     f"{''.join(self.stderr)}")  # fmt: skip
            time.sleep(0.05)
        raise AssertionError(f"no banner within {timeout_secs} s:\n{''.join(self.stderr)}")

    def send(self, events: list[dict[str, Any]]) -> None:
        """Events as JSON lines to the tcp input."""
        data = b"".join(json.dumps(event).encode() + b"\n" for event in events)
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5) as sock:
            sock.sendall(data)

    def get(self, path: str, user: str | None = None, password: str | None = None) -> bytes:
        request = urllib.request.Request(f"{self.monitor}{path}")  # noqa: S310 - local
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - local
            body: bytes = answer.read()
            return body

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        return self.proc.returncode


@pytest.fixture
def logstream_process(tmp_path: Path) -> Iterator[Callable[..., RunningLogstream]]:
    started: list[RunningLogstream] = []

    def start(config: dict[str, Any]) -> RunningLogstream:
        tcp = free_port()
        config = {
            "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{tcp}"}],
            "state_dir": str(tmp_path / "state"),
            **config,
        }
        config["monitor"] = {"listen": f"127.0.0.1:{free_port()}", **config.get("monitor", {})}
        path = tmp_path / f"logstream-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "logstream", "run", "-c", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        running = RunningLogstream(proc, config, tcp, path)
        started.append(running)
        running.banner()
        return running

    yield start
    for running in started:
        running.stop()
