"""A local noida-db server speaking the Elasticsearch 8 API, started by logstream.

`logstream run` starts one when a sink says ``hosts: [local]``; the test
fixtures start one per session (and a restartable one per test). noida-db
comes from PyPI (``pip install noida-db``; ``scripts/bootstrap`` installs it).

::

    with Noida(Path(".logstream/noida-db")) as server:
        print(server.url)      # http://127.0.0.1:41567
        server.stop()          # data is saved in the data dir
        server.start()         # same port when it is still free

The server's output (its URL line, errors, a harmless "GLIBC_2.39 not found"
warning) goes to ``noida-db.log`` beside the data dir, which is where to look
when it does not start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO

_URL_LINE = re.compile(r"^\s*elasticsearch\s+(https?://\S+)\s*$", re.MULTILINE)


class NoidaError(RuntimeError):
    """noida-db is missing, did not start, or did not answer in time."""


def find_noida() -> list[str]:
    """The command that runs noida-db. Raises :class:`NoidaError` when it is not installed.

    The binary inside the ``noida_db`` package is preferred: its ``noida-db``
    script is a Python wrapper that does not pass signals on to the server.
    """
    try:
        binary = resources.files("noida_db").joinpath("noida-db")
    except ModuleNotFoundError:
        pass
    else:
        if binary.is_file() and os.access(str(binary), os.X_OK):
            return [str(binary)]
    beside_python = Path(sys.executable).with_name("noida-db")
    if beside_python.is_file():
        return [str(beside_python)]
    on_path = shutil.which("noida-db")
    if on_path:
        return [on_path]
    raise NoidaError(
        "noida-db is not installed: run scripts/bootstrap, or `pip install noida-db` "
        "in logstream's virtualenv"
    )


class Noida:
    """One noida-db process serving only its Elasticsearch API, on a free port.

    ``start`` blocks until the server answers HTTP (or raises
    :class:`NoidaError`); ``stop`` ends it gracefully (its data is kept in
    ``data_dir``). With ``port=0``, ``start`` after ``stop`` asks for the same
    port again and takes a new one only if that port was taken meanwhile; an
    explicit ``port`` that is taken is an error.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_secs: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        # 0: any free port, then the same one again on a restart when possible.
        self.port = port
        self._port_is_fixed = port != 0
        self.startup_timeout_secs = startup_timeout_secs
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self._url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:41567``."""
        if self._url is None:
            raise NoidaError("noida-db has not been started")
        return self._url

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers. No-op when already running."""
        if self.running:
            return
        command = find_noida()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._launch(command, self.port)
        except NoidaError:
            if self._port_is_fixed or not self.port:
                raise
            # The port of the previous run was taken meanwhile: take any free one.
            self._launch(command, 0)

    def _launch(self, command: list[str], port: int) -> None:
        self._log = self.log_path.open("ab")
        offset = self._log.tell()
        try:
            self._process = self._spawn(command, port, self._log)
        except OSError as error:
            self.stop()
            raise NoidaError(f"cannot run {command[0]}: {error}") from None
        deadline = time.monotonic() + self.startup_timeout_secs
        try:
            url = self._wait_for_url(self._process, offset, deadline)
            self._wait_for_http(url, deadline)
        except BaseException:  # also Ctrl-C while waiting: never leave a server behind
            self.stop()
            raise
        self._url = url
        self.port = int(url.rsplit(":", 1)[1].rstrip("/"))

    def _spawn(self, command: list[str], port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *command,
                "start",
                "--data-dir",
                str(self.data_dir),
                "--host",
                self.host,
                "--only",
                "elasticsearch",
                "--elasticsearch-port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so stop() reaches a wrapper's child too; and the
            # server is told to stop when the process that started it dies (kill -9).
            start_new_session=True,
            preexec_fn=_pdeathsig(),
        )

    def _wait_for_url(self, process: subprocess.Popen[bytes], offset: int, deadline: float) -> str:
        while True:
            output = self._read_log(offset)
            match = _URL_LINE.search(output)
            if match:
                return match.group(1).rstrip("/")
            if process.poll() is not None:
                raise NoidaError(
                    f"noida-db exited with status {process.returncode} before it printed "
                    f"its URL; its output ({self.log_path}):\n{_tail(output)}"
                )
            if time.monotonic() > deadline:
                raise NoidaError(
                    f"noida-db did not print its URL within {self.startup_timeout_secs}s; "
                    f"its output ({self.log_path}):\n{_tail(output)}"
                )
            time.sleep(0.02)

    def _wait_for_http(self, url: str, deadline: float) -> None:
        error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                break
            try:
                with urllib.request.urlopen(url + "/", timeout=1.0) as response:  # noqa: S310 - our own http URL
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError) as exc:
                error = exc
            time.sleep(0.02)
        raise NoidaError(f"noida-db at {url} did not answer HTTP in time (last error: {error})")

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout_secs: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM; SIGKILL after ``timeout_secs``). Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout_secs)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
            # A wrapper may have ended before the server it started: the server is
            # still in the group. Wait for the group to empty; kill what stays.
            if not _group_gone(process.pid, timeout_secs):
                _signal_group(process, signal.SIGKILL)
                _group_gone(process.pid, 5.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Noida:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _pdeathsig() -> Callable[[], None] | None:
    """Linux: a pre-exec hook that has the child get SIGTERM when the thread that
    started it dies (``kill -9`` of logstream). Resolved here, in the parent: the hook
    itself only makes one system call (nothing to import or lock after fork).

    Only from the main thread: the kernel watches the starting *thread*, and a
    worker thread (``asyncio.to_thread``) ending would stop a healthy server."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    signum = int(signal.SIGTERM)

    def hook() -> None:  # pragma: no cover - runs in the child, before exec
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)

    return hook


_PR_SET_PDEATHSIG = 1


def _group_gone(pgid: int, timeout_secs: float) -> bool:
    """Wait until no live process is left in group ``pgid``; True when none is."""
    deadline = time.monotonic() + timeout_secs
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def group_members(pgid: int) -> list[int]:
    """The pids in process group ``pgid`` (from /proc), for checks and tests."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # The group is the one start_new_session made for this process: only ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _tail(text: str, lines: int = 20) -> str:
    kept = [line for line in text.splitlines() if "GLIBC_2.39" not in line]
    return "\n".join(kept[-lines:]) or "(nothing)"
