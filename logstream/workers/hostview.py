"""The host's metrics and health, written by the supervisor, served by every worker.

With several workers the monitor address is shared like the inputs'
(``SO_REUSEPORT``): whichever worker the kernel hands a connection to answers
it, so ``/metrics`` and ``/health`` stay up while one worker restarts, and the
supervisor needs no HTTP server of its own (it stays small: it imports neither
the pipeline nor aiohttp). Each second the supervisor writes the sum of every
worker's metrics and the workers' states to two files under
``state_dir/workers`` (each replaced atomically, so a reader sees one whole
version); a worker's monitor serves those files as they are.

Every worker reads the same files, so what a scraper sees never goes back,
whichever worker answers.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import orjson

METRICS_FILE = "metrics.prom"
HEALTH_FILE = "health.json"


def view_dir(state_dir: Path) -> Path:
    return state_dir / "workers"


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old or the new file, whole."""
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_bytes(data)
    os.replace(temp, path)


def write_view(state_dir: Path, exposition: bytes, health: dict[str, Any]) -> None:
    """The supervisor's side: publish the host's metrics and health."""
    directory = view_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    _replace(directory / METRICS_FILE, exposition)
    _replace(directory / HEALTH_FILE, orjson.dumps(health))


def remove_view(state_dir: Path) -> None:
    """Forget the last run's view (a worker must not serve a stale one)."""
    for name in (METRICS_FILE, HEALTH_FILE):
        with contextlib.suppress(FileNotFoundError):
            (view_dir(state_dir) / name).unlink()


class HostSource:
    """A worker monitor's :class:`~logstream.monitor.MetricsSource`: the host's view.

    ``own`` is the worker's own pipeline source: its monitor counts the requests
    it refused there (they reach the host's sums through the supervisor), and
    the worker answers 503 itself while it stops.
    """

    def __init__(self, state_dir: Path, own: Any) -> None:
        self.directory = view_dir(state_dir)
        self.own = own

    def exposition(self) -> bytes:
        try:
            return (self.directory / METRICS_FILE).read_bytes()
        except FileNotFoundError:  # the supervisor has not written it yet
            return b""

    def health(self) -> tuple[dict[str, Any], bool]:
        try:
            body: dict[str, Any] = orjson.loads((self.directory / HEALTH_FILE).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {"status": "starting", "workers": []}, False
        started = body.pop("started_at", None)
        if isinstance(started, (int, float)):
            body["uptime_secs"] = round(time.time() - started, 3)
        healthy = bool(body.pop("healthy", False))
        _, running = self.own.health()
        if not running:
            body["status"] = "stopping"
            healthy = False
        return body, healthy

    def monitor_metrics(self) -> Any:
        return self.own.monitor_metrics()
