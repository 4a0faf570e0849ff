"""The persisted ingest queue (``pipeline.queue.type: disk``), as Logstash's persistent queue.

::

    inputs -> [ingest buffer] -> writer task -> disk queue (logstream.spool) -> filter task
                                    |                                            |
                 inputs' "safe": beats ACK, file checkpoint, http 200 <-+        |
                                                  ack once every sink has written them

- The writer task takes what the inputs pushed into the (small, in-memory)
  ingest buffer, appends it to the spool as one record of JSON events and only
  then marks those events *safe* in the ingest buffer. So every acknowledging
  input answers once its events are on disk: a Beats window is ACKed, a file
  checkpoint advances, the http input answers 200. "On disk" means written to
  the segment file (safe from ``kill -9`` and any crash of logstream); with
  ``fsync: always`` the append also waits for the fsync (safe from a power loss).
- The filter task reads the queue instead of the ingest buffer. A batch read is
  acknowledged (its position advances) only once *every sink's* ``write`` has
  returned for the events it became (or counted them dropped with a reason): a
  spooled Elasticsearch sink has them in its own spool, the file sink has
  written them, the Elasticsearch sink without spool has had them accepted,
  the MQTT sink has handed them to its client. Events in a sink's memory
  buffer are *not* enough: a ``kill -9`` would lose them.
- On start, what was never acknowledged is read again: events that reached a
  sink just before a crash are sent twice (the Elasticsearch sink's
  deterministic ``_id`` turns the second one into a no-op; other sinks see a
  duplicate). Nothing accepted is lost.
- Full (``max_bytes``): the writer waits, the ingest buffer fills and the
  inputs are held back as by a full sink (TCP stops reading; UDP counts
  ``ingest_full`` drops; http answers 429).

Not covered: events a filter holds back across batches (a multiline group
waiting for its next line, up to the filter's timeout) count as passed on when
their batch is acknowledged, so a ``kill -9`` in that window loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from logstream.buffer import BatchBuffer, BufferClosed
from logstream.event import Batch
from logstream.metrics import UnitMetrics
from logstream.spool import Spool, SpoolBatch, SpoolClosed, SpoolSettings

log = logging.getLogger(__name__)

_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS


class QueueConfig(BaseModel):
    """``pipeline.queue``: where events wait between the inputs and the filters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["memory", "disk"] = Field(
        default="memory",
        description="memory: the ingest buffer only; disk: events are on disk before accepted.",
    )
    max_bytes: int = Field(
        default=1 << 30, ge=1 << 20, description="Disk the queue may use; full: inputs wait."
    )
    path: Path | None = Field(default=None, description="Directory (default <state_dir>/queue).")
    fsync: Literal["always", "interval", "never"] = Field(
        default="interval",
        description=(
            "always: accepted only once fsynced (power-loss safe); interval/never: once "
            "written (kill -9 safe), fsynced every fsync_interval_secs / by the OS."
        ),
    )
    fsync_interval_secs: float = Field(default=1.0, gt=0)
    segment_bytes: int = Field(
        default=16 << 20, ge=1 << 16, description="Segment file size: space comes back per segment."
    )

    @model_validator(mode="after")
    def _fits(self) -> QueueConfig:
        if self.type == "disk" and self.max_bytes < 2 * self.segment_bytes:
            raise ValueError(
                f"max_bytes ({self.max_bytes}) must hold at least two segments "
                f"(segment_bytes {self.segment_bytes})"
            )
        return self

    def spool_settings(self) -> SpoolSettings:
        return SpoolSettings(
            max_bytes=self.max_bytes,
            segment_bytes=self.segment_bytes,
            fsync=self.fsync,
            fsync_interval_secs=self.fsync_interval_secs,
            when_full="block",
        )


class Progress(Protocol):
    """What the queue needs of a sink runner: events offered to it and events done
    (written, or counted dropped) so far, both in the sink's own order."""

    offered: int
    done: int


class DiskQueue:
    """The ingest buffer's events, persisted; read by the filter task, acked per sink."""

    def __init__(
        self, directory: Path, settings: SpoolSettings, metrics: UnitMetrics, max_events: int
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.metrics = metrics
        self._max_events = max_events
        self.spool: Spool | None = None
        self._writer: asyncio.Task[None] | None = None
        # Read batches waiting for every sink: (batch, each sink's offered position after it).
        self._unacked: deque[tuple[SpoolBatch, list[tuple[Progress, int]]]] = deque()
        self.left_on_disk = 0  # set by close: unacknowledged entries kept for the next start

    @property
    def writer_done(self) -> bool:
        return self._writer is not None and self._writer.done()

    def open(self) -> None:
        """Open (or recover) the spool; what a previous run did not finish is read first."""
        spool = Spool.open(self.directory, self.settings)
        self.spool = spool
        self.metrics.spool_events = lambda: spool.pending_entries
        self.metrics.spool_bytes = lambda: spool.disk_bytes
        report = spool.recovery
        if report.entries:
            log.info(
                "queue %s: %d events from the last run were not acknowledged by every sink; "
                "they are sent again (duplicates possible)", self.directory, report.entries,
            )  # fmt: skip
        self.metrics.spool_corrupt_records = report.corrupt_records

    def start(self, ingest: BatchBuffer) -> None:
        self._writer = asyncio.create_task(self._write_loop(ingest), name="queue-writer")

    async def _write_loop(self, ingest: BatchBuffer) -> None:
        spool = self.spool
        assert spool is not None
        dumps = orjson.dumps
        while True:
            try:
                batch = await ingest.get(self._max_events)
            except BufferClosed:
                return
            if batch is None:
                continue
            entries = []
            for event in batch:
                try:
                    entries.append(dumps(event, default=str, option=_DUMPS_OPTIONS))
                except TypeError:
                    self.metrics.drop(1, "encode_error")
            try:
                await spool.append(entries)
            except SpoolClosed:
                return
            # On disk: the inputs may now acknowledge (beats ACK, checkpoint, http 200).
            ingest.mark_safe(ingest.taken)

    async def read(self, timeout_secs: float) -> tuple[SpoolBatch, Batch] | None:
        spool = self.spool
        assert spool is not None
        got = await spool.read(self._max_events, timeout_secs)
        if got is None:
            return None
        loads = orjson.loads
        return got, [loads(entry) for entry in got.entries]

    def track(self, batch: SpoolBatch, sinks: Sequence[Progress]) -> None:
        """``batch`` was filtered and offered to every sink: ack it once they are past it."""
        # Each sink with its position: a sink a reload removes still counts until drained.
        self._unacked.append((batch, [(runner, runner.offered) for runner in sinks]))

    def settle(self) -> None:
        """Acknowledge, in order, every batch that every sink it was offered to has written
        (or counted); the sinks are those ``track`` recorded with it."""
        spool = self.spool
        unacked = self._unacked
        while unacked:
            batch, targets = unacked[0]
            if any(runner.done < target for runner, target in targets):
                return
            unacked.popleft()
            if spool is not None:
                spool.ack(batch)

    async def stop_writer(self) -> None:
        """Wait for the writer to put what is left in the (closed) ingest buffer on disk."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def close(self) -> int:
        """Stop the writer, close the spool; return the events kept for the next start."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        spool, self.spool = self.spool, None
        if spool is None:
            return 0
        left = spool.pending_entries
        await spool.close()
        self.left_on_disk = left
        return left
