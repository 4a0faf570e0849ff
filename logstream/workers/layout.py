"""Where each worker keeps its state, and what happens to state a former worker left.

With one worker (the default) the state directory is ``state_dir`` itself, as it
always was. With N workers, worker ``i`` keeps its spools, ingest queue,
checkpoints and dead letters under ``state_dir/workers/i``; ``state_dir`` itself
is the host-wide directory (shared budgets, local servers, the monitor's state).

A restart with fewer workers (or back to one) would orphan the spools of the
workers that no longer run: their events were accepted (a Beats ACK, a file
checkpoint) and must still be delivered. Before any worker starts, the
supervisor moves every record of an orphaned spool into the spool of the same
name of a running worker (:func:`adopt_orphans`), then removes the orphan.
A crash in the middle of a move leaves the orphan's cursor behind, so records
may be delivered twice (Elasticsearch's deterministic ids absorb that), never
lost. File checkpoints need no move: each worker reads every checkpoint file of
its input and keeps the entries of the files it owns
(:func:`checkpoint_candidates`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zlib
from pathlib import Path

from logstream.spool import Spool, SpoolSettings

log = logging.getLogger(__name__)

WORKERS_DIR = "workers"
# How many entries one move reads at a time.
_MOVE_ENTRIES = 10_000


def worker_dir(root: Path, worker: int, workers: int) -> Path:
    """The state directory of worker ``worker`` of ``workers``."""
    return root if workers == 1 else root / WORKERS_DIR / str(worker)


def owner(key: str, workers: int) -> int:
    """The worker that owns ``key`` (a file's ``device:inode``): a stable hash.

    The inode, not the path, so a file renamed by rotation stays with the worker
    that was reading it."""
    return zlib.crc32(key.encode()) % workers if workers > 1 else 0


def _former_dirs(root: Path) -> dict[int, Path]:
    """The worker directories found under ``root`` (``workers/<index>``)."""
    found: dict[int, Path] = {}
    base = root / WORKERS_DIR
    if base.is_dir():
        for entry in base.iterdir():
            if entry.is_dir() and re.fullmatch(r"\d+", entry.name):
                found[int(entry.name)] = entry
    return found


def orphans(root: Path, workers: int) -> list[tuple[Path, Path]]:
    """(orphaned state directory, the running worker's directory that adopts it)."""
    pairs: list[tuple[Path, Path]] = []
    for index, path in sorted(_former_dirs(root).items()):
        if workers == 1 or index >= workers:
            pairs.append((path, worker_dir(root, index % workers, workers)))
    if workers > 1:
        pairs.append((root, worker_dir(root, 0, workers)))  # state of a one-worker run
    return pairs


def _spool_dirs(state: Path) -> list[Path]:
    """Spool directories (segments and a cursor) inside a worker's state directory,
    not descending into another worker's directory."""
    found: list[Path] = []
    if not state.is_dir():
        return found
    for top, dirs, files in os.walk(state):
        here = Path(top)
        if here == state:
            dirs[:] = [d for d in dirs if d != WORKERS_DIR]
        if any(name.endswith(".seg") for name in files):
            found.append(here)
    return found


async def move_spool(source: Path, target: Path) -> int:
    """Append every unacknowledged record of the spool in ``source`` to the spool in
    ``target`` (created if need be), acknowledging each in ``source`` once the
    target has it. Returns the entries moved."""
    settings = SpoolSettings(max_bytes=1 << 62, fsync="always")
    old = Spool.open(source, settings)
    new = Spool.open(target, settings)
    moved = 0
    try:
        while old.pending_entries:
            batch = await old.read(_MOVE_ENTRIES, timeout_secs=0.01)
            if batch is None:
                break
            await new.append(batch.entries)
            old.ack(batch)
            moved += len(batch.entries)
    finally:
        await new.close()
        await old.close()
    return moved


async def adopt_orphans(root: Path, workers: int) -> int:
    """Move the spools of workers that no longer run into running ones. Returns
    the entries moved (0 when there was nothing to adopt)."""
    total = 0
    for orphan, heir in orphans(root, workers):
        for spool in _spool_dirs(orphan):
            target = heir / spool.relative_to(orphan)
            moved = await move_spool(spool, target)
            total += moved
            shutil.rmtree(spool, ignore_errors=True)
            if moved:
                log.info("adopted %d spooled entries from %s into %s", moved, spool, target)
    return total


def checkpoint_candidates(default: Path, root: Path, relative: Path) -> list[Path]:
    """Every checkpoint file of one file input that any worker layout may have
    written: ``default`` (this worker's), the one-worker file and each worker's.

    ``relative`` is the checkpoint's path inside a worker's state directory."""
    found = [root / relative]
    found += [path / relative for _, path in sorted(_former_dirs(root).items())]
    return [default, *(p for p in found if p != default)]
