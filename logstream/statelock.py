"""One ``logstream run`` per state directory.

Two runs on the same ``state_dir`` would share spools, checkpoints, the disk
queue and the local servers' data, and the second would die half-way with a
traceback (a port in use, a locked spool). ``run`` takes an exclusive
``flock`` on ``<state_dir>/run.lock`` before it starts anything and writes its
pid there; a second run gets one line instead::

    logstream: another logstream run is using .logstream (pid 12345)

The kernel releases the lock when the process ends, however it ends
(``kill -9`` included), so a stale lock file never blocks a new run. The file
descriptor is not inherited by the local servers ``run`` starts (Python opens
it non-inheritable), so an orphaned server never holds the lock either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "run.lock"


class StateDirBusy(OSError):
    """Another process holds the state directory's lock."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f" (pid {pid})" if pid is not None else ""
        super().__init__(errno.EBUSY, f"another logstream run is using {state_dir}{who}")

    def __str__(self) -> str:
        return str(self.strerror)


def _holder(fd: int) -> int | None:
    """The pid the lock's holder wrote, if it wrote one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(state_dir: Path) -> int | None:
    """The pid of the ``logstream run`` holding ``state_dir``, or None. Takes no lock
    (``check`` asks this while a run may be starting): the pid the holder wrote,
    if that process is alive and still holds the lock."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        pid = _holder(fd)
    finally:
        os.close(fd)
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return pid


def acquire(state_dir: Path) -> int:
    """Take ``<state_dir>/run.lock`` and write this pid there: the descriptor that holds
    it (close it, or :func:`release` it, to let go). Raises :class:`StateDirBusy` at
    once when another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise StateDirBusy(state_dir, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(fd: int) -> None:
    """Let go of a lock :func:`acquire` took (no pid left behind for a reader to trust)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # releases the lock


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[Path]:
    """Hold ``<state_dir>/run.lock`` for the block; raise :class:`StateDirBusy` at once
    when another process holds it. Yields the lock file's path."""
    fd = acquire(state_dir)
    try:
        yield state_dir / LOCK_NAME
    finally:
        release(fd)
