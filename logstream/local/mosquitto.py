"""A local mosquitto broker on a free 127.0.0.1 port, for `logstream run` and the tests.

::

    with Mosquitto(Path(".logstream/mosquitto")) as broker:
        print(broker.url)          # mqtt://127.0.0.1:38211
        print(broker.websockets_url)  # ws://127.0.0.1:38212 (MQTT over WebSockets)
        broker.stop()              # the tests stop it ...
        broker.start()             # ... and start it again on the same port

The broker gets a config file written into its directory (anonymous access,
no persistence, no per-client queue limits, ``$SYS`` every second) and logs
to ``mosquitto.log`` there. Beside the plain MQTT listener it has an
MQTT-over-WebSockets listener (``websockets=True``) on a second free port, for browsers (the
monitor's /tail page); mosquitto refuses to start with a websockets listener
alone, and a plain one always comes first. With ``url_file``, the broker's URL
is written there while it runs (``logstream tail`` finds it) and removed when
it stops. It runs in its own session, so a Ctrl-C meant for
logstream does not stop the broker before logstream has flushed its sinks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
# Where Debian's package puts the broker; /usr/sbin is often not on a user's PATH.
_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
_INSTALL_HINT = "install it: apt-get install mosquitto"


class MosquittoError(RuntimeError):
    """mosquitto is missing or could not be started; the message says why."""


def find_mosquitto() -> str:
    """The path of the ``mosquitto`` binary (PATH, then the usual sbin directories)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory, "mosquitto")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise MosquittoError(
        f"mosquitto was not found on PATH nor in {', '.join(_SEARCH_DIRS)}; {_INSTALL_HINT}"
    )


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """One mosquitto process with its config, log and port kept in ``directory``.

    The port is picked on the first ``start`` (unless given) and kept for
    later starts, so clients can reconnect to a restarted broker.
    ``extra_config`` lines are appended to the generated config (a later
    line overrides an earlier one, e.g. ``allow_anonymous false``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        extra_config: Sequence[str] = (),
        binary: str | None = None,
        start_timeout_secs: float = 10.0,
        websockets: bool = False,
        url_file: Path | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.host = HOST
        self._port = port
        self._port_chosen = port is not None
        self.extra_config = list(extra_config)
        self.binary = binary
        self.start_timeout_secs = start_timeout_secs
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.websockets = websockets
        self._ws_port: int | None = None
        self.url_file = Path(url_file) if url_file is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise MosquittoError("mosquitto has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def websockets_port(self) -> int:
        if self._ws_port is None:
            raise MosquittoError("mosquitto has no websockets listener (yet)")
        return self._ws_port

    @property
    def websockets_url(self) -> str:
        """``ws://127.0.0.1:PORT``: MQTT over WebSockets, for browsers."""
        return f"ws://{self.host}:{self.websockets_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Mosquitto:
        """Start the broker and return once it accepts connections.

        Raises :class:`MosquittoError` when the binary is missing or the broker
        exits or does not listen within ``start_timeout_secs``.
        """
        if self.running:
            return self
        binary = self.binary or find_mosquitto()
        self.directory.mkdir(parents=True, exist_ok=True)
        # A port we picked ourselves may be taken between picking and binding:
        # then pick another. A port already used once is kept (clients know it).
        attempts = 1 if self._port_chosen else 3
        for attempt in range(1, attempts + 1):
            if self._port is None:
                self._port = free_port(self.host)
            if self.websockets and self._ws_port is None:
                self._ws_port = free_port(self.host)
                while self._ws_port == self._port:
                    self._ws_port = free_port(self.host)
            try:
                self._spawn(binary)
                break
            except MosquittoError as error:
                if attempt == attempts or "in use" not in str(error):
                    raise
                if not self._port_chosen:
                    self._port = None
                self._ws_port = None
        self._port_chosen = True
        if self.url_file is not None:
            self.url_file.parent.mkdir(parents=True, exist_ok=True)
            self.url_file.write_text(self.url + "\n", encoding="utf-8")
        return self

    def _spawn(self, binary: str) -> None:
        self.config_path.write_text(self._config_text(), encoding="utf-8")
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_secs
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise MosquittoError(
                    f"mosquitto exited with status {code} on port {self.port}; "
                    f"its log ({self.log_path}) ends with:\n{self._log_tail()}"
                )
            if _accepts(self.host, self.port) and (
                self._ws_port is None or _accepts(self.host, self._ws_port)
            ):
                return
            if time.monotonic() > deadline:
                self._kill()
                raise MosquittoError(
                    f"mosquitto did not listen on {self.host}:{self.port} within "
                    f"{self.start_timeout_secs} s; its log ({self.log_path}) ends with:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.02)

    def _config_text(self) -> str:
        lines = [
            "# Written by logstream on every start; edits are lost.",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "sys_interval 1",
            "persistence false",
        ]

        if os.geteuid() == 0:
            # As root, mosquitto switches to the "mosquitto" user, which cannot read
            # files in a private state or tmp directory (a password file). A broker
            # we launch runs as whoever launched it.
            lines.append("user root")
        lines.extend(self.extra_config)  # listener options (certfile) go to the plain one
        if self.websockets and self._ws_port is not None:
            # Last, after the plain listener: mosquitto 2.0 will not start with only this one.
            lines += [f"listener {self._ws_port} {self.host}", "protocol websockets"]
        return "\n".join(lines) + "\n"

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_secs: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_secs``). Idempotent."""
        if self.url_file is not None:
            self.url_file.unlink(missing_ok=True)
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_secs)
            except subprocess.TimeoutExpired:
                self._kill()
        self._process = None

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "no port yet"
        return f"Mosquitto({where}, running={self.running})"


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
