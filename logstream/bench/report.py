"""What both benchmarks share: writing results, the progress bar."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson


class Progress(Protocol):
    def update(self, n: int) -> Any: ...

    def set_postfix_str(self, text: str) -> Any: ...


class _Silent:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int, unit: str, enabled: bool) -> Iterator[Progress]:
    """A tqdm bar on stderr (nothing when disabled or tqdm is missing)."""
    if not enabled:
        yield _Silent()
        return
    try:
        from tqdm import tqdm
    except ImportError:  # the bench extra is not installed: run without a bar
        yield _Silent()
        return
    with tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar


def write_json(path: Path, data: Any) -> None:
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
