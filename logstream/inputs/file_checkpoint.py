"""The file input's checkpoint: how far each file was read and safely delivered.

One JSON document per file input::

    {"version": 1, "saved_at": <unix time>, "files": {"<device>:<inode>": {
        "path": ..., "offset": ..., "skip": ..., "fingerprint": ..., "fingerprint_bytes": ...}}}

written atomically (temp file, fsync, rename). With ``pipeline.workers: N`` each
worker tails the files it owns (:func:`logstream.workers.layout.owner`) and keeps a
checkpoint of its own; when N changes between runs, :func:`redistribute` hands
each entry to its new owner before any worker starts.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import orjson

log = logging.getLogger(__name__)

FINGERPRINT_BYTES: Final = 256
CHECKPOINT_VERSION: Final = 1

Entry = dict[str, Any]


class CheckpointError(Exception):
    """A checkpoint file that cannot be read or is damaged."""


class Checkpoints:
    """The entries of one checkpoint file, by ``"device:inode"``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Entry] = {}
        self.dirty = False  # entries changed since the last save

    def load(self) -> None:
        """Read the file (a missing file is an empty checkpoint). On a damaged or
        unreadable file, keeps the entries read so far and raises
        :class:`CheckpointError`."""
        self.entries.update(read(self.path)[1])

    def save(self) -> None:
        """Write every entry. Raises ``OSError``; ``dirty`` stays set then."""
        write(self.path, self.entries)
        self.dirty = False


def read(path: Path) -> tuple[float, dict[str, Entry]]:
    """``(saved_at, entries)`` of a checkpoint file; ``(0.0, {})`` when it does not
    exist. Raises :class:`CheckpointError` when it cannot be read or is damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0.0, {}
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror}") from None
    entries: dict[str, Entry] = {}
    try:
        document = orjson.loads(raw)
        saved_at = float(document.get("saved_at", 0.0))
        for key, item in document["files"].items():
            offset, size = int(item["offset"]), int(item["fingerprint_bytes"])
            if offset < 0 or not 0 <= size <= FINGERPRINT_BYTES:
                raise ValueError(f"entry {key}: offset {offset}, fingerprint_bytes {size}")
            entries[str(key)] = {
                "path": str(item["path"]),
                "offset": offset,
                "skip": bool(item.get("skip", False)),
                "fingerprint": str(item["fingerprint"]),
                "fingerprint_bytes": size,
            }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path} is damaged ({error})") from None
    return saved_at, entries


def write(path: Path, entries: dict[str, Entry]) -> None:
    """Write ``entries`` to ``path`` atomically. Raises ``OSError``."""
    temp = path.with_name(path.name + ".tmp")
    data = orjson.dumps(
        {"version": CHECKPOINT_VERSION, "saved_at": time.time(), "files": entries},
        option=orjson.OPT_INDENT_2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(temp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


def redistribute(targets: list[Path], others: list[Path], owner: Any) -> int:
    """Give each checkpoint entry found in ``targets`` or ``others`` to the worker
    that owns it now: ``targets[i]`` is worker i's checkpoint file and
    ``owner(key)`` the index of the worker owning ``key``. Where several files
    hold an entry for the same key, the most recently saved one wins. ``others``
    (files of layouts no longer in use) are removed once every target is written.
    Returns the entries written. A damaged file is logged and skipped: its
    files are read again from ``start_position``, as with one worker."""
    found: dict[str, tuple[float, Entry]] = {}
    for path in [*targets, *others]:
        try:
            saved_at, entries = read(path)
        except CheckpointError as error:
            log.error("file checkpoint: %s; skipped", error)
            continue
        for key, entry in entries.items():
            if key not in found or saved_at > found[key][0]:
                found[key] = (saved_at, entry)
    mine: list[dict[str, Entry]] = [{} for _ in targets]
    for key, (_, entry) in found.items():
        mine[owner(key)][key] = entry
    for path, entries in zip(targets, mine, strict=True):
        if entries or path.exists():
            write(path, entries)
    for path in others:
        if path not in targets:
            path.unlink(missing_ok=True)
    return sum(len(entries) for entries in mine)
