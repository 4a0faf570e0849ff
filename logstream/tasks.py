"""Stopping a background task for sure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any], unit: str, timeout_secs: float = 10.0) -> None:
    """Cancel ``task`` and wait for it, cancelling again until it ends (bounded).

    One ``cancel()`` is not always enough: nats.py's connect loop swallows a cancel
    that lands while it closes a refused connection and tries the next server, and
    on Python 3.11 ``asyncio.timeout`` can turn a cancel that races with its own
    expiry into a ``TimeoutError`` that the task then handles as a timeout. After
    ``timeout_secs`` the task is left, logged."""
    deadline = time.monotonic() + timeout_secs
    while not task.done():
        if time.monotonic() >= deadline:
            log.warning("%s: a task did not stop in %.0fs; left behind", unit, timeout_secs)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
