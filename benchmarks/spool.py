"""Entries per second of the disk spool (logstream.spool): append, recovery scan, drain.

Appends ``--entries`` entries of about ``--entry-bytes`` bytes (bulk-item-like
NDJSON bytes) in batches of ``--batch`` to a spool in a fresh temporary
directory (``--dir`` to choose where), then

- ``append``: the appends (fsync per ``--fsync``; the final close and its fsync included);
- ``open``: reopening it (the recovery scan checks every record's crc);
- ``drain``: ``read(--batch)`` + ``ack`` until empty (page cache warm, as for a
  drain that keeps up; segments are deleted as they are acknowledged);
- ``split``: the reference, in the same run: the same bytes as one NDJSON blob
  split into lines with ``bytes.split`` (the least a newline-delimited reader pays).

    .venv/bin/python benchmarks/spool.py
    .venv/bin/python benchmarks/spool.py --entries 1000000 --fsync interval --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from logstream.spool import FsyncPolicy, Spool, SpoolSettings


def make_entries(count: int, size: int) -> list[bytes]:
    """Distinct entries shaped like bulk items (action line + document), ``size`` bytes each."""
    out = []
    for n in range(count):
        head = b'{"create":{"_index":"logstash-2026.11.24","_id":"%016x"}}\n{"message":"' % n
        out.append(head + b"m" * max(0, size - len(head) - 3) + b'"}\n')
    return out


async def one_run(
    directory: Path, entries: list[bytes], batch: int, fsync: FsyncPolicy
) -> dict[str, float]:
    settings = SpoolSettings(max_bytes=8 << 30, fsync=fsync)
    total = len(entries)
    batches = [entries[i : i + batch] for i in range(0, total, batch)]

    began = time.perf_counter()
    spool = Spool.open(directory, settings)
    for chunk in batches:
        await spool.append(chunk)
    await spool.close()
    append_secs = time.perf_counter() - began

    began = time.perf_counter()
    spool = Spool.open(directory, settings)
    open_secs = time.perf_counter() - began
    if spool.recovery.entries != total:
        raise SystemExit(f"recovered {spool.recovery.entries} entries of {total}")

    began = time.perf_counter()
    got = 0
    while (read := await spool.read(batch, timeout_secs=0)) is not None:
        got += len(read.entries)
        spool.ack(read)
    drain_secs = time.perf_counter() - began
    await spool.close()
    if got != total:
        raise SystemExit(f"drained {got} entries of {total}")

    blob = b"".join(entries)
    began = time.perf_counter()
    for i in range(0, len(blob), 1 << 20):
        blob[i : i + (1 << 20)].split(b"\n")
    split_secs = time.perf_counter() - began
    return {
        "append": total / append_secs,
        "open": total / open_secs,
        "drain": total / drain_secs,
        "split": 2 * total / split_secs,  # two lines per entry
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--entry-bytes", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--fsync", choices=["always", "interval", "never"], default="interval")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the temporary spool")
    args = parser.parse_args()

    entries = make_entries(args.entries, args.entry_bytes)
    mib = args.entries * args.entry_bytes / (1 << 20)
    print(
        f"{args.entries} entries of {args.entry_bytes} bytes ({mib:.0f} MiB), "
        f"batches of {args.batch}, fsync {args.fsync}; best of {args.runs} runs"
    )
    best: dict[str, float] = {}
    for _ in range(args.runs):
        base = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
        try:
            result = asyncio.run(one_run(base / "spool", entries, args.batch, args.fsync))
        finally:
            shutil.rmtree(base)
        for key, value in result.items():
            best[key] = max(best.get(key, 0.0), value)
    for key, value in best.items():
        unit = "lines/s" if key == "split" else "entries/s"
        rate = value * args.entry_bytes / (1 << 20)
        print(f"  {key:7s} {value:12,.0f} {unit:9s} {rate:8,.0f} MiB/s")
    print(f"  drain / split: {best['drain'] / (best['split'] / 2):.2f} (entries vs entries)")


if __name__ == "__main__":
    main()
