"""A local JetStream nats-server on free 127.0.0.1 ports, for `logstream run` and the tests.

::

    with NatsServer(Path(".logstream/nats")) as server:
        print(server.url)          # nats://127.0.0.1:38211
        server.kill()              # SIGKILL (the failover tests)
        server.start()             # same ports, same JetStream store

The server gets a config file in its directory (JetStream with its store in
``<directory>/jetstream``, a monitoring port for ``/healthz``) and logs to
``nats-server.log`` there. Several servers given each other's cluster ports
(``routes``) form a JetStream cluster (R3 streams work on three of them).

``logstream run`` with ``servers: [local]`` calls :func:`local_nats`: a shipper
and an indexer started from the same state directory share one server. The
first one starts it and records it in ``server.json``; the next one finds it
running and uses it. At exit each one stops it when no client is connected any
more (otherwise it is left running, and said so): the last one out stops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
_INSTALL_HINT = "install it: apt-get install nats-server (scripts/bootstrap does)"


class NatsServerError(RuntimeError):
    """nats-server is missing or did not start; the message says why."""


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary (PATH, then the usual directories)."""
    found = shutil.which("nats-server")
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory, "nats-server")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise NatsServerError(
        f"nats-server was not found on PATH nor in {', '.join(_SEARCH_DIRS)}; {_INSTALL_HINT}"
    )


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    """One nats-server process with JetStream; its config, store and log in ``directory``.

    Ports are picked on the first ``start`` (unless given) and kept for later
    starts. ``cluster_port`` and ``routes`` (other servers' cluster ports) make
    it one node of a cluster named ``cluster_name``. ``extra_config`` lines are
    appended to the generated config (``authorization { ... }``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "n1",
        port: int | None = None,
        http_port: int | None = None,
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
        cluster_name: str = "logstream",
        extra_config: Sequence[str] = (),
        start_timeout_secs: float = 20.0,
    ) -> None:
        self.directory = Path(directory)
        self.name = name
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.cluster_name = cluster_name
        self.extra_config = list(extra_config)
        self.start_timeout_secs = start_timeout_secs
        self.log_path = self.directory / "nats-server.log"
        self.config_path = self.directory / "nats-server.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config_text(self) -> str:
        store = self.directory / "jetstream"
        lines = [
            "# Written by logstream on every start; edits are lost.",
            f"server_name: {self.name}",
            f"listen: {HOST}:{self.port}",
            f"http: {HOST}:{self.http_port}",
            "max_payload: 8MB",
            f'jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 8GB }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://{HOST}:{port}" for port in self.routes)
            lines.append(
                f"cluster {{ name: {self.cluster_name}, listen: {HOST}:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        lines.extend(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, *, wait_ready: bool = True) -> NatsServer:
        """Start the server; with ``wait_ready``, until it accepts clients (and, alone,
        until JetStream answers ``/healthz``)."""
        if self.running:
            return self
        binary = find_nats_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        self._log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C for logstream does not stop it first
            )
        except OSError as error:
            self._close_log()
            raise NatsServerError(f"cannot run {binary}: {error}") from None
        if wait_ready:
            self.wait_ready(jetstream=self.cluster_port is None)
        return self

    def wait_ready(self, *, jetstream: bool = True) -> None:
        """Until the client port accepts (and ``/healthz`` says ok, with ``jetstream``)."""
        deadline = time.monotonic() + self.start_timeout_secs
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with status {self._process.returncode}; its log "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            if _accepts(HOST, self.port) and (not jetstream or self.healthy()):
                return
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(
            f"nats-server did not get ready within {self.start_timeout_secs}s; its log "
            f"({self.log_path}):\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        """JetStream is up and current (``/healthz``)."""
        return _healthz(self.http_port)

    def connections(self) -> int:
        """Clients connected now (``/connz``); -1 when the server does not answer."""
        return _connections(self.http_port)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_secs: float = 10.0) -> None:
        """SIGTERM (a clean JetStream shutdown), SIGKILL after ``timeout_secs``. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_secs)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: the crash of a node (its store stays for a restart)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsServer({self.name}, {self.url}, running={self.running})"


class LocalNats:
    """The server `logstream run` uses for ``servers: [local]``: shared by every
    logstream process started from the same state directory (see the module doc)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.record = self.directory / "server.json"
        self._server: NatsServer | None = None
        self._url: str | None = None
        # The record of a server another process started, when this one reused it.
        self._reused: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise NatsServerError("the local nats-server has not been started")
        return self._url

    def start(self) -> None:
        found = self._running_record()
        if found is not None:
            self._url = found["url"]
            self._reused = found
            log.info("using the local nats-server already running at %s", self._url)
            return
        previous = self._read_record() or {}
        server = NatsServer(
            self.directory,
            port=_free_or_none(previous.get("port")),
            http_port=_free_or_none(previous.get("http_port")),
        )
        server.start()
        self._server = server
        self._url = server.url
        record = {"pid": server.pid, "url": server.url, "port": server.port}
        record["http_port"] = server.http_port
        self.record.write_text(json.dumps(record), encoding="utf-8")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            self._stop_reused()
            return
        others = server.connections()
        if others > 0:
            log.warning(
                "local nats-server %s (pid %s) left running: %d other clients still use it",
                server.url,
                server.pid,
                others,
            )
            server._process = None  # not ours to stop any more
            server._close_log()
            return
        server.stop()
        with contextlib.suppress(OSError):
            self.record.unlink()

    def _stop_reused(self) -> None:
        """The last user of a server another process left running stops it."""
        found, self._reused = self._reused, None
        if found is None or _connections(int(found.get("http_port", 0))) != 0:
            return
        pid = int(found["pid"])
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"nats-server" not in command:
            return  # the pid was reused by something else
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
            self.record.unlink()
        log.info("stopped the local nats-server %s (no client left)", found.get("url"))

    def _read_record(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _running_record(self) -> dict[str, Any] | None:
        data = self._read_record()
        if (
            data is None
            or not isinstance(data.get("pid"), int)
            or not isinstance(data.get("port"), int)
        ):
            return None
        try:
            os.kill(data["pid"], 0)
        except OSError:
            return None
        if not _accepts(HOST, data["port"]) or not _healthz(int(data.get("http_port", 0))):
            return None
        return data


def _free_or_none(port: Any) -> int | None:
    if not isinstance(port, int) or port <= 0:
        return None
    return None if _accepts(HOST, port) else port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own server
        return json.loads(response.read())


def _healthz(http_port: int) -> bool:
    if http_port <= 0:
        return False
    try:
        answer = _get_json(f"http://{HOST}:{http_port}/healthz")
    except (OSError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("status") == "ok"


def _connections(http_port: int) -> int:
    try:
        answer = _get_json(f"http://{HOST}:{http_port}/connz")
    except (OSError, ValueError):
        return -1
    return int(answer.get("num_connections", 0)) if isinstance(answer, dict) else -1
