"""The ``file`` sink: NDJSON lines appended to a file, optionally rotated by size."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from logstream.codec import encode_ndjson
from logstream.event import Batch
from logstream.units import BuildContext, Sink, SinkConfig


class FileSinkConfig(SinkConfig):
    """Append events as NDJSON to ``path``.

    With ``rotate_max_bytes``, the file is renamed to ``path.1`` (older ones to
    ``path.2`` ... up to ``rotate_keep``) once it reaches that size.
    """

    type: Literal["file"]
    path: Path
    rotate_max_bytes: int | None = Field(default=None, ge=1)
    rotate_keep: int = Field(default=5, ge=1)
    fsync: bool = Field(default=False, description="fsync after every batch (slow, durable).")
    # Writes are cheap: write what is there rather than wait for more.
    batch_max_delay_secs: float = Field(default=0.0, ge=0)

    def build(self, name: str, ctx: BuildContext) -> FileSink:
        return FileSink(self, name, ctx)


class FileSink(Sink):
    def __init__(self, config: FileSinkConfig, name: str, ctx: BuildContext) -> None:
        super().__init__(name, ctx.registry.unit(name, "sink"))
        self.config = config
        self.path = config.path
        self._fd = -1
        self._size = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size

    async def write(self, batch: Batch) -> None:
        data, count = encode_ndjson(batch, self.metrics)
        if not data:
            return
        limit = self.config.rotate_max_bytes
        if limit is not None and self._size and self._size + len(data) > limit:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.config.fsync:
            await asyncio.to_thread(os.fsync, self._fd)
        self._size += len(data)
        self.metrics.events_out += count
        self.metrics.bytes_out += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        keep = self.config.rotate_keep
        for index in range(keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._open()

    async def close(self) -> None:
        if self._fd >= 0:
            if self.config.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
