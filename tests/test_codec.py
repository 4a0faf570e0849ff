"""NDJSON encoding of a batch (file and stdout sinks) and the allocator settings of `run`."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from logstream.codec import encode_ndjson
from logstream.metrics import UnitMetrics


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


# Encodes 50 batches of 1,000 events after 5 warm-up batches, in a fresh process,
# and prints the minor page faults the 50 took.
_FAULTS = """
import resource, sys, orjson
from logstream.codec import encode_ndjson
from logstream.metrics import UnitMetrics
from logstream.run import tune_malloc
how = sys.argv[1]
if how == "joined-tuned":
    tune_malloc()
batch = [{"message": "x" * 300 + str(n), "host": "h", "n": n, "tags": ["a"]} for n in range(1000)]
metrics = UnitMetrics("out", "sink")
def once():
    if how == "encode_ndjson":
        encode_ndjson(batch, metrics)
    else:
        b"".join([orjson.dumps(event) for event in batch])
for _ in range(5):
    once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    once()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(how: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, how],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page fault counts of Linux")
def test_encoding_batches_does_not_fault_memory_in_again_and_again() -> None:
    """The sink's encoder reuses its memory from batch to batch (a list of the
    events' bytes, joined, had glibc give the heap's top back to the kernel
    after each batch and fault it in again: about 48,000 faults for these 50
    batches here)."""
    assert _faults("encode_ndjson") < 200


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_tuned_malloc_keeps_the_memory_of_joined_batches() -> None:
    """The other sinks keep per-event bytes (Elasticsearch documents, MQTT
    lines): with run's malloc settings, freeing a batch of them no longer gives
    the memory back to the kernel to be faulted in again."""
    assert _faults("joined-tuned") < 200
