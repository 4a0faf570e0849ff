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
lost. File checkpoints are handed over the same way: each entry goes to the
checkpoint file of the worker that owns its file now (:func:`owner`), the most
recently saved entry winning (:func:`redistribute_checkpoints`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logstream.inputs.file_checkpoint import redistribute
from logstream.spool import Spool, SpoolSettings

if TYPE_CHECKING:
    from logstream.inputs.file import FileInputConfig

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


def _file_inputs(data: Any, worker: int) -> list[tuple[str, FileInputConfig]]:
    """(unit name, settings) of each file input, as worker ``worker`` runs the config."""
    from logstream.config import parse_config
    from logstream.inputs.file import FileInputConfig

    config = parse_config(data, worker=worker)
    names = config.unit_names()
    return [(names[id(u)], u) for u in config.inputs if isinstance(u, FileInputConfig)]


def redistribute_checkpoints(data: Any, root: Path, workers: int) -> int:
    """Hand every file input's checkpoint entries to the worker that owns each file
    now (:func:`owner`), whatever the number of workers of the run that wrote them.
    Returns the entries written."""
    from logstream.inputs.file import checkpoint_path as file_checkpoint_path

    former = sorted(_former_dirs(root))
    total = 0
    mine = [_file_inputs(data, i) for i in range(workers)]
    theirs = {j: _file_inputs(data, j) for j in former}
    if workers > 1:
        theirs[-1] = _file_inputs(data, 0)  # a one-worker run's files, in root itself
    for position, (name, _) in enumerate(mine[0]):
        targets = [
            file_checkpoint_path(mine[i][position][1], name, worker_dir(root, i, workers))
            for i in range(workers)
        ]
        others = [
            file_checkpoint_path(units[position][1], name, root / WORKERS_DIR / str(j))
            if j >= 0
            else file_checkpoint_path(units[position][1], name, root)
            for j, units in theirs.items()
        ]
        others = [path for path in dict.fromkeys(others) if path not in targets]
        if not any(path.exists() for path in [*targets, *others]):
            continue
        total += redistribute(targets, others, lambda key: owner(key, workers))
    return total


async def prepare_state(data: Any, root: Path, workers: int) -> None:
    """Before any worker starts: adopt orphaned spools, redistribute file checkpoints."""
    moved = await adopt_orphans(root, workers)
    entries = redistribute_checkpoints(data, root, workers)
    if moved or entries:
        log.info(
            "state for %d worker(s): %d spooled entries adopted, %d file checkpoints placed",
            workers,
            moved,
            entries,
        )
