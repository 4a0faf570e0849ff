"""The supervisor: ``logstream run`` with ``pipeline.workers`` above 1.

``logstream run`` checks the config once and prepares the state directory, then
becomes the supervisor (``exec``, :mod:`logstream.workers.supervise`), which
starts the local servers and N worker processes (:mod:`logstream.workers.worker`)
running the same pipeline. Their listening sockets share each address
(SO_REUSEPORT), the monitor's included. The supervisor listens on nothing: it
sums every worker's metrics (:mod:`logstream.workers.aggregate`) and writes the
sum and the workers' states each second for the workers' monitors to serve
(:mod:`logstream.workers.hostview`). So it imports neither the pipeline nor the
config's models nor an HTTP server, and stays small.

- A worker that dies is started again after a short pause (at most
  ``RESTART_DELAY_MAX_SECS``), logged with its exit status and counted in
  ``logstream_worker_restarts_total``. A worker that fails before it was ever
  ready (a port taken, a bad certificate) stops the whole run instead: that is a
  setup error, and restarting would only repeat it.
- SIGTERM or SIGINT to the supervisor stops every worker (each flushes as a single
  process would) and prints one combined shutdown report.
- SIGHUP goes to every worker; each checks and applies the config file as a single
  process would (a bad file changes nothing), and workers started later run the
  document the workers applied.
- Workers run in their own process group, so a Ctrl-C in the terminal reaches the
  supervisor only, which then stops them in order. If the supervisor itself is
  killed, each worker sees its stdin close (and, on Linux, a SIGTERM from the
  kernel) and shuts down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from logstream.metrics import counters_table
from logstream.shutdown import ShutdownReport
from logstream.workers.aggregate import Aggregate, merge_units
from logstream.workers.hostview import remove_view, write_view
from logstream.workers.protocol import WorkerSpec

log = logging.getLogger("logstream.supervisor")

RESTART_DELAY_SECS = 0.2
RESTART_DELAY_MAX_SECS = 2.0
# How long a worker may take to be ready (build its pipeline, bind, open spools).
READY_TIMEOUT_SECS = 60.0
# Longest protocol line (a worker's metrics text).
_LINE_LIMIT = 64 << 20
# The host's view is written this long after a change (workers report at about the
# same moment: one write for all of them).
VIEW_DELAY_SECS = 0.05


class WorkerFailed(Exception):
    """A worker could not start: the run stops (the message says why)."""


def exit_description(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclass
class _Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ever_ready: bool = False
    error: str | None = None
    last_exit: int | None = None
    finals: list[dict[str, Any]] = field(default_factory=list)
    # Still running when the shutdown deadline passed: SIGKILLed. (A worker stopped
    # while it was starting, before it could handle SIGTERM, had accepted nothing.)
    killed_at_deadline: bool = False
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Starts, watches, restarts and stops the worker processes."""

    def __init__(
        self,
        data: Any,
        workers: int,
        state_dir: Path,
        local_urls: dict[str, str],
        *,
        shutdown_timeout_secs: float,
        log_level: str | None = None,
        metrics_interval_secs: float = 1.0,
        config_path: Path | None = None,
    ) -> None:
        self.data = data
        self.workers = workers
        self.state_dir = state_dir
        self.local_urls = local_urls
        self.shutdown_timeout_secs = shutdown_timeout_secs
        self.log_level = log_level or logging.getLevelName(logging.getLogger().level)
        self.metrics_interval_secs = metrics_interval_secs
        self.config_path = config_path
        self.metrics = Aggregate(workers)
        self.slots = [_Slot(i) for i in range(workers)]
        self.stopping = False
        self.started_at = time.time()
        self.banner = ""  # worker 0's: where to send logs, how to watch them
        self._failed = asyncio.Event()
        self._view_due: asyncio.TimerHandle | None = None
        remove_view(state_dir)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start every worker and wait until each is ready. Raises
        :class:`WorkerFailed` (after stopping the others) if one cannot start."""
        for slot in self.slots:
            slot.task = asyncio.create_task(self._keep(slot), name=f"worker {slot.index}")

        async def all_ready() -> None:
            for slot in self.slots:
                await slot.ready.wait()

        ready = asyncio.create_task(all_ready())
        failed = asyncio.create_task(self._failed.wait())
        await asyncio.wait(
            [ready, failed], timeout=READY_TIMEOUT_SECS, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        failed.cancel()
        if not all(slot.ever_ready for slot in self.slots):
            reasons = [
                f"worker {slot.index}: "
                + (
                    slot.error
                    or (
                        exit_description(slot.last_exit)
                        if slot.last_exit is not None
                        else f"not ready after {READY_TIMEOUT_SECS:.0f} s"
                    )
                )
                for slot in self.slots
                if not slot.ever_ready
            ]
            await self.stop()
            raise WorkerFailed("; ".join(reasons))

    async def stop(self) -> ShutdownReport:
        """Stop every worker (SIGTERM, then SIGKILL past the deadline); the combined
        report of their shutdowns."""
        self.stopping = True
        self.write_view()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        tasks = [slot.task for slot in self.slots if slot.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout_secs + 10)
            for slot in self.slots:
                process = slot.process
                if process is not None and process.returncode is None:
                    log.error("worker %d did not stop in time: killing it", slot.index)
                    slot.killed_at_deadline = True
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._view_due is not None:
            self._view_due.cancel()
        return self.report()

    def report(self) -> ShutdownReport:
        report = ShutdownReport()
        for slot in self.slots:
            for final in slot.finals:
                part = final.get("report", {})
                report.timed_out |= bool(part.get("timed_out"))
                for name in ("unflushed", "on_disk"):
                    total = getattr(report, name)
                    for sink, count in (part.get(name) or {}).items():
                        total[sink] = total.get(sink, 0) + int(count)
            if slot.killed_at_deadline:
                report.timed_out = True  # it never said how its shutdown went
        return report

    def counters_table(self) -> str:
        snapshots = [
            unit for slot in self.slots for final in slot.finals for unit in final.get("units", [])
        ]
        return counters_table(merge_units(snapshots))

    @property
    def pids(self) -> list[int | None]:
        return [slot.process.pid if slot.process else None for slot in self.slots]

    # ----------------------------------------------------------------- one slot

    async def _keep(self, slot: _Slot) -> None:
        """Run worker ``slot`` until stop, restarting it when it dies."""
        delay = RESTART_DELAY_SECS
        while not self.stopping:
            started = time.monotonic()
            try:
                await self._run_once(slot)
            except Exception as error:
                log.exception("worker %d: supervising it failed", slot.index)
                slot.error = slot.error or f"cannot start it: {error}"
            if self.stopping:
                break
            if not slot.ever_ready:
                self._failed.set()
                return
            log.error(
                "worker %d (pid %s) died (%s); starting it again",
                slot.index,
                slot.process.pid if slot.process else "?",
                exit_description(slot.last_exit),
            )
            # A worker that ran a while restarts at once; one that keeps dying backs off.
            delay = RESTART_DELAY_SECS if time.monotonic() - started > 10 else delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX_SECS)
            self.metrics.restarted(slot.index)
            self._changed()

    async def _run_once(self, slot: _Slot) -> None:
        spec = WorkerSpec(
            config=self.data,
            worker=slot.index,
            workers=self.workers,
            state_dir=str(self.state_dir),
            local_urls=self.local_urls,
            log_level=self.log_level,
            metrics_interval_secs=self.metrics_interval_secs,
            config_path=None if self.config_path is None else str(self.config_path),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "logstream.workers.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # not in the terminal's process group
            limit=_LINE_LIMIT,
        )
        slot.process = process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(spec.to_line())
        await process.stdin.drain()
        # stdin stays open: its end of file tells the worker the supervisor is gone.
        if self.stopping:
            process.send_signal(signal.SIGTERM)
        while line := await process.stdout.readline():
            self._message(slot, line)
        slot.last_exit = await process.wait()
        self.metrics.exited(slot.index)
        self._changed()
        process.stdin.close()

    def _message(self, slot: _Slot, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("worker %d: unreadable message %r", slot.index, line[:200])
            return
        if "metrics" in message:
            self.metrics.update(slot.index, message["metrics"])
            self._changed()
        elif "ready" in message:
            slot.ever_ready = True
            slot.ready.set()
            self.metrics.views[slot.index].up = True
            if isinstance(message.get("banner"), str):
                self.banner = message["banner"]
            log.info("worker %d ready (pid %s)", slot.index, message["ready"])
            self._changed()
        elif "reloaded" in message:
            self.data = message["reloaded"]  # what workers started from now on run
        elif "final" in message:
            final = message["final"]
            slot.finals.append(final)
            if isinstance(final.get("metrics"), str):
                self.metrics.update(slot.index, final["metrics"])
        elif "error" in message:
            slot.error = str(message["error"])
            log.error("worker %d cannot start: %s", slot.index, slot.error)

    def reload(self) -> None:
        """SIGHUP: every running worker reloads the config file (each checks it and
        applies it as a single process would, keeping unchanged inputs' sockets, or
        refuses it and changes nothing). A worker that applied it says so with the
        document, which the workers started from then on run."""
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGHUP)

    # ----------------------------------------------------------------- the host's view

    def _changed(self) -> None:
        """Write the host's view soon (once for the reports arriving together)."""
        if self._view_due is None:
            loop = asyncio.get_running_loop()
            self._view_due = loop.call_later(VIEW_DELAY_SECS, self.write_view)

    def write_view(self) -> None:
        """Publish the summed metrics and the workers' states for the monitors."""
        self._view_due = None
        health, healthy = self.health()
        try:
            write_view(
                self.state_dir,
                self.metrics.exposition(),
                {**health, "healthy": healthy, "started_at": self.started_at},
            )
        except OSError as error:
            log.error("cannot write the host's metrics for the monitor: %s", error)

    def health(self) -> tuple[dict[str, Any], bool]:
        workers = [
            {
                "worker": slot.index,
                "pid": slot.process.pid if slot.process else None,
                "up": self.metrics.views[slot.index].up,
                "restarts": self.metrics.views[slot.index].restarts,
                "last_exit": None if slot.last_exit is None else exit_description(slot.last_exit),
            }
            for slot in self.slots
        ]
        healthy = not self.stopping and all(w["up"] for w in workers)
        status = "stopping" if self.stopping else ("ok" if healthy else "degraded")
        return {"status": status, "workers": workers}, healthy
