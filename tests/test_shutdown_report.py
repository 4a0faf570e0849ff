"""What `logstream run` says at the end: the shutdown summary and the final counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from logstream.event import Batch
from logstream.metrics import Registry, counters_table
from logstream.pipeline import Pipeline, SinkRunner, SinkSettings
from logstream.shutdown import ShutdownReport
from logstream.spool import Spool, SpoolSettings
from logstream.units import Sink
from tests.support.units import ListInput


class UndeliveredSpoolSink(Sink):
    """Test-only: a spooled sink whose destination never answers (nothing is drained)."""

    spooled = True

    def __init__(self, name: str, registry: Registry, directory: Path) -> None:
        super().__init__(name, registry.unit(name, "sink"))
        self.directory = directory
        self.spool: Spool | None = None

    async def start(self) -> None:
        self.spool = Spool.open(self.directory, SpoolSettings(fsync="never"))

    async def write(self, batch: Batch) -> None:
        assert self.spool is not None
        await self.spool.append([orjson.dumps(event) for event in batch])

    async def close(self) -> None:
        spool, self.spool = self.spool, None
        if spool is not None:
            await spool.close()


@pytest.mark.parametrize("left", [25, 1])
def test_events_left_in_a_spool_are_reported_and_not_called_flushed(
    tmp_path: Path, left: int
) -> None:
    async def scenario() -> ShutdownReport:
        registry = Registry()
        source = ListInput("list", registry, [[{"n": n} for n in range(left)]])
        sink = UndeliveredSpoolSink("es", registry, tmp_path / "spool")
        pipeline = Pipeline([source], [], [SinkRunner(sink, SinkSettings())], registry=registry)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        return await pipeline.stop(timeout_secs=5)

    report = asyncio.run(scenario())
    assert report.clean  # nothing was dropped ...
    assert report.on_disk == {"es": left}  # ... but nothing was delivered either
    summary = report.summary()
    assert "every event flushed" not in summary
    assert "kept on disk" in summary and f"es {left}" in summary


def test_summary_wording() -> None:
    assert ShutdownReport().summary() == "shutdown complete: every event flushed"
    lost = ShutdownReport(unflushed={"mqtt": 3}, timed_out=True, on_disk={"es": 2}).summary()
    assert "mqtt 3" in lost and "deadline passed" in lost and "es 2" in lost
    assert "every event flushed" not in lost


def test_final_counters_are_a_readable_table() -> None:
    registry = Registry()
    tcp = registry.unit("tcp", "input")
    tcp.events_in, tcp.bytes_in = 500, 51234
    es = registry.unit("elasticsearch", "sink")
    es.events_in, es.events_out, es.retries = 500, 498, 1
    es.drop(2, "rejected")
    lines = counters_table(registry.units()).splitlines()
    assert lines[0].split() == ["unit", "kind", "in", "out", "dropped", "other"]
    assert lines[1].split() == ["tcp", "input", "500", "0", "-", "bytes_in", "51234"]
    assert lines[2].split() == [
        "elasticsearch", "sink", "500", "498", "rejected", "2", "retries", "1"
    ]  # fmt: skip
    assert "{" not in "\n".join(lines)  # no dict reprs
    # Columns line up: "dropped" starts at the same column in every row.
    assert lines[0].index("dropped") == lines[1].index("-") == lines[2].index("rejected")
