"""NDJSON encoding of a batch (file and stdout sinks) and the allocator settings of `run`."""

from __future__ import annotations

import ctypes
import platform
import sys

import orjson
import pytest

from logstream.codec import encode_ndjson
from logstream.metrics import UnitMetrics
from logstream.run import tune_malloc


def test_a_batch_is_one_json_object_per_line_in_order() -> None:
    batch = [{"message": f"line {n}", "n": n, "tags": ["a"], "x": {"y": None}} for n in range(2500)]
    data, count = encode_ndjson(batch, UnitMetrics("out", "sink"))
    assert count == 2500
    assert type(data) is bytes
    lines = data.split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline
    assert [orjson.loads(line) for line in lines[:-1]] == batch


def test_an_event_orjson_cannot_encode_is_dropped_and_counted_the_rest_kept() -> None:
    metrics = UnitMetrics("out", "sink")
    batch = [{"n": 1}, {"n": {2, 3}}, {1: "int key"}, {"n": 4}]
    data, count = encode_ndjson(batch, metrics)
    assert count == 3
    assert [orjson.loads(line) for line in data.splitlines()] == [
        {"n": 1},
        {"1": "int key"},
        {"n": 4},
    ]
    assert metrics.dropped == {"encode_error": 1}


def test_an_empty_batch_is_no_bytes() -> None:
    assert encode_ndjson([], UnitMetrics("out", "sink")) == (b"", 0)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_malloc_keeps_freed_memory_between_batches_on_glibc() -> None:
    assert tune_malloc() is True
    # The settings took: mallopt accepts them again (it returns 0 for a bad parameter).
    mallopt = ctypes.CDLL(None).mallopt
    assert mallopt(-1, 32 << 20) == 1
