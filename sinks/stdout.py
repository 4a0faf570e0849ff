"""The ``stdout`` sink: events as NDJSON (or just their message) on standard output."""

from __future__ import annotations

import sys
from typing import BinaryIO, Literal

from logstream.codec import encode_ndjson
from logstream.event import Batch
from logstream.units import BuildContext, Sink, SinkConfig


class StdoutSinkConfig(SinkConfig):
    type: Literal["stdout"]
    format: Literal["json", "message"] = "json"
    batch_max_delay_secs: float = 0.0

    def build(self, name: str, ctx: BuildContext) -> StdoutSink:
        return StdoutSink(self, name, ctx)


class StdoutSink(Sink):
    def __init__(
        self, config: StdoutSinkConfig, name: str, ctx: BuildContext, out: BinaryIO | None = None
    ) -> None:
        super().__init__(name, ctx.registry.unit(name, "sink"))
        self._out = out or sys.stdout.buffer
        self._as_message = config.format == "message"

    async def write(self, batch: Batch) -> None:
        if self._as_message:
            data = "".join(f"{event.get('message', '')}\n" for event in batch).encode(
                "utf-8", "replace"
            )
            count = len(batch)
        else:
            data, count = encode_ndjson(batch, self.metrics)
        try:
            self._out.write(data)
            self._out.flush()
        except BrokenPipeError:
            self.metrics.drop(count, "sink_error")
            return
        self.metrics.events_out += count
        self.metrics.bytes_out += len(data)
