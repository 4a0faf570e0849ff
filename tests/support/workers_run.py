"""A `logstream run` process started from a config dict, and ways to look at it."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


class LogstreamProcess:
    """``python -m logstream run`` on a config written to ``directory``."""

    def __init__(self, config: dict[str, Any], directory: Path, name: str = "logstream") -> None:
        self.config = config
        self.path = directory / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.monitor = f"http://{config['monitor']['listen']}"
        self.log = directory / f"{name}.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logstream", "run", "-c", str(self.path)],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            cwd=directory,
        )
        self.returncode: int | None = None

    def wait_healthy(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"logstream exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.monitor}/health", timeout=2) as answer:  # noqa: S310
                    health: dict[str, Any] = json.loads(answer.read())
                    return health
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"logstream did not come up: {self.log.read_text()[-3000:]}")

    def _get(self, path: str) -> bytes:
        """GET ``path`` from the monitor. Every worker serves the monitor address, so a
        request the kernel queued on a worker that is being killed is reset: like a
        scraper at its next interval, ask again (another worker answers)."""
        for attempt in range(5):
            try:
                with urllib.request.urlopen(f"{self.monitor}{path}", timeout=5) as answer:  # noqa: S310
                    body: bytes = answer.read()
                    return body
            except urllib.error.HTTPError as error:  # 503 while degraded: still a body
                return error.read()
            except (ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError):
                if attempt == 4:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self._get("/health"))
        return body

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """(sample name, labels) -> value, from /metrics."""
        text = self._get("/metrics").decode()
        values = {}
        for match in re.finditer(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", text, re.M):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            values[(match.group(1), labels)] = float(match.group(3))
        return values

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples that carry ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= ls)

    def wait_value(self, name: str, at_least: float, timeout: float = 30, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = self.value(name, **labels)
            if value >= at_least:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {value}, wanted >= {at_least}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 90) -> tuple[int, str, str]:
        """Signal, wait; (exit code, stdout, the log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        out, _ = self.proc.communicate(timeout=timeout)
        self._log_file.close()
        self.returncode = self.proc.returncode
        return self.proc.returncode, out.decode(), self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._log_file.close()


@pytest.fixture
def logstream_run(tmp_path: Path) -> Iterator[Callable[..., LogstreamProcess]]:
    """Start `logstream run` processes; whatever still runs at the end is stopped."""
    started: list[LogstreamProcess] = []

    def start(config: dict[str, Any], name: str = "logstream") -> LogstreamProcess:
        process = LogstreamProcess(config, tmp_path, name)
        started.append(process)
        process.wait_healthy()
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.stop(timeout=60) if process.returncode is None else None
        process.kill()
